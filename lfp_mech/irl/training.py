"""Training reward models: the max-margin objective, a step, an epoch, and seeds × epochs.

The IRL paper's objective ([`max_margin_loss`][lfp_mech.irl.training.max_margin_loss]):
``x = R(expert) - R(non-expert)``, ``loss = -x if x > 0 else -2x`` (violations cost twice), averaged
over the batch; Adam, ``zero_grad`` before every step (the original code forgot it, so its gradients
accumulated), gradient-norm clipping. [`run_seeds`][lfp_mech.irl.training.run_seeds] trains many
seeds (head initialisation and data order) × epochs and evaluates every epoch: different reward
models of similar accuracy are the non-identifiability the paper studies."""

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lfp_mech.irl.config import IRLConfig
from lfp_mech.irl.controls import supervised_ceiling
from lfp_mech.irl.demonstrations import Demonstrations
from lfp_mech.irl.evaluation import demo_metrics, fit_threshold, irl_metrics, val_key
from lfp_mech.irl.inputs import RewardInputs, concat_inputs, encode_cached
from lfp_mech.irl.reward_model import RewardModel
from lfp_mech.tracking import Tracker, open_tracker

__all__ = [
    "VAL_METRICS",
    "IRLRuns",
    "max_margin_loss",
    "run_seeds",
    "train_epoch",
    "train_step",
]

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

    ``epoch_rows``: one dict per (seed, epoch) with its *validation* metrics (``val_*``, the
    threshold fitted on the validation texts) and ``train_loss`` / ``train_pair_acc`` — what
    every choice is made on. ``rows``: one dict per seed, at the epoch chosen on validation,
    with the held-out [`METRICS`][lfp_mech.irl.evaluation.METRICS] (scored once, with that
    epoch's validation threshold) and the ``val_*`` metrics that chose it. ``final_scores[i]``:
    held-out IRL rewards of seed ``i``. ``best``: the seed with the best validation key
    ([`val_key`][lfp_mech.irl.evaluation.val_key]); ``best_state`` / ``best_scores`` /
    ``best_calibration`` belong to it. Without held-out scoring (``score_heldout=False``, the
    selection grid) ``rows`` carry the validation metrics only and the held-out fields are empty.
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
    epoch_rows: list[dict[str, Any]] = field(default_factory=list)
    """Validation metrics per (seed, epoch)."""
    val_texts: list[str] = field(default_factory=list)
    """The validation texts (expert val completions, non-expert ones, the extra texts); the
    training texts when there are none."""


@dataclass(frozen=True)
class _Texts:
    """Every text a run scores: training texts (expert, then non-expert), validation texts
    (expert and non-expert validation completions, then the extra validation texts), then
    held-out ones (expert test, non-expert test, then the task's other texts). Without
    validation texts the training texts stand in for them."""

    texts: list[str]
    heldout_sources: list[str]
    fit_idx: Tensor
    val_idx: Tensor
    held_idx: Tensor
    pairs: Tensor
    n_test: int

    @classmethod
    def of(
        cls, demos: Demonstrations, other_texts: Sequence[str], val_texts: Sequence[str] = ()
    ) -> "_Texts":
        train_e, train_n = demos.texts("train", "expert"), demos.texts("train", "non_expert")
        val = demos.texts("val", "expert") + demos.texts("val", "non_expert") + list(val_texts)
        test_e, test_n = demos.texts("test", "expert"), demos.texts("test", "non_expert")
        sources = (
            ["expert_test"] * len(test_e)
            + ["non_expert_test"] * len(test_n)
            + ["other"] * len(other_texts)
        )
        texts = train_e + train_n + val + test_e + test_n + list(other_texts)
        n_tr, n_fv = len(train_e), 2 * len(train_e) + len(val)
        return cls(
            texts=texts,
            heldout_sources=sources,
            fit_idx=torch.arange(2 * n_tr),
            val_idx=torch.arange(2 * n_tr, n_fv) if val else torch.arange(2 * n_tr),
            held_idx=torch.arange(n_fv, len(texts)),
            pairs=torch.stack([torch.arange(n_tr), torch.arange(n_tr, 2 * n_tr)], dim=1),
            n_test=len(test_e),
        )

    @property
    def n_fit_val(self) -> int:
        """Training + validation texts (what the epochs score)."""
        return len(self.texts) - int(self.held_idx.numel())

    @property
    def heldout_texts(self) -> list[str]:
        return self.texts[self.n_fit_val :]


@dataclass
class _Chosen:
    """A seed's epoch with the best validation key, its weights and its calibration."""

    row: dict[str, Any]
    state: dict[str, Tensor]
    calibration: dict[str, float]


def _encode(
    rm: RewardModel,
    data: _Texts,
    config: IRLConfig,
    cache_path: str | os.PathLike[str] | None,
    score_heldout: bool,
) -> tuple[RewardInputs, RewardInputs | None]:
    """Training + validation inputs (cached at ``cache_path``) and, with ``score_heldout``, the
    held-out inputs (cached beside it, ``*_heldout``)."""
    fit_val = encode_cached(rm, data.texts[: data.n_fit_val], config.eval_batch_size, cache_path)
    if not score_heldout or not data.heldout_texts:
        return fit_val, None
    held_cache = None
    if cache_path is not None:
        path = Path(cache_path)
        held_cache = path.with_name(f"{path.stem}_heldout{path.suffix}")
    held = encode_cached(rm, data.heldout_texts, config.eval_batch_size, held_cache)
    return fit_val, held


def run_seeds(
    rm: RewardModel,
    demos: Demonstrations,
    true_reward: Callable[[Sequence[str]], Tensor],
    config: IRLConfig,
    *,
    other_texts: Sequence[str] = (),
    val_texts: Sequence[str] = (),
    cache_path: str | os.PathLike[str] | None = None,
    track: str | None = None,
    score_heldout: bool = True,
) -> IRLRuns:
    """Train ``config.n_seeds`` reward models for up to ``config.n_epochs`` each; choose on
    validation, score the held-out texts once.

    Every epoch is scored on the validation texts (the demonstrations' "val" split and
    ``val_texts``; the training texts if there are none) with a threshold fitted there; each
    seed keeps the epoch with the best [`val_key`][lfp_mech.irl.evaluation.val_key] and only
    that model scores the held-out texts (expert test completions, non-expert test completions,
    then ``other_texts``), with its validation threshold. The frozen part runs once per text
    ([`RewardModel.encode`][lfp_mech.irl.reward_model.RewardModel.encode], cached at
    ``cache_path`` as safetensors); every seed restarts from the base weights with a head drawn
    from ``config.seed + seed``. On return ``rm`` holds the run selected on validation. With
    tracking active ([`lfp_mech.tracking`][lfp_mech.tracking]) each seed logs its epochs to the
    tracker ``<track>/seed_<seed>``."""
    data = _Texts.of(demos, other_texts, val_texts)
    if not score_heldout:
        data = dataclasses.replace(
            data, texts=data.texts[: data.n_fit_val], held_idx=torch.arange(0)
        )
    t0 = time.perf_counter()
    true_all = true_reward(data.texts).float().cpu()
    fit_val, held = _encode(rm, data, config, cache_path, score_heldout)
    timings = {"encode_s": time.perf_counter() - t0}
    ceiling = _fit_scale_and_ceiling(rm, fit_val, held, data, true_all, config)
    rows: list[dict[str, Any]] = []
    epoch_rows: list[dict[str, Any]] = []
    final_scores = torch.zeros(config.n_seeds, len(data.held_idx))
    best: _Chosen | None = None
    t1 = time.perf_counter()
    for seed in tqdm(range(config.n_seeds), desc="IRL seeds", disable=None):
        name = f"{track}/seed_{config.seed + seed}" if track else None
        with open_tracker(name, asdict(config)) if name else Tracker() as tracker:
            seed_rows, chosen = _train_seed(
                rm, fit_val, data, true_all, config, config.seed + seed, tracker
            )
        epoch_rows += seed_rows
        row = dict(chosen.row)
        if held is not None:
            rm.load_trainable_state(chosen.state)
            final_scores[seed] = rm.score_inputs(held, batch_size=config.eval_batch_size)
            row = _heldout_row(final_scores[seed], data, true_all, chosen.row)
        rows.append(row)
        if best is None or val_key(row) > val_key(best.row):
            best = _Chosen(row, chosen.state, chosen.calibration)
    assert best is not None
    timings["train_eval_s"] = time.perf_counter() - t1
    timings["per_epoch_s"] = timings["train_eval_s"] / (config.n_seeds * config.n_epochs)
    rm.load_trainable_state(best.state)
    rm.calibration = dict(best.calibration)
    best_index = rows.index(best.row)
    return IRLRuns(
        rows=rows,
        heldout_texts=data.heldout_texts,
        heldout_sources=data.heldout_sources if held is not None else [],
        heldout_true=true_all[data.held_idx],
        train_true=true_all[data.fit_idx],
        final_scores=final_scores,
        best=best.row,
        best_state=best.state,
        best_scores=final_scores[best_index],
        best_calibration=best.calibration,
        timings=timings,
        supervised_ceiling=ceiling,
        epoch_rows=epoch_rows,
        val_texts=[data.texts[i] for i in data.val_idx.tolist()],
    )


def _fit_scale_and_ceiling(
    rm: RewardModel,
    fit_val: RewardInputs,
    held: RewardInputs | None,
    data: _Texts,
    true_all: Tensor,
    config: IRLConfig,
) -> dict[str, float | int]:
    """Scale the readouts on the training texts; the supervised ceiling on the held-out texts
    (empty without them)."""
    rm.reset(config.seed)
    features = rm.pooled_features(fit_val, batch_size=config.eval_batch_size)
    rm.fit_readout_scale(features[data.fit_idx])
    if held is None:
        return {}
    held_features = rm.pooled_features(held, batch_size=config.eval_batch_size)
    ceiling = supervised_ceiling(
        features[data.fit_idx], true_all[data.fit_idx], held_features, true_all[data.held_idx]
    ).as_dict()
    logger.info("supervised ceiling (true labels, same features): acc %.3f", ceiling["acc"])
    return ceiling


VAL_METRICS = ("acc", "balanced_acc", "f1", "auroc", "spearman")
"""The validation metrics of every epoch (``val_<metric>`` columns)."""


def _train_seed(
    rm: RewardModel,
    inputs: RewardInputs,
    data: _Texts,
    true_all: Tensor,
    config: IRLConfig,
    run_seed: int,
    tracker: Tracker,
) -> tuple[list[dict[str, Any]], _Chosen]:
    """One seed: reset the head, train ``n_epochs`` and score each on validation; its rows and
    the epoch chosen on validation."""
    rm.reset(run_seed)
    optimizer = torch.optim.Adam([p for p in rm.parameters() if p.requires_grad], lr=config.lr)
    generator = torch.Generator().manual_seed(run_seed)
    rows: list[dict[str, Any]] = []
    chosen: _Chosen | None = None
    val_true = true_all[data.val_idx]
    for epoch in range(1, config.n_epochs + 1):
        loss, pair_acc = train_epoch(rm, optimizer, inputs, data.pairs, config, generator)
        scores = rm.score_inputs(inputs, batch_size=config.eval_batch_size)
        val = scores[data.val_idx]
        threshold = fit_threshold(val, val_true > 0, config.threshold_method)
        metrics = irl_metrics(val, val_true, threshold).as_dict()
        row: dict[str, Any] = {"seed": run_seed, "epoch": epoch}
        row |= {f"val_{k}": metrics[k] for k in VAL_METRICS}
        row |= {"threshold": threshold, "train_loss": loss, "train_pair_acc": pair_acc}
        rows.append(row)
        tracker.log_scalars(epoch, _epoch_scalars(row))
        logger.info(
            "seed %d epoch %d: validation acc %.3f auroc %.3f",
            run_seed, epoch, row["val_acc"], row["val_auroc"],
        )  # fmt: skip
        if chosen is None or val_key(row) > val_key(chosen.row):
            fit = scores[data.fit_idx]
            spread = float(fit.std()) if len(fit) > 1 else 1.0
            calibration = {"threshold": threshold, "scale": spread if spread > 0 else 1.0}
            chosen = _Chosen(row, rm.trainable_state(), calibration)
    assert chosen is not None
    return rows, chosen


def _epoch_scalars(row: dict[str, Any]) -> dict[str, Any]:
    """What a tracker records per epoch: training loss and pair accuracy, validation metrics."""
    val = {f"validation/{key}": row[f"val_{key}"] for key in VAL_METRICS}
    return {"train/loss": row["train_loss"], "train/pair_acc": row["train_pair_acc"], **val}


def _heldout_row(
    held: Float[Tensor, " text"], data: _Texts, true_all: Tensor, chosen: dict[str, Any]
) -> dict[str, Any]:
    """Held-out metrics of a seed's chosen epoch (its validation threshold), then the
    validation metrics and training figures that chose it."""
    held_true, n_te, threshold = true_all[data.held_idx], data.n_test, chosen["threshold"]
    head = {"seed": chosen["seed"], "epoch": chosen["epoch"]}
    metrics: dict[str, Any] = irl_metrics(held, held_true, threshold).as_dict()
    if n_te:
        metrics["pair_acc"] = float((held[:n_te] > held[n_te : 2 * n_te]).float().mean())
        metrics |= demo_metrics(held[: 2 * n_te], held_true[: 2 * n_te], threshold)
    else:
        metrics |= {
            k: float("nan") for k in ("pair_acc", "acc_demos", "f1_demos", "spearman_demos")
        }
    rest = {k: v for k, v in chosen.items() if k not in head and k != "threshold"}
    return head | metrics | rest
