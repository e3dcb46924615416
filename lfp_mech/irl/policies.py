"""Policies under the true reward, and IRL-RLHF: a new policy trained on the recovered reward.

[`irl_rlhf`][lfp_mech.irl.policies.irl_rlhf] runs ``lfp_mech.rlhf.train_policy`` with the saved
reward model as its reward ([`reward_model_fn`][lfp_mech.irl.persistence.reward_model_fn]), then
[`evaluate_policies`][lfp_mech.irl.policies.evaluate_policies] scores the base model, the
true-reward RLHF policy and the new policy with the RLHF stage's own evaluation.
[`run_irl_rlhf`][lfp_mech.irl.policies.run_irl_rlhf] is what the stage runs: the RLHF settings of
the IRL-RLHF run from the IRL options, then [`irl_rlhf`][lfp_mech.irl.policies.irl_rlhf]."""

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lfp_mech._io import write_table
from lfp_mech.irl.artifacts import IRL_RLHF_STEM
from lfp_mech.irl.config import IRLConfig
from lfp_mech.irl.persistence import load_reward_model, reward_model_fn
from lfp_mech.irl.reward_model import RewardModel
from lfp_mech.irl.tasks import IRLTask, get_task, policy_eval_prompts, task_prompts
from lfp_mech.models.coerce import ModelLike
from lfp_mech.stats import paired_bootstrap_ci

__all__ = [
    "MATCHED_DIR",
    "POLICY_NAMES",
    "TRUE_ALONG_TRAINING_STEM",
    "MonitoredReward",
    "gain_ratio",
    "evaluate_policies",
    "irl_rlhf",
    "irl_rlhf_config",
    "run_irl_rlhf",
]

POLICY_NAMES = ("base", "RLHF (true reward)", "RLHF (IRL reward)")
MATCHED_DIR = "true_reward"
"""Subfolder of the matched true-reward re-run (when the rlhf stage's policy has other steps)."""
TRUE_ALONG_TRAINING_STEM = "true_reward_along_training"
"""Per GRPO reward call of the IRL-reward policy: IRL and true reward means (reward hacking)."""
"""The policies of an IRL-RLHF table, in order."""


def evaluate_policies(
    policies: Mapping[str, ModelLike],
    prompts: Sequence[str],
    task: str | IRLTask,
    out_dir: str | os.PathLike[str],
    *,
    rlhf_config: Any = None,
    reward_model: RewardModel | None = None,
    stem: str = IRL_RLHF_STEM,
) -> list[dict[str, Any]]:
    """Score each policy's completions of ``prompts`` with the task's true reward, in one table.

    Uses the RLHF stage's own evaluation
    ([`lfp_mech.rlhf.evaluate_policy`][lfp_mech.rlhf.evaluation.evaluate_policy]: one sampled
    completion per prompt with the generation settings of ``rlhf_config``, mean reward with a 95%
    CI, distinct-2, Welch's t-test against the first policy) so the numbers are comparable with the
    RLHF stage's table; adds ``irl_reward_mean`` (normalised recovered reward, with
    ``reward_model``) and ``toxicity_mean`` (probability of toxicity, toxicity task) on the same
    texts. Writes ``<stem>.csv`` / ``.md`` / ``.json`` into ``out_dir``."""
    from lfp_mech import rlhf
    from lfp_mech.rewards import get_reward, toxicity_prob

    spec = get_task(task)
    cfg = rlhf_config if rlhf_config is not None else rlhf.RLHFConfig(task=spec.name)
    true_reward = get_reward(spec.reward, device=cfg.device)
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
            dtype=cfg.dtype,
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
            irl_scores = irl_fn(texts).float().cpu().numpy()
            row["irl_reward_mean"] = float(irl_scores.mean())
            row["irl_vs_true_spearman"] = _spearman(irl_scores, np.asarray(ev.rewards))
        if spec.report_toxicity:
            row["toxicity_mean"] = float(toxicity_prob(texts, device=cfg.device).mean())
    if len(evals) == 3:
        rows[2] |= gain_ratio(*(np.asarray(ev.rewards, dtype=float) for ev in evals))
    write_table(out_dir / stem, rows)
    return rows


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b)[0])


