"""How well a probe's predictions match the VADER lexicon on held-out words, with bootstrap CIs.

[`evaluate_probe`][lfp_mech.probes.evaluation.evaluate_probe] reports Kendall τ
(``scipy.stats.kendalltau``, τ-b) against the VADER valence with its p-value, τ on negative (and
positive) words only, the sign accuracy on positive and on negative words, a per-word table (paper
Table 2) and bootstrap 95% CIs (resampling words).
[`paired_bootstrap_diff`][lfp_mech.probes.evaluation.paired_bootstrap_diff] gives the τ difference
tuned − baseline with a paired bootstrap CI.

Paper Figure 4: [`word_frequencies`][lfp_mech.probes.evaluation.word_frequencies] counts lexicon
words in the tuned policy's completions (with [`lfp_mech.rewards.words`][lfp_mech.rewards.words],
the reward's own tokenizer) and
[`frequency_error_correlation`][lfp_mech.probes.evaluation.frequency_error_correlation] relates
|probe − VADER| to that frequency (Spearman ρ)."""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from jaxtyping import Float
from scipy import stats

from lfp_mech.rewards import words as split_words

__all__ = [
    "PairedDiff",
    "ProbeEval",
    "evaluate_probe",
    "frequency_error_correlation",
    "kendall_tau",
    "paired_bootstrap_diff",
    "word_frequencies",
]

_METRIC_NAMES = ("tau", "tau_negative", "sign_acc_positive", "sign_acc_negative", "tau_positive")


@dataclass
class ProbeEval:
    """How well predicted valences match the lexicon on a set of words."""

    name: str
    n_words: int
    n_positive: int
    n_negative: int
    tau: float
    p_value: float
    tau_ci: tuple[float, float]
    tau_negative: float
    p_negative: float
    tau_negative_ci: tuple[float, float]
    tau_positive: float
    """τ on positive words only: does the probe rank magnitudes within a sign?"""
    p_positive: float
    tau_positive_ci: tuple[float, float]
    sign_acc_positive: float
    sign_acc_positive_ci: tuple[float, float]
    sign_acc_negative: float
    sign_acc_negative_ci: tuple[float, float]
    words: list[str] = field(repr=False)
    true_valence: Float[np.ndarray, " word"] = field(repr=False)
    predicted: Float[np.ndarray, " word"] = field(repr=False)

    def kendall_row(self) -> dict[str, Any]:
        """One row of the Kendall τ table."""
        return {
            "probe": self.name,
            "n_words": self.n_words,
            "tau": self.tau,
            "p_value": self.p_value,
            "tau_ci_low": self.tau_ci[0],
            "tau_ci_high": self.tau_ci[1],
            "tau_negative": self.tau_negative,
            "p_negative": self.p_negative,
            "tau_negative_ci_low": self.tau_negative_ci[0],
            "tau_negative_ci_high": self.tau_negative_ci[1],
            "tau_positive": self.tau_positive,
            "p_positive": self.p_positive,
            "tau_positive_ci_low": self.tau_positive_ci[0],
            "tau_positive_ci_high": self.tau_positive_ci[1],
        }

    def sign_row(self) -> dict[str, Any]:
        """One row of the sign-accuracy table (paper Table 5)."""
        return {
            "probe": self.name,
            "n_positive": self.n_positive,
            "sign_acc_positive": self.sign_acc_positive,
            "positive_ci_low": self.sign_acc_positive_ci[0],
            "positive_ci_high": self.sign_acc_positive_ci[1],
            "n_negative": self.n_negative,
            "sign_acc_negative": self.sign_acc_negative,
            "negative_ci_low": self.sign_acc_negative_ci[0],
            "negative_ci_high": self.sign_acc_negative_ci[1],
        }

    def table(self) -> list[dict[str, Any]]:
        """Per-word rows (paper Table 2): word, true valence, predicted valence."""
        return [
            {"word": w, "true_valence": float(t), "predicted": float(p)}
            for w, t, p in zip(self.words, self.true_valence, self.predicted, strict=True)
        ]


