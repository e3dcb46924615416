"""RLHF stage: tune a base LM toward a reward with TRL, then measure what changed.

This is step (1) of the LFP paper (Marks et al. 2024, §A.1 of ``REFERENCE.md``): the
"controlled sentiment generation" task rewards a policy for completing short movie-review
prefixes with text whose VADER lexicon valence is high,
``Reward(prefix + completion) = clip((1/5) Σ V(word), -10, 10)`` (:func:`lfp_mech.rewards.vader_reward`).

What the paper did and what this module does instead:

* **Optimizer.** The paper used PPO (TRL 0.7; batch 64, KL coefficient 0.5, lr 1e-6). Current TRL
  has no PPO; its online RL trainers with a KL penalty to a frozen reference model are
  ``GRPOTrainer`` (group-relative advantages: each prompt is completed ``num_generations`` times
  and each completion's advantage is its reward minus the group mean, divided by the group std)
  and ``RLOOTrainer`` (REINFORCE leave-one-out baseline). :func:`train_policy` runs either;
  GRPO is the default. ``beta`` is the KL coefficient to the reference (the base model).
* **CPU budget.** Defaults are the settings verified on a 2-core CPU with SmolLM2-135M
  (``ENVIRONMENT.md``): 16 completions per step (2 prompts x 8 generations), 8–20 new tokens
  (the paper's completion length), lr 5e-5, beta 0.04, constant learning rate, float32. The
  Without gradient checkpointing a step takes ~7.5 s on SmolLM2 on 2 idle cores (< 4.5 GB
  RSS), so the default 70 steps take ~9 min. A wall-clock safety cap
  (:class:`RLHFConfig.budget_minutes`) stops training cleanly and still saves the policy.
* **Collapse guard.** The known failure (seen at lr 1e-4) is reward hacking by repeating one
  positive word ("great great great ..."). Three defences: a sampling repetition penalty during
  training rollouts, the KL penalty, and monitoring: every step logs the distinct-2 of that
  step's completions (:func:`distinct_n`) and warns when it falls below a threshold.
* **DPO.** The paper's two other tasks (helpful/harmless from Anthropic HH-RLHF, toxicity from
  toxic-dpo) used TRL's ``DPOTrainer``. :func:`train_dpo` runs it on preference pairs, either
  from those hub datasets (:func:`load_preference_pairs`) or, offline, from pairs made by
  sampling the base model several times per prompt and ranking the samples by a reward
  (:func:`make_preference_pairs`).

Outputs are plain Hugging Face checkpoint directories (safetensors + tokenizer), so the tuned
policy loads into TransformerLens with :func:`lfp_mech.models.load_model` for the later stages.
Training is resumable: Trainer checkpoints go to ``out_dir/checkpoints`` and a rerun with the
same ``out_dir`` continues from the last complete one. (Those Trainer checkpoints hold the
optimizer and RNG state in torch's own format; the exported policy holds only safetensors.)

Evaluation (:func:`evaluate_policy`) samples completions to held-out prompts with HF ``generate``
(left-padded batches, KV cache, a fixed seed) and reports the mean reward with a 95%
t-interval, distinct-2 and mean completion length; :func:`compare_policies` tabulates base vs
tuned. :func:`run_rlhf_stage` does all of it and writes the stage's artifacts.

Typical use::

    from lfp_mech.rlhf import RLHFConfig, run_rlhf_stage
    summary = run_rlhf_stage("smollm2-135m", Path("runs/default/rlhf"), RLHFConfig())
"""

import copy
import csv
import json
import logging
import math
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)

from lfp_mech._io import atomic_dir, atomic_path, read_json, write_json, write_text
from lfp_mech.errors import ConfigError, HubUnavailableError, LfpMechError
from lfp_mech.models import generate_texts
from lfp_mech.rlhf.config import (
    DPO_PROMPT_TOKENS,
    PREFERENCE_DATASETS,
    TASKS,
    DPOConfigLite,
    RLHFConfig,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DPOConfigLite",
    "PolicyEval",
    "RLHFConfig",
    "TASKS",
    "compare_policies",
    "distinct_n",
    "evaluate_policy",
    "load_preference_pairs",
    "make_preference_pairs",
    "run_rlhf_stage",
    "train_dpo",
    "train_policy",
]

RewardLike = Callable[[Sequence[str]], Any]
"""A :class:`lfp_mech.rewards.RewardFn`: ``texts -> Float[Tensor, "batch"]`` (higher is better)."""
ModelLike = str | os.PathLike | tuple
"""A registered model name, a local HF checkpoint dir, or an in-memory ``(hf_model, tokenizer)``."""


POLICY_DIR = "policy"
CHECKPOINT_DIR = "checkpoints"
TRAIN_LOG = "train_log.csv"
POLICY_METADATA = "lfp_mech_training.json"

RL_LOG_COLUMNS = (
    "step",
    "reward_mean",
    "reward_std",
    "kl",
    "completion_length",
    "distinct_2",
    "loss",
    "learning_rate",
    "elapsed_s",
)
"""Columns of ``train_log.csv`` for GRPO/RLOO (one row per optimizer step)."""
DPO_LOG_COLUMNS = (
    "step",
    "loss",
    "reward_margin",
    "reward_accuracy",
    "chosen_reward",
    "rejected_reward",
    "learning_rate",
    "elapsed_s",
)
"""Columns of ``train_log.csv`` for DPO (the "rewards" are DPO's implicit rewards)."""

