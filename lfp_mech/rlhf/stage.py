"""The ``rlhf`` stage: tune the run's model on its task, evaluate base vs tuned, write the folder.

Writes into the stage folder (names in [`lfp_mech.rlhf.artifacts`][lfp_mech.rlhf.artifacts]):
``policy/`` (the tuned HF checkpoint), ``checkpoints/`` (resumable; deleted after export unless
kept), ``train_log.csv``, ``reward_curve.png``, ``eval.csv`` (base vs tuned), ``completions.jsonl``
(held-out samples of both), ``pairs.jsonl`` and ``heldout_pairs.jsonl`` (DPO: the training
pairs, and pairs made the same way on the held-out prompts for the preference probe) and
``summary.json``. Read them back with [`lfp_mech.rlhf.results.RLHFResults`][lfp_mech.rlhf.results.RLHFResults]."""

import logging
import math
import os
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lfp_mech._io import read_json, read_jsonl, write_json, write_jsonl
from lfp_mech.distributed import is_main_process, wait_for_everyone
from lfp_mech.models.coerce import ModelLike
from lfp_mech.plotting import save_figure
from lfp_mech.rlhf.artifacts import (
    COMPLETIONS_FILE,
    EVAL_TABLE,
    HELDOUT_PAIRS_FILE,
    PAIRS_FILE,
    POLICY_METADATA,
    REWARD_CURVE_FILE,
    TRAIN_LOG,
)
from lfp_mech.rlhf.config import TASKS, RLHFConfig
from lfp_mech.rlhf.dpo import load_preference_pairs, make_preference_pairs, train_dpo
from lfp_mech.rlhf.evaluation import PolicyEval, compare_policies, evaluate_policy
from lfp_mech.rlhf.grpo import train_policy
from lfp_mech.rlhf.logs import read_train_log
from lfp_mech.rlhf.plots import dpo_curve_figure, reward_curve_figure
from lfp_mech.rlhf.sampling import RewardLike
from lfp_mech.rlhf.tasks import task_prompts, task_reward
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

logger = logging.getLogger(__name__)

__all__ = ["run", "train_and_evaluate"]


def run(ctx: StageContext) -> dict[str, Any]:
    """Tune the run's base model on ``rlhf.task`` and evaluate it; returns the summary."""
    return train_and_evaluate(ctx.config.model, ctx.dir, ctx.options)


