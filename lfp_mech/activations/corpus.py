"""The texts activations are captured from: the policy's text, topped up and split.

[`activation_corpus`][lfp_mech.activations.corpus.activation_corpus] mixes the tuned policy's
completions with the prompt corpus; [`split_corpus`][lfp_mech.activations.corpus.split_corpus]
splits the texts into training and held-out ones by source prompt (no prompt in both), and tops
each side up with completions of its own prompts sampled from the policy
([`sample_completions`][lfp_mech.activations.corpus.sample_completions]) while it holds fewer
tokens than the capture needs."""

import logging
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from lfp_mech.activations.config import ActivationConfig
from lfp_mech.activations.tokenization import take_until, token_counts
from lfp_mech.errors import ConfigError
from lfp_mech.models.generation import generate_texts

__all__ = [
    "CorpusSplit",
    "activation_corpus",
    "sample_completions",
    "source_prompt",
    "split_corpus",
]

logger = logging.getLogger(__name__)

MAX_TOP_UP_ROUNDS = 5
"""Sampling rounds before the capture gives up and captures fewer tokens than asked (each round
samples what the previous ones' tokens per text suggest is missing, plus 10%)."""


def activation_corpus(
    policy_completions: Sequence[str], prompts: Sequence[str], *, seed: int = 0
) -> list[str]:
    """The SAE training texts: the tuned policy's completions plus the prompt corpus, shuffled.

    ``policy_completions`` are full texts (prompt followed by the policy's completion), the
    behaviour RLHF shaped; ``prompts`` are the training prompts alone, the inputs it was shaped
    on. Both are kept (duplicates and empty strings removed) and shuffled with ``seed``. With
    the offline reviews set (790 prompts of ~8 tokens) the prompts give ~6k tokens; the rest
    of the 75k-token target comes from completions (~30–55 tokens each).
    """
    seen: set[str] = set()
    corpus = []
    for text in [*policy_completions, *prompts]:
        if text.strip() and text not in seen:
            seen.add(text)
            corpus.append(text)
    if not corpus:
        raise ConfigError("activation corpus is empty: pass policy completions and/or prompts")
    random.Random(seed).shuffle(corpus)
    return corpus


def sample_completions(
    hf_model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    n_texts: int,
    *,
    max_new_tokens: int = 48,
    batch_size: int = 64,
    seed: int = 0,
) -> list[str]:
    """``n_texts`` texts ``prompt + sampled completion`` from an HF causal LM (temperature 1).

    Prompts are cycled in a seeded random order; sampling is seeded. Used to top up the
    activation corpus with the tuned policy's own text.
    """
    if not prompts:
        raise ConfigError("no prompts to sample completions from")
    rng = random.Random(seed)
    chosen = [prompts[rng.randrange(len(prompts))] for _ in range(n_texts)]
    completions, _ = generate_texts(
        hf_model,
        tokenizer,
        chosen,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        device=hf_model.device,
        desc="sample",
    )
    return [p + c for p, c in zip(chosen, completions, strict=True)]


@dataclass
class CorpusSplit:
    """The capture's texts: training and held-out, disjoint by source prompt, and how many were
    sampled."""

    train: list[str]
    heldout: list[str]
    n_sampled: int
    """Completions sampled from the policy to top up the given texts."""
    train_prompts: list[str] = field(default_factory=list)
    """The source prompts (or texts) of the training texts."""
    heldout_prompts: list[str] = field(default_factory=list)
    """The source prompts (or texts) of the held-out texts: none of them is a training one."""


def source_prompt(text: str, prompts: Collection[str]) -> str:
    """The longest of ``prompts`` that ``text`` starts with (a completion's prompt), else the
    text itself: texts with the same source are split together."""
    for end in range(len(text), 0, -1):
        if text[:end] in prompts:
            return text[:end]
    return text


