"""The IRL paper's own task: detoxification.

The base model is detoxified with GRPO on the offline toxicity reward (the "expert"), IRL
recovers that reward from the expert's behaviour ([`run_task`][lfp_mech.irl.experiment.run_task]),
and the policies are compared under the true reward: base → RLHF (true reward) → RLHF (IRL
reward) with IRL-RLHF, or base → RLHF (true reward) without. The paper's table reports the
toxicity of each (``toxicity_mean``).
"""

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lfp_mech.irl import artifacts as files
from lfp_mech.irl.config import IRLConfig
from lfp_mech.irl.experiment import irl_prompts, run_task
from lfp_mech.irl.policies import POLICY_NAMES, evaluate_policies, run_irl_rlhf
from lfp_mech.irl.tasks import IRLTask, get_task, policy_eval_prompts
from lfp_mech.models.coerce import ModelLike

__all__ = [
    "check_prompts_reachable",
    "expert_rlhf_config",
    "policy_toxicity",
    "run_toxicity_task",
    "task_config",
    "task_spec",
    "train_expert",
]

TASK = "toxicity"


def expert_rlhf_config(config: IRLConfig) -> Any:
    """The ``RLHFConfig`` of the detoxified expert: the RLHF defaults with
    ``toxicity_rlhf_steps`` steps at ``toxicity_lr``, no time budget, and the IRL run's
    evaluation prompts, seed, device and dtype."""
    from lfp_mech.rlhf import RLHFConfig

    return RLHFConfig(
        task=TASK,
        max_steps=config.toxicity_rlhf_steps,
        learning_rate=config.toxicity_lr,
        budget_minutes=None,
        n_eval_prompts=config.rlhf_eval_prompts,
        seed=config.seed,
        device=config.device,
        dtype=config.dtype,
    )


def train_expert(base: ModelLike, out_dir: Path, config: IRLConfig) -> Path:
    """GRPO on the toxicity reward over the task's train prompts; the expert's policy folder."""
    from lfp_mech.data import load_prompts
    from lfp_mech.rewards import get_reward
    from lfp_mech.rlhf import train_policy

    prompts = load_prompts(task_spec(config).prompt_set, "train")  # type: ignore[arg-type]
    rlhf_config = expert_rlhf_config(config)
    reward = get_reward(TASK, device=config.device)
    return Path(train_policy(base, reward, prompts, rlhf_config, out_dir))


def run_toxicity_task(base: ModelLike, out_dir: Path, config: IRLConfig) -> dict[str, Any]:
    """Detoxified expert → IRL → policy table, into ``out_dir`` (the stage's ``toxicity/``).

    ``config.log_ratio_control`` is replaced by ``config.toxicity_log_ratio_control``. Returns
    [`run_task`][lfp_mech.irl.experiment.run_task]'s headline plus ``policy_toxicity`` ("base 0.1 →
    RLHF (true reward) 0.05 → ...")."""
    config = task_config(config)
    expert = train_expert(base, out_dir / files.EXPERT_DIR, config)
    spec = task_spec(config)
    summary = run_task(base, expert, spec, out_dir, config)
    exclude = irl_prompts(spec, config)
    if config.toxicity_irl_rlhf_steps > 0:
        table = run_irl_rlhf(
            base,
            spec,
            out_dir / files.REWARD_MODEL_DIR,
            out_dir / files.IRL_RLHF_DIR,
            expert,
            config.toxicity_irl_rlhf_steps,
            config,
            lr=config.toxicity_lr,
            rlhf_config=expert_rlhf_config(config),
            true_policy_steps=config.toxicity_rlhf_steps,
            exclude=exclude,
        )
    else:
        base_name, true_name, _ = POLICY_NAMES
        table = evaluate_policies(
            {base_name: base, true_name: str(expert)},
            policy_eval_prompts(spec.prompt_set, config.rlhf_eval_prompts, exclude, config.seed),
            spec,
            out_dir / files.POLICIES_DIR,
            rlhf_config=expert_rlhf_config(config),
            stem=files.POLICIES_STEM,
        )
    summary["policy_toxicity"] = policy_toxicity(table)
    return summary


def task_spec(config: IRLConfig) -> IRLTask:
    """The toxicity task on ``config.toxicity_prompts`` (offline prompts or the hub's Jigsaw)."""
    return dataclasses.replace(get_task(TASK), prompt_set=config.toxicity_prompts)


def check_prompts_reachable(config: IRLConfig) -> None:
    """Load one hub prompt first (``toxicity_prompts="jigsaw"``): without the hub this raises
    [`HubUnavailableError`][lfp_mech.errors.HubUnavailableError] naming the offline set, before
    any training."""
    from lfp_mech.data import HUB_PROMPT_SETS, load_prompts

    if config.toxicity_rlhf_steps > 0 and config.toxicity_prompts in HUB_PROMPT_SETS:
        load_prompts(config.toxicity_prompts, "train", n=1)


def task_config(config: IRLConfig) -> IRLConfig:
    """The IRL options of the toxicity task: ``toxicity_log_ratio_control`` as the log-ratio
    switch, and at most half of the (small) test split as demonstration prompts, so the other
    half is left to compare the policies on."""
    from lfp_mech.data import load_prompts

    half = max(1, len(load_prompts(config.toxicity_prompts, "test")) // 2)
    return dataclasses.replace(
        config,
        log_ratio_control=config.toxicity_log_ratio_control,
        n_test_prompts=min(config.n_test_prompts, half),
    )


def policy_toxicity(table: Sequence[dict[str, Any]]) -> str:
    """ "base 0.0559 → RLHF (true reward) 0.0358 → ...": each policy's mean toxicity."""
    return " → ".join(f"{row['policy']} {row['toxicity_mean']:.4f}" for row in table)
