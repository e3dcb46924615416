"""The offline labeler: is a feature about sentiment? A lexicon statistic of the words it fires
on, tested against random features of the same SAE.

For the VADER task the words containing a feature's top-``k`` tokens are looked up in the VADER
lexicon; the statistic is their mean *absolute* valence ("how sentiment-laden are the words this
feature fires on"). Its null distribution is the same statistic for random live features of the
same SAE: ``p = (1 + #{null ≥ stat}) / (1 + n_null)`` (one-sided, permutation style) and a
z-score against the null's mean and spread. A feature is task-related when ``p < alpha``; the
description stage tests all chosen features together and corrects with Benjamini–Hochberg
([`adjusted_p_values`][lfp_mech.validate.autointerp.label.adjusted_p_values]).
"""

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lfp_mech.errors import ConfigError

__all__ = [
    "OfflineLabel",
    "adjusted_p_values",
    "label_feature",
    "load_lexicon",
    "valence_statistics",
]


@dataclass(frozen=True)
class OfflineLabel:
    """The offline labeler's verdict on one feature."""

    description: str
    task_related: bool
    p_value: float
    z_score: float
    statistic: float
    """Mean |valence| of the words under the top tokens."""
    mean_valence: float
    """Mean signed valence of those words (the polarity)."""
    sentiment_share: float
    """Share of those words that are in the lexicon with non-zero valence."""
    top_words: list[str]


DEAD_LABEL = OfflineLabel(
    "dead feature (never active on the corpus)", False, 1.0, 0.0, 0.0, 0.0, 0.0, []
)
"""The label of a feature with no positive activation on the corpus."""


def valence_statistics(
    words: Sequence[str], lexicon: Mapping[str, float]
) -> tuple[float, float, float]:
    """(mean |valence|, mean valence, share of lexicon words) of ``words`` (0s when empty).

    Words not in the lexicon, and empty words (spaces, punctuation), count as valence 0.
    """
    if not words:
        return 0.0, 0.0, 0.0
    vals = np.array([lexicon.get(w.lower(), 0.0) if w else 0.0 for w in words], dtype=np.float64)
    return float(np.abs(vals).mean()), float(vals.mean()), float((vals != 0).mean())


def label_feature(
    words: Sequence[str],
    null_statistics: Sequence[float],
    lexicon: Mapping[str, float],
    *,
    alpha: float = 0.05,
    n_words: int = 5,
) -> OfflineLabel:
    """Describe a feature from the words of its top-activating tokens, and test it.

    ``null_statistics`` are
    [`valence_statistics`][lfp_mech.validate.autointerp.label.valence_statistics]'s first value for
    random features of the same SAE. ``p = (1 + #{null ≥ stat}) / (1 + len(null))``;
    ``task_related = p < alpha`` (and the feature fires on at least one sentiment word). With no
    null, ``p = 1``. The description names the polarity and the most frequent top words, e.g.
    ``"fires on positive-sentiment words: great, love"`` or ``"no clear sentiment: the, of"``."""
    stat, mean_val, share = valence_statistics(words, lexicon)
    p, z = _null_test(stat, null_statistics)
    related = p < alpha and share > 0
    shown = [w for w in words if w]
    sentiment_words = [w for w in shown if lexicon.get(w, 0.0) != 0.0]
    if related:
        signs = [lexicon[w] for w in sentiment_words]
        pos_share = sum(v > 0 for v in signs) / len(signs)
        kind = (
            "positive"
            if pos_share >= 0.75
            else "negative"
            if pos_share <= 0.25
            else "positive and negative"
        )
        top = _most_common(sentiment_words, n_words)
        description = f"fires on {kind}-sentiment words: {', '.join(top)}"
    elif not shown:
        top = []
        description = "fires on punctuation/whitespace tokens (no words)"
    else:
        top = _most_common(shown, n_words)
        description = f"no clear sentiment: {', '.join(top)}"
    return OfflineLabel(description, related, p, z, stat, mean_val, share, top)


def adjusted_p_values(p_values: Sequence[float], correction: str = "bh") -> np.ndarray:
    """The p-values adjusted for testing them all together: ``"bh"`` — Benjamini–Hochberg
    (``scipy.stats.false_discovery_control``: ``q < alpha`` controls the false discovery rate at
    ``alpha``); ``"none"`` — unchanged. An empty list gives an empty array."""
    p = np.asarray(list(p_values), dtype=np.float64)
    if correction not in ("bh", "none"):
        raise ConfigError(f"correction must be 'bh' or 'none', got {correction!r}")
    if correction == "none" or p.size == 0:
        return p
    from scipy import stats

    return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=np.float64)


def _null_test(stat: float, null_statistics: Sequence[float]) -> tuple[float, float]:
    """(p-value, z-score) of ``stat`` against the null statistics ((1, 0) with no null)."""
    null = np.asarray(list(null_statistics), dtype=np.float64)
    if not len(null):
        return 1.0, 0.0
    p = float((1 + (null >= stat - 1e-12).sum()) / (1 + len(null)))
    sd = float(null.std(ddof=1)) if len(null) > 1 else 0.0
    z = (stat - float(null.mean())) / sd if sd > 0 else (math.inf if stat > null.mean() else 0.0)
    return p, z


def _most_common(words: Sequence[str], n: int) -> list[str]:
    return [w for w, _ in Counter(words).most_common(n)]


def load_lexicon(name: str) -> dict[str, float]:
    """The word → valence lexicon ``name`` (``"vader"``: the lexicon of the VADER reward)."""
    if name != "vader":
        raise ConfigError(f"unknown lexicon {name!r}; available: 'vader'")
    from lfp_mech.rewards import vader_lexicon

    return vader_lexicon()
