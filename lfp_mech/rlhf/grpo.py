"""Online RL on a reward function with TRL: [`train_policy`][lfp_mech.rlhf.grpo.train_policy] (GRPO
or RLOO).

TRL 1.x has no PPO (the paper's optimizer); its online trainers with a KL penalty to a frozen
reference are ``GRPOTrainer`` (each prompt is completed ``num_generations`` times; a
completion's advantage is its reward minus the group mean, over the group std) and
``RLOOTrainer`` (REINFORCE with a leave-one-out baseline).
"""

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lfp_mech._io import atomic_dir
from lfp_mech.distributed import is_main_process, wait_for_everyone
from lfp_mech.errors import ConfigError
from lfp_mech.models.coerce import ModelLike, as_hf_model
from lfp_mech.models.sampling import fast_generate
from lfp_mech.rlhf.artifacts import BASE_COPY_DIR
from lfp_mech.rlhf.config import RLHFConfig
from lfp_mech.rlhf.evaluation import distinct_n
from lfp_mech.rlhf.logs import RL_LOG_COLUMNS, RL_LOG_KEYS
from lfp_mech.rlhf.sampling import RewardLike, check_prompts, score_texts
from lfp_mech.rlhf.session import GuardCallback, TrainingSession, policy_metadata, trainer_kwargs

__all__ = ["train_policy"]


