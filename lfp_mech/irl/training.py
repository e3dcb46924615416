"""Training reward models: the max-margin objective, a step, an epoch, and seeds × epochs.

The IRL paper's objective ([`max_margin_loss`][lfp_mech.irl.training.max_margin_loss]):
``x = R(expert) - R(non-expert)``, ``loss = -x if x > 0 else -2x`` (violations cost twice), averaged
over the batch; Adam, ``zero_grad`` before every step (the original code forgot it, so its gradients
accumulated), gradient-norm clipping. [`run_seeds`][lfp_mech.irl.training.run_seeds] trains many
seeds (head initialisation and data order) × epochs and evaluates every epoch: different reward
models of similar accuracy are the non-identifiability the paper studies."""

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lfp_mech.irl.config import IRLConfig
from lfp_mech.irl.controls import supervised_ceiling
from lfp_mech.irl.demonstrations import Demonstrations
from lfp_mech.irl.evaluation import demo_metrics, fit_threshold, irl_metrics, run_key
from lfp_mech.irl.inputs import RewardInputs, concat_inputs, encode_cached
from lfp_mech.irl.reward_model import RewardModel
from lfp_mech.tracking import Tracker, open_tracker

__all__ = ["IRLRuns", "max_margin_loss", "run_seeds", "train_epoch", "train_step"]

logger = logging.getLogger(__name__)


def max_margin_loss(
    r_expert: Float[Tensor, " batch"],
    r_non_expert: Float[Tensor, " batch"],
) -> Float[Tensor, ""]:
    """The IRL paper's max-margin loss, averaged over the batch.

    ``x = R(expert) - R(non-expert)``; ``loss = -x`` if ``x > 0`` else ``-2x``: the expert is
    pushed above the non-expert, and orderings the wrong way round cost twice as much.
    """
    margin = r_expert - r_non_expert
    return torch.where(margin > 0, -margin, -2.0 * margin).mean()


