"""The probe's data: the paper's dataset D from contrastive triples, and the held-out words.

A contrastive triple ``(x⁺, x⁰, x⁻)`` is one sentence with a positive, a neutral and a negative word
in the same slot (built by [`lfp_mech.data`][lfp_mech.data]).
[`activation_deltas`][lfp_mech.probes.dataset.activation_deltas] forms the paper's dataset ``D``:
input ``A(x⁺)`` labelled ``+Δ⁺ = +||A(x⁺) − A(x⁰)||₂`` and input ``A(x⁻)`` labelled
``−Δ⁻ = −||A(x⁻) − A(x⁰)||₂``.

The probe is evaluated on lexicon words held out of every training triple (by default a seeded
sample of the whole VADER lexicon minus the training words, mild words included:
[`heldout_lexicon_words`][lfp_mech.probes.dataset.heldout_lexicon_words];
[`evaluation_words`][lfp_mech.probes.dataset.evaluation_words],
[`check_no_leak`][lfp_mech.probes.dataset.check_no_leak]): each word is put into carrier sentences
(the triple templates, [`carrier_sentences`][lfp_mech.probes.dataset.carrier_sentences]) and its
features averaged over them."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from einops import reduce
from jaxtyping import Float
from torch import Tensor

from lfp_mech import data
from lfp_mech.errors import LfpMechError
from lfp_mech.probes.config import ProbesConfig

__all__ = [
    "ProbeDataset",
    "activation_deltas",
    "build_probe_dataset",
    "carrier_sentences",
    "carrier_templates",
    "check_no_leak",
    "default_triples",
    "evaluation_words",
    "heldout_lexicon_words",
    "triple_texts_spans",
    "triple_words",
]


@dataclass
class ProbeDataset:
    """The paper's dataset D: inputs ``A(x⁺)`` (label ``+Δ⁺``) then ``A(x⁻)`` (label ``−Δ⁻``)."""

    inputs: Float[Tensor, "sample d"]
    labels: Float[Tensor, " sample"]
    words: list[str]
    """The substituted word of each sample (for leak checks)."""
    neutral_words: list[str]
    """The neutral words of the triples (inputs were never built from them, listed for checks)."""


def activation_deltas(
    a_pos: Float[Tensor, "triple d"],
    a_neu: Float[Tensor, "triple d"],
    a_neg: Float[Tensor, "triple d"],
) -> tuple[Float[Tensor, "sample d"], Float[Tensor, " sample"]]:
    """The paper's dataset D from the features of contrastive triples.

    ``Δ⁺ = ||A(x⁺) − A(x⁰)||₂`` and ``Δ⁻ = ||A(x⁻) − A(x⁰)||₂``; inputs are ``[A(x⁺); A(x⁻)]``
    (all positives first, then all negatives, triple order kept) with labels ``[+Δ⁺; −Δ⁻]``.
    """
    if a_pos.shape[0] == 0:
        raise ValueError("activation_deltas got no triples")
    delta_pos = reduce((a_pos - a_neu) ** 2, "triple d -> triple", "sum").sqrt()
    delta_neg = reduce((a_neg - a_neu) ** 2, "triple d -> triple", "sum").sqrt()
    inputs = torch.cat([a_pos, a_neg], dim=0)
    labels = torch.cat([delta_pos, -delta_neg], dim=0)
    return inputs, labels


def build_probe_dataset(
    a_pos: Float[Tensor, "triple d"],
    a_neu: Float[Tensor, "triple d"],
    a_neg: Float[Tensor, "triple d"],
    triples: Sequence[Any],
) -> ProbeDataset:
    """[`activation_deltas`][lfp_mech.probes.dataset.activation_deltas] plus the word behind each
    sample (from the triples' ``words``)."""
    if len(triples) != a_pos.shape[0]:
        raise ValueError(f"{len(triples)} triples but {a_pos.shape[0]} feature rows")
    inputs, labels = activation_deltas(a_pos, a_neu, a_neg)
    pos_words = [triple_words(t)[0] for t in triples]
    neg_words = [triple_words(t)[2] for t in triples]
    return ProbeDataset(
        inputs, labels, pos_words + neg_words, [triple_words(t)[1] for t in triples]
    )


def check_no_leak(train_words: Sequence[str], eval_words: Sequence[str]) -> None:
    """Raise [`LfpMechError`][lfp_mech.errors.LfpMechError] if an evaluation word was used in probe
    training."""
    leaked = sorted({w.lower() for w in train_words} & {w.lower() for w in eval_words})
    if leaked:
        raise LfpMechError(
            f"{len(leaked)} evaluation word(s) appear in the probe's training triples "
            f"({leaked[:10]}...): build triples with the same seed/heldout_fraction as the "
            "held-out words so that held-out words never enter training"
        )


