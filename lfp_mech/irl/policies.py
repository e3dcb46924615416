"""Policies under the true reward, and IRL-RLHF: a new policy trained on the recovered reward.

[`irl_rlhf`][lfp_mech.irl.policies.irl_rlhf] runs ``lfp_mech.rlhf.train_policy`` with the saved
reward model as its reward ([`reward_model_fn`][lfp_mech.irl.persistence.reward_model_fn]), then
[`evaluate_policies`][lfp_mech.irl.policies.evaluate_policies] scores the base model, the
true-reward RLHF policy and the new policy with the RLHF stage's own evaluation.
[`run_irl_rlhf`][lfp_mech.irl.policies.run_irl_rlhf] is what the stage runs: the RLHF settings of
the IRL-RLHF run from the IRL options, then [`irl_rlhf`][lfp_mech.irl.policies.irl_rlhf]."""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lfp_mech._io import write_table
from lfp_mech.irl.artifacts import IRL_RLHF_STEM
from lfp_mech.irl.config import IRLConfig
from lfp_mech.irl.persistence import load_reward_model, reward_model_fn
from lfp_mech.irl.reward_model import RewardModel
from lfp_mech.irl.tasks import IRLTask, get_task, sampled_prompts, task_prompts
from lfp_mech.models.coerce import ModelLike

__all__ = [
    "POLICY_NAMES",
    "evaluate_policies",
    "irl_rlhf",
    "irl_rlhf_config",
    "run_irl_rlhf",
]

POLICY_NAMES = ("base", "RLHF (true reward)", "RLHF (IRL reward)")
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
            row["irl_reward_mean"] = float(irl_fn(texts).mean())
        if spec.report_toxicity:
            row["toxicity_mean"] = float(toxicity_prob(texts).mean())
    write_table(out_dir / stem, rows)
    return rows


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
    from lfp_mech.rlhf import train_policy

    out_dir = Path(out_dir)
    rm = load_reward_model(reward_model_dir, device=device)
    policy_dir = Path(train_policy(base, reward_model_fn(rm), list(prompts), rlhf_config, out_dir))
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


def irl_rlhf_config(task: str, steps: int, config: IRLConfig, *, lr: float | None = None) -> Any:
    """The ``RLHFConfig`` of an IRL-RLHF run: the RLHF defaults with ``steps`` GRPO steps,
    ``config.rlhf_eval_prompts`` evaluation prompts, the IRL run's seed, device and dtype (and ``lr``
    if given)."""
    from lfp_mech.rlhf import RLHFConfig

    return RLHFConfig(
        task=task,
        max_steps=steps,
        n_eval_prompts=config.rlhf_eval_prompts,
        seed=config.seed,
        device=config.device,
        dtype=config.dtype,
        **({} if lr is None else {"learning_rate": lr}),
    )


def run_irl_rlhf(
    base: ModelLike,
    task: str,
    reward_model_dir: Path,
    out_dir: Path,
    true_policy: ModelLike,
    steps: int,
    config: IRLConfig,
    *,
    lr: float | None = None,
) -> list[dict[str, Any]]:
    """IRL-RLHF as the stage runs it: a policy trained on ``reward_model_dir``'s reward for
    ``steps`` GRPO steps on the task's train prompts (into ``out_dir``), compared with ``base``
    and ``true_policy`` on ``config.rlhf_eval_prompts`` test prompts; returns the table rows."""
    from lfp_mech.data import load_prompts

    prompt_set = get_task(task).prompt_set
    result = irl_rlhf(
        base,
        reward_model_dir,
        load_prompts(prompt_set, "train"),
        irl_rlhf_config(task, steps, config, lr=lr),
        out_dir,
        true_policy=true_policy,
        task=task,
        eval_prompts=sampled_prompts(prompt_set, config.rlhf_eval_prompts, config.seed),
        device=config.device,
    )
    return result["table"]
