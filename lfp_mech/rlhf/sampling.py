"""Sampling completions and scoring them: what evaluation, preference pairs and training share."""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.models.generation import generate_texts

__all__ = ["RewardLike", "check_prompts", "sample_completions", "score_texts"]

RewardLike = Callable[[Sequence[str]], Any]
"""A [`lfp_mech.rewards.RewardFn`][lfp_mech.rewards.RewardFn]: ``texts -> Float[Tensor, "batch"]``
(higher is better)."""


def check_prompts(prompts: Sequence[str], *, need: int) -> list[str]:
    """The prompts as a list of strings; at least ``need`` of them, none empty."""
    prompts = [str(p) for p in prompts]
    if len(prompts) < need:
        raise ConfigError(f"need at least {need} prompt(s), got {len(prompts)}")
    if any(not p.strip() for p in prompts):
        raise ConfigError("empty prompt(s) given: every prompt needs some text")
    return prompts


def score_texts(reward: RewardLike, texts: Sequence[str]) -> list[float]:
    """``reward(texts)`` as a list of floats (float32 precision), one per text."""
    scores = torch.as_tensor(reward(list(texts)), dtype=torch.float32).reshape(-1)
    if scores.numel() != len(texts):
        raise LfpMechError(
            f"reward returned {scores.numel()} scores for {len(texts)} texts; a RewardFn must "
            "return one score per text"
        )
    return scores.tolist()


def sample_completions(
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