def carrier_sentences(
    words: Sequence[str], templates: Sequence[str]
) -> tuple[list[str], list[tuple[int, int]]]:
    """Each word in each template's ``{}`` slot: texts and word spans, word-major order."""
    texts, spans = [], []
    for word in words:
        for template in templates:
            if template.count("{}") != 1:
                raise ValueError(f"template must contain exactly one '{{}}' slot: {template!r}")
            start = template.index("{}")
            texts.append(template[:start] + word + template[start + 2 :])
            spans.append((start, start + len(word)))
    return texts, spans


def carrier_templates(k: int, seed: int) -> list[str]:
    """``k`` of the triple templates (``lfp_mech.data.triple_templates``), chosen with ``seed``."""
    templates = [t for t in data.triple_templates() if t.count("{}") == 1]
    if not templates:
        raise LfpMechError("no triple templates with a '{}' slot (lfp_mech.data.triple_templates)")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(templates), size=min(k, len(templates)), replace=False)
    return [templates[i] for i in sorted(chosen)]


def default_triples(config: ProbesConfig) -> list[Any]:
    """The training triples of ``config``: only words outside the held-out split."""
    return data.make_triples(
        config.n_triples, seed=config.seed, heldout_fraction=config.heldout_fraction, split="train"
    )


def heldout_lexicon_words(config: ProbesConfig) -> list[str]:
    """The lexicon evaluation words of ``config`` (``eval_set="lexicon"``), sorted.

    The split is by word: every alphabetic single-word VADER entry
    ([`lfp_mech.data.lexicon_words`][lfp_mech.data.lexicon_words], mild words included) that is not
    a training word of the triples ([`lfp_mech.data.heldout_words`][lfp_mech.data.heldout_words]
    with the same seed and ``heldout_fraction``) is held out; ``config.n_eval_words`` of them are
    drawn with ``numpy.random.default_rng(seed)`` (all of them when it is 0)."""
    train, _ = data.heldout_words(seed=config.seed, heldout_fraction=config.heldout_fraction)
    train_lower = {w.lower() for w in train}
    held_out = [w for w in data.lexicon_words("all") if w not in train_lower]
    if config.n_eval_words == 0 or config.n_eval_words >= len(held_out):
        return held_out
    rng = np.random.default_rng(config.seed)
    chosen = rng.choice(len(held_out), size=config.n_eval_words, replace=False)
    return [held_out[i] for i in sorted(chosen)]


def evaluation_words(
    eval_words: Sequence[str] | None, config: ProbesConfig, lexicon: Mapping[str, float]
) -> list[str]:
    """The words the probes are evaluated on: ``eval_words`` (default: per ``config.eval_set``,
    the held-out lexicon words of
    [`heldout_lexicon_words`][lfp_mech.probes.dataset.heldout_lexicon_words] or the held-out
    curated adjectives of ``lfp_mech.data``), lower-cased, deduplicated, with |valence| >=
    ``config.min_abs_valence`` and nonzero valence."""
    if eval_words is None:
        if config.eval_set == "lexicon":
            eval_words = heldout_lexicon_words(config)
        else:
            _, test = data.heldout_words(seed=config.seed, heldout_fraction=config.heldout_fraction)
            eval_words = sorted(test)
    words = list(dict.fromkeys(w.lower() for w in eval_words))
    missing = [w for w in words if w not in lexicon]
    if missing:
        raise LfpMechError(f"evaluation words not in the VADER lexicon: {missing[:10]}")
    words = [w for w in words if abs(lexicon[w]) >= config.min_abs_valence and lexicon[w] != 0]
    if len(words) < 3:
        raise LfpMechError(
            f"only {len(words)} evaluation words with |valence| >= {config.min_abs_valence}; "
            "lower probes.min_abs_valence or raise probes.heldout_fraction / probes.n_eval_words"
        )
    return words


def triple_words(triple: Any) -> tuple[str, str, str]:
    """(positive, neutral, negative) word of a triple (``ContrastiveTriple.words``)."""
    words = tuple(triple.words)
    if len(words) != 3:
        raise ValueError(f"a triple must have 3 words (positive, neutral, negative): {words}")
    return words  # type: ignore[return-value]


def triple_texts_spans(triples: Sequence[Any]) -> tuple[list[str], list[tuple[int, int]]]:
    """Texts and spans, variant-major: all positives, then all neutrals, then all negatives."""
    texts, spans = [], []
    for variant in ("positive", "neutral", "negative"):
        for t in triples:
            texts.append(getattr(t, variant))
            spans.append(tuple(getattr(t, f"span_{variant}")))
    return texts, spans
