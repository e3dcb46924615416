"""One resumable training run: checkpoints, the per-step log, the wall-clock budget, the export.

[`TrainingSession`][lfp_mech.rlhf.session.TrainingSession] owns the files of a training folder (see
[`lfp_mech.rlhf.artifacts`][lfp_mech.rlhf.artifacts]);
[`GuardCallback`][lfp_mech.rlhf.session.GuardCallback] is the Trainer callback that logs every step
to it, stops at the budget and watches distinct-2 for collapse. GRPO/RLOO
([`grpo`][lfp_mech.rlhf.grpo]) and DPO ([`dpo`][lfp_mech.rlhf.dpo]) share both."""

import logging
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
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

from lfp_mech._io import atomic_dir, write_json
from lfp_mech.distributed import is_main_process, wait_for_everyone
from lfp_mech.rlhf.artifacts import CHECKPOINT_DIR, POLICY_DIR, POLICY_METADATA, TRAIN_LOG
from lfp_mech.rlhf.logs import as_float, read_train_log, write_train_log
from lfp_mech.tracking import Tracker, open_tracker, tracker_name

logger = logging.getLogger(__name__)

__all__ = [
    "GuardCallback",
    "TrackingCallback",
    "TrainingSession",
    "policy_metadata",
    "trainer_kwargs",
]


def trainer_kwargs(config: Any, checkpoint_dir: Path) -> dict[str, Any]:
    """TRL config arguments shared by GRPO/RLOO/DPO: constant lr, a log row and a checkpoint
    schedule per step, the run's precision as mixed precision (``bf16``/``fp16``; the weights and
    optimizer stay fp32), no trackers, CPU when the device is a CPU.

    ``config`` is an [`RLHFConfig`][lfp_mech.rlhf.config.RLHFConfig] or a
    [`DPOConfigLite`][lfp_mech.rlhf.config.DPOConfigLite] (both have these fields).
    """
    return {
        "output_dir": str(checkpoint_dir),
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "constant",
        "beta": config.beta,
        "per_device_train_batch_size": config.batch_size,
        "max_steps": config.max_steps,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "seed": config.seed,
        "use_cpu": torch.device(config.device).type == "cpu",
        "bf16": config.dtype == "bfloat16",
        "fp16": config.dtype == "float16",
        "activation_checkpointing": False,  # small models: faster without; memory is not the limit
        "report_to": "none",  # tracking goes through lfp_mech.tracking (TrackingCallback)
        "disable_dropout": True,  # policy and reference log-probs must agree at step 0
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "adam_epsilon": 1e-8,
    }


def policy_metadata(base: Any, config: Any, kind: str) -> dict[str, Any]:
    """What the exported policy records about its training: base model, kind, config."""
    base_name = (
        base if not isinstance(base, tuple) else getattr(base[0], "name_or_path", "in-memory")
    )
    return {"base": str(base_name), "kind": kind, "config": asdict(config)}


class TrainingSession:
    """Checkpoints, the per-step log, the wall-clock budget and the policy export of one run.

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
        self.log_path = out_dir / f"{TRAIN_LOG}.csv"
        self.policy_dir = out_dir / POLICY_DIR
        self.columns = tuple(columns)
        self.log_keys = dict(log_keys)
        self.budget_s = None if budget_minutes is None else 60.0 * budget_minutes
        self.last_checkpoint = last_complete_checkpoint(self.checkpoint_dir)
        last_step = checkpoint_step(self.last_checkpoint) if self.last_checkpoint else 0
        self.rows = [r for r in read_train_log(self.log_path) if r["step"] <= last_step]
        self.elapsed_offset = self.rows[-1]["elapsed_s"] if self.rows else 0.0
        self.start_step = last_step
        self.stop_reason = ""
        self._t0 = time.monotonic()
        if self.last_checkpoint:
            logger.info("resuming from %s (step %d)", self.last_checkpoint, last_step)

    def elapsed(self) -> float:
        """Training seconds so far, over every resume."""
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

    def add_row(self, row: dict[str, float]) -> None:
        """Record one step (replacing a redone step's row) and rewrite the log."""
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
        """Train (resuming from the last checkpoint), then export the policy; its folder."""
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # our callback logs each step instead of print()
        tracker = (
            open_tracker(tracker_name(self.out_dir)) if trainer.is_world_process_zero() else None
        )
        if tracker is not None and tracker.enabled:
            trainer.add_callback(TrackingCallback(tracker))
        self._t0 = time.monotonic()
        try:
            with warnings.catch_warnings():
                # TRL reads transformers' deprecated alias on every generation; the user can do
                # nothing about it, and it repeats once per step.
                warnings.filterwarnings(
                    "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
                )
                trainer.train(resume_from_checkpoint=self.last_checkpoint)
        finally:
            if tracker is not None:
                tracker.close()
        if not self.stop_reason:
            self.stop_reason = "max_steps"
        steps = trainer.state.global_step
        # processes > 1 under accelerate launch: each step saw processes × batch_size samples
        metadata = metadata | self._run_metadata(steps)
        metadata["processes"] = trainer.accelerator.num_processes
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
        """Export the last checkpoint's weights as the policy without training (the main
        process writes it; the others of a launched run wait for it)."""
        if is_main_process():
            model = AutoModelForCausalLM.from_pretrained(self.last_checkpoint, dtype=torch.float32)
            self._export(model, tokenizer, metadata | self._run_metadata(self.start_step))
        wait_for_everyone()
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


class GuardCallback(TrainerCallback):
    """Logs each step to the session, enforces the wall-clock budget, watches distinct-2."""

    def __init__(
        self,
        session: TrainingSession,
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
            row[column] = as_float(logs.get(key))
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


class TrackingCallback(TrainerCallback):
    """Sends every Trainer log row to a [`Tracker`][lfp_mech.tracking.Tracker] (the run's
    ``tracking`` backend), tags named as transformers' own TensorBoard/W&B callbacks name them
    (``train/reward``, ``train/kl``, ...; ``eval_x`` as ``eval/x``), step = optimizer step."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        if state.is_world_process_zero and logs:
            tags = {
                f"eval/{k[5:]}" if k.startswith("eval_") else f"train/{k}": v
                for k, v in logs.items()
            }
            self.tracker.log_scalars(state.global_step, tags)
        return control


def last_complete_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest ``checkpoint-N`` folder the Trainer finished writing, or None."""
    if not checkpoint_dir.is_dir():
        return None
    complete = [
        p for p in checkpoint_dir.glob("checkpoint-*")
        if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)
        and (p / "trainer_state.json").exists()
    ]  # fmt: skip
    return str(max(complete, key=checkpoint_step)) if complete else None


def checkpoint_step(path: str | os.PathLike[str]) -> int:
    """N of a ``checkpoint-N`` folder."""
    return int(Path(path).name.rsplit("-", 1)[1])