def train_policy(
    base: ModelLike,
    reward: RewardLike,
    prompts: Sequence[str],
    config: RLHFConfig,
    out_dir: str | os.PathLike[str],
) -> Path:
    """Tune ``base`` toward ``reward`` on ``prompts`` with TRL GRPO (or RLOO); return the policy
    dir.

    Each step samples ``config.num_generations`` completions (8–20 new tokens) for
    ``batch_size / num_generations`` prompts, scores ``prompt + completion`` with ``reward``
    (the paper's VADER reward reads prefix and completion), and takes a policy-gradient step
    with a KL penalty ``beta`` to the frozen base model.

    Writes into ``out_dir``: ``checkpoints/`` (resumable Trainer checkpoints; a rerun resumes from
    the last complete one), ``train_log.csv`` (one row per step,
    [`RL_LOG_COLUMNS`][lfp_mech.rlhf.logs.RL_LOG_COLUMNS]) and ``policy/`` (the tuned model +
    tokenizer as an HF checkpoint, written atomically).

    Args:
        base: a registered model name, a local HF checkpoint dir, or ``(hf_model, tokenizer)``.
        reward: ``texts -> scores`` (e.g.
            [`lfp_mech.rewards.vader_reward`][lfp_mech.rewards.vader_reward]).
        prompts: training prompts (plain text; no chat template is applied).
        config: [`RLHFConfig`][lfp_mech.rlhf.config.RLHFConfig] (``method`` "grpo" or "rloo").
        out_dir: the folder to write into (created if needed).

    Returns:
        ``out_dir / "policy"``, loadable with
    [`lfp_mech.models.load_model`][lfp_mech.models.loading.load_model]."""
    if config.method not in ("grpo", "rloo"):
        raise ConfigError(
            f"train_policy runs online RL (method 'grpo' or 'rloo'), got {config.method!r}; "
            "for DPO use train_dpo(...) or lfp_mech.rlhf.train_and_evaluate(...)"
        )
    prompts = check_prompts(prompts, need=config.batch_size // config.num_generations)
    out_dir = Path(out_dir)
    model, tokenizer = as_hf_model(base, seed=config.seed, copy_model=True)
    ensure_reloadable(model, tokenizer, out_dir / BASE_COPY_DIR)  # TRL rebuilds the reference

    session = TrainingSession(out_dir, RL_LOG_COLUMNS, RL_LOG_KEYS, config.budget_minutes)
    metadata = policy_metadata(base, config, "policy-gradient")
    if session.finished(config.max_steps):
        return session.export_checkpoint(tokenizer, metadata)

    from datasets import Dataset

    trainer_cls, args = rl_trainer_and_args(config, session.checkpoint_dir)
    reward_fn = TRLReward(reward)
    callback = GuardCallback(
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
    fast_generate(trainer.model)  # TRL's rollouts: the same tokens, less per-step overhead
    return session.train_and_export(
        trainer, tokenizer, metadata, keep_checkpoints=config.keep_checkpoints
    )


def rl_trainer_and_args(config: RLHFConfig, checkpoint_dir: Path) -> tuple[type, Any]:
    """TRL's GRPO or RLOO trainer class and its config, from an
    [`RLHFConfig`][lfp_mech.rlhf.config.RLHFConfig].

    Rollouts sample with ``temperature`` and no top-k/top-p (pure ancestral sampling), with the
    training ``repetition_penalty``.
    """
    if config.method == "grpo":
        from trl import GRPOConfig as ArgsCls
        from trl import GRPOTrainer as TrainerCls
    else:
        from trl import RLOOConfig as ArgsCls
        from trl import RLOOTrainer as TrainerCls
    kwargs = trainer_kwargs(config, checkpoint_dir)
    if config.mini_batch_size is not None:  # PPO-style: several updates per rollout batch
        kwargs["per_device_train_batch_size"] = config.mini_batch_size
        kwargs["steps_per_generation"] = config.batch_size // config.mini_batch_size
    args = ArgsCls(
        num_generations=config.num_generations,
        max_completion_length=config.max_new_tokens,
        generation_kwargs={"min_new_tokens": config.min_new_tokens},
        temperature=config.temperature,
        top_k=0,
        top_p=1.0,
        repetition_penalty=config.repetition_penalty,
        **kwargs,
    )
    return TrainerCls, args


class TRLReward:
    """Adapts a [`RewardFn`][lfp_mech.rewards.RewardFn] to TRL's reward-function call, recording
    collapse statistics.

    TRL calls ``fn(prompts=..., completions=..., completion_ids=..., **columns)`` once per
    generation batch and expects one float per completion. The reward reads
    ``prompt + completion`` (the paper scores prefix + completion). Distinct-2 of the
    completions is kept until the logging callback collects it.
    """

    __name__ = "reward"  # TRL names the logged reward column after the function

    def __init__(self, reward: RewardLike) -> None:
        self.reward = reward
        self._stats: list[dict[str, float]] = []

    def __call__(
        self, prompts: list, completions: list, completion_ids: Any = None, **_: Any
    ) -> list[float]:
        texts = [as_text(p) + as_text(c) for p, c in zip(prompts, completions, strict=True)]
        scores = score_texts(self.reward, texts)
        completion_texts = [as_text(c) for c in completions]
        self._stats.append(
            {"distinct_2": distinct_n(completion_texts, 2), "n": float(len(completion_texts))}
        )
        return scores

    def pop_stats(self) -> dict[str, float]:
        """Distinct-2 of the completions scored since the last call (sample-weighted mean)."""
        stats, self._stats = self._stats, []
        total = sum(s["n"] for s in stats)
        if not total:
            return {}
        return {"distinct_2": sum(s["distinct_2"] * s["n"] for s in stats) / total}


def as_text(item: Any) -> str:
    """A prompt/completion as text (TRL passes strings, or message lists for chat data)."""
    if isinstance(item, str):
        return item
    if isinstance(item, list):  # conversational: [{"role": ..., "content": ...}, ...]
        return "".join(str(m.get("content", "")) for m in item if isinstance(m, dict))
    return str(item)


def ensure_reloadable(
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
    if is_main_process():  # under accelerate launch one process writes, the others wait
        with atomic_dir(directory) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    wait_for_everyone()
    model.config._name_or_path = str(directory.resolve())
    model.name_or_path = str(directory.resolve())


def _looks_like_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None
