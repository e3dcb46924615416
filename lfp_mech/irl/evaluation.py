"""How well an IRL reward agrees with the true reward on held-out texts.

The true reward is binarized at 0 ("positive sentiment" / "non-toxic"); the IRL reward at a
threshold fitted on the *training* texts ([`fit_threshold`][lfp_mech.irl.evaluation.fit_threshold]:
the max-margin loss only sees differences of rewards, so the offset of ``R`` is not identifiable and
a threshold of 0 is arbitrary — it is reported too, as ``acc_zero``/``f1_zero``).
[`irl_metrics`][lfp_mech.irl.evaluation.irl_metrics] gives accuracy and F1 (scikit-learn), Pearson,
Spearman and Kendall correlations (SciPy);
[`summarize_runs`][lfp_mech.irl.evaluation.summarize_runs] aggregates the seeds × epochs table (the
median over seeds is the honest headline; the paper's best-of-78 is selected on the evaluation texts
and therefore optimistic)."""

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lfp_mech.errors import ConfigError

if TYPE_CHECKING:
    from lfp_mech.irl.reward_model import RewardModel

__all__ = [
    "METRICS",
    "IRLEval",
    "auroc_with_ci",
    "demo_metrics",
    "evaluate_reward_model",
    "fit_threshold",
    "irl_metrics",
    "run_key",
    "summarize_runs",
    "val_key",
]

logger = logging.getLogger(__name__)

METRICS = (
    "acc",
    "balanced_acc",
    "f1",
    "auroc",
    "acc_zero",
    "f1_zero",
    "pearson",
    "spearman",
    "kendall",
    "pair_acc",
    "acc_demos",
    "f1_demos",
    "spearman_demos",
)
"""Per-run held-out metrics (see [`IRLEval`][lfp_mech.irl.evaluation.IRLEval]). ``pair_acc``:
fraction of test prompts whose expert completion is scored above the non-expert one; ``*_demos``:
the metric on the two models' test completions only (without the task's other texts)."""