def train_and_evaluate(
    base: ModelLike,
    out_dir: str | os.PathLike[str],
    config: RLHFConfig,
    *,
    reward: RewardLike | None = None,
    train_prompts: Sequence[str] | None = None,
    eval_prompts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The whole stage into ``out_dir``: train (GRPO/RLOO or DPO), evaluate base vs tuned.

    Reward and prompts come from ``config.task`` ([`TASKS`][lfp_mech.rlhf.config.TASKS]) unless
    given. Held-out evaluation uses the test split (``config.n_eval_prompts`` prompts). Returns
    the summary (headline numbers); ``summary.json`` also holds the config.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reward_fn = reward if reward is not None else task_reward(config)
    train = list(train_prompts) if train_prompts is not None else task_prompts(config, "train")
    held_out = list(eval_prompts) if eval_prompts is not None else task_prompts(config, "test")

    t0 = time.monotonic()
    policy, pairs = _train(base, reward_fn, train, config, out_dir)
    if not is_main_process():  # accelerate launch: the other processes only help to train
        return {}
    log = read_train_log(out_dir / f"{TRAIN_LOG}.csv")
    figure = (
        dpo_curve_figure(log)
        if pairs is not None
        else reward_curve_figure(log, distinct2_threshold=config.distinct2_threshold)
    )
    save_figure(figure, out_dir / REWARD_CURVE_FILE)
    train_wall = time.monotonic() - t0

    eval_kwargs = dict(
        n_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
        temperature=config.temperature, repetition_penalty=config.eval_repetition_penalty,
        batch_size=config.eval_batch_size, seed=config.seed, device=config.device,
        dtype=config.dtype,
    )  # fmt: skip
    evals = [
        evaluate_policy(base, held_out, reward_fn, name="base", **eval_kwargs),
        evaluate_policy(policy, held_out, reward_fn, name="tuned", **eval_kwargs),
    ]
    rows = compare_policies(evals, out_dir, stem=EVAL_TABLE)
    write_jsonl(out_dir / COMPLETIONS_FILE, [s for ev in evals for s in ev.samples()])
    dpo = {}
    if pairs is not None:  # the preference probe's pairs, made like the training pairs
        heldout_pairs = _new_pairs(base, held_out, reward_fn, config, split="test")
        write_jsonl(out_dir / HELDOUT_PAIRS_FILE, heldout_pairs)
        dpo = {"n_heldout_pairs": len(heldout_pairs)}

    summary = {
        "task": config.task,
        "method": config.method,
        "policy_dir": str(policy),
        **_training_summary(read_json(policy / POLICY_METADATA), log, config, pairs),
        "stage_train_wall_seconds": round(train_wall, 1),
        "n_train_prompts": len(train),
        "n_eval_prompts": len(held_out),
        **dpo,
        **_eval_summary(evals, rows, config.distinct2_threshold),
        "peak_rss_gb": round(_peak_rss_gb(), 2),
    }
    write_json(out_dir / SUMMARY_FILE, summary | {"config": asdict(config)})
    return summary


def _train(
    base: ModelLike,
    reward: RewardLike,
    train: Sequence[str],
    config: RLHFConfig,
    out_dir: Path,
) -> tuple[Path, list[dict[str, Any]] | None]:
    """Train the policy by ``config.method``; (policy folder, DPO pairs or None)."""
    if config.method != "dpo":
        return train_policy(base, reward, train, config, out_dir), None
    pairs = _preference_pairs(base, train, reward, config, out_dir)
    return train_dpo(base, pairs, config.to_dpo_config(), out_dir), pairs


def _preference_pairs(
    base: ModelLike,
    train: Sequence[str],
    reward: RewardLike,
    config: RLHFConfig,
    out_dir: Path,
) -> list[dict[str, Any]]:
    """DPO pairs for the stage: hub data if asked for, else sampled offline (cached in pairs.jsonl;
    under ``accelerate launch`` the main process makes them and the others read them)."""
    path = out_dir / PAIRS_FILE
    if not path.exists() and is_main_process():  # a resumed run trains on the same pairs
        write_jsonl(path, _new_pairs(base, train, reward, config))
    wait_for_everyone()
    return read_jsonl(path)


def _new_pairs(
    base: ModelLike,
    prompts: Sequence[str],
    reward: RewardLike,
    config: RLHFConfig,
    split: str = "train",
) -> list[dict[str, Any]]:
    """Preference pairs of ``split``: offline, the base model's samples of (the first
    ``n_pair_prompts`` of) ``prompts`` ranked by ``reward``; else the hub dataset's split."""
    source = config.preference_data or TASKS[config.task]["preference_data"]
    if source == "offline":
        return make_preference_pairs(
            base, prompts[: config.n_pair_prompts], reward, config.pair_samples,
            n_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
            temperature=config.temperature, batch_size=config.eval_batch_size,
            seed=config.seed, device=config.device, dtype=config.dtype,
        )  # fmt: skip
    return load_preference_pairs(source, split, n=config.n_pair_prompts, seed=config.seed)


def _training_summary(
    training: Mapping[str, Any],
    log: Sequence[Mapping[str, float]],
    config: RLHFConfig,
    pairs: Sequence[Any] | None,
) -> dict[str, Any]:
    """Summary entries of the training: base, steps, stop reason, collapse steps, last reward."""
    low_steps = [
        r["step"] for r in log if r.get("distinct_2", math.nan) < config.distinct2_threshold
    ]
    return {
        "base": training["base"],
        "steps": training["steps"],
        "stop_reason": training["stop_reason"],
        "train_seconds": training["train_seconds"],
        "processes": training.get("processes", 1),
        "n_pairs": None if pairs is None else len(pairs),
        "train_steps_below_distinct2_threshold": len(low_steps),
        "final_train_reward": log[-1].get("reward_mean") if log and pairs is None else None,
    }


def _eval_summary(
    evals: Sequence[PolicyEval], rows: Sequence[Mapping[str, Any]], distinct2_threshold: float
) -> dict[str, Any]:
    """Summary entries of the base-vs-tuned evaluation (warns when the policy collapsed)."""
    base_eval, tuned_eval = evals
    collapsed = tuned_eval.distinct_2 < distinct2_threshold
    if collapsed:
        logger.warning(
            "tuned policy's distinct-2 is %.3f (< %.2f): it may have collapsed into repetition",
            tuned_eval.distinct_2, distinct2_threshold,
        )  # fmt: skip
    return {
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
    }


def _peak_rss_gb() -> float:
    """Peak resident memory of this process in GB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**3 if sys.platform == "darwin" else 1024**2)