def split_corpus(
    texts: Sequence[str],
    hf_model: Any,
    tokenizer: Any,
    config: ActivationConfig,
    *,
    prompts: Sequence[str] = (),
) -> CorpusSplit:
    """Split ``texts`` into training and held-out texts **by source prompt**, topping each side
    up with completions of its own prompts.

    Every text belongs to its source ([`source_prompt`][lfp_mech.activations.corpus.source_prompt]:
    the prompt it starts with, else itself); the sources (the texts' and the unused
    ``prompts``) are shuffled with ``config.seed``. With prompts to sample from (and
    ``config.top_up``), a share ``heldout_tokens / (n_tokens + heldout_tokens)`` of the sources
    is held out; without, held-out sources are taken until their texts hold ``heldout_tokens``.
    Each side is then topped up with completions sampled from ``hf_model`` for its own prompts
    while it holds too few tokens, so no prompt is in both splits (no held-out token comes from
    a prompt seen in training)."""
    prompt_set = {p for p in prompts if p.strip()}
    corpus = [t for t in texts if t.strip()]
    random.Random(config.seed).shuffle(corpus)
    groups: dict[str, list[str]] = {}
    for text in corpus:
        groups.setdefault(source_prompt(text, prompt_set), []).append(text)
    unused = sorted(prompt_set - set(groups))
    random.Random(config.seed).shuffle(unused)
    for prompt in unused:
        groups[prompt] = []
    keys = list(groups)
    can_top_up = config.top_up and bool(prompt_set)
    if not config.heldout_tokens:
        n_heldout = 0
    elif can_top_up:
        share = config.heldout_tokens / (config.n_tokens + config.heldout_tokens)
        n_heldout = min(len(keys) - 1, max(1, round(share * len(keys))))
    else:
        sizes = [sum(token_counts(tokenizer, groups[k], config.context_length)) for k in keys]
        n_heldout = len(take_until(sizes, config.heldout_tokens))
    sides = {"heldout": keys[:n_heldout], "train": keys[n_heldout:]}
    split: dict[str, list[str]] = {}
    n_sampled = 0
    for offset, (side, side_keys) in enumerate(sides.items()):
        side_texts = [t for k in side_keys for t in groups[k]]
        if can_top_up:
            target = config.heldout_tokens if side == "heldout" else config.n_tokens
            side_prompts = [k for k in side_keys if k in prompt_set]
            side_texts, sampled = _top_up(
                side_texts, target, hf_model, tokenizer, side_prompts, config, offset
            )
            n_sampled += sampled
        split[side] = side_texts
    if not split["train"]:
        raise ConfigError(
            f"all {len(corpus)} texts went to the held-out split: lower heldout_tokens "
            f"({config.heldout_tokens}) or pass more texts"
        )
    return CorpusSplit(
        train=split["train"],
        heldout=split["heldout"],
        n_sampled=n_sampled,
        train_prompts=sides["train"],
        heldout_prompts=sides["heldout"],
    )


def _top_up(
    texts: list[str],
    target: int,
    hf_model: Any,
    tokenizer: Any,
    prompts: list[str],
    config: ActivationConfig,
    seed_offset: int,
) -> tuple[list[str], int]:
    """``texts`` plus completions of ``prompts`` sampled until they hold ``target`` tokens (and
    a text's worth of margin), shuffled again if any were sampled; and how many were sampled."""
    # a text's worth of margin: the capture ends on a text boundary
    needed = target + config.context_length
    lengths = token_counts(tokenizer, texts, config.context_length)
    have = sum(lengths)
    n_sampled = sampled_tokens = 0
    for round_ in range(MAX_TOP_UP_ROUNDS):
        if have >= needed or not prompts:
            break
        per_text = sampled_tokens / n_sampled if n_sampled else config.max_new_tokens + 8
        per_text = max(per_text, 1.0)
        n_new = math.ceil((needed - have) * 1.1 / per_text)
        logger.info("texts hold %d of %d tokens: sampling %d completions", have, needed, n_new)
        sampled = sample_completions(
            hf_model.to(config.device),
            tokenizer,
            prompts,
            n_new,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.generation_batch_size,
            seed=config.seed + 100 * seed_offset + round_,
        )
        new_lengths = token_counts(tokenizer, sampled, config.context_length)
        sampled_tokens += sum(new_lengths)
        n_sampled += n_new
        texts = texts + sampled
        have += sum(new_lengths)
    if n_sampled:
        texts = list(texts)
        random.Random(config.seed + 1 + seed_offset).shuffle(texts)
    return texts, n_sampled
