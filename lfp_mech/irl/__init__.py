"""IRL reward reconstruction: recover the reward an RLHF'd model was trained on from its behaviour.

This is the method of Joselowitz et al., "Insights from the Inverse: Reconstructing LLM Training
Goals through Inverse RL" (arXiv 2410.12491), written so that it runs offline on a 2-core CPU.

**What.** An RLHF'd ("expert") policy and the model it started from ("non-expert") answer the
same prompts. Whatever the expert does differently is evidence of the reward it was trained on.
IRL fits a reward model ``R`` (a language model with a linear head on the last token) that scores
the expert's texts above the non-expert's, then checks how well ``R`` agrees with the *true*
reward on texts it never saw.

**How, step by step** (paper section → function):

1. *Demonstrations* — greedy completions of train and test prompts by both models
   (:func:`generate_demonstrations`; batched ``generate`` with left padding and the KV cache,
   cached as JSONL in the run directory and reused when the models, prompts and settings match).
2. *Reward model* — :class:`RewardModel`: the base model's decoder plus ``nn.Linear(d_model, 1)``
   on the last non-padding token (the paper; inputs are right-padded, so that token is at
   ``attention_mask.sum() - 1`` and positions are ``0..len-1`` whatever the batch), or on the
   sum (``pooling="sum"``, the CPU default) or mean of the token states: a per-token reward
   added up, as a lexicon reward is, where a small model's last token carries little of a
   whole text's sentiment. ``n_layers`` keeps only the first blocks, so the head reads an
   earlier residual stream (CPU default: 2 blocks, where words are still linearly readable).
3. *Max-margin objective* — :func:`max_margin_loss`: ``x = R(expert) - R(non-expert)``,
   ``loss = -x if x > 0 else -2x`` (violations cost twice), averaged over the batch; Adam,
   ``zero_grad`` before every step (the original code forgot it, so its gradients accumulated),
   gradient-norm clipping.
4. *Evaluation* — :func:`evaluate_reward_model` / :func:`irl_metrics`: the true reward is
   binarized at 0 ("positive sentiment" / "non-toxic"); the IRL reward is binarized at a threshold
   fitted on the *training* texts (the max-margin loss only sees differences of rewards, so the
   offset of ``R`` is not identifiable and a threshold of 0 is arbitrary — it is reported too, as
   ``acc_zero``/``f1_zero``). Accuracy and F1 (scikit-learn), Pearson, Spearman and Kendall
   correlations (SciPy) on held-out texts: both models' test completions plus other texts of the
   task.
5. *Non-identifiability* — :func:`run_seeds`: many seeds (head initialisation and data order) ×
   epochs give different reward models of similar accuracy; the per-run table, heatmaps
   (:mod:`lfp_mech.plots.irl`) and a summary with mean ± std, median and best. The paper reported
   the *best* of 78 runs (80.4 % accuracy, mean ≈ 0.61 ± 0.10): the best is selected on the
   held-out texts and therefore optimistic; the median over seeds is the honest headline.
6. *Controls* — :func:`supervised_ceiling` (a logistic probe told the true labels, on the same
   features: what a linear head on this representation can reach), :func:`log_ratio_reward`
   (the policy's implicit reward ``log π/π_ref``, which reads probabilities instead of texts)
   and, for the lexicon reward, :func:`expressed_lexicon_bound` (the true lexicon kept on the
   words whose use the expert moved: the part of the reward its behaviour shows).
7. *IRL-RLHF* — :func:`irl_rlhf`: train a new policy on the recovered reward with
   ``lfp_mech.rlhf.train_policy`` and compare base / true-reward / IRL-reward policies under the
   true reward (:func:`evaluate_policies`).

**Training modes.** ``mode="full"`` fine-tunes the whole LM (the paper). ``mode="cached"`` (the
CPU default) freezes the first ``K = n_layers - n_trainable_blocks`` decoder blocks, runs them
*once* per text and caches the residual stream entering block ``K`` (safetensors, with the
attention mask); every seed and epoch then trains only the top blocks, the final norm and the
head on top of the cache. The rewards of the two paths are identical for the same weights (checked
on the first batch of every cache build). ``n_trainable_blocks=0`` caches the final normalised
hidden state pooled as configured and trains the linear head alone ("head-only", the default).

**Tasks** (:data:`TASKS`): ``"vader"`` (true reward :func:`lfp_mech.rewards.vader_reward`,
prompts "reviews") and ``"toxicity"`` (true reward :func:`lfp_mech.rewards.toxicity_reward`,
offline ground truth ``alt-profanity-check``, prompts "toxicity").
"""

import contextlib
import copy
import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from einops import einsum, rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lfp_mech._io import (
    atomic_dir,
    atomic_path,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
    write_text,
)
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.irl.config import POOLINGS, IRLConfig, Mode, Pooling

logger = logging.getLogger(__name__)

__all__ = [
    "TASKS",
    "Demonstrations",
    "IRLConfig",
    "IRLEval",
    "IRLRuns",
    "IRLTask",
    "RewardInputs",
    "RewardModel",
    "evaluate_policies",
    "evaluate_reward_model",
    "expressed_lexicon_bound",
    "fit_threshold",
    "generate_completions",
    "generate_demonstrations",
    "irl_metrics",
    "irl_rlhf",
    "load_reward_model",
    "log_ratio_reward",
    "max_margin_loss",
    "reward_model_fn",
    "run_irl_stage",
    "run_seeds",
    "save_reward_model",
    "summarize_runs",
    "supervised_ceiling",
    "task_texts",
]

Split = Literal["train", "test"]
Role = Literal["expert", "non_expert"]
ModelLike = str | os.PathLike[str] | tuple[PreTrainedModel, PreTrainedTokenizerBase]
"""A registered model name / HF checkpoint dir (loaded with ``load_hf_model``), or (model, tokenizer)."""

ROLES: tuple[Role, Role] = ("expert", "non_expert")
SPLITS: tuple[Split, Split] = ("train", "test")
METRICS = (
    "acc",
    "f1",
    "acc_zero",
    "f1_zero",
    "pearson",
    "spearman",
    "kendall",
    "pair_acc",
    "acc_demos",
    "f1_demos",
    "spearman_demos",
)
"""Per-run held-out metrics (see :class:`IRLEval`). ``pair_acc``: fraction of test prompts whose
expert completion is scored above the non-expert one; ``*_demos``: the metric on the two models'
test completions only (without the task's other texts)."""
_FORMAT = "lfp_mech.irl.RewardModel/1"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class IRLTask:
    """A task: the true reward (name for :func:`lfp_mech.rewards.get_reward`) and its prompts."""

    name: str
    reward: str
    prompt_set: str
    other_texts: Literal["triples", "prompts"]
    """Where the extra held-out texts come from (see :func:`task_texts`)."""
    report_toxicity: bool = False
    """Add the toxicity probability to the policy table (toxicity task)."""


TASKS: dict[str, IRLTask] = {
    "vader": IRLTask("vader", reward="vader", prompt_set="reviews", other_texts="triples"),
    "toxicity": IRLTask(
        "toxicity",
        reward="toxicity",
        prompt_set="toxicity",
        other_texts="prompts",
        report_toxicity=True,
    ),
}


def _task(task: str | IRLTask) -> IRLTask:
    if isinstance(task, IRLTask):
        return task
    if task not in TASKS:
        raise ConfigError(f"unknown IRL task {task!r}; tasks: {', '.join(TASKS)}")
    return TASKS[task]


# --------------------------------------------------------------------------- demonstrations