def train_step(
    rm: RewardModel,
    optimizer: torch.optim.Optimizer,
    expert: RewardInputs,
    non_expert: RewardInputs,
    grad_clip: float,
) -> tuple[float, float]:
    """One Adam step on a batch of pairs; returns (loss, fraction of pairs ordered right)."""
    optimizer.zero_grad(set_to_none=True)  # the original code forgot this: gradients piled up
    n = len(expert)
    rewards = rm(concat_inputs(expert, non_expert))
    loss = max_margin_loss(rewards[:n], rewards[n:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in rm.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return float(loss.detach()), float((rewards[:n] > rewards[n:]).float().mean())


def train_epoch(
    rm: RewardModel,
    optimizer: torch.optim.Optimizer,
    inputs: RewardInputs,
    pairs: Int[Tensor, "pair 2"],
    config: IRLConfig,
    generator: torch.Generator,
) -> tuple[float, float]:
    """One shuffled pass over the (expert index, non-expert index) pairs; mean loss, pair acc."""
    perm = torch.randperm(pairs.shape[0], generator=generator)
    losses, accs, sizes = [], [], []
    for start in range(0, len(perm), config.batch_size):
        batch = pairs[perm[start : start + config.batch_size]]
        loss, acc = train_step(
            rm, optimizer, inputs.select(batch[:, 0]), inputs.select(batch[:, 1]), config.grad_clip
        )
        losses.append(loss)
        accs.append(acc)
        sizes.append(len(batch))
    weights = np.asarray(sizes, dtype=float)
    return float(np.average(losses, weights=weights)), float(np.average(accs, weights=weights))


@dataclass
class IRLRuns:
    """Result of [`run_seeds`][lfp_mech.irl.training.run_seeds].

    ``rows``: one dict per (seed, epoch) with [`METRICS`][lfp_mech.irl.evaluation.METRICS],
    ``threshold``, ``train_loss``, ``train_pair_acc``. ``final_scores[i]``: held-out IRL rewards
    of seed ``i`` after its last epoch (the seed-agreement figure). ``best``: the row with the
    highest held-out accuracy (ties: higher Spearman) — selected on the held-out texts like the
    paper's best-of-78, so optimistic; ``best_state`` / ``best_scores`` / ``best_calibration``
    belong to it.
    """

    rows: list[dict[str, Any]]
    heldout_texts: list[str]
    heldout_sources: list[str]
    heldout_true: Tensor
    final_scores: Tensor
    best: dict[str, Any]
    best_state: dict[str, Tensor]
    best_scores: Tensor
    best_calibration: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    supervised_ceiling: dict[str, float | int] = field(default_factory=dict)
    """[`supervised_ceiling`][lfp_mech.irl.controls.supervised_ceiling] on the same texts (a
    control)."""
    train_true: Tensor = field(default_factory=lambda: torch.zeros(0))
    """True rewards of the training texts: expert completions, then non-expert ones."""


@dataclass(frozen=True)
class _Texts:
    """Every text a run scores: training texts (expert, then non-expert), then held-out ones
    (expert test, non-expert test, then the task's other texts)."""

    texts: list[str]
    heldout_sources: list[str]
    fit_idx: Tensor
    held_idx: Tensor
    pairs: Tensor
    n_test: int

    @classmethod
    def of(cls, demos: Demonstrations, other_texts: Sequence[str]) -> "_Texts":
        train_e, train_n = demos.texts("train", "expert"), demos.texts("train", "non_expert")
        test_e, test_n = demos.texts("test", "expert"), demos.texts("test", "non_expert")
        sources = (
            ["expert_test"] * len(test_e)
            + ["non_expert_test"] * len(test_n)
            + ["other"] * len(other_texts)
        )
        texts = train_e + train_n + test_e + test_n + list(other_texts)
        n_tr = len(train_e)
        return cls(
            texts=texts,
            heldout_sources=sources,
            fit_idx=torch.arange(2 * n_tr),
            held_idx=torch.arange(2 * n_tr, len(texts)),
            pairs=torch.stack([torch.arange(n_tr), torch.arange(n_tr, 2 * n_tr)], dim=1),
            n_test=len(test_e),
        )

    @property
    def heldout_texts(self) -> list[str]:
        return self.texts[int(self.fit_idx.numel()) :]


@dataclass
class _Best:
    """The best (seed, epoch) so far, by [`run_key`][lfp_mech.irl.evaluation.run_key]."""

    row: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Tensor] = field(default_factory=dict)
    scores: Tensor = field(default_factory=lambda: torch.zeros(0))
    calibration: dict[str, float] = field(default_factory=lambda: {"threshold": 0.0, "scale": 1.0})

    def offer(self, row: dict[str, Any], rm: RewardModel, held: Tensor, fit: Tensor) -> None:
        """Keep ``row`` (and the model's state, held-out and calibration) if it is better."""
        if self.row and run_key(row) <= run_key(self.row):
            return
        self.row, self.state, self.scores = row, rm.trainable_state(), held.clone()
        spread = float(fit.std()) if len(fit) > 1 else 1.0
        self.calibration = {"threshold": row["threshold"], "scale": spread if spread > 0 else 1.0}


def run_seeds(
    rm: RewardModel,
    demos: Demonstrations,
    true_reward: Callable[[Sequence[str]], Tensor],
    config: IRLConfig,
    *,
    other_texts: Sequence[str] = (),
    cache_path: str | os.PathLike[str] | None = None,
    track: str | None = None,
) -> IRLRuns:
    """Train ``config.n_seeds`` reward models for ``config.n_epochs`` each; evaluate every epoch.

    The frozen part runs once for all texts
    ([`RewardModel.encode`][lfp_mech.irl.reward_model.RewardModel.encode], cached at ``cache_path``
    as safetensors when given and reused while texts and base weights match); every seed restarts
    from the base weights with a head drawn from ``config.seed + seed``. Held-out texts: expert test
    completions, non-expert test completions, then ``other_texts``. On return ``rm`` holds the best
    run's weights and calibration. With tracking active ([`lfp_mech.tracking`][lfp_mech.tracking])
    each seed logs its epochs to the tracker ``<track>/seed_<seed>``."""
    data = _Texts.of(demos, other_texts)
    t0 = time.perf_counter()
    true_all = true_reward(data.texts).float().cpu()
    inputs = encode_cached(rm, data.texts, config.eval_batch_size, cache_path)
    timings = {"encode_s": time.perf_counter() - t0}
    rm.reset(config.seed)
    features = rm.pooled_features(inputs, batch_size=config.eval_batch_size)
    rm.fit_readout_scale(features[data.fit_idx])
    ceiling = supervised_ceiling(
        features[data.fit_idx], true_all[data.fit_idx], features[data.held_idx],
        true_all[data.held_idx],
    ).as_dict()  # fmt: skip
    logger.info("supervised ceiling (true labels, same features): acc %.3f", ceiling["acc"])
    rows: list[dict[str, Any]] = []
    final_scores = torch.zeros(config.n_seeds, len(data.held_idx))
    best = _Best()
    t1 = time.perf_counter()
    for seed in tqdm(range(config.n_seeds), desc="IRL seeds", disable=None):
        name = f"{track}/seed_{config.seed + seed}" if track else None
        with open_tracker(name, asdict(config)) if name else Tracker() as tracker:
            seed_rows, final_scores[seed] = _train_seed(
                rm, inputs, data, true_all, config, config.seed + seed, best, tracker
            )
        rows += seed_rows
    timings["train_eval_s"] = time.perf_counter() - t1
    timings["per_epoch_s"] = timings["train_eval_s"] / (config.n_seeds * config.n_epochs)
    rm.load_trainable_state(best.state)
    rm.calibration = dict(best.calibration)
    return IRLRuns(
        rows=rows,
        heldout_texts=data.heldout_texts,
        heldout_sources=data.heldout_sources,
        heldout_true=true_all[data.held_idx],
        train_true=true_all[data.fit_idx],
        final_scores=final_scores,
        best=best.row,
        best_state=best.state,
        best_scores=best.scores,
        best_calibration=best.calibration,
        timings=timings,
        supervised_ceiling=ceiling,
    )


def _train_seed(
    rm: RewardModel,
    inputs: RewardInputs,
    data: _Texts,
    true_all: Tensor,
    config: IRLConfig,
    run_seed: int,
    best: _Best,
    tracker: Tracker,
) -> tuple[list[dict[str, Any]], Tensor]:
    """One seed: reset the head, train ``n_epochs`` and evaluate each; its rows and the
    held-out scores after its last epoch."""
    rm.reset(run_seed)
    optimizer = torch.optim.Adam([p for p in rm.parameters() if p.requires_grad], lr=config.lr)
    generator = torch.Generator().manual_seed(run_seed)
    rows: list[dict[str, Any]] = []
    held = torch.zeros(0)
    for epoch in range(1, config.n_epochs + 1):
        loss, pair_acc = train_epoch(rm, optimizer, inputs, data.pairs, config, generator)
        scores = rm.score_inputs(inputs, batch_size=config.eval_batch_size)
        row = _epoch_row(scores, data, true_all, config)
        row = {"seed": run_seed, "epoch": epoch, **row}
        row |= {"train_loss": loss, "train_pair_acc": pair_acc}
        rows.append(row)
        tracker.log_scalars(epoch, _epoch_scalars(row))
        logger.info(
            "seed %d epoch %d: acc %.3f f1 %.3f spearman %.3f",
            run_seed, epoch, row["acc"], row["f1"], row["spearman"],
        )  # fmt: skip
        held = scores[data.held_idx]
        best.offer(row, rm, held, scores[data.fit_idx])
    return rows, held


def _epoch_scalars(row: dict[str, Any]) -> dict[str, Any]:
    """What a tracker records per epoch: training loss and pair accuracy, held-out metrics."""
    heldout = {f"heldout/{key}": row[key] for key in ("acc", "f1", "spearman", "pair_acc")}
    return {"train/loss": row["train_loss"], "train/pair_acc": row["train_pair_acc"], **heldout}


def _epoch_row(
    scores: Float[Tensor, " text"], data: _Texts, true_all: Tensor, config: IRLConfig
) -> dict[str, Any]:
    """Held-out metrics of one epoch's scores, the threshold fitted on the training texts."""
    fit_labels = true_all[data.fit_idx] > 0
    threshold = fit_threshold(scores[data.fit_idx], fit_labels, config.threshold_method)
    held, held_true, n_te = scores[data.held_idx], true_all[data.held_idx], data.n_test
    return {
        **irl_metrics(held, held_true, threshold).as_dict(),
        "pair_acc": float((held[:n_te] > held[n_te : 2 * n_te]).float().mean()),
        **demo_metrics(held[: 2 * n_te], held_true[: 2 * n_te], threshold),
    }