@dataclass
class PairedDiff:
    """``metric(a) − metric(b)`` on the same words, with a paired bootstrap CI."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    """Two-sided bootstrap p-value: 2·min(P(diff* ≤ 0), P(diff* ≥ 0)), floored at 1/n."""
    n_bootstrap: int


def kendall_tau(predicted: Float[np.ndarray, " word"], true: Float[np.ndarray, " word"]) -> float:
    """Kendall τ-b (NaN if fewer than 2 words or a constant input)."""
    if _degenerate(predicted, true):
        return float("nan")
    return float(stats.kendalltau(predicted, true).statistic)


def evaluate_probe(
    predicted: Float[np.ndarray, " word"],
    true_valence: Float[np.ndarray, " word"],
    words: Sequence[str],
    *,
    name: str = "probe",
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> ProbeEval:
    """Kendall τ (+ p), τ on negative (and positive) words, sign accuracies, per-word table, CIs.

    A word is positive if its true valence is > 0 and negative if < 0; sign accuracy counts
    predictions with the right strict sign (a prediction of exactly 0 is wrong for both).
    CIs: 2.5/97.5 percentiles over ``n_bootstrap`` resamples of the words (with replacement,
    ``numpy.random.default_rng(seed)``).
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true_valence = np.asarray(true_valence, dtype=np.float64)
    words = list(words)
    if not predicted.shape[0] == true_valence.shape[0] == len(words):
        raise ValueError(
            f"predicted ({predicted.shape[0]}), true_valence ({true_valence.shape[0]}) and "
            f"words ({len(words)}) must have the same length"
        )
    if len(words) < 3:
        raise ValueError(f"need at least 3 words to evaluate a probe, got {len(words)}")
    point = _metrics(predicted, true_valence)
    pos, neg = true_valence > 0, true_valence < 0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(words), size=(n_bootstrap, len(words)))
    boot = np.array([_metrics(predicted[i], true_valence[i]) for i in idx])
    ci = {k: _percentile_ci(boot[:, j]) for j, k in enumerate(_METRIC_NAMES)}
    return ProbeEval(
        name=name,
        n_words=len(words),
        n_positive=int(pos.sum()),
        n_negative=int(neg.sum()),
        tau=point[0],
        p_value=_kendall_p(predicted, true_valence),
        tau_ci=ci["tau"],
        tau_negative=point[1],
        p_negative=_kendall_p(predicted[neg], true_valence[neg]),
        tau_negative_ci=ci["tau_negative"],
        tau_positive=point[4],
        p_positive=_kendall_p(predicted[pos], true_valence[pos]),
        tau_positive_ci=ci["tau_positive"],
        sign_acc_positive=point[2],
        sign_acc_positive_ci=ci["sign_acc_positive"],
        sign_acc_negative=point[3],
        sign_acc_negative_ci=ci["sign_acc_negative"],
        words=words,
        true_valence=true_valence,
        predicted=predicted,
    )


def paired_bootstrap_diff(
    pred_a: Float[np.ndarray, " word"],
    pred_b: Float[np.ndarray, " word"],
    true: Float[np.ndarray, " word"],
    *,
    metric: Callable[[np.ndarray, np.ndarray], float] | Literal["kendall"] = "kendall",
    n: int = 2000,
    seed: int = 0,
) -> PairedDiff:
    """``metric(a, true) − metric(b, true)`` with a paired bootstrap over words (95% CI).

    The same resampled words are used for both probes in each replicate, so word-level noise
    shared by the two probes cancels.
    """
    fn = kendall_tau if metric == "kendall" else metric
    pred_a, pred_b = np.asarray(pred_a, np.float64), np.asarray(pred_b, np.float64)
    true = np.asarray(true, np.float64)
    if not pred_a.shape == pred_b.shape == true.shape:
        raise ValueError(f"shape mismatch: {pred_a.shape}, {pred_b.shape}, {true.shape}")
    diff = fn(pred_a, true) - fn(pred_b, true)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, true.shape[0], size=(n, true.shape[0]))
    boots = np.array([fn(pred_a[i], true[i]) - fn(pred_b[i], true[i]) for i in idx])
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return PairedDiff(float(diff), float("nan"), float("nan"), float("nan"), n)
    low, high = np.percentile(boots, [2.5, 97.5])
    p = min(1.0, 2 * min((boots <= 0).mean(), (boots >= 0).mean()))
    return PairedDiff(float(diff), float(low), float(high), max(p, 1.0 / boots.size), n)


def word_frequencies(completions: Sequence[str], words: Sequence[str]) -> dict[str, int]:
    """How often each of ``words`` occurs in ``completions`` (lower-cased).

    Words are split with [`lfp_mech.rewards.words`][lfp_mech.rewards.words], the VADER reward's own
    tokenizer, so a word counts exactly when the reward would score it."""
    counts = Counter(w for text in completions for w in split_words(text))
    return {w: int(counts[w.lower()]) for w in words}


def frequency_error_correlation(
    frequencies: Float[np.ndarray, " word"], abs_errors: Float[np.ndarray, " word"]
) -> tuple[float, float]:
    """Spearman ρ and p between word frequency and |probe − VADER| (Figure 4; the paper expects ρ <
    0)."""
    if np.ptp(frequencies) == 0 or np.ptp(abs_errors) == 0:
        return float("nan"), float("nan")
    result = stats.spearmanr(frequencies, abs_errors)
    return float(result.statistic), float(result.pvalue)


def _degenerate(pred: np.ndarray, true: np.ndarray) -> bool:
    """Fewer than 2 words or a constant input: τ and its p-value are undefined."""
    return bool(pred.shape[0] < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0)


def _metrics(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float, float, float]:
    """τ, τ on negative words, sign accuracy on positive / negative words, τ on positive words."""
    pos, neg = true > 0, true < 0
    return (
        kendall_tau(pred, true),
        kendall_tau(pred[neg], true[neg]),
        float((pred[pos] > 0).mean()) if pos.any() else float("nan"),
        float((pred[neg] < 0).mean()) if neg.any() else float("nan"),
        kendall_tau(pred[pos], true[pos]),
    )


def _kendall_p(pred: np.ndarray, true: np.ndarray) -> float:
    if _degenerate(pred, true):
        return float("nan")
    return float(stats.kendalltau(pred, true).pvalue)


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