@dataclass(frozen=True)
class Demonstrations:
    """Completions of the same prompts by the expert (RLHF'd) and non-expert (base) models.

    ``completions[(split, role)][i]`` continues ``prompts[split][i]``; :meth:`texts` joins them.
    """

    prompts: dict[str, list[str]]
    completions: dict[tuple[str, str], list[str]]

    def __post_init__(self) -> None:
        for split in SPLITS:
            for role in ROLES:
                got = len(self.completions[(split, role)])
                if got != len(self.prompts[split]):
                    raise ValueError(
                        f"{role} has {got} {split} completions for {len(self.prompts[split])} "
                        "prompts"
                    )

    def texts(self, split: Split, role: Role) -> list[str]:
        """Prompt + completion, the texts the reward model scores."""
        return [
            p + c for p, c in zip(self.prompts[split], self.completions[(split, role)], strict=True)
        ]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-able row per completion (the JSONL format)."""
        return [
            {"split": s, "role": r, "index": i, "prompt": p, "completion": c}
            for s in SPLITS
            for r in ROLES
            for i, (p, c) in enumerate(zip(self.prompts[s], self.completions[(s, r)], strict=True))
        ]

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> "Demonstrations":
        prompts: dict[str, dict[int, str]] = {s: {} for s in SPLITS}
        comps: dict[tuple[str, str], dict[int, str]] = {(s, r): {} for s in SPLITS for r in ROLES}
        for row in rows:
            prompts[row["split"]][int(row["index"])] = row["prompt"]
            comps[(row["split"], row["role"])][int(row["index"])] = row["completion"]
        return cls(
            prompts={s: [v[i] for i in sorted(v)] for s, v in prompts.items()},
            completions={k: [v[i] for i in sorted(v)] for k, v in comps.items()},
        )


def generate_demonstrations(
    expert: ModelLike,
    non_expert: ModelLike,
    prompts_train: Sequence[str],
    prompts_test: Sequence[str],
    config: IRLConfig,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Demonstrations:
    """Complete the train and test prompts with both models (greedy by default, as the paper).

    With ``cache_dir``, the result is written to ``demonstrations.jsonl`` (+ a ``.meta.json``
    holding its key) and reused by later calls whose models (path + weight-file stamps, or a
    parameter checksum for in-memory models), prompts and generation settings match.
    """
    prompts = {"train": list(prompts_train), "test": list(prompts_test)}
    if not prompts["train"] or not prompts["test"]:
        raise ValueError("generate_demonstrations needs at least one train and one test prompt")
    key = _sha(
        {
            "expert": _model_stamp(expert),
            "non_expert": _model_stamp(non_expert),
            "prompts": prompts,
            "generation": config.generation_key(),
        }
    )
    path = meta_path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "demonstrations.jsonl"
        meta_path = Path(cache_dir) / "demonstrations.meta.json"
        if path.exists() and meta_path.exists() and read_json(meta_path).get("key") == key:
            logger.info("reusing demonstrations from %s", path)
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            return Demonstrations.from_rows(rows)
    completions: dict[tuple[str, str], list[str]] = {}
    everything = prompts["train"] + prompts["test"]
    for role, model_like in zip(ROLES, (expert, non_expert), strict=True):
        model, tokenizer = _as_hf(model_like, config.device)
        logger.info("generating %d %s completions", len(everything), role)
        out = generate_completions(
            model,
            tokenizer,
            everything,
            max_new_tokens=config.max_new_tokens,
            do_sample=config.do_sample,
            temperature=config.temperature,
            top_p=config.top_p,
            batch_size=config.gen_batch_size,
            seed=config.seed,
            device=config.device,
        )
        completions[("train", role)] = out[: len(prompts["train"])]
        completions[("test", role)] = out[len(prompts["train"]) :]
        del model
    demos = Demonstrations(prompts=prompts, completions=completions)
    if path is not None and meta_path is not None:
        _write_jsonl(path, demos.rows())
        write_json(
            meta_path,
            {
                "key": key,
                "generation": config.generation_key(),
                "expert": _model_stamp(expert),
                "non_expert": _model_stamp(non_expert),
            },
        )
    return demos


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 24,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> list[str]:
    """Completions (new text only, special tokens dropped) of ``prompts``, in input order.

    Prompts are sorted by length and generated in left-padded batches with the KV cache; with
    ``do_sample`` each batch draws from its own seeded RNG (``seed + batch start``), so results
    do not depend on what else ran before.
    """
    from lfp_mech.models import generate_texts

    completions, _ = generate_texts(
        model.to(device),
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    return completions


def task_texts(
    task: str | IRLTask, n: int, *, exclude: Sequence[str] = (), seed: int = 0
) -> list[str]:
    """``n`` extra held-out texts of ``task`` (fewer if the offline set is smaller).

    VADER: the positive, neutral and negative variants of held-out contrastive review sentences
    (:func:`lfp_mech.data.make_triples`, ``split="test"``) — texts whose true reward spans both
    signs. Toxicity: prompts of the task not in ``exclude`` (test split first).
    """
    from lfp_mech import data

    spec = _task(task)
    if n <= 0:
        return []
    if spec.other_texts == "triples":
        triples = data.make_triples(math.ceil(n / 3), seed=seed, split="test")
        return [t for triple in triples for t in triple.texts][:n]
    used = set(exclude)
    pool = [
        p
        for split in ("test", "train")
        for p in data.load_prompts(spec.prompt_set, split)
        if p not in used
    ]
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(pool))[:n] if pool else []
    return [pool[i] for i in sorted(picked)]


# --------------------------------------------------------------------------- reward model


@dataclass
class RewardInputs:
    """What the trainable part of a :class:`RewardModel` reads, for a list of texts.

    ``kind``: "tokens" (``values``: input ids ``[text pos]``, full mode), "hidden" (residual
    stream entering the first trainable block, ``[text pos d_model]``) or "pooled" (the pooled
    readouts the head reads, ``[text readout*d_model]``, head-only). Rows are
    right-padded; ``attention_mask`` is ``[text pos]`` (all ones ``[text 1]`` for "pooled").
    """

    kind: Literal["tokens", "hidden", "pooled"]
    values: Tensor
    attention_mask: Tensor

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def select(self, index: Int[Tensor, "sel"]) -> "RewardInputs":  # noqa: F821
        """Rows ``index``, cut to the longest selected row."""
        mask = self.attention_mask[index]
        if self.kind == "pooled":
            return RewardInputs(self.kind, self.values[index], mask)
        width = max(int(mask.sum(-1).max()), 1)
        return RewardInputs(self.kind, self.values[index, :width], mask[:, :width])

    def to(self, device: str | torch.device) -> "RewardInputs":
        return RewardInputs(self.kind, self.values.to(device), self.attention_mask.to(device))

    def save(self, path: str | os.PathLike[str], key: str) -> Path:
        return save_tensors(
            path,
            {"values": self.values, "attention_mask": self.attention_mask},
            metadata={"kind": self.kind, "key": key},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], key: str) -> "RewardInputs | None":
        """The cache at ``path`` if it was written with ``key``, else None."""
        from safetensors import safe_open

        if not Path(path).exists():
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("key") != key:
            return None
        tensors = load_tensors(path)
        return cls(meta["kind"], tensors["values"], tensors["attention_mask"])  # type: ignore[arg-type]


class RewardModel(nn.Module):
    """A decoder LM with a linear head on its pooled token states: ``R(text) -> scalar``.

    The head reads one or two *readouts*. One: the ``pooling`` ("last" token, "mean" or "sum")
    of the final-normed last hidden state. Two (``context_layer`` set): the ``pooling`` of the
    residual stream after block ``readout_layer`` and the mean of the residual stream after
    block ``context_layer`` (raw, as a probe reads it), each divided by its RMS over the
    training texts (:meth:`fit_readout_scale`) so neither dominates the head's updates by its
    magnitude.

    ``mode="full"``: every parameter trains. ``mode="cached"``: decoder blocks ``0..K-1``
    (``K = n_layers - n_trainable_blocks``) are frozen and their output is computed once per
    text (:meth:`encode`); blocks ``K..``, the final norm and the head train. Inputs get the
    tokenizer's BOS (or EOS) prepended, are right-padded and truncated to ``max_length``.

    Build it with :meth:`from_base`; ``calibration`` (``threshold``, ``scale``) maps raw
    rewards to ``(R - threshold) / scale`` in :func:`reward_model_fn`.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        base_model: str,
        mode: Mode = "cached",
        n_trainable_blocks: int = 2,
        max_length: int = 192,
        pooling: Pooling = "last",
        readout_layer: int | None = None,
        context_layer: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling: Pooling = pooling
        self.backbone = backbone.eval()
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.mode: Mode = mode
        self.max_length = max_length
        d_model = int(backbone.config.hidden_size)
        self.n_layers = int(backbone.config.num_hidden_layers)
        if mode == "cached" and not 0 <= n_trainable_blocks <= self.n_layers:
            raise ConfigError(
                f"n_trainable_blocks={n_trainable_blocks} out of range: {base_model} has "
                f"{self.n_layers} decoder blocks (use 0..{self.n_layers})"
            )
        self.n_trainable_blocks = self.n_layers if mode == "full" else n_trainable_blocks
        self.readout_layer = self.n_layers if readout_layer is None else readout_layer
        self.context_layer = context_layer
        for name, layer in (
            ("readout_layer", self.readout_layer),
            ("context_layer", context_layer),
        ):
            if layer is not None and not 1 <= layer <= self.n_layers:
                raise ConfigError(
                    f"{name}={layer} out of range: the backbone has {self.n_layers} decoder "
                    f"blocks (use 1..{self.n_layers})"
                )
        head_only = mode == "cached" and self.n_trainable_blocks == 0
        if (context_layer is not None or self.readout_layer != self.n_layers) and not head_only:
            raise ConfigError(
                "a readout below the last kept block (context_layer, or n_layers with "
                "context_layer deeper) needs the head-only cached mode; use mode='cached', "
                "n_trainable_blocks=0, or context_layer=None"
            )
        self.head = nn.Linear(len(self.readouts) * d_model, 1)
        self.register_buffer("readout_scale", torch.ones(len(self.readouts)), persistent=False)
        self.calibration: dict[str, float] = {"threshold": 0.0, "scale": 1.0}
        trainable = self._trainable_names()
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable)
        self._initial_state = self.trainable_state()

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_base(
        cls,
        base: ModelLike,
        *,
        mode: Mode = "cached",
        n_trainable_blocks: int = 2,
        max_length: int = 192,
        pooling: Pooling = "last",
        n_layers: int | None = None,
        context_layer: int | None = None,
        device: str = "cpu",
    ) -> "RewardModel":
        """A reward model on ``base``'s decoder (its LM head is dropped; an in-memory model is
        deep-copied so training never changes the caller's model).

        ``n_layers``: the head reads the residual stream after this block, pooled by
        ``pooling``; None: after the last block. ``context_layer``: the head also reads the mean
        residual stream after that block (head-only cached mode; see the class docstring).
        Blocks above both are dropped.
        """
        if isinstance(base, tuple):
            model, tokenizer = copy.deepcopy(base[0]), base[1]
            name = str(getattr(model, "name_or_path", "") or model.config.model_type)
        else:
            model, tokenizer = _as_hf(base, device)
            name = str(base)
        backbone = model.base_model
        keep = n_layers
        if context_layer is not None:
            total = len(_decoder_layers(backbone, name, "context_layer"))
            for arg, layer in (("n_layers", n_layers), ("context_layer", context_layer)):
                if layer is not None and not 1 <= layer <= total:
                    raise ConfigError(
                        f"{arg}={layer} out of range: {name} has {total} decoder blocks "
                        f"(use 1..{total}, or None)"
                    )
            keep = max(n_layers or total, context_layer)
        if keep is not None:
            _keep_first_blocks(backbone, keep, name)
        return cls(
            backbone,
            tokenizer,
            base_model=name,
            mode=mode,
            n_trainable_blocks=n_trainable_blocks,
            max_length=max_length,
            pooling=pooling,
            readout_layer=n_layers,
            context_layer=context_layer,
        ).to(device)

    @property
    def readouts(self) -> list[tuple[int, Pooling]]:
        """What the head reads, in order: (block whose output is read, pooling)."""
        out: list[tuple[int, Pooling]] = [(self.readout_layer, self.pooling)]
        if self.context_layer is not None:
            out.append((self.context_layer, "mean"))
        return out

    @property
    def first_trainable_layer(self) -> int:
        """``K``: blocks ``K..n_layers-1`` train (``n_layers`` = head only)."""
        return self.n_layers - self.n_trainable_blocks

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _trainable_names(self) -> set[str]:
        """Parameter names that train: all (full); top blocks + final norm + head (cached)."""
        names = {n for n, _ in self.named_parameters()}
        if self.mode == "full":
            return names
        keep = {n for n in names if n.startswith("head.")}
        if self.n_trainable_blocks > 0:
            layers, norm, _ = _decoder_parts(self.backbone)
            modules = [norm, *layers[self.first_trainable_layer :]]
            ids = {id(p) for m in modules for p in m.parameters()}
            keep |= {n for n, p in self.named_parameters() if id(p) in ids}
        return keep

    # ---------------------------------------------------------------- state

    def trainable_state(self) -> dict[str, Tensor]:
        """A detached copy of every trainable tensor (what a seed run changes)."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: Mapping[str, Tensor]) -> None:
        params = dict(self.named_parameters())
        missing = {n for n, p in params.items() if p.requires_grad} - set(state)
        if missing:
            raise LfpMechError(f"state misses trainable tensors: {sorted(missing)[:5]} ...")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def reset(self, seed: int) -> None:
        """Restore the trainable weights to the base model's and re-draw the head from ``seed``."""
        self.load_trainable_state(self._initial_state)
        gen = torch.Generator().manual_seed(seed)
        fan_in = self.head.weight.shape[1]
        with torch.no_grad():
            weight = torch.randn(self.head.weight.shape, generator=gen) / math.sqrt(fan_in)
            self.head.weight.copy_(weight)
            self.head.bias.zero_()

    def frozen_fingerprint(self) -> str:
        """sha256 of the frozen parameters: a saved reward model is only valid on the same base."""
        digest = hashlib.sha256()
        for name, param in sorted(self.named_parameters()):
            if not param.requires_grad:
                digest.update(name.encode())
                digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    # ---------------------------------------------------------------- forward

    def tokenize(
        self, texts: Sequence[str]
    ) -> tuple[Int[Tensor, "text pos"], Int[Tensor, "text pos"]]:
        """BOS-prefixed, right-padded token ids and attention mask (truncated to max_length)."""
        return _bos_tokenize(self.tokenizer, texts, self.max_length)

    def forward(self, inputs: RewardInputs) -> Float[Tensor, "text"]:  # noqa: F821
        """Rewards from whatever :meth:`encode` produced (the trainable part only)."""
        inputs = inputs.to(self.device)
        if inputs.kind == "tokens":
            return self.reward_from_tokens(inputs.values, inputs.attention_mask)
        if inputs.kind == "hidden":
            return self.reward_from_hidden(inputs.values, inputs.attention_mask)
        return self.reward_from_pooled(inputs.values)

    def reward_from_tokens(
        self, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch"]:  # noqa: F821
        """The whole model: decoder → pooled readouts → head."""
        return self.reward_from_pooled(self._pooled_readouts(input_ids, attention_mask))

    def reward_from_hidden(
        self,
        hidden: Float[Tensor, "batch pos d_model"],
        attention_mask: Int[Tensor, "batch pos"],
    ) -> Float[Tensor, "batch"]:  # noqa: F821
        """Blocks ``K..`` → final norm → head, from the residual stream entering block ``K``."""
        return self._pool_head(self._top_hidden(hidden, attention_mask), attention_mask)

    def reward_from_pooled(self, pooled: Float[Tensor, "batch feature"]) -> Float[Tensor, "batch"]:  # noqa: F821
        """The head alone, on the pooled readouts (``feature = readout × d_model``, unscaled)."""
        per_readout = rearrange(
            pooled, "batch (readout d) -> batch readout d", readout=len(self.readout_scale)
        )
        scaled = einsum(
            per_readout, self.readout_scale, "batch readout d, readout -> batch readout d"
        )
        return rearrange(self.head(rearrange(scaled, "b r d -> b (r d)")), "batch 1 -> batch")

    @torch.no_grad()
    def fit_readout_scale(self, features: Float[Tensor, "text feature"]) -> None:  # noqa: F821
        """Divide each readout by its RMS over ``features`` (the training texts' pooled readouts).

        Only with two readouts: a summed readout is ~100x larger than a mean one, so with one
        Adam learning rate it would move the reward far more per step and the other would not
        be learnt. A single readout keeps scale 1.
        """
        if len(self.readouts) == 1:
            return
        per_readout = rearrange(
            features.float(), "text (readout d) -> readout (text d)", readout=len(self.readouts)
        )
        rms = per_readout.pow(2).mean(-1).sqrt().clamp_min(1e-6)
        self.readout_scale.copy_((1.0 / rms).to(self.readout_scale))

    def _pooled_readouts(
        self, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch feature"]:
        """The backbone's pooled readouts, concatenated (before readout scaling).

        One readout: the final-normed last hidden state (as HF sequence-classification heads
        read it). Two: the raw residual stream after each readout block, captured by forward
        hooks (the final norm belongs to the last block, not to either readout).
        """
        if len(self.readouts) == 1:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return self._pool(out.last_hidden_state, attention_mask)
        blocks = _decoder_layers(self.backbone, self.base_model, "context_layer")
        with _capture_block_outputs(blocks, [layer for layer, _ in self.readouts]) as resid:
            self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        pooled = [self._pool(resid[layer], attention_mask, how) for layer, how in self.readouts]
        return torch.cat(pooled, dim=-1)

    def _pool_head(
        self, hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch"]:  # noqa: F821
        return self.reward_from_pooled(self._pool(hidden, attention_mask))

    def _pool(
        self,
        hidden: Float[Tensor, "batch pos d_model"],
        attention_mask: Int[Tensor, "batch pos"],
        pooling: Pooling | None = None,
    ) -> Float[Tensor, "batch d_model"]:
        pooling = pooling or self.pooling
        if pooling == "last":
            return _last_token(hidden, attention_mask)
        if pooling == "sum":
            return _sum_tokens(hidden, attention_mask)
        return _mean_tokens(hidden, attention_mask)

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, check_tol: float = 1e-3
    ) -> RewardInputs:
        """Run the frozen part once per text: the inputs of the trainable part for ``texts``.

        Texts are batched by length. In "cached" mode the first batch is also scored both ways
        (full model vs cached path); a mismatch above ``check_tol`` (relative) raises, so an
        architecture whose blocks we call wrongly cannot silently train on wrong features.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("encode needs at least one text")
        input_ids, mask = self.tokenize(texts)
        if self.mode == "full":
            return RewardInputs("tokens", input_ids, mask)
        n_features = self.head.weight.shape[1]
        if self.n_trainable_blocks == 0:
            values = torch.zeros(len(texts), n_features)
        else:
            values = torch.zeros(len(texts), input_ids.shape[1], n_features)
        batches = _length_sorted_batches(mask, batch_size, desc="encode")
        for batch, (idx, width) in enumerate(batches):
            ids, m = input_ids[idx, :width].to(self.device), mask[idx, :width].to(self.device)
            if self.n_trainable_blocks == 0:
                values[idx] = self._pooled_readouts(ids, m).cpu()
                continue
            out = self.backbone(
                input_ids=ids, attention_mask=m, use_cache=False, output_hidden_states=True
            )
            hidden = out.hidden_states[self.first_trainable_layer]
            values[idx, :width] = hidden.cpu()
            if batch == 0:
                self._check_cached_path(hidden, m, out.last_hidden_state, check_tol)
        kind = "pooled" if self.n_trainable_blocks == 0 else "hidden"
        mask_out = torch.ones(len(texts), 1, dtype=torch.long) if kind == "pooled" else mask
        return RewardInputs(kind, values, mask_out)

    def _check_cached_path(
        self,
        hidden: Float[Tensor, "batch pos d_model"],
        mask: Int[Tensor, "batch pos"],
        final: Float[Tensor, "batch pos d_model"],
        tol: float,
    ) -> None:
        direct = self._pool(final, mask)
        via_cache = self._pool(self._top_hidden(hidden, mask), mask)
        err = float((direct - via_cache).abs().max() / direct.abs().max().clamp_min(1e-6))
        if err > tol:
            raise LfpMechError(
                f"cached-mode parity failed for {type(self.backbone).__name__} (relative error "
                f"{err:.2e} > {tol}): the top blocks are not called the way the HF model calls "
                "them. Use IRLConfig(mode='full') or n_trainable_blocks=0 for this architecture."
            )

    def _top_hidden(
        self, hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch pos d_model"]:
        """Final normalised hidden states computed from the residual stream entering block K.

        Rebuilds what the HF decoder does around its layers: causal + padding mask
        (``create_causal_mask``), positions ``0..pos-1`` (right padding) and the rotary
        embeddings of ``backbone.rotary_emb``.
        """
        from transformers.masking_utils import create_causal_mask

        layers, norm, rotary = _decoder_parts(self.backbone)
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        causal = create_causal_mask(
            config=self.backbone.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            past_key_values=None,
            position_ids=position_ids,
        )
        position_embeddings = rotary(hidden, position_ids=position_ids)
        for layer in layers[self.first_trainable_layer :]:
            out = layer(
                hidden,
                attention_mask=causal,
                position_ids=position_ids,
                position_embeddings=position_embeddings,
            )
            hidden = out[0] if isinstance(out, tuple) else out
        return norm(hidden)

    @torch.no_grad()
    def score(self, texts: Sequence[str], *, batch_size: int = 32) -> Float[Tensor, "text"]:  # noqa: F821
        """Raw rewards of ``texts`` through the whole model (no cache), in input order."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0)
        input_ids, mask = self.tokenize(texts)
        scores = torch.zeros(len(texts))
        for idx, width in _length_sorted_batches(mask, batch_size):
            scores[idx] = (
                self.reward_from_tokens(
                    input_ids[idx, :width].to(self.device), mask[idx, :width].to(self.device)
                )
                .float()
                .cpu()
            )
        return scores

    @torch.no_grad()
    def pooled_features(
        self, inputs: RewardInputs, *, batch_size: int = 32
    ) -> Float[Tensor, "text feature"]:  # noqa: F821
        """What the linear head reads for each encoded text: the pooled readouts, before
        :meth:`fit_readout_scale`'s scaling."""
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = inputs.select(torch.arange(start, min(start + batch_size, len(inputs))))
            batch = batch.to(self.device)
            if batch.kind == "pooled":
                out.append(batch.values.float().cpu())
                continue
            if batch.kind == "tokens":
                hidden = self.backbone(
                    input_ids=batch.values, attention_mask=batch.attention_mask, use_cache=False
                ).last_hidden_state
            else:
                hidden = self._top_hidden(batch.values, batch.attention_mask)
            out.append(self._pool(hidden, batch.attention_mask).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def score_inputs(self, inputs: RewardInputs, *, batch_size: int = 32) -> Float[Tensor, "text"]:  # noqa: F821
        """Raw rewards of encoded inputs (the cached path), in order."""
        out = [
            self(inputs.select(torch.arange(s, min(s + batch_size, len(inputs))))).float()
            for s in range(0, len(inputs), batch_size)
        ]
        return torch.cat(out).cpu()


def _bos_tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> tuple[Int[Tensor, "text pos"], Int[Tensor, "text pos"]]:
    """BOS-prefixed, right-padded token ids and attention mask (truncated to ``max_length``)."""
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [[first, *tokenizer(t, add_special_tokens=False).input_ids][:max_length] for t in texts]
    width = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def _length_sorted_batches(
    mask: Int[Tensor, "text pos"], batch_size: int, desc: str | None = None
) -> Iterator[tuple[Int[Tensor, "batch"], int]]:  # noqa: F821
    """Row indices of ``mask`` in batches of similar length, shortest first, with each batch's
    width (its longest row), so right-padded inputs can be cut to ``[:, :width]``. ``desc``
    shows a progress bar."""
    order = torch.argsort(mask.sum(-1))
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, disable=None if desc else True, leave=False):
        idx = order[start : start + batch_size]
        yield idx, int(mask[idx].sum(-1).max())


def _last_token(
    hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch d_model"]:
    """The hidden state of each row's last non-padding token (rows are right-padded)."""
    last = attention_mask.sum(-1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _text_token_weights(
    attention_mask: Int[Tensor, "batch pos"], dtype: torch.dtype
) -> Float[Tensor, "batch pos"]:
    """1 on each row's text tokens, 0 on padding and on the BOS position (unless it is alone)."""
    weights = attention_mask.to(dtype).clone()
    weights[:, 0] = torch.where(attention_mask.sum(-1) > 1, 0.0, weights[:, 0])
    return weights


def _sum_tokens(
    hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch d_model"]:
    """Sum of the hidden states over each row's tokens, the BOS position excluded (unless alone)."""
    weights = _text_token_weights(attention_mask, hidden.dtype)
    return einsum(hidden, weights, "batch pos d_model, batch pos -> batch d_model")


def _mean_tokens(
    hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch d_model"]:
    """Mean hidden state over each row's tokens, the BOS position excluded (unless alone)."""
    weights = _text_token_weights(attention_mask, hidden.dtype)
    total = einsum(hidden, weights, "batch pos d_model, batch pos -> batch d_model")
    return total / rearrange(weights.sum(-1), "batch -> batch 1")


def _decoder_layers(backbone: nn.Module, name: str, arg: str) -> nn.ModuleList:
    """``backbone.layers``, or a :class:`ConfigError` saying ``arg`` needs them."""
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"{arg} needs a decoder with a .layers list; {name} ({type(backbone).__name__}) has "
            f"none (use {arg}=None)"
        )
    return layers


@contextlib.contextmanager
def _capture_block_outputs(
    blocks: nn.ModuleList, layers: Sequence[int]
) -> Iterator[dict[int, Tensor]]:
    """While open, ``captured[k]`` receives the residual stream after block ``k`` (the output of
    ``blocks[k - 1]``, TransformerLens's ``blocks.{k-1}.hook_resid_post``) on each forward."""
    captured: dict[int, Tensor] = {}

    def saver(layer: int) -> Callable[..., None]:
        def save(module: nn.Module, args: Any, output: Any) -> None:
            captured[layer] = output[0] if isinstance(output, tuple) else output

        return save

    handles = [blocks[layer - 1].register_forward_hook(saver(layer)) for layer in set(layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _keep_first_blocks(backbone: nn.Module, n_layers: int, name: str) -> None:
    """Drop every decoder block of ``backbone`` above the first ``n_layers`` (in place)."""
    layers = _decoder_layers(backbone, name, "n_layers")
    if not 1 <= n_layers <= len(layers):
        raise ConfigError(
            f"n_layers={n_layers} out of range: {name} has {len(layers)} decoder blocks "
            f"(use 1..{len(layers)}, or None for all)"
        )
    backbone.layers = nn.ModuleList(list(layers)[:n_layers])
    backbone.config.num_hidden_layers = n_layers
    if getattr(backbone.config, "layer_types", None):  # per-block attention kinds, if any
        backbone.config.layer_types = backbone.config.layer_types[:n_layers]


def _decoder_parts(backbone: nn.Module) -> tuple[nn.ModuleList, nn.Module, nn.Module]:
    """(decoder blocks, final norm, rotary embedding) of a Llama-style or GPT-NeoX decoder."""
    layers = getattr(backbone, "layers", None)
    norm = getattr(backbone, "norm", None) or getattr(backbone, "final_layer_norm", None)
    rotary = getattr(backbone, "rotary_emb", None)
    if not isinstance(layers, nn.ModuleList) or norm is None or rotary is None:
        raise ConfigError(
            f"cached mode supports Llama-style and GPT-NeoX decoders (with .layers, a final norm "
            f"and .rotary_emb); {type(backbone).__name__} has not got them. Use "
            "IRLConfig(mode='full') or n_trainable_blocks=0 (head only)."
        )
    return layers, norm, rotary


# --------------------------------------------------------------------------- objective, training


def max_margin_loss(
    r_expert: Float[Tensor, "batch"],  # noqa: F821
    r_non_expert: Float[Tensor, "batch"],  # noqa: F821
) -> Float[Tensor, ""]:
    """The IRL paper's max-margin loss, averaged over the batch.

    ``x = R(expert) - R(non-expert)``; ``loss = -x`` if ``x > 0`` else ``-2x``: the expert is
    pushed above the non-expert, and orderings the wrong way round cost twice as much.
    """
    margin = r_expert - r_non_expert
    return torch.where(margin > 0, -margin, -2.0 * margin).mean()


def _train_step(
    rm: RewardModel,
    optimizer: torch.optim.Optimizer,
    expert: RewardInputs,
    non_expert: RewardInputs,
    grad_clip: float,
) -> tuple[float, float]:
    """One Adam step on a batch of pairs; returns (loss, fraction of pairs ordered right)."""
    optimizer.zero_grad(set_to_none=True)  # the original code forgot this: gradients piled up
    n = len(expert)
    both = _concat(expert, non_expert)
    rewards = rm(both)
    loss = max_margin_loss(rewards[:n], rewards[n:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in rm.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return float(loss.detach()), float((rewards[:n] > rewards[n:]).float().mean())


def _concat(a: RewardInputs, b: RewardInputs) -> RewardInputs:
    if a.kind == "pooled":
        return RewardInputs(
            a.kind, torch.cat([a.values, b.values]), torch.cat([a.attention_mask, b.attention_mask])
        )
    width = max(a.values.shape[1], b.values.shape[1])

    def pad(t: Tensor) -> Tensor:
        extra = width - t.shape[1]
        if extra == 0:
            return t
        shape = (t.shape[0], extra, *t.shape[2:])
        return torch.cat([t, torch.zeros(shape, dtype=t.dtype, device=t.device)], dim=1)

    return RewardInputs(
        a.kind,
        torch.cat([pad(a.values), pad(b.values)]),
        torch.cat([pad(a.attention_mask), pad(b.attention_mask)]),
    )


def _train_epoch(
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
        loss, acc = _train_step(
            rm, optimizer, inputs.select(batch[:, 0]), inputs.select(batch[:, 1]), config.grad_clip
        )
        losses.append(loss)
        accs.append(acc)
        sizes.append(len(batch))
    weights = np.asarray(sizes, dtype=float)
    return float(np.average(losses, weights=weights)), float(np.average(accs, weights=weights))


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class IRLEval:
    """Agreement of an IRL reward with the true reward on held-out texts.

    ``acc``/``f1``: true reward > 0 vs IRL reward > ``threshold`` (fitted on training texts);
    ``acc_zero``/``f1_zero``: the same with IRL threshold 0. F1 of the positive class (true
    reward > 0). Correlations are NaN when either side is constant.
    """

    n: int
    acc: float
    f1: float
    acc_zero: float
    f1_zero: float
    threshold: float
    pearson: float
    spearman: float
    kendall: float
    positive_rate: float
    """Fraction of texts whose true reward is > 0 (the majority-class baseline is
    ``max(positive_rate, 1 - positive_rate)``)."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def fit_threshold(
    irl_scores: Float[Tensor, "text"],  # noqa: F821
    true_labels: Bool[Tensor, "text"],  # noqa: F821
    method: Literal["accuracy", "median"] = "accuracy",
) -> float:
    """The IRL-reward cut that binarizes ``irl_scores`` into ``true_labels``.

    "accuracy": the midpoint between consecutive sorted scores that maximises accuracy (the
    smallest such cut on ties); "median": the median score.
    """
    if irl_scores.numel() == 0:
        raise ValueError("fit_threshold needs at least one score")
    scores = irl_scores.double().cpu()
    if method == "median":
        return float(scores.median())
    if method != "accuracy":
        raise ConfigError(f"unknown threshold method {method!r}; use 'accuracy' or 'median'")
    s, order = torch.sort(scores)
    y = true_labels.cpu()[order]
    n = len(s)
    # cut k: the k lowest are predicted negative, the rest positive (k = 0..n)
    neg_below = torch.cat([torch.zeros(1), torch.cumsum((~y).double(), 0)])
    pos_above = y.sum() - torch.cat([torch.zeros(1), torch.cumsum(y.double(), 0)])
    correct = neg_below + pos_above
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[1:] > s[:-1]  # cannot cut between equal scores
    k = int(torch.argmax(torch.where(valid, correct, torch.full_like(correct, -1.0))))
    if k == 0:
        return float(s[0] - 1.0)
    if k == n:
        return float(s[-1] + 1.0)
    return float((s[k - 1] + s[k]) / 2)


def irl_metrics(
    irl_scores: Float[Tensor, "text"],  # noqa: F821
    true_scores: Float[Tensor, "text"],  # noqa: F821
    threshold: float,
) -> IRLEval:
    """Accuracy/F1 of the binarized rewards and their correlations (see :class:`IRLEval`)."""
    from scipy import stats
    from sklearn.metrics import accuracy_score, f1_score

    if irl_scores.shape != true_scores.shape or irl_scores.numel() == 0:
        raise ValueError(
            f"need as many IRL as true scores (> 0); got {tuple(irl_scores.shape)} and "
            f"{tuple(true_scores.shape)}"
        )
    irl = irl_scores.double().cpu().numpy()
    true = true_scores.double().cpu().numpy()
    y = true > 0

    def corr(fn: Callable[..., Any]) -> float:
        if np.ptp(irl) == 0 or np.ptp(true) == 0:
            return float("nan")
        return float(fn(irl, true)[0])

    return IRLEval(
        n=len(irl),
        acc=float(accuracy_score(y, irl > threshold)),
        f1=float(f1_score(y, irl > threshold, zero_division=0)),
        acc_zero=float(accuracy_score(y, irl > 0)),
        f1_zero=float(f1_score(y, irl > 0, zero_division=0)),
        threshold=float(threshold),
        pearson=corr(stats.pearsonr),
        spearman=corr(stats.spearmanr),
        kendall=corr(stats.kendalltau),
        positive_rate=float(y.mean()),
    )


def evaluate_reward_model(
    rm: RewardModel,
    texts: Sequence[str],
    true_reward: Callable[[Sequence[str]], Tensor] | Tensor,
    *,
    fit_texts: Sequence[str] | None = None,
    threshold_method: Literal["accuracy", "median"] = "accuracy",
    batch_size: int = 32,
) -> IRLEval:
    """Score ``texts`` with ``rm`` and the true reward and compare them (:func:`irl_metrics`).

    The IRL threshold is fitted on ``fit_texts`` (the training texts; pass them!) with
    ``threshold_method``; without them it is fitted on ``texts`` themselves (in-sample, optimistic).
    ``true_reward`` is a reward function or the precomputed true rewards of ``texts``.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("evaluate_reward_model needs at least one text")
    true = true_reward if isinstance(true_reward, Tensor) else true_reward(texts)
    irl = rm.score(texts, batch_size=batch_size)
    if fit_texts is None:
        logger.warning("IRL threshold fitted on the evaluation texts (in-sample): pass fit_texts")
        fit_irl, fit_true = irl, true
    else:
        fit_texts = list(fit_texts)
        fit_irl = rm.score(fit_texts, batch_size=batch_size)
        fit_true = true_reward(fit_texts) if callable(true_reward) else None
        if fit_true is None:
            raise ValueError("fit_texts needs true_reward to be a function, not a tensor")
    threshold = fit_threshold(fit_irl, fit_true.cpu() > 0, threshold_method)
    return irl_metrics(irl, true.float().cpu(), threshold)


def supervised_ceiling(
    train_features: Float[Tensor, "train d_model"],  # noqa: F821
    train_true: Float[Tensor, "train"],  # noqa: F821
    heldout_features: Float[Tensor, "held d_model"],  # noqa: F821
    heldout_true: Float[Tensor, "held"],  # noqa: F821
    *,
    C: float = 0.1,
) -> IRLEval:
    """Control: a logistic probe *told the true labels*, on the untrained reward model's features.

    Fitted on the training texts' binarized true reward (standardized features, L2 strength
    ``1/C``), evaluated like an IRL reward (decision function, threshold 0) on the held-out
    texts. It bounds what a linear head on this representation can reach from these training
    texts, so an IRL accuracy far below it is the objective's fault and one near it is the
    representation's or the texts' limit.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels = (train_true > 0).cpu().numpy()
    if labels.all() or not labels.any():
        nan = float("nan")
        return IRLEval(len(heldout_true), nan, nan, nan, nan, 0.0, nan, nan, nan, nan)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    clf.fit(train_features.double().numpy(), labels)
    scores = torch.as_tensor(clf.decision_function(heldout_features.double().numpy()))
    return irl_metrics(scores, heldout_true, 0.0)


LEXICON_SUBSETS: tuple[str, ...] = ("seen", "expressed")
"""The word sets :func:`expressed_lexicon_bound` keeps, from most to least generous."""


def expressed_lexicon_bound(
    expert_texts: Sequence[str],
    non_expert_texts: Sequence[str],
    heldout_texts: Sequence[str],
    heldout_true: Float[Tensor, "held"],  # noqa: F821
    *,
    lexicon: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Control for a lexicon reward: how much of it the demonstrations reveal *at all*.

    The true reward (``lexicon``, default VADER's, summed over :func:`lfp_mech.rewards.words`)
    is kept only on some words, and the held-out texts are scored with that partial lexicon
    (threshold 0, like the true reward):

    * ``"seen"``: the words that occur in any training demonstration (expert or non-expert).
    * ``"expressed"``: the words whose count moved the way their valence says: the expert uses
      a positive word more often than the non-expert, or a negative word less often. This is
      the part of the reward the behaviour shows; a learned reward reaches further only by
      generalising from these words to others through its representation.

    Returns ``{subset: {"n_words": ..., **IRLEval.as_dict(), "scores": tensor}}``. An IRL
    accuracy near ``"expressed"`` means the demonstrations, not the reward model, are the
    limit. Only meaningful when the true reward is this lexicon sum (the ``"vader"`` task).
    """
    from lfp_mech.rewards import vader_lexicon, words

    lexicon = vader_lexicon() if lexicon is None else lexicon
    expert_counts = _word_counts(expert_texts, lexicon)
    non_expert_counts = _word_counts(non_expert_texts, lexicon)
    keep = {
        "seen": set(expert_counts) | set(non_expert_counts),
        "expressed": {
            w for w in lexicon if (expert_counts[w] - non_expert_counts[w]) * lexicon[w] > 0
        },
    }
    heldout_words = [words(t) for t in heldout_texts]
    out: dict[str, Any] = {}
    for subset in LEXICON_SUBSETS:
        kept = keep[subset]
        scores = torch.tensor(
            [sum(lexicon[w] for w in ws if w in kept) for ws in heldout_words], dtype=torch.float64
        )
        metrics = irl_metrics(scores, heldout_true.float().cpu(), 0.0).as_dict()
        out[subset] = {"n_words": len(kept), **metrics, "scores": scores.float()}
    return out


def _word_counts(texts: Sequence[str], lexicon: Mapping[str, float]) -> Counter[str]:
    from lfp_mech.rewards import words

    return Counter(w for t in texts for w in words(t) if w in lexicon)


@torch.no_grad()
def log_ratio_reward(
    policy: ModelLike,
    reference: ModelLike,
    texts: Sequence[str],
    *,
    max_length: int = 192,
    batch_size: int = 16,
    device: str = "cpu",
) -> Float[Tensor, "text"]:  # noqa: F821
    """Control: the policy's *implicit* reward, ``mean_t [log π(y_t|y_<t) − log π_ref(y_t|y_<t)]``.

    KL-regularised RLHF has the closed-form optimum ``π ∝ π_ref · exp(r / β)``, so
    ``β log π/π_ref`` recovers the reward up to a per-prompt constant (the inverse that DPO
    trains). It needs the two models' probabilities rather than only their texts, and no
    training: a reference point for what the max-margin reward recovers from behaviour alone.
    Tokens are BOS-prefixed and truncated like :meth:`RewardModel.tokenize`; the mean over a
    text's tokens (BOS excluded) keeps short and long texts comparable.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("log_ratio_reward needs at least one text")
    policy_model, tokenizer = _as_hf(policy, device)
    reference_model, _ = _as_hf(reference, device)
    input_ids, mask = _bos_tokenize(tokenizer, texts, max_length)
    out = torch.zeros(len(texts))
    for idx, width in _length_sorted_batches(mask, batch_size, desc="log-ratio"):
        ids, m = input_ids[idx, :width].to(device), mask[idx, :width].to(device)
        ratio = _token_logprobs(policy_model, ids, m) - _token_logprobs(reference_model, ids, m)
        weights = m[:, 1:].to(ratio.dtype)
        out[idx] = ((ratio * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)).float().cpu()
    return out


def _token_logprobs(
    model: PreTrainedModel, input_ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch next"]:
    """log p(token_t | tokens_<t) for t = 1..pos-1 (padding positions hold garbage; mask them)."""
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    targets = rearrange(input_ids[:, 1:], "batch next -> batch next 1")
    return rearrange(logprobs.gather(-1, targets), "batch next 1 -> batch next")


# --------------------------------------------------------------------------- seeds × epochs


@dataclass
class IRLRuns:
    """Result of :func:`run_seeds`.

    ``rows``: one dict per (seed, epoch) with :data:`METRICS`, ``threshold``, ``train_loss``,
    ``train_pair_acc``. ``final_scores[i]``: held-out IRL rewards of seed ``i`` after its last
    epoch (the seed-agreement figure). ``best``: the row with the highest held-out accuracy
    (ties: higher Spearman) — selected on the held-out texts like the paper's best-of-78, so
    optimistic; ``best_state`` / ``best_scores`` / ``best_calibration`` belong to it.
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
    """:func:`supervised_ceiling` on the same texts (a control, not an IRL result)."""
    train_true: Tensor = field(default_factory=lambda: torch.zeros(0))
    """True rewards of the training texts: expert completions, then non-expert ones."""


def run_seeds(
    rm: RewardModel,
    demos: Demonstrations,
    true_reward: Callable[[Sequence[str]], Tensor],
    config: IRLConfig,
    *,
    other_texts: Sequence[str] = (),
    cache_path: str | os.PathLike[str] | None = None,
) -> IRLRuns:
    """Train ``config.n_seeds`` reward models for ``config.n_epochs`` each; evaluate every epoch.

    The frozen part runs once for all texts (:meth:`RewardModel.encode`, cached at
    ``cache_path`` as safetensors when given and reused while texts and base weights match);
    every seed restarts from the base weights with a head drawn from ``config.seed + seed``.
    Held-out texts: expert test completions, non-expert test completions, then ``other_texts``.
    On return ``rm`` holds the best run's weights and calibration.
    """
    train_e, train_n = demos.texts("train", "expert"), demos.texts("train", "non_expert")
    test_e, test_n = demos.texts("test", "expert"), demos.texts("test", "non_expert")
    heldout = test_e + test_n + list(other_texts)
    sources = (
        ["expert_test"] * len(test_e)
        + ["non_expert_test"] * len(test_n)
        + ["other"] * len(other_texts)
    )
    texts = train_e + train_n + heldout
    n_tr, n_te = len(train_e), len(test_e)
    fit_idx = torch.arange(2 * n_tr)
    held_idx = torch.arange(2 * n_tr, len(texts))
    pairs = torch.stack([torch.arange(n_tr), torch.arange(n_tr, 2 * n_tr)], dim=1)

    t0 = time.perf_counter()
    true_all = true_reward(texts).float().cpu()
    inputs = _cached_encode(rm, texts, config, cache_path)
    timings = {"encode_s": time.perf_counter() - t0}
    rm.reset(config.seed)
    features = rm.pooled_features(inputs, batch_size=config.eval_batch_size)
    rm.fit_readout_scale(features[fit_idx])
    ceiling = supervised_ceiling(
        features[fit_idx], true_all[fit_idx], features[held_idx], true_all[held_idx]
    ).as_dict()
    logger.info("supervised ceiling (true labels, same features): acc %.3f", ceiling["acc"])
    fit_labels = true_all[fit_idx] > 0
    rows: list[dict[str, Any]] = []
    final_scores = torch.zeros(config.n_seeds, len(heldout))
    best: dict[str, Any] = {}
    best_state: dict[str, Tensor] = {}
    best_scores = torch.zeros(len(heldout))
    best_cal = {"threshold": 0.0, "scale": 1.0}
    t1 = time.perf_counter()
    for seed in tqdm(range(config.n_seeds), desc="IRL seeds", disable=None):
        run_seed = config.seed + seed
        rm.reset(run_seed)
        optimizer = torch.optim.Adam([p for p in rm.parameters() if p.requires_grad], lr=config.lr)
        generator = torch.Generator().manual_seed(run_seed)
        for epoch in range(1, config.n_epochs + 1):
            loss, pair_acc = _train_epoch(rm, optimizer, inputs, pairs, config, generator)
            scores = rm.score_inputs(inputs, batch_size=config.eval_batch_size)
            threshold = fit_threshold(scores[fit_idx], fit_labels, config.threshold_method)
            held = scores[held_idx]
            metrics = irl_metrics(held, true_all[held_idx], threshold)
            row = {
                "seed": run_seed,
                "epoch": epoch,
                **metrics.as_dict(),
                "pair_acc": float((held[:n_te] > held[n_te : 2 * n_te]).float().mean()),
                **_demo_metrics(held[: 2 * n_te], true_all[held_idx][: 2 * n_te], threshold),
                "train_loss": loss,
                "train_pair_acc": pair_acc,
            }
            rows.append(row)
            logger.info(
                "seed %d epoch %d: acc %.3f f1 %.3f spearman %.3f",
                run_seed,
                epoch,
                row["acc"],
                row["f1"],
                row["spearman"],
            )
            if not best or (row["acc"], _nan_low(row["spearman"])) > (
                best["acc"],
                _nan_low(best["spearman"]),
            ):
                best, best_state, best_scores = row, rm.trainable_state(), held.clone()
                spread = float(scores[fit_idx].std()) if len(fit_idx) > 1 else 1.0
                best_cal = {"threshold": threshold, "scale": spread if spread > 0 else 1.0}
        final_scores[seed] = held
    timings["train_eval_s"] = time.perf_counter() - t1
    timings["per_epoch_s"] = timings["train_eval_s"] / (config.n_seeds * config.n_epochs)
    rm.load_trainable_state(best_state)
    rm.calibration = dict(best_cal)
    return IRLRuns(
        rows=rows,
        heldout_texts=heldout,
        heldout_sources=sources,
        heldout_true=true_all[held_idx],
        train_true=true_all[fit_idx],
        final_scores=final_scores,
        best=best,
        best_state=best_state,
        best_scores=best_scores,
        best_calibration=best_cal,
        timings=timings,
        supervised_ceiling=ceiling,
    )


def _demo_metrics(
    irl_scores: Float[Tensor, "text"],  # noqa: F821
    true_scores: Float[Tensor, "text"],  # noqa: F821
    threshold: float,
) -> dict[str, float]:
    m = irl_metrics(irl_scores, true_scores, threshold)
    return {"acc_demos": m.acc, "f1_demos": m.f1, "spearman_demos": m.spearman}


def _majority(rows: Sequence[Mapping[str, Any]]) -> float:
    rate = float(rows[0].get("positive_rate", float("nan")))
    return max(rate, 1.0 - rate)


def _nan_low(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _cached_encode(
    rm: RewardModel, texts: list[str], config: IRLConfig, cache_path: str | os.PathLike[str] | None
) -> RewardInputs:
    if cache_path is None or rm.mode == "full":
        return rm.encode(texts, batch_size=config.eval_batch_size)
    key = _sha(
        {
            "texts": texts,
            "base": rm.base_model,
            "frozen": rm.frozen_fingerprint(),
            "k": rm.first_trainable_layer,
            "pooling": rm.pooling,
            "readouts": rm.readouts,
            "max_length": rm.max_length,
        }
    )
    cached = RewardInputs.load(cache_path, key)
    if cached is not None and len(cached) == len(texts):
        logger.info("reusing cached hidden states from %s", cache_path)
        return cached
    inputs = rm.encode(texts, batch_size=config.eval_batch_size)
    inputs.save(cache_path, key)
    return inputs


def summarize_runs(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± std, median, min and max over seeds (last epoch of each), and the best run.

    ``final_epoch`` aggregates one row per seed (its last epoch) — the honest numbers;
    ``best_run`` is the (seed, epoch) with the highest held-out accuracy over *all* epochs,
    as the paper's "best of 78 runs" (selected on the evaluation texts: optimistic).
    """
    if not rows:
        raise ValueError("summarize_runs needs at least one row")
    last = max(int(r["epoch"]) for r in rows)
    final = [r for r in rows if int(r["epoch"]) == last]
    stats: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        values = np.asarray([r[metric] for r in final], dtype=float)
        values = values[~np.isnan(values)]
        if len(values) == 0:
            stats[metric] = {k: float("nan") for k in ("mean", "std", "median", "min", "max")}
            continue
        stats[metric] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=0)),
            "median": float(np.median(values)),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    best = max(rows, key=lambda r: (r["acc"], _nan_low(r["spearman"])))
    return {
        "n_seeds": len(final),
        "n_epochs": last,
        "n_runs": len(rows),
        "majority_baseline_acc": _majority(rows),
        "final_epoch": stats,
        "best_run": {k: best[k] for k in ("seed", "epoch", *METRICS)},
        "labels": {
            "final_epoch": "over seeds, last epoch of each (mean ± std, median, min, max)",
            "majority_baseline_acc": "accuracy of always predicting the held-out majority "
            "class (what a reward that knows nothing scores with a fitted threshold)",
            "best_run": "max held-out accuracy over all seeds × epochs (the paper's "
            "best-of-78; selected on the evaluation texts, optimistic)",
        },
    }


# --------------------------------------------------------------------------- save / load / use


def save_reward_model(
    rm: RewardModel, out_dir: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``reward_model.safetensors`` (trainable tensors, or everything in full mode) and
    ``config.json`` (base model, mode, blocks, calibration, frozen-weights fingerprint)."""
    state = {n: p.detach() for n, p in rm.named_parameters() if p.requires_grad}
    cfg = {
        "format": _FORMAT,
        "base_model": rm.base_model,
        "architecture": type(rm.backbone).__name__,
        "mode": rm.mode,
        "n_trainable_blocks": rm.n_trainable_blocks,
        "first_trainable_layer": rm.first_trainable_layer,
        "n_layers": rm.readout_layer,
        "context_layer": rm.context_layer,
        "readout_scale": rm.readout_scale.tolist(),
        "d_model": int(rm.backbone.config.hidden_size),
        "max_length": rm.max_length,
        "pooling": rm.pooling,
        "calibration": dict(rm.calibration),
        "frozen_sha256": rm.frozen_fingerprint() if rm.mode == "cached" else None,
        "saved_tensors": sorted(state),
        **dict(extra or {}),
    }
    with atomic_dir(out_dir) as tmp:
        save_tensors(tmp / "reward_model.safetensors", state, metadata={"format": _FORMAT})
        write_json(tmp / "config.json", cfg)
    return Path(out_dir)


def load_reward_model(
    path: str | os.PathLike[str], *, device: str = "cpu", base: ModelLike | None = None
) -> RewardModel:
    """Rebuild a reward model saved by :func:`save_reward_model`.

    The base model is loaded from the recorded name/path (or ``base`` if given); in cached mode
    its frozen weights must hash to the recorded fingerprint, else this raises
    (:class:`~lfp_mech.errors.LfpMechError`) instead of returning a different reward.
    """
    path = Path(path)
    if not (path / "config.json").exists() or not (path / "reward_model.safetensors").exists():
        raise LfpMechError(
            f"{path} is not a saved reward model (needs config.json and "
            "reward_model.safetensors); write one with lfp_mech.irl.save_reward_model"
        )
    cfg = read_json(path / "config.json")
    if cfg.get("format") != _FORMAT:
        raise LfpMechError(f"{path}/config.json has format {cfg.get('format')!r}, not {_FORMAT}")
    rm = RewardModel.from_base(
        base if base is not None else cfg["base_model"],
        mode=cfg["mode"],
        n_trainable_blocks=cfg["n_trainable_blocks"],
        max_length=cfg["max_length"],
        pooling=cfg.get("pooling", "last"),
        n_layers=cfg.get("n_layers"),
        context_layer=cfg.get("context_layer"),
        device=device,
    )
    if cfg["mode"] == "cached" and rm.frozen_fingerprint() != cfg["frozen_sha256"]:
        raise LfpMechError(
            f"the frozen weights of base model {cfg['base_model']!r} differ from those the reward "
            f"model in {path} was trained on; pass the original base with load_reward_model("
            "path, base=...)"
        )
    rm.load_trainable_state(load_tensors(path / "reward_model.safetensors", device=device))
    rm.calibration = {k: float(v) for k, v in cfg["calibration"].items()}
    if "readout_scale" in cfg:
        rm.readout_scale.copy_(torch.tensor(cfg["readout_scale"], dtype=rm.readout_scale.dtype))
    return rm.eval()


def reward_model_fn(
    rm: RewardModel, *, normalize: bool = True, batch_size: int = 16
) -> Callable[[Sequence[str]], Float[Tensor, "batch"]]:  # noqa: F821
    """The recovered reward as a ``RewardFn`` (texts → float32 CPU tensor), e.g. for RLHF.

    With ``normalize``, rewards are ``(R - threshold) / scale`` (``rm.calibration``: the
    threshold fitted on the training texts and the spread of their rewards), so 0 is the
    fitted decision boundary and the scale is O(1) — the raw max-margin reward has none.
    """
    threshold, scale = rm.calibration["threshold"], rm.calibration["scale"]

    def irl_reward(texts: Sequence[str]) -> Float[Tensor, "batch"]:  # noqa: F821
        scores = rm.score(list(texts), batch_size=batch_size)
        if normalize:
            scores = (scores - threshold) / scale
        return scores.float().cpu()

    return irl_reward


# --------------------------------------------------------------------------- IRL-RLHF


def evaluate_policies(
    policies: Mapping[str, ModelLike],
    prompts: Sequence[str],
    task: str | IRLTask,
    out_dir: str | os.PathLike[str],
    *,
    rlhf_config: Any = None,
    reward_model: RewardModel | None = None,
    stem: str = "irl_rlhf",
) -> list[dict[str, Any]]:
    """Score each policy's completions of ``prompts`` with the task's true reward, in one table.

    Uses the RLHF stage's own evaluation (:func:`lfp_mech.rlhf.evaluate_policy`: one sampled
    completion per prompt with the generation settings of ``rlhf_config``, mean reward with a
    95% CI, distinct-2, Welch's t-test against the first policy) so the numbers are comparable
    with the RLHF stage's table; adds ``irl_reward_mean`` (normalised recovered reward, with
    ``reward_model``) and ``toxicity_mean`` (probability of toxicity, toxicity task) on the
    same texts. Writes ``<stem>.csv`` / ``.md`` / ``.json`` into ``out_dir``.
    """
    from lfp_mech import rlhf
    from lfp_mech.rewards import get_reward, toxicity_prob

    spec = _task(task)
    cfg = rlhf_config if rlhf_config is not None else rlhf.RLHFConfig(task=spec.name)
    true_reward = get_reward(spec.reward)
    evals = [
        rlhf.evaluate_policy(
            policy,
            prompts,
            true_reward,
            name=name,
            n_new_tokens=cfg.max_new_tokens,
            min_new_tokens=cfg.min_new_tokens,
            temperature=cfg.temperature,
            repetition_penalty=cfg.eval_repetition_penalty,
            batch_size=cfg.eval_batch_size,
            seed=cfg.seed,
            device=cfg.device,
        )
        for name, policy in policies.items()
    ]
    out_dir = Path(out_dir)
    rows = rlhf.compare_policies(evals, out_dir, stem=stem)
    irl_fn = reward_model_fn(reward_model) if reward_model is not None else None
    for row, ev in zip(rows, evals, strict=True):
        texts = [p + c for p, c in zip(ev.prompts, ev.completions, strict=True)]
        row["true_reward"] = spec.reward
        if irl_fn is not None:
            row["irl_reward_mean"] = float(irl_fn(texts).mean())
        if spec.report_toxicity:
            row["toxicity_mean"] = float(toxicity_prob(texts).mean())
    _write_table(out_dir / stem, rows)
    return rows


def irl_rlhf(
    base: ModelLike,
    reward_model_dir: str | os.PathLike[str],
    prompts: Sequence[str],
    rlhf_config: Any,
    out_dir: str | os.PathLike[str],
    *,
    true_policy: ModelLike | None = None,
    task: str | IRLTask = "vader",
    eval_prompts: Sequence[str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """IRL-RLHF: train a policy on the recovered reward, then compare policies under the true one.

    Calls ``lfp_mech.rlhf.train_policy(base, reward_model_fn(rm), prompts, rlhf_config,
    out_dir)`` (the policy lands in ``out_dir / "policy"``), then :func:`evaluate_policies` for
    base, ``true_policy`` (the true-reward RLHF model, if given) and the new policy on
    ``eval_prompts`` (default: ``rlhf_config.n_eval_prompts`` test prompts of ``task``).
    Writes ``irl_rlhf.csv`` / ``.md`` / ``.json`` next to the policy; returns
    ``{"policy_dir", "table"}``.
    """
    from lfp_mech.rlhf import train_policy

    out_dir = Path(out_dir)
    rm = load_reward_model(reward_model_dir, device=device)
    policy_dir = Path(train_policy(base, reward_model_fn(rm), list(prompts), rlhf_config, out_dir))
    if eval_prompts is None:
        spec = _task(task)
        eval_prompts = _load_prompts(
            spec.prompt_set, "test", rlhf_config.n_eval_prompts, rlhf_config.seed
        )
    policies: dict[str, ModelLike] = {"base": base}
    if true_policy is not None:
        policies["RLHF (true reward)"] = true_policy
    policies["RLHF (IRL reward)"] = str(policy_dir)
    table = evaluate_policies(
        policies, list(eval_prompts), task, out_dir, rlhf_config=rlhf_config, reward_model=rm
    )
    return {"policy_dir": str(policy_dir), "table": table}


# --------------------------------------------------------------------------- the stage


def run_irl_stage(
    base_model_path: ModelLike,
    expert_model_path: ModelLike,
    task: str | IRLTask,
    out_dir: str | os.PathLike[str],
    config: IRLConfig,
    *,
    probe_fn: Callable[[Sequence[str]], Tensor] | None = None,
) -> dict[str, Any]:
    """The whole IRL stage: demonstrations → reward models over seeds × epochs → evaluation.

    Writes into ``out_dir``: ``demonstrations.jsonl`` (+ ``.meta.json``),
    ``reward_inputs.safetensors`` (cached hidden states, cached mode), ``irl_runs.csv`` /
    ``irl_runs.md`` (one row per seed × epoch), ``heldout_scores.jsonl`` (text, source, true
    reward, best IRL reward, probe estimate if ``probe_fn``), ``summary.json``,
    ``irl_heatmaps.png`` (accuracy and Spearman, seeds × epochs), ``irl_seed_agreement.png``
    (correlation between seeds' rewards), ``irl_vs_true.png`` (three-way with ``probe_fn``) and
    ``reward_model/`` (the best run; :func:`load_reward_model`). Returns the summary dict.
    """
    from lfp_mech.plots import save_figure
    from lfp_mech.plots.irl import plot_seed_agreement, plot_seed_heatmaps, plot_three_way
    from lfp_mech.rewards import get_reward

    spec = _task(task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_prompts = _load_prompts(spec.prompt_set, "train", config.n_train_prompts, config.seed)
    test_prompts = _load_prompts(spec.prompt_set, "test", config.n_test_prompts, config.seed)
    demos = generate_demonstrations(
        expert_model_path, base_model_path, train_prompts, test_prompts, config, cache_dir=out_dir
    )
    other = task_texts(
        spec, config.n_other_texts, exclude=train_prompts + test_prompts, seed=config.seed
    )
    true_reward = get_reward(spec.reward)
    rm = RewardModel.from_base(
        base_model_path,
        mode=config.mode,
        n_trainable_blocks=config.n_trainable_blocks,
        max_length=config.max_length,
        pooling=config.pooling,
        n_layers=config.n_layers,
        context_layer=config.context_layer,
        device=config.device,
    )
    runs = run_seeds(
        rm,
        demos,
        true_reward,
        config,
        other_texts=other,
        cache_path=out_dir / "reward_inputs.safetensors",
    )
    summary = summarize_runs(runs.rows)
    save_reward_model(
        rm,
        out_dir / "reward_model",
        extra={"task": spec.name, "selected_run": runs.best, "true_reward": spec.reward},
    )
    _write_table(out_dir / "irl_runs", runs.rows)
    probe = None
    if probe_fn is not None:
        probe = probe_fn(runs.heldout_texts).float().cpu()
    train_e, train_n = demos.texts("train", "expert"), demos.texts("train", "non_expert")
    log_ratio, log_ratio_eval = None, None
    if config.log_ratio_control:
        log_ratio, log_ratio_eval = _log_ratio_control(
            expert_model_path, base_model_path, train_e + train_n, runs, config
        )
    lexicon_bound = None
    if spec.reward == "vader":
        lexicon_bound = expressed_lexicon_bound(
            train_e, train_n, runs.heldout_texts, runs.heldout_true
        )
        logger.info(
            "lexicon bound (true valences of the words the demonstrations express): acc %.3f",
            lexicon_bound["expressed"]["acc"],
        )
    expressed = None if lexicon_bound is None else lexicon_bound["expressed"]["scores"]
    _write_jsonl(
        out_dir / "heldout_scores.jsonl",
        [
            {
                "text": t,
                "source": s,
                "true_reward": float(tr),
                "irl_reward": float(ir),
                **({"log_ratio": float(log_ratio[i])} if log_ratio is not None else {}),
                **({"expressed_lexicon": float(expressed[i])} if expressed is not None else {}),
                **({"probe": float(probe[i])} if probe is not None else {}),
            }
            for i, (t, s, tr, ir) in enumerate(
                zip(
                    runs.heldout_texts,
                    runs.heldout_sources,
                    runs.heldout_true,
                    runs.best_scores,
                    strict=True,
                )
            )
        ],
    )
    save_figure(
        plot_seed_heatmaps(runs.rows, title=f"IRL ({spec.name}): seeds × epochs"),
        out_dir / "irl_heatmaps.png",
    )
    save_figure(
        plot_seed_agreement(
            runs.final_scores, seeds=[r["seed"] for r in runs.rows if r["epoch"] == config.n_epochs]
        ),
        out_dir / "irl_seed_agreement.png",
    )
    save_figure(
        plot_three_way(
            runs.heldout_true.numpy(),
            runs.best_scores.numpy(),
            None if probe is None else probe.numpy(),
            title=f"{spec.name}: held-out texts (best IRL run)",
        ),
        out_dir / "irl_vs_true.png",
    )
    n_tr = len(demos.prompts["train"])
    summary.update(
        {
            "task": spec.name,
            "true_reward": spec.reward,
            "config": asdict(config),
            "n_heldout": len(runs.heldout_texts),
            "heldout_positive_rate": float((runs.heldout_true > 0).float().mean()),
            "true_reward_mean": {
                "expert_train": float(runs.train_true[:n_tr].mean()),
                "non_expert_train": float(runs.train_true[n_tr:].mean()),
                "expert_test": float(runs.heldout_true[: len(demos.prompts["test"])].mean()),
            },
            "timings_s": runs.timings,
            "supervised_ceiling": runs.supervised_ceiling,
            "log_ratio_control": log_ratio_eval,
            "lexicon_bound": None
            if lexicon_bound is None
            else {
                k: {m: v for m, v in d.items() if m != "scores"} for k, d in lexicon_bound.items()
            },
            "reward_model_dir": str(out_dir / "reward_model"),
        }
    )
    write_json(out_dir / "summary.json", summary)
    headline = summary["final_epoch"]
    return {
        "task": spec.name,
        "acc_median": headline["acc"]["median"],
        "acc_mean": headline["acc"]["mean"],
        "acc_std": headline["acc"]["std"],
        "f1_median": headline["f1"]["median"],
        "spearman_median": headline["spearman"]["median"],
        "best_acc": summary["best_run"]["acc"],
        "majority_baseline_acc": summary["majority_baseline_acc"],
        "supervised_ceiling_acc": runs.supervised_ceiling["acc"],
        "n_runs": summary["n_runs"],
        "reward_model_dir": str(out_dir / "reward_model"),
        **({"log_ratio_acc": log_ratio_eval["acc"]} if log_ratio_eval else {}),
        **({"lexicon_bound_acc": lexicon_bound["expressed"]["acc"]} if lexicon_bound else {}),
    }


def _log_ratio_control(
    expert: ModelLike,
    base: ModelLike,
    train_texts: list[str],
    runs: IRLRuns,
    config: IRLConfig,
) -> tuple[Float[Tensor, "held"], dict[str, float | int]]:  # noqa: F821
    """:func:`log_ratio_reward` on the held-out texts, thresholded like an IRL reward (the cut
    fitted on the training texts)."""
    scores = log_ratio_reward(
        expert,
        base,
        train_texts + runs.heldout_texts,
        max_length=config.max_length,
        batch_size=config.eval_batch_size,
        device=config.device,
    )
    fit, held = scores[: len(train_texts)], scores[len(train_texts) :]
    threshold = fit_threshold(fit, runs.train_true > 0, config.threshold_method)
    metrics = irl_metrics(held, runs.heldout_true, threshold).as_dict()
    logger.info("log-ratio control (no training): acc %.3f", metrics["acc"])
    return held, metrics


# --------------------------------------------------------------------------- helpers


def _as_hf(model_like: ModelLike, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if isinstance(model_like, tuple):
        return model_like[0].to(device), model_like[1]
    if isinstance(model_like, PreTrainedModel):
        raise ConfigError(
            "pass an in-memory model as a (model, tokenizer) tuple, or a name / checkpoint path"
        )
    from lfp_mech.models import load_hf_model

    return load_hf_model(model_like, device=device)


def _model_stamp(model_like: ModelLike) -> Any:
    """A cheap identity of a model for cache keys."""
    if isinstance(model_like, tuple):
        model = model_like[0]
        with torch.no_grad():
            checksum = sum(float(p.double().sum()) for p in model.parameters())
        return {
            "name": str(getattr(model, "name_or_path", "")),
            "class": type(model).__name__,
            "checksum": f"{checksum:.10e}",
        }
    path = Path(str(model_like)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
        return {
            "path": str(path.resolve()),
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
        }
    return {"name": str(model_like)}


def _load_prompts(name: str, split: str, n: int, seed: int) -> list[str]:
    """``n`` prompts of ``name``/``split`` (all of them, with a warning, if the set is smaller)."""
    from lfp_mech.data import load_prompts

    available = load_prompts(name, split)  # type: ignore[arg-type]
    if n > len(available):
        logger.warning(
            "prompt set %r/%s has %d prompts < %d asked: using all of them",
            name,
            split,
            len(available),
            n,
        )
        return list(available)
    return load_prompts(name, split, n=n, seed=seed)  # type: ignore[arg-type]


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _write_jsonl(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(path)


def _write_table(stem: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``stem.csv``, ``stem.md`` and ``stem.json`` of a list of flat dict rows."""
    if not rows:
        raise ValueError(f"no rows to write to {stem}")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(stem.with_suffix(".csv"), buf.getvalue())

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(stem.with_suffix(".json"), list(rows))
