"""How well a probe's predictions match the VADER lexicon on held-out words, with bootstrap CIs.

[`evaluate_probe`][lfp_mech.probes.evaluation.evaluate_probe] reports Kendall τ
(``scipy.stats.kendalltau``, τ-b) against the VADER valence with its p-value, and the measures that
separate magnitude from sign: τ within sign (on positive and on negative words only), the sign
accuracy (all words, positive, negative) and the τ of the *sign-only reference*
([`sign_only_tau`][lfp_mech.probes.evaluation.sign_only_tau]: a predictor that knows the sign of
every word and nothing else). Half of all word pairs of a balanced word set cross sign, so the
sign-only reference already reaches τ ≈ 0.5; a probe ranks magnitudes only if its τ exceeds that
reference and its within-sign τ exceeds 0. Every CI is a
percentile bootstrap over words (``scipy.stats.bootstrap``, the same resamples for every measure).
[`paired_bootstrap_diff`][lfp_mech.probes.evaluation.paired_bootstrap_diff] gives the τ difference
of two probes on the same words with a paired bootstrap CI and a paired permutation p-value
(``scipy.stats.permutation_test``: under the null the two probes' rank-transformed predictions are
exchangeable word by word).

Paper Figure 4: [`word_frequencies`][lfp_mech.probes.evaluation.word_frequencies] counts lexicon
words in the tuned policy's completions (with [`lfp_mech.rewards.words`][lfp_mech.rewards.words],
the reward's own tokenizer) and
[`frequency_error_correlation`][lfp_mech.probes.evaluation.frequency_error_correlation] relates
|probe − VADER| to that frequency (Spearman ρ)."""

import warnings
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
    "sign_only_predictor",
    "sign_only_tau",
    "word_frequencies",
]