_RL_LOG_KEYS = {
    "reward_mean": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completion_length": "completions/mean_length",
    "loss": "loss",
    "learning_rate": "learning_rate",
}
_DPO_LOG_KEYS = {
    "loss": "loss",
    "reward_margin": "rewards/margins",
    "reward_accuracy": "rewards/accuracies",
    "chosen_reward": "rewards/chosen",
    "rejected_reward": "rewards/rejected",
    "learning_rate": "learning_rate",
}


# --------------------------------------------------------------------------- configuration


# --------------------------------------------------------------------------- online RL


def train_policy(
    base: ModelLike,
    reward: RewardLike,
    prompts: Sequence[str],
    config: RLHFConfig,
    out_dir: str | os.PathLike,
) -> Path:
    """Tune ``base`` toward ``reward`` on ``prompts`` with TRL GRPO (or RLOO); return the policy dir.

    Each step samples ``config.num_generations`` completions (8–20 new tokens) for
    ``batch_size / num_generations`` prompts, scores ``prompt + completion`` with ``reward``
    (the paper's VADER reward reads prefix and completion), and takes a policy-gradient step
    with a KL penalty ``beta`` to the frozen base model.

    Writes into ``out_dir``: ``checkpoints/`` (resumable Trainer checkpoints; a rerun resumes
    from the last complete one), ``train_log.csv`` (one row per step, :data:`RL_LOG_COLUMNS`) and
    ``policy/`` (the tuned model + tokenizer as an HF checkpoint, written atomically).

    Args:
        base: a registered model name, a local HF checkpoint dir, or ``(hf_model, tokenizer)``.
        reward: ``texts -> scores`` (e.g. :func:`lfp_mech.rewards.vader_reward`).
        prompts: training prompts (plain text; no chat template is applied).
        config: :class:`RLHFConfig` (``method`` "grpo" or "rloo").
        out_dir: the folder to write into (created if needed).

    Returns:
        ``out_dir / "policy"``, loadable with :func:`lfp_mech.models.load_model`.
    """
    if config.method not in ("grpo", "rloo"):
        raise ConfigError(
            f"train_policy runs online RL (method 'grpo' or 'rloo'), got {config.method!r}; "
            "for DPO use train_dpo(...) or run_rlhf_stage(...)"
        )
    prompts = _check_prompts(prompts, need=config.batch_size // config.num_generations)
    out_dir = Path(out_dir)
    model, tokenizer = _load(base, seed=config.seed, copy_model=True)
    _ensure_reloadable(model, tokenizer, out_dir / "base")  # TRL rebuilds the reference from it

    session = _TrainingSession(out_dir, RL_LOG_COLUMNS, _RL_LOG_KEYS, config.budget_minutes)
    metadata = _policy_metadata(base, config, "policy-gradient")
    if session.finished(config.max_steps):
        return session.export_checkpoint(tokenizer, metadata)

    from datasets import Dataset

    trainer_cls, args = _rl_trainer_and_args(config, session.checkpoint_dir)
    reward_fn = _TRLReward(reward)
    callback = _GuardCallback(
        session,
        step_stats=reward_fn.pop_stats,
        distinct2_threshold=config.distinct2_threshold,
        stop_on_collapse=config.stop_on_collapse,
        collapse_patience=config.collapse_patience,
    )
    trainer = trainer_cls(
        model=model,
        reward_funcs=[reward_fn],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    return session.train_and_export(
        trainer, tokenizer, metadata, keep_checkpoints=config.keep_checkpoints
    )


def _rl_trainer_and_args(config: RLHFConfig, checkpoint_dir: Path) -> tuple[type, Any]:
    """TRL's GRPO or RLOO trainer class and its config, from an :class:`RLHFConfig`."""
    if config.method == "grpo":
        from trl import GRPOConfig as ArgsCls
        from trl import GRPOTrainer as TrainerCls
    else:
        from trl import RLOOConfig as ArgsCls
        from trl import RLOOTrainer as TrainerCls
    args = ArgsCls(
        output_dir=str(checkpoint_dir),
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        beta=config.beta,
        per_device_train_batch_size=config.batch_size,
        num_generations=config.num_generations,
        max_completion_length=config.max_new_tokens,
        generation_kwargs={"min_new_tokens": config.min_new_tokens},
        temperature=config.temperature,
        top_k=0,
        top_p=1.0,
        repetition_penalty=config.repetition_penalty,
        max_steps=config.max_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        **_common_trainer_kwargs(config.device),
    )
    return TrainerCls, args


def _common_trainer_kwargs(device: str) -> dict[str, Any]:
    """Trainer settings shared by GRPO/RLOO/DPO: fp32, no trackers, CPU when asked."""
    return {
        "use_cpu": torch.device(device).type == "cpu",
        "bf16": False,
        "fp16": False,
        "activation_checkpointing": False,  # small models: faster without; memory is not the limit
        "report_to": "none",
        "disable_dropout": True,  # policy and reference log-probs must agree at step 0
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "adam_epsilon": 1e-8,
    }


class _TRLReward:
    """Adapts a :class:`RewardFn` to TRL's reward-function call, recording collapse statistics.

    TRL calls ``fn(prompts=..., completions=..., completion_ids=..., **columns)`` once per
    generation batch and expects one float per completion. The reward reads
    ``prompt + completion`` (the paper scores prefix + completion). Distinct-2 and word length
    of the completions are kept until the logging callback collects them.
    """

    __name__ = "reward"  # TRL names the logged reward column after the function

    def __init__(self, reward: RewardLike) -> None:
        self.reward = reward
        self._stats: list[dict[str, float]] = []

    def __call__(
        self, prompts: list, completions: list, completion_ids: Any = None, **_: Any
    ) -> list[float]:
        texts = [_as_text(p) + _as_text(c) for p, c in zip(prompts, completions, strict=True)]
        scores = torch.as_tensor(self.reward(texts), dtype=torch.float32).reshape(-1)
        if scores.numel() != len(texts):
            raise LfpMechError(
                f"reward returned {scores.numel()} scores for {len(texts)} texts; a RewardFn must "
                "return one score per text"
            )
        completion_texts = [_as_text(c) for c in completions]
        self._stats.append(
            {"distinct_2": distinct_n(completion_texts, 2), "n": float(len(completion_texts))}
        )
        return scores.tolist()

    def pop_stats(self) -> dict[str, float]:
        """Distinct-2 of the completions scored since the last call (sample-weighted mean)."""
        stats, self._stats = self._stats, []
        total = sum(s["n"] for s in stats)
        if not total:
            return {}
        return {"distinct_2": sum(s["distinct_2"] * s["n"] for s in stats) / total}


def _as_text(item: Any) -> str:
    """A prompt/completion as text (TRL passes strings, or message lists for chat data)."""
    if isinstance(item, str):
        return item
    if isinstance(item, list):  # conversational: [{"role": ..., "content": ...}, ...]
        return "".join(str(m.get("content", "")) for m in item if isinstance(m, dict))
    return str(item)


# --------------------------------------------------------------------------- DPO


def train_dpo(
    base: ModelLike,
    pairs: Sequence[Mapping[str, Any]],
    config: DPOConfigLite,
    out_dir: str | os.PathLike,
) -> Path:
    """Preference-tune ``base`` with TRL's ``DPOTrainer``; return the policy dir.

    Args:
        base: a registered model name, a local HF checkpoint dir, or ``(hf_model, tokenizer)``.
        pairs: dicts with ``prompt``, ``chosen`` and ``rejected`` texts (``chosen``/``rejected``
            are completions of ``prompt``), e.g. from :func:`make_preference_pairs` (offline) or
            :func:`load_preference_pairs` (hub).
        config: :class:`DPOConfigLite`.
        out_dir: folder for ``checkpoints/``, ``train_log.csv`` (:data:`DPO_LOG_COLUMNS`) and
            ``policy/`` (same layout and resume rule as :func:`train_policy`).
    """
    rows = _check_pairs(pairs)
    out_dir = Path(out_dir)
    model, tokenizer = _load(base, seed=config.seed, copy_model=True)
    session = _TrainingSession(out_dir, DPO_LOG_COLUMNS, _DPO_LOG_KEYS, config.budget_minutes)
    metadata = _policy_metadata(base, config, "dpo") | {"n_pairs": len(rows)}
    if session.finished(config.max_steps):
        return session.export_checkpoint(tokenizer, metadata)

    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(session.checkpoint_dir),
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        beta=config.beta,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        max_steps=config.max_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        **_common_trainer_kwargs(config.device),
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[_GuardCallback(session)],
    )
    return session.train_and_export(
        trainer, tokenizer, metadata, keep_checkpoints=config.keep_checkpoints
    )


def make_preference_pairs(
    model_or_path: ModelLike,
    prompts: Sequence[str],
    reward: RewardLike,
    n_samples: int = 4,
    *,
    n_new_tokens: int = 20,
    min_new_tokens: int = 8,
    temperature: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Offline DPO data: sample ``n_samples`` completions per prompt, pair the best with the worst.

    Completions are ranked by ``reward(prompt + completion)``; prompts whose samples all score
    the same carry no preference and are dropped. Each pair is
    ``{"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}``.
    """
    if n_samples < 2:
        raise ConfigError(f"n_samples must be >= 2 (best vs worst), got {n_samples}")
    prompts = _check_prompts(prompts, need=1)
    model, tokenizer = _load(model_or_path, seed=seed)
    model.to(device)
    repeated = [p for p in prompts for _ in range(n_samples)]
    completions, _ = _sample(
        model, tokenizer, repeated,
        n_new_tokens=n_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
        repetition_penalty=1.0, batch_size=batch_size, seed=seed, device=device,
        desc="preference samples",
    )  # fmt: skip
    scores = _score(reward, [p + c for p, c in zip(repeated, completions, strict=True)])
    pairs = []
    for i, prompt in enumerate(prompts):
        group = range(i * n_samples, (i + 1) * n_samples)
        best = max(group, key=lambda j: scores[j])
        worst = min(group, key=lambda j: scores[j])
        if scores[best] > scores[worst]:
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": completions[best],
                    "rejected": completions[worst],
                    "chosen_reward": scores[best],
                    "rejected_reward": scores[worst],
                }
            )
    logger.info(
        "%d preference pairs from %d prompts (%d ties dropped)",
        len(pairs),
        len(prompts),
        len(prompts) - len(pairs),
    )
    if not pairs:
        raise LfpMechError(
            "every prompt's samples got the same reward, so there are no preference pairs: use "
            "more samples per prompt (n_samples), more prompts, or a reward that varies"
        )
    return pairs


def load_preference_pairs(
    name: str, split: str = "train", *, n: int | None = None, seed: int = 0
) -> list[dict[str, str]]:
    """The paper's DPO data from the hub: "hh-rlhf" (Anthropic HH-RLHF) or "toxic-dpo".

    HH-RLHF rows are whole dialogues; the shared prefix up to the last ``"\\n\\nAssistant:"`` is
    the prompt and the two final answers are chosen/rejected. toxic-dpo (unalignment/toxic-dpo-v0.2)
    has prompt/chosen/rejected columns; its "chosen" answer is the toxic one (the paper trained
    toward it). Raises :class:`HubUnavailableError` offline, naming the offline alternative.
    """
    if name not in PREFERENCE_DATASETS:
        raise ConfigError(
            f"unknown preference dataset {name!r}; hub sets: {', '.join(PREFERENCE_DATASETS)}. "
            "Offline, build pairs with make_preference_pairs(...) (preference_data='offline')."
        )
    from lfp_mech.models import hub_reachable

    dataset_id = PREFERENCE_DATASETS[name]
    if not hub_reachable():
        raise HubUnavailableError(
            f"preference dataset {name!r} ({dataset_id}) needs the Hugging Face hub, which is "
            "unreachable (offline). Use the offline alternative: pairs sampled from the base "
            "model and ranked by a reward (make_preference_pairs, or preference_data='offline')."
        )
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except (OSError, ValueError) as err:
        raise HubUnavailableError(
            f"could not load {dataset_id!r} ({err}); use preference_data='offline'"
        ) from err
    indices = list(range(len(ds)))
    if n is not None:
        indices = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[
            :n
        ].tolist()
    return [_preference_row(name, ds[i]) for i in indices]


def _preference_row(name: str, row: Mapping[str, Any]) -> dict[str, str]:
    if name == "toxic-dpo":
        return {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
    marker = "\n\nAssistant:"
    cut = row["chosen"].rfind(marker) + len(marker)
    return {
        "prompt": row["chosen"][:cut],
        "chosen": row["chosen"][cut:],
        "rejected": row["rejected"][row["rejected"].rfind(marker) + len(marker) :],
    }


def _check_pairs(pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    if not pairs:
        raise ConfigError("no preference pairs: DPO needs at least one {prompt, chosen, rejected}")
    rows = []
    for i, pair in enumerate(pairs):
        missing = {"prompt", "chosen", "rejected"} - set(pair)
        if missing:
            raise ConfigError(
                f"preference pair {i} lacks {sorted(missing)}; each pair needs "
                "'prompt', 'chosen' and 'rejected' texts"
            )
        rows.append({k: str(pair[k]) for k in ("prompt", "chosen", "rejected")})
    return rows


# --------------------------------------------------------------------------- training session


class _TrainingSession:
    """Checkpoints, the per-step CSV log, the wall-clock budget and the policy export of one run.

    Resume rule: the last *complete* checkpoint (one with ``trainer_state.json``, written last
    by the Trainer) is resumed; log rows after its step are dropped (they are redone). Elapsed
    time continues from the last kept row, so the budget is cumulative over resumes.
    """

    def __init__(
        self,
        out_dir: Path,
        columns: Sequence[str],
        log_keys: Mapping[str, str],
        budget_minutes: float | None,
    ) -> None:
        self.out_dir = out_dir
        self.checkpoint_dir = out_dir / CHECKPOINT_DIR
        self.log_path = out_dir / TRAIN_LOG
        self.policy_dir = out_dir / POLICY_DIR
        self.columns = tuple(columns)
        self.log_keys = dict(log_keys)
        self.budget_s = None if budget_minutes is None else 60.0 * budget_minutes
        self.last_checkpoint = _last_complete_checkpoint(self.checkpoint_dir)
        last_step = _checkpoint_step(self.last_checkpoint) if self.last_checkpoint else 0
        self.rows = [r for r in read_train_log(self.log_path) if r["step"] <= last_step]
        self.elapsed_offset = self.rows[-1]["elapsed_s"] if self.rows else 0.0
        self.start_step = last_step
        self.stop_reason = ""
        self._t0 = time.monotonic()
        if self.last_checkpoint:
            logger.info("resuming from %s (step %d)", self.last_checkpoint, last_step)

    def elapsed(self) -> float:
        return self.elapsed_offset + time.monotonic() - self._t0

    def over_budget(self) -> bool:
        return self.budget_s is not None and self.elapsed() >= self.budget_s

    def finished(self, max_steps: int) -> bool:
        """True when a checkpoint already reached ``max_steps`` or the budget is used up."""
        if self.last_checkpoint is None:
            return False
        if self.start_step >= max_steps:
            self.stop_reason = "max_steps"
            return True
        if self.over_budget():
            logger.warning(
                "training budget already used (%.1f min); exporting the last "
                "checkpoint (raise budget_minutes to train further)",
                self.elapsed() / 60,
            )
            self.stop_reason = "budget"
            return True
        return False

    def start_clock(self) -> None:
        self._t0 = time.monotonic()

    def add_row(self, row: dict[str, float]) -> None:
        self.rows = [r for r in self.rows if r["step"] < row["step"]] + [row]
        write_train_log(self.log_path, self.rows, self.columns)

    def train_and_export(
        self,
        trainer: Any,
        tokenizer: PreTrainedTokenizerBase,
        metadata: dict[str, Any],
        *,
        keep_checkpoints: bool = True,
    ) -> Path:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # our callback logs each step instead of print()
        self.start_clock()
        trainer.train(resume_from_checkpoint=self.last_checkpoint)
        if not self.stop_reason:
            self.stop_reason = "max_steps"
        steps = trainer.state.global_step
        metadata = metadata | self._run_metadata(steps)
        # Every rank joins the state-dict gather (sharded setups); rank 0 writes.
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.is_world_process_zero():
            write_train_log(self.log_path, self.rows, self.columns)
            model = trainer.accelerator.unwrap_model(trainer.model)
            self._export(model, tokenizer, metadata, state_dict=state_dict)
            if not keep_checkpoints:
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        return self.policy_dir

    def export_checkpoint(
        self, tokenizer: PreTrainedTokenizerBase, metadata: dict[str, Any]
    ) -> Path:
        """Export the last checkpoint's weights as the policy without training."""
        model = AutoModelForCausalLM.from_pretrained(self.last_checkpoint, dtype=torch.float32)
        self._export(model, tokenizer, metadata | self._run_metadata(self.start_step))
        return self.policy_dir

    def _run_metadata(self, steps: int) -> dict[str, Any]:
        return {
            "steps": steps,
            "stop_reason": self.stop_reason,
            "train_seconds": round(self.rows[-1]["elapsed_s"] if self.rows else 0.0, 2),
        }

    def _export(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        metadata: dict[str, Any],
        state_dict: Mapping[str, Tensor] | None = None,
    ) -> None:
        with atomic_dir(self.policy_dir) as tmp:
            model.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / POLICY_METADATA, metadata)
        logger.info(
            "policy written to %s (%s steps, stop: %s)",
            self.policy_dir,
            metadata.get("steps"),
            metadata.get("stop_reason"),
        )


class _GuardCallback(TrainerCallback):
    """Logs each step to the CSV, enforces the wall-clock budget, watches distinct-2."""

    def __init__(
        self,
        session: _TrainingSession,
        *,
        step_stats: Callable[[], dict[str, float]] | None = None,
        distinct2_threshold: float = 0.0,
        stop_on_collapse: bool = False,
        collapse_patience: int = 3,
    ) -> None:
        self.session = session
        self.step_stats = step_stats
        self.threshold = distinct2_threshold
        self.stop_on_collapse = stop_on_collapse
        self.patience = collapse_patience
        self._collapsed_steps = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.session.over_budget() and state.global_step < state.max_steps:
            logger.warning(
                "wall-clock budget of %.1f min reached at step %d: stopping and saving",
                self.session.budget_s / 60, state.global_step,
            )  # fmt: skip
            self.session.stop_reason = "budget"
            control.should_training_stop = True
            control.should_save = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        logs = logs or {}
        if not any(key in logs for key in self.session.log_keys.values()):
            return control  # the end-of-training summary (train_runtime, ...), not a step
        row = {"step": float(state.global_step)}
        for column, key in self.session.log_keys.items():
            row[column] = _as_float(logs.get(key))
        if self.step_stats is not None:
            row.update(self.step_stats())
        row["elapsed_s"] = round(self.session.elapsed(), 3)
        row = {c: row.get(c, math.nan) for c in self.session.columns}
        if state.is_world_process_zero:
            self.session.add_row(row)
            logger.info(
                "step %d: %s",
                state.global_step,
                ", ".join(
                    f"{k} {v:.4g}" for k, v in row.items() if k != "step" and not math.isnan(v)
                ),
            )
        self._watch_collapse(row, state, control)
        return control

    def _watch_collapse(self, row: Mapping[str, float], state: Any, control: Any) -> None:
        d2 = row.get("distinct_2", math.nan)
        if math.isnan(d2) or d2 >= self.threshold:
            self._collapsed_steps = 0
            return
        self._collapsed_steps += 1
        logger.warning(
            "possible collapse at step %d: distinct-2 of the completions is %.3f (< %.2f); the "
            "policy may be repeating itself to hack the reward (lower learning_rate, raise beta "
            "or repetition_penalty)", state.global_step, d2, self.threshold,
        )  # fmt: skip
        if self.stop_on_collapse and self._collapsed_steps >= self.patience:
            logger.warning(
                "stopping: distinct-2 below %.2f for %d steps",
                self.threshold,
                self._collapsed_steps,
            )
            self.session.stop_reason = "collapse"
            control.should_training_stop = True
            control.should_save = True


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    if not checkpoint_dir.is_dir():
        return None
    complete = [
        p for p in checkpoint_dir.glob("checkpoint-*")
        if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)
        and (p / "trainer_state.json").exists()
    ]  # fmt: skip
    return str(max(complete, key=_checkpoint_step)) if complete else None


def _checkpoint_step(path: str | os.PathLike) -> int:
    return int(Path(path).name.rsplit("-", 1)[1])


def read_train_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``train_log.csv`` as dicts of floats (``[]`` if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: _as_float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_train_log(
    path: str | os.PathLike, rows: Sequence[Mapping[str, float | int]], columns: Sequence[str]
) -> Path:
    """Write the training log atomically (rewritten whole after every step: it is small)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _format_cell(c, row.get(c, math.nan)) for c in columns})
    return Path(path)


def _format_cell(column: str, value: float | int) -> str:
    if column == "step":
        return str(int(value))
    return "nan" if math.isnan(value) else f"{value:.6g}"


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class PolicyEval:
    """A policy's completions to held-out prompts and their reward statistics."""

    name: str
    """Label of the policy ("base", "tuned", ...)."""
    mean_reward: float
    """Mean reward of ``prompt + completion`` over the prompts."""
    ci_low: float
    """Lower end of the 95% t-interval of the mean reward."""
    ci_high: float
    """Upper end of the 95% t-interval of the mean reward."""
    std_reward: float
    """Sample standard deviation of the rewards."""
    distinct_2: float
    """Distinct word bigrams / all word bigrams over all completions (corpus-level)."""
    mean_length: float
    """Mean completion length in new tokens (up to the first EOS)."""
    n: int
    """Number of prompts (one completion each)."""
    prompts: list[str] = field(repr=False)
    completions: list[str] = field(repr=False)
    rewards: list[float] = field(repr=False)
    lengths: list[int] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """The statistics without the per-sample lists (JSON-able)."""
        skip = {"prompts", "completions", "rewards", "lengths"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def samples(self) -> list[dict[str, Any]]:
        """One dict per prompt: prompt, completion, reward, length, policy name."""
        return [
            {"policy": self.name, "prompt": p, "completion": c, "reward": r, "length": n}
            for p, c, r, n in zip(
                self.prompts, self.completions, self.rewards, self.lengths, strict=True
            )
        ]


def evaluate_policy(
    model_or_path: ModelLike,
    prompts: Sequence[str],
    reward: RewardLike,
    *,
    name: str = "policy",
    n_new_tokens: int = 20,
    min_new_tokens: int = 8,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> PolicyEval:
    """Sample one completion per held-out prompt and summarise the reward.

    Completions are sampled (temperature ``temperature``, no top-k/top-p) with HF ``generate``
    in left-padded batches with the KV cache, under a fixed seed: the same inputs give the
    same result. The reward scores ``prompt + completion``. The 95% CI is the t-interval
    ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` (``scipy.stats.t``).
    """
    prompts = _check_prompts(prompts, need=2)
    model, tokenizer = _load(model_or_path, seed=seed)
    model.to(device)
    completions, lengths = _sample(
        model, tokenizer, prompts,
        n_new_tokens=n_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
        repetition_penalty=repetition_penalty, batch_size=batch_size, seed=seed, device=device,
        desc=f"evaluate {name}",
    )  # fmt: skip
    rewards = _score(reward, [p + c for p, c in zip(prompts, completions, strict=True)])
    mean, low, high, std = _mean_ci(rewards)
    return PolicyEval(
        name=name,
        mean_reward=mean,
        ci_low=low,
        ci_high=high,
        std_reward=std,
        distinct_2=distinct_n(completions, 2),
        mean_length=sum(lengths) / len(lengths),
        n=len(prompts),
        prompts=list(prompts),
        completions=completions,
        rewards=rewards,
        lengths=lengths,
    )


def compare_policies(
    evals: Sequence[PolicyEval], out_dir: str | os.PathLike, *, stem: str = "eval"
) -> list[dict[str, Any]]:
    """Tabulate policies against the first one (the base) as ``<stem>.csv`` and ``<stem>.md``.

    Columns: policy, n, mean reward with its 95% CI, std, distinct-2, mean length, the
    difference to the first policy, whether the two CIs overlap, and Welch's t-test p-value.
    """
    if not evals:
        raise ConfigError("compare_policies needs at least one PolicyEval")
    from scipy import stats

    ref = evals[0]
    rows = []
    for ev in evals:
        p_value = (
            float(stats.ttest_ind(ev.rewards, ref.rewards, equal_var=False).pvalue)
            if ev is not ref
            else math.nan
        )
        rows.append(
            {
                "policy": ev.name,
                "n": ev.n,
                "mean_reward": ev.mean_reward,
                "ci95_low": ev.ci_low,
                "ci95_high": ev.ci_high,
                "std_reward": ev.std_reward,
                "distinct_2": ev.distinct_2,
                "mean_length": ev.mean_length,
                f"delta_vs_{ref.name}": ev.mean_reward - ref.mean_reward,
                "ci_overlap": bool(ev.ci_low <= ref.ci_high and ref.ci_low <= ev.ci_high),
                "welch_p": p_value,
            }
        )
    out_dir = Path(out_dir)
    columns = list(rows[0])
    with atomic_path(out_dir / f"{stem}.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    write_text(out_dir / f"{stem}.md", _markdown_table(rows, columns))
    return rows


def _markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return (
                "—"
                if math.isnan(value)
                else f"{value:.3g}"
                if abs(value) < 1e-3
                else f"{value:.3f}"
            )
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Corpus-level distinct-n: distinct word n-grams / all word n-grams over ``texts``.

    Words are lower-cased ``\\w+`` runs (with an inner apostrophe) and single punctuation marks,
    so "great great great!!!" has 2-grams (great, great) x2, (great, !), (!, !) x2. N-grams never
    span two texts. 1.0 means no n-gram repeats; a policy repeating one phrase tends to 0.
    Returns 0.0 when the texts have no n-gram at all (empty completions are degenerate too).
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = _WORD.findall(text.lower())
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def _mean_ci(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, 95% t-interval (low, high) and sample std of ``values`` (n >= 2)."""
    from scipy import stats

    x = torch.tensor(values, dtype=torch.float64)
    mean, std = x.mean().item(), x.std(unbiased=True).item()
    if std == 0.0:
        return mean, mean, mean, 0.0
    half = float(stats.t.ppf(0.975, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half, std


def _score(reward: RewardLike, texts: Sequence[str]) -> list[float]:
    scores = torch.as_tensor(reward(list(texts)), dtype=torch.float32).reshape(-1)
    if scores.numel() != len(texts):
        raise LfpMechError(f"reward returned {scores.numel()} scores for {len(texts)} texts")
    return [float(s) for s in scores]


# --------------------------------------------------------------------------- generation


def _sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    n_new_tokens: int,
    min_new_tokens: int,
    temperature: float,
    repetition_penalty: float,
    batch_size: int,
    seed: int,
    device: str,
    desc: str,
) -> tuple[list[str], list[int]]:
    """Sample one completion per prompt: left-padded batches, KV cache, seeded; (texts, lengths).

    Prompts are tokenized as TRL does during training (the tokenizer's default special
    tokens), so evaluation sees the inputs the policy was trained on.
    """
    if n_new_tokens < 1 or not 0 <= min_new_tokens <= n_new_tokens:
        raise ConfigError(
            f"need 1 <= n_new_tokens and 0 <= min_new_tokens <= n_new_tokens, got "
            f"{n_new_tokens} and {min_new_tokens}"
        )
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0 (sampling), got {temperature}")
    return generate_texts(
        model,
        tokenizer,
        prompts,
        max_new_tokens=n_new_tokens,
        min_new_tokens=min_new_tokens,
        temperature=temperature,
        repetition_penalty=repetition_penalty,
        batch_size=batch_size,
        seed=seed,
        device=device,
        desc=desc,
    )


# --------------------------------------------------------------------------- models and prompts


def _load(
    model_or_path: ModelLike, *, seed: int, copy_model: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(hf_model, tokenizer)`` from a name, a checkpoint dir, or an in-memory pair (float32).

    With ``copy_model`` an in-memory model is deep-copied, so training leaves the caller's intact.
    """
    if isinstance(model_or_path, tuple):
        if len(model_or_path) != 2:
            raise ConfigError("pass a model as a name, a checkpoint dir, or (hf_model, tokenizer)")
        model, tokenizer = model_or_path
        if copy_model:
            model, tokenizer = copy.deepcopy(model), copy.deepcopy(tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer
    from lfp_mech.models import load_hf_model

    return load_hf_model(model_or_path, seed=seed)


def _ensure_reloadable(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: Path
) -> None:
    """Make ``model.config._name_or_path`` loadable: TRL rebuilds the reference model from it.

    Models loaded from a local folder or a hub id already are; in-memory ones (the tiny test
    models, an object passed in) are saved once to ``directory`` and pointed there.
    """
    source = str(getattr(model.config, "_name_or_path", "") or "")
    local = Path(source).expanduser()
    if local.is_dir() and (local / "config.json").exists():
        return
    if "/" in source and not local.exists() and _looks_like_hub_id(source):
        return
    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    model.config._name_or_path = str(directory.resolve())
    model.name_or_path = str(directory.resolve())


def _looks_like_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None


def _check_prompts(prompts: Sequence[str], *, need: int) -> list[str]:
    prompts = [str(p) for p in prompts]
    if len(prompts) < need:
        raise ConfigError(f"need at least {need} prompt(s), got {len(prompts)}")
    if any(not p.strip() for p in prompts):
        raise ConfigError("empty prompt(s) given: every prompt needs some text")
    return prompts


def _policy_metadata(base: ModelLike, config: Any, kind: str) -> dict[str, Any]:
    base_name = (
        base if not isinstance(base, tuple) else getattr(base[0], "name_or_path", "in-memory")
    )
    return {"base": str(base_name), "kind": kind, "config": asdict(config)}


# --------------------------------------------------------------------------- the stage


def run_rlhf_stage(
    base: ModelLike,
    out_dir: str | os.PathLike,
    config: RLHFConfig,
    *,
    reward: RewardLike | None = None,
    train_prompts: Sequence[str] | None = None,
    eval_prompts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The RLHF stage: train a policy (GRPO/RLOO or DPO), evaluate base vs tuned, write artifacts.

    Reward and prompts come from ``config.task`` (:data:`TASKS`: "vader" -> VADER reward and the
    shipped review openings; "toxicity" -> non-toxicity reward and toxicity prompts) unless
    given. Held-out evaluation uses the test split (``config.n_eval_prompts`` prompts).

    Writes into ``out_dir``: ``policy/`` (tuned HF checkpoint), ``checkpoints/`` (resumable),
    ``train_log.csv``, ``reward_curve.png``, ``eval.csv`` / ``eval.md`` (base vs tuned),
    ``completions.jsonl`` (held-out samples of both), ``pairs.jsonl`` (DPO), ``summary.json``.
    Returns the summary dict (headline numbers).
    """
    from lfp_mech.plots import save_figure
    from lfp_mech.plots.rlhf import dpo_curve_figure, reward_curve_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = TASKS[config.task]
    reward_fn = reward if reward is not None else _task_reward(task["reward"])
    train = list(train_prompts) if train_prompts is not None else _task_prompts(config, "train")
    held_out = list(eval_prompts) if eval_prompts is not None else _task_prompts(config, "test")
    t0 = time.monotonic()

    if config.method == "dpo":
        pairs = _stage_pairs(base, train, reward_fn, config, out_dir)
        policy = train_dpo(base, pairs, config.to_dpo_config(), out_dir)
        figure = dpo_curve_figure(out_dir / TRAIN_LOG)
    else:
        pairs = None
        policy = train_policy(base, reward_fn, train, config, out_dir)
        figure = reward_curve_figure(
            out_dir / TRAIN_LOG, distinct2_threshold=config.distinct2_threshold
        )
    save_figure(figure, out_dir / "reward_curve.png")
    train_wall = time.monotonic() - t0

    eval_kwargs = dict(
        n_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
        temperature=config.temperature, repetition_penalty=config.eval_repetition_penalty,
        batch_size=config.eval_batch_size, seed=config.seed, device=config.device,
    )  # fmt: skip
    evals = [
        evaluate_policy(base, held_out, reward_fn, name="base", **eval_kwargs),
        evaluate_policy(policy, held_out, reward_fn, name="tuned", **eval_kwargs),
    ]
    rows = compare_policies(evals, out_dir)
    _write_jsonl(out_dir / "completions.jsonl", [s for ev in evals for s in ev.samples()])

    base_eval, tuned_eval = evals
    training = read_json(policy / POLICY_METADATA)
    log = read_train_log(out_dir / TRAIN_LOG)
    collapsed = tuned_eval.distinct_2 < config.distinct2_threshold
    if collapsed:
        logger.warning(
            "tuned policy's distinct-2 is %.3f (< %.2f): it may have collapsed into repetition",
            tuned_eval.distinct_2, config.distinct2_threshold,
        )  # fmt: skip
    low_steps = [
        r["step"] for r in log if r.get("distinct_2", math.nan) < config.distinct2_threshold
    ]
    summary = {
        "task": config.task,
        "method": config.method,
        "base": training["base"],
        "policy_dir": str(policy),
        "steps": training["steps"],
        "stop_reason": training["stop_reason"],
        "train_seconds": training["train_seconds"],
        "stage_train_wall_seconds": round(train_wall, 1),
        "n_train_prompts": len(train),
        "n_eval_prompts": len(held_out),
        "n_pairs": None if pairs is None else len(pairs),
        "base_reward": base_eval.mean_reward,
        "base_reward_ci95": [base_eval.ci_low, base_eval.ci_high],
        "tuned_reward": tuned_eval.mean_reward,
        "tuned_reward_ci95": [tuned_eval.ci_low, tuned_eval.ci_high],
        "reward_gain": tuned_eval.mean_reward - base_eval.mean_reward,
        "ci_overlap": rows[1]["ci_overlap"],
        "welch_p": rows[1]["welch_p"],
        "base_distinct_2": base_eval.distinct_2,
        "tuned_distinct_2": tuned_eval.distinct_2,
        "tuned_mean_length": tuned_eval.mean_length,
        "collapse_warning": collapsed,
        "train_steps_below_distinct2_threshold": len(low_steps),
        "final_train_reward": log[-1].get("reward_mean") if log and pairs is None else None,
        "peak_rss_gb": round(_peak_rss_gb(), 2),
        "config": asdict(config),
    }
    write_json(out_dir / "summary.json", summary)
    return {k: v for k, v in summary.items() if k != "config"}


def _task_reward(name: str) -> RewardLike:
    from lfp_mech.rewards import get_reward

    return get_reward(name)


def _task_prompts(config: RLHFConfig, split: str) -> list[str]:
    prompt_set = TASKS[config.task]["prompts"]
    if prompt_set == "hh-rlhf":
        pairs = load_preference_pairs(
            "hh-rlhf",
            "train" if split == "train" else "test",
            n=config.n_eval_prompts if split == "test" else None,
            seed=config.seed,
        )
        return [p["prompt"] for p in pairs]
    from lfp_mech.data import load_prompts

    prompts = load_prompts(prompt_set, split)
    if split == "train":
        if config.n_train_prompts is not None and config.n_train_prompts < len(prompts):
            prompts = load_prompts(prompt_set, split, n=config.n_train_prompts, seed=config.seed)
        return prompts
    if len(prompts) < config.n_eval_prompts:
        logger.warning(
            "only %d held-out %r prompts (asked for %d): using all",
            len(prompts),
            prompt_set,
            config.n_eval_prompts,
        )
    return prompts[: config.n_eval_prompts]


def _stage_pairs(
    base: ModelLike,
    train: Sequence[str],
    reward: RewardLike,
    config: RLHFConfig,
    out_dir: Path,
) -> list[dict[str, Any]]:
    """DPO pairs for the stage: hub data if asked for, else sampled offline (cached in pairs.jsonl)."""
    source = config.preference_data or TASKS[config.task]["preference_data"]
    path = out_dir / "pairs.jsonl"
    if path.exists():  # a resumed run trains on the same pairs
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if source == "offline":
        pairs = make_preference_pairs(
            base, train[: config.n_pair_prompts], reward, config.pair_samples,
            n_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
            temperature=config.temperature, batch_size=config.eval_batch_size,
            seed=config.seed, device=config.device,
        )  # fmt: skip
    else:
        pairs = load_preference_pairs(source, "train", n=config.n_pair_prompts, seed=config.seed)
    _write_jsonl(path, pairs)
    return pairs


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    return write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _peak_rss_gb() -> float:
    """Peak resident memory of this process in GB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**3 if sys.platform == "darwin" else 1024**2)