@dataclass(frozen=True)
class IRLEval:
    """Agreement of an IRL reward with the true reward on held-out texts.

    ``acc``/``f1``: true reward > 0 vs IRL reward > ``threshold`` (fitted on training texts);
    ``acc_zero``/``f1_zero``: the same with IRL threshold 0. F1 of the positive class (true
    reward > 0). Correlations are NaN when either side is constant.
    """

    n: int
    acc: float
    balanced_acc: float
    """Mean of the recall of each class (0.5 for a reward that knows nothing)."""
    f1: float
    auroc: float
    """Area under the ROC curve of the IRL reward for the binarized true reward (threshold-free;
    NaN with one class)."""
    acc_zero: float
    f1_zero: float
    threshold: float
    pearson: float
    spearman: float
    kendall: float
    positive_rate: float
    """Fraction of texts whose true reward is > 0 (the majority-class baseline is
    ``max(positive_rate, 1 - positive_rate)``)."""

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a dict (a row of the runs table)."""
        return asdict(self)


def fit_threshold(
    irl_scores: Float[Tensor, " text"],
    true_labels: Bool[Tensor, " text"],
    method: Literal["accuracy", "median"] = "accuracy",
) -> float:
    """The IRL-reward cut that binarizes ``irl_scores`` into ``true_labels``.

    "accuracy": the midpoint between consecutive sorted scores that maximises accuracy (the
    smallest such cut on ties); "median": the median score.
    """
    if irl_scores.numel() == 0:
        raise ValueError("fit_threshold needs at least one score")
    scores = irl_scores.double().cpu()
    if method == "median":
        return float(scores.median())
    if method != "accuracy":
        raise ConfigError(f"unknown threshold method {method!r}; use 'accuracy' or 'median'")
    s, order = torch.sort(scores)
    y = true_labels.cpu()[order]
    n = len(s)
    # cut k: the k lowest are predicted negative, the rest positive (k = 0..n)
    neg_below = torch.cat([torch.zeros(1), torch.cumsum((~y).double(), 0)])
    pos_above = y.sum() - torch.cat([torch.zeros(1), torch.cumsum(y.double(), 0)])
    correct = neg_below + pos_above
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[1:] > s[:-1]  # cannot cut between equal scores
    k = int(torch.argmax(torch.where(valid, correct, torch.full_like(correct, -1.0))))
    if k == 0:
        return float(s[0] - 1.0)
    if k == n:
        return float(s[-1] + 1.0)
    return float((s[k - 1] + s[k]) / 2)


def irl_metrics(
    irl_scores: Float[Tensor, " text"],
    true_scores: Float[Tensor, " text"],
    threshold: float,
) -> IRLEval:
    """Accuracy/F1 of the binarized rewards and their correlations (see
    [`IRLEval`][lfp_mech.irl.evaluation.IRLEval])."""
    from scipy import stats
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    if irl_scores.shape != true_scores.shape or irl_scores.numel() == 0:
        raise ValueError(
            f"need as many IRL as true scores (> 0); got {tuple(irl_scores.shape)} and "
            f"{tuple(true_scores.shape)}"
        )
    irl = irl_scores.double().cpu().numpy()
    true = true_scores.double().cpu().numpy()
    y = true > 0

    def corr(fn: Callable[..., Any]) -> float:
        if np.ptp(irl) == 0 or np.ptp(true) == 0:
            return float("nan")
        return float(fn(irl, true)[0])

    return IRLEval(
        n=len(irl),
        acc=float(accuracy_score(y, irl > threshold)),
        balanced_acc=float(balanced_accuracy_score(y, irl > threshold))
        if 0 < y.sum() < len(y)
        else float("nan"),
        f1=float(f1_score(y, irl > threshold, zero_division=0)),
        auroc=float(roc_auc_score(y, irl)) if 0 < y.sum() < len(y) else float("nan"),
        acc_zero=float(accuracy_score(y, irl > 0)),
        f1_zero=float(f1_score(y, irl > 0, zero_division=0)),
        threshold=float(threshold),
        pearson=corr(stats.pearsonr),
        spearman=corr(stats.spearmanr),
        kendall=corr(stats.kendalltau),
        positive_rate=float(y.mean()),
    )


def auroc_with_ci(
    irl_scores: Float[Tensor, " text"],
    true_scores: Float[Tensor, " text"],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC of the IRL reward for the true reward's label (``true > 0``), with a 95% bootstrap
    CI and the one-sided p-value that it exceeds chance.

    The CI is ``scipy.stats.bootstrap`` over the two classes resampled separately (stratified,
    so no resample loses a class; percentile); the p-value is ``scipy.stats.mannwhitneyu``'s
    (AUROC is U / (n_pos · n_neg), so this is the rank test of AUROC > 0.5). NaN with one class."""
    from scipy import stats

    irl = irl_scores.double().cpu().numpy()
    y = true_scores.double().cpu().numpy() > 0
    if y.all() or not y.any():
        nan = float("nan")
        return {"auroc": nan, "auroc_ci95": [nan, nan], "auroc_p_vs_chance": nan}

    def auroc(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> Any:  # array or scalar
        pos, neg = np.moveaxis(pos, axis, -1), np.moveaxis(neg, axis, -1)
        above = pos[..., :, None] > neg[..., None, :]
        ties = pos[..., :, None] == neg[..., None, :]
        return above.mean(axis=(-2, -1)) + 0.5 * ties.mean(axis=(-2, -1))

    res = stats.bootstrap(
        (irl[y], irl[~y]), auroc, vectorized=True, n_resamples=n_resamples, batch=200,
        method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    test = stats.mannwhitneyu(irl[y], irl[~y], alternative="greater")
    return {
        "auroc": float(auroc(irl[y], irl[~y])),
        "auroc_ci95": [float(res.confidence_interval.low), float(res.confidence_interval.high)],
        "auroc_p_vs_chance": float(test.pvalue),
    }


def evaluate_reward_model(
    rm: "RewardModel",
    texts: Sequence[str],
    true_reward: Callable[[Sequence[str]], Tensor] | Tensor,
    *,
    fit_texts: Sequence[str] | None = None,
    threshold_method: Literal["accuracy", "median"] = "accuracy",
    batch_size: int = 32,
) -> IRLEval:
    """Score ``texts`` with ``rm`` and the true reward and compare them
    ([`irl_metrics`][lfp_mech.irl.evaluation.irl_metrics]).

    The IRL threshold is fitted on ``fit_texts`` (the training texts; pass them!) with
    ``threshold_method``; without them it is fitted on ``texts`` themselves (in-sample, optimistic).
    ``true_reward`` is a reward function or the precomputed true rewards of ``texts``.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("evaluate_reward_model needs at least one text")
    true = true_reward if isinstance(true_reward, Tensor) else true_reward(texts)
    irl = rm.score(texts, batch_size=batch_size)
    if fit_texts is None:
        logger.warning("IRL threshold fitted on the evaluation texts (in-sample): pass fit_texts")
        fit_irl, fit_true = irl, true
    else:
        if isinstance(true_reward, Tensor):
            raise ValueError("fit_texts needs true_reward to be a function, not a tensor")
        fit_texts = list(fit_texts)
        fit_irl = rm.score(fit_texts, batch_size=batch_size)
        fit_true = true_reward(fit_texts)
    threshold = fit_threshold(fit_irl, fit_true.cpu() > 0, threshold_method)
    return irl_metrics(irl, true.float().cpu(), threshold)


def demo_metrics(
    irl_scores: Float[Tensor, " text"],
    true_scores: Float[Tensor, " text"],
    threshold: float,
) -> dict[str, float]:
    """Accuracy, F1 and Spearman on the two models' test completions (the ``*_demos`` columns)."""
    m = irl_metrics(irl_scores, true_scores, threshold)
    return {"acc_demos": m.acc, "f1_demos": m.f1, "spearman_demos": m.spearman}


def run_key(row: Mapping[str, Any]) -> tuple[float, float]:
    """The order in which runs are "best": held-out accuracy, then Spearman (NaN lowest)."""
    spearman = float(row["spearman"])
    return float(row["acc"]), -math.inf if math.isnan(spearman) else spearman


def _stats(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return {k: float("nan") for k in ("mean", "std", "median", "min", "max")}
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def summarize_runs(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± std, median, min and max over seeds (one row per seed: its last row, which
    [`run_seeds`][lfp_mech.irl.training.run_seeds] makes the held-out scores of the epoch chosen
    on validation), and the selected run.

    ``best_run`` is the seed with the best *validation* key (``val_acc``, then ``val_auroc``)
    when the rows carry validation metrics — the run that is saved and drives IRL-RLHF — else
    the best held-out row (labelled as such: optimistic).
    """
    if not rows:
        raise ValueError("summarize_runs needs at least one row")
    per_seed: dict[Any, Mapping[str, Any]] = {}
    for row in rows:
        per_seed[row["seed"]] = row  # the last row of each seed
    final = list(per_seed.values())
    stats = {m: _stats(np.asarray([r[m] for r in final], dtype=float)) for m in METRICS}
    on_validation = all("val_acc" in r for r in final)
    best = max(final, key=val_key) if on_validation else max(rows, key=run_key)
    rate = float(rows[0].get("positive_rate", float("nan")))
    extra = [k for k in ("val_acc", "val_balanced_acc", "val_auroc") if k in best]
    return {
        "n_seeds": len(final),
        "n_epochs": max(int(r["epoch"]) for r in rows),
        "n_runs": len(rows),
        "majority_baseline_acc": max(rate, 1.0 - rate),
        "random_baseline_balanced_acc": 0.5,
        "final_epoch": stats,
        "best_run": {k: best[k] for k in ("seed", "epoch", *METRICS, *extra)},
        "best_run_selected_on": "validation" if on_validation else "held-out (optimistic)",
        "labels": {
            "final_epoch": "over seeds, each at the epoch chosen on validation (mean ± std, "
            "median, min, max), scored once on the held-out texts",
            "majority_baseline_acc": "accuracy of always predicting the held-out majority "
            "class (what a reward that knows nothing scores with a fitted threshold)",
            "best_run": "the run selected on validation (highest validation accuracy, then "
            "AUROC); its held-out numbers are not used for any choice",
        },
    }


def val_key(row: Mapping[str, Any]) -> tuple[float, float]:
    """The order in which runs are selected: validation accuracy, then validation AUROC (NaN
    lowest)."""
    auroc = float(row.get("val_auroc", float("nan")))
    return float(row["val_acc"]), -math.inf if math.isnan(auroc) else auroc
