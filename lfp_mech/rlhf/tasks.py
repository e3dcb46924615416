"""The stage's tasks ([`TASKS`][lfp_mech.rlhf.config.TASKS]): each task's reward and prompts.

"vader" (the paper's sentiment task: VADER reward, movie-review openings), "toxicity" (a
non-toxicity reward, toxicity prompts) and "hh" (DPO on Anthropic HH-RLHF, hub only).
"""

import logging

from lfp_mech.rlhf.config import TASKS, RLHFConfig
from lfp_mech.rlhf.dpo import load_preference_pairs
from lfp_mech.rlhf.sampling import RewardLike

logger = logging.getLogger(__name__)

__all__ = ["task_prompts", "task_reward"]


def task_reward(config: RLHFConfig) -> RewardLike:
    """The reward function of ``config.task``
    ([`lfp_mech.rewards.get_reward`][lfp_mech.rewards.get_reward])."""
    from lfp_mech.rewards import get_reward

    return get_reward(TASKS[config.task]["reward"], device=config.device)


def task_prompts(config: RLHFConfig, split: str) -> list[str]:
    """The task's prompts: ``split`` "train" (``n_train_prompts`` of them, drawn with the seed,
    or all) or "test" (the first ``n_eval_prompts``, capped at the split's size)."""
    prompt_set = config.prompts or TASKS[config.task]["prompts"]
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
