"""The texts activations are captured from: the policy's text, topped up and split.

[`activation_corpus`][lfp_mech.activations.corpus.activation_corpus] mixes the tuned policy's
completions with the prompt corpus; [`split_corpus`][lfp_mech.activations.corpus.split_corpus]
shuffles the texts, tops them up with completions sampled from the policy
([`sample_completions`][lfp_mech.activations.corpus.sample_completions]) while they hold fewer
tokens than the capture needs, and splits off the held-out texts."""

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lfp_mech.activations.config import ActivationConfig
from lfp_mech.activations.tokenization import take_until, token_counts
from lfp_mech.errors import ConfigError
from lfp_mech.models.generation import generate_texts

__all__ = ["CorpusSplit", "activation_corpus", "sample_completions", "split_corpus"]

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
    """The capture's texts: training and held-out (disjoint), and how many were sampled."""

    train: list[str]
    heldout: list[str]
    n_sampled: int
    """Completions sampled from the policy to top up the given texts."""


def split_corpus(
    texts: Sequence[str],
    hf_model: Any,
    tokenizer: Any,
    config: ActivationConfig,
    *,
    prompts: Sequence[str] = (),
) -> CorpusSplit:
    """Shuffle ``texts`` (``config.seed``), top them up, and split off the held-out texts.

    Held-out texts come first until ``heldout_tokens``; the rest train. If the texts hold fewer
    than ``n_tokens + heldout_tokens`` tokens (plus a text's worth of margin) and
    ``config.top_up``, completions to ``prompts`` are sampled from ``hf_model`` to fill the gap,
    and the texts are shuffled again (``seed + 1``).
    """
    corpus = [t for t in texts if t.strip()]
    random.Random(config.seed).shuffle(corpus)
    lengths = token_counts(tokenizer, corpus, config.context_length)
    n_sampled = 0
    if config.top_up and prompts:
        n_sampled = _top_up(corpus, lengths, hf_model, tokenizer, list(prompts), config)
    if n_sampled:
        order = list(range(len(corpus)))
        random.Random(config.seed + 1).shuffle(order)
        corpus, lengths = [corpus[i] for i in order], [lengths[i] for i in order]
    split = len(take_until(lengths, config.heldout_tokens)) if config.heldout_tokens else 0
    heldout, train = corpus[:split], corpus[split:]
    if not train:
        raise ConfigError(
            f"all {len(corpus)} texts went to the held-out split: lower heldout_tokens "
            f"({config.heldout_tokens}) or pass more texts"
        )
    return CorpusSplit(train=train, heldout=heldout, n_sampled=n_sampled)


def _top_up(
    corpus: list[str],
    lengths: list[int],
    hf_model: Any,
    tokenizer: Any,
    prompts: list[str],
    config: ActivationConfig,
) -> int:
    """Append sampled completions to ``corpus`` (and their counts to ``lengths``) until they hold
    the tokens the capture needs; returns how many were sampled."""
    # a text's worth of margin: the held-out split ends on a text boundary
    needed = config.n_tokens + config.heldout_tokens + config.context_length
    have = sum(lengths)
    n_sampled = sampled_tokens = 0
    for round_ in range(MAX_TOP_UP_ROUNDS):
        if have >= needed:
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
            seed=config.seed + round_,
        )
        new_lengths = token_counts(tokenizer, sampled, config.context_length)
        sampled_tokens += sum(new_lengths)
        n_sampled += n_new
        corpus += sampled
        lengths += new_lengths
        have = sum(lengths)
    return n_sampled