_METRIC_NAMES = (
    "tau",
    "tau_negative",
    "sign_acc_positive",
    "sign_acc_negative",
    "tau_positive",
    "sign_acc",
    "tau_sign_only",
)


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
    sign_acc: float
    """Share of all words predicted with the right strict sign."""
    sign_acc_ci: tuple[float, float]
    tau_sign_only: float
    """τ that sign alone earns on the same words
    ([`sign_only_tau`][lfp_mech.probes.evaluation.sign_only_tau], ≈ 0.5 on a balanced set)."""
    tau_sign_only_ci: tuple[float, float]
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
            "sign_acc": self.sign_acc,
            "sign_acc_ci_low": self.sign_acc_ci[0],
            "sign_acc_ci_high": self.sign_acc_ci[1],
            "tau_sign_only": self.tau_sign_only,
            "tau_sign_only_ci_low": self.tau_sign_only_ci[0],
            "tau_sign_only_ci_high": self.tau_sign_only_ci[1],
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
            "sign_acc": self.sign_acc,
            "ci_low": self.sign_acc_ci[0],
            "ci_high": self.sign_acc_ci[1],
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
    """Two-sided paired permutation p-value (``scipy.stats.permutation_test``, the two probes'
    rank-transformed predictions swapped word by word; ``(1 + #{|diff*| ≥ |diff|}) / (1 + n)``)."""
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
    """τ (+ p), τ within sign, sign accuracies, the sign-only reference, per-word table, CIs.

    A word is positive if its true valence is > 0 and negative if < 0; sign accuracy counts
    predictions with the right strict sign (a prediction of exactly 0 is wrong for both).
    ``tau_sign_only`` is [`sign_only_tau`][lfp_mech.probes.evaluation.sign_only_tau] of the same
    words. CIs: 2.5/97.5 percentiles of
    ``n_bootstrap`` resamples of the words (``scipy.stats.bootstrap``, seeded with ``seed``; every
    measure on the same resamples; resamples where a measure is undefined are left out of its CI).
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
    boot = _bootstrap_distribution(
        lambda i: np.array(_metrics(predicted[i], true_valence[i])),
        len(words),
        n_bootstrap,
        seed,
    )
    ci = {k: _percentile_ci(boot[j]) for j, k in enumerate(_METRIC_NAMES)}
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
        sign_acc=point[5],
        sign_acc_ci=ci["sign_acc"],
        tau_sign_only=point[6],
        tau_sign_only_ci=ci["tau_sign_only"],
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
    """``metric(a, true) − metric(b, true)`` on the same words: 95% paired bootstrap CI and a
    paired permutation p-value.

    CI: ``scipy.stats.bootstrap`` over words (the same resampled words for both probes in each
    replicate, so word-level noise shared by the two probes cancels). p: ``scipy.stats.
    permutation_test`` (``permutation_type="samples"``) swapping, word by word, the two probes'
    predictions after a rank transform to (0, 1] (so that predictions on different scales are
    exchangeable under the null "the two probes rank the words equally well"); two-sided.
    """
    fn = kendall_tau if metric == "kendall" else metric
    pred_a, pred_b = np.asarray(pred_a, np.float64), np.asarray(pred_b, np.float64)
    true = np.asarray(true, np.float64)
    if not pred_a.shape == pred_b.shape == true.shape:
        raise ValueError(f"shape mismatch: {pred_a.shape}, {pred_b.shape}, {true.shape}")
    diff = fn(pred_a, true) - fn(pred_b, true)
    boots = _bootstrap_distribution(
        lambda i: np.array([fn(pred_a[i], true[i]) - fn(pred_b[i], true[i])]),
        true.shape[0],
        n,
        seed,
    )[0]
    low, high = _percentile_ci(boots)
    return PairedDiff(
        float(diff), low, high, _paired_permutation_p(pred_a, pred_b, true, fn, n, seed), n
    )


def _paired_permutation_p(
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    true: np.ndarray,
    fn: Callable[[np.ndarray, np.ndarray], float],
    n: int,
    seed: int,
) -> float:
    """Two-sided p of ``fn(a) − fn(b)`` under word-by-word swaps of the rank-transformed
    predictions (``scipy.stats.permutation_test``); NaN when the difference is undefined."""
    if np.array_equal(pred_a, pred_b):
        return 1.0
    ranks_a = stats.rankdata(pred_a) / len(pred_a)
    ranks_b = stats.rankdata(pred_b) / len(pred_b)
    if not np.isfinite(fn(ranks_a, true) - fn(ranks_b, true)):
        return float("nan")

    def statistic(a: np.ndarray, b: np.ndarray) -> float:
        return fn(a, true) - fn(b, true)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.permutation_test(
            (ranks_a, ranks_b),
            statistic,
            permutation_type="samples",
            vectorized=False,
            n_resamples=n,
            alternative="two-sided",
            rng=np.random.default_rng(seed),
        )
    return float(result.pvalue)


def _bootstrap_distribution(
    statistic: Callable[[np.ndarray], np.ndarray], n_items: int, n_resamples: int, seed: int
) -> Float[np.ndarray, "measure resample"]:
    """``statistic(resampled word indices)`` over ``scipy.stats.bootstrap`` resamples of the
    ``n_items`` words (percentile method; NaN where a measure is undefined)."""

    def on_indices(index: np.ndarray) -> np.ndarray:
        return statistic(index.astype(np.int64))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: NaN, left out of the CIs
        result = stats.bootstrap(
            (np.arange(n_items),),
            on_indices,
            n_resamples=n_resamples,
            vectorized=False,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return np.atleast_2d(np.asarray(result.bootstrap_distribution, dtype=np.float64))


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


def _metrics(pred: np.ndarray, true: np.ndarray) -> tuple[float, ...]:
    """τ, τ on negative words, sign accuracy on positive / negative words, τ on positive words,
    sign accuracy on all words, τ of the sign-only reference (order of ``_METRIC_NAMES``)."""
    pos, neg = true > 0, true < 0
    signed = pos | neg
    right = (pos & (pred > 0)) | (neg & (pred < 0))
    return (
        kendall_tau(pred, true),
        kendall_tau(pred[neg], true[neg]),
        float((pred[pos] > 0).mean()) if pos.any() else float("nan"),
        float((pred[neg] < 0).mean()) if neg.any() else float("nan"),
        kendall_tau(pred[pos], true[pos]),
        float(right[signed].mean()) if signed.any() else float("nan"),
        sign_only_tau(true),
    )


def sign_only_tau(true: Float[np.ndarray, " word"]) -> float:
    """τ-b that knowing only the sign earns: the expected τ of a predictor that orders every
    positive word above every negative one and orders words of the same sign at random.

    Every cross-sign pair is concordant and same-sign pairs cancel in expectation, so
    ``τ = n_pos · n_neg / sqrt(n₀ · (n₀ − n_ties))`` with ``n₀ = n(n−1)/2`` and ``n_ties`` the
    pairs tied in ``true`` (a continuous predictor has no ties). On a balanced word set it is ≈ 0.5.
    (The constant predictor ``sign(valence)`` itself gets a larger τ-b, ≈ 0.71, only because τ-b
    divides by the pairs it leaves untied.) NaN with fewer than 2 words or one sign only."""
    true = np.asarray(true, dtype=np.float64)
    n = true.shape[0]
    n_pos, n_neg = int((true > 0).sum()), int((true < 0).sum())
    if n < 2 or n_pos == 0 or n_neg == 0:
        return float("nan")
    n0 = n * (n - 1) / 2
    _, counts = np.unique(true, return_counts=True)
    ties = float((counts * (counts - 1) / 2).sum())
    return float(n_pos * n_neg / np.sqrt(n0 * (n0 - ties)))


def sign_only_predictor(
    true: Float[np.ndarray, " word"], seed: int = 0
) -> Float[np.ndarray, " word"]:
    """The sign-only reference as a predictor: ``sign(valence)`` with the words of each sign in a
    seeded random order (values in ``±[1, 1.5)``), so its τ is one draw around
    [`sign_only_tau`][lfp_mech.probes.evaluation.sign_only_tau] and its within-sign τ around 0."""
    true = np.asarray(true, dtype=np.float64)
    jitter = np.random.default_rng(seed).permutation(true.shape[0]) / (2 * max(true.shape[0], 1))
    return np.sign(true) * (1 + jitter)


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