def gain_ratio(
    base: np.ndarray, true: np.ndarray, irl: np.ndarray, *, n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """The IRL-reward policy's true-reward gain over base as a fraction of the true-reward
    policy's, with a 95% bootstrap CI (``scipy.stats.bootstrap``, paired: the three policies
    completed the same prompts, which are resampled together; percentile), and the gain of
    each policy with its own CI."""

    def gain(policy: np.ndarray, reference: np.ndarray, axis: int = -1) -> Any:
        return policy.mean(axis=axis) - reference.mean(axis=axis)

    def ratio(b: np.ndarray, t: np.ndarray, i: np.ndarray, axis: int = -1) -> Any:
        with np.errstate(divide="ignore", invalid="ignore"):
            return gain(i, b, axis) / gain(t, b, axis)

    def ci(statistic: Callable[..., Any], *samples: np.ndarray) -> list[float]:
        return list(paired_bootstrap_ci(samples, statistic, n_resamples=n_boot, seed=seed))

    point_true, point_irl = float(gain(true, base)), float(gain(irl, base))
    return {
        "gain_true_reward_policy": point_true,
        "gain_true_reward_policy_ci95": ci(gain, true, base),
        "gain": point_irl,
        "gain_ci95": ci(gain, irl, base),
        "gain_ratio": point_irl / point_true if point_true != 0 else float("nan"),
        "gain_ratio_ci95": ci(ratio, base, true, irl),
    }


def irl_rlhf(
    base: ModelLike,
    reward_model_dir: str | os.PathLike[str],
    prompts: Sequence[str],
    rlhf_config: Any,
    out_dir: str | os.PathLike[str],
    *,
    true_policy: "ModelLike | None" = None,
    task: str | IRLTask = "vader",
    eval_prompts: Sequence[str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """IRL-RLHF: train a policy on the recovered reward, then compare policies under the true one.

    Calls ``lfp_mech.rlhf.train_policy(base, reward_model_fn(rm), prompts, rlhf_config, out_dir)``
    (the policy lands in ``out_dir / "policy"``), then
    [`evaluate_policies`][lfp_mech.irl.policies.evaluate_policies] for base, ``true_policy`` (the
    true-reward RLHF model, if given) and the new policy on ``eval_prompts`` (default:
    ``rlhf_config.n_eval_prompts`` test prompts of ``task``). Writes ``irl_rlhf.csv`` / ``.md`` /
    ``.json`` next to the policy; returns ``{"policy_dir", "table"}``."""
    from lfp_mech.rewards import get_reward
    from lfp_mech.rlhf import train_policy

    out_dir = Path(out_dir)
    rm = load_reward_model(reward_model_dir, device=device)
    monitored = MonitoredReward(
        reward_model_fn(rm), get_reward(get_task(task).reward, device=rlhf_config.device)
    )
    policy_dir = Path(train_policy(base, monitored, list(prompts), rlhf_config, out_dir))
    if monitored.rows:  # empty when a finished policy was reused
        write_table(out_dir / TRUE_ALONG_TRAINING_STEM, monitored.rows)
    if eval_prompts is None:
        eval_prompts = task_prompts(
            get_task(task).prompt_set, "test", rlhf_config.n_eval_prompts, rlhf_config.seed
        )
    base_name, true_name, irl_name = POLICY_NAMES
    policies: dict[str, ModelLike] = {base_name: base}
    if true_policy is not None:
        policies[true_name] = true_policy
    policies[irl_name] = str(policy_dir)
    table = evaluate_policies(
        policies, list(eval_prompts), task, out_dir, rlhf_config=rlhf_config, reward_model=rm
    )
    return {"policy_dir": str(policy_dir), "table": table}


class MonitoredReward:
    """The IRL reward that trains the policy, also scoring the same texts with the true reward
    (which does not train anything): ``rows`` hold, per call (one GRPO step's batch), both means
    — the true reward along training, the reward-hacking check."""

    def __init__(self, reward: Any, true_reward: Any) -> None:
        self.reward, self.true_reward = reward, true_reward
        self.rows: list[dict[str, float]] = []

    def __call__(self, texts: Sequence[str]) -> Any:
        scores = self.reward(texts)
        true = self.true_reward(list(texts))
        self.rows.append(
            {
                "call": len(self.rows) + 1,
                "irl_reward_mean": float(scores.float().mean()),
                "true_reward_mean": float(true.float().mean()),
            }
        )
        return scores


def irl_rlhf_config(
    task: str,
    steps: int,
    config: IRLConfig,
    *,
    lr: float | None = None,
    rlhf_config: Any = None,
) -> Any:
    """The ``RLHFConfig`` of an IRL-RLHF run: ``rlhf_config`` (the rlhf stage's settings; the
    RLHF defaults for ``task`` if None) with ``steps`` GRPO steps, no time budget,
    ``config.rlhf_eval_prompts`` evaluation prompts, the IRL run's seed, device and dtype (and
    ``lr`` if given). The true-reward policy it is compared with gets the same config. A DPO
    rlhf stage (offline pairs, no reward to optimise) gives way to GRPO, the online method a
    recovered reward can train."""
    import dataclasses

    from lfp_mech.rlhf import RLHFConfig

    cfg = rlhf_config if rlhf_config is not None else RLHFConfig(task=task)
    return dataclasses.replace(
        cfg,
        method=cfg.method if cfg.method in ("grpo", "rloo") else "grpo",
        task=task,
        max_steps=steps,
        budget_minutes=None,
        n_eval_prompts=config.rlhf_eval_prompts,
        seed=config.seed,
        device=config.device,
        dtype=config.dtype,
        **({} if lr is None else {"learning_rate": lr}),
    )


def run_irl_rlhf(
    base: ModelLike,
    task: str | IRLTask,
    reward_model_dir: Path,
    out_dir: Path,
    true_policy: ModelLike,
    steps: int,
    config: IRLConfig,
    *,
    lr: float | None = None,
    rlhf_config: Any = None,
    true_policy_steps: int | None = None,
    exclude: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """IRL-RLHF as the stage runs it, at equal steps: a policy trained on
    ``reward_model_dir``'s reward for ``steps`` GRPO steps on the task's train prompts (into
    ``out_dir``), with [`irl_rlhf_config`][lfp_mech.irl.policies.irl_rlhf_config]; the true-reward
    policy is ``true_policy`` when it was trained for the same steps (``true_policy_steps``),
    else a matched re-run on the true reward with the very same config (``out_dir /
    "true_reward"``). Both are compared with ``base`` on ``config.rlhf_eval_prompts`` test prompts
    that produced no IRL text (``exclude``); returns the table rows."""
    from lfp_mech.data import load_prompts
    from lfp_mech.rewards import get_reward
    from lfp_mech.rlhf import train_policy

    prompt_set = get_task(task).prompt_set
    cfg = irl_rlhf_config(get_task(task).name, steps, config, lr=lr, rlhf_config=rlhf_config)
    prompts = load_prompts(prompt_set, "train")
    if true_policy_steps != steps:
        true_policy = str(
            train_policy(
                base,
                get_reward(get_task(task).reward, device=cfg.device),
                prompts,
                cfg,
                out_dir / MATCHED_DIR,
            )
        )
    result = irl_rlhf(
        base,
        reward_model_dir,
        prompts,
        cfg,
        out_dir,
        true_policy=true_policy,
        task=task,
        eval_prompts=policy_eval_prompts(
            prompt_set, config.rlhf_eval_prompts, exclude, config.seed
        ),
        device=config.device,
    )
    return result["table"]
