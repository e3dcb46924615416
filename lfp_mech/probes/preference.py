"""Preference probes (paper Table 3, Figure 5): a logistic probe on chosen vs rejected texts.

[`mean_pooled_features`][lfp_mech.probes.features.mean_pooled_features] averages ``A_concat`` over
all tokens of a text, [`fit_logistic_probe`][lfp_mech.probes.preference.fit_logistic_probe] fits a
logistic probe on chosen vs rejected texts with a held-out split by pair,
[`pca_explained`][lfp_mech.probes.preference.pca_explained] gives the PCA of its inputs, and
[`run_preference_probe`][lfp_mech.probes.preference.run_preference_probe] does all three for a (DPO)
policy and writes the table and figure."""

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from jaxtyping import Float, Int
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from lfp_mech._io import json_safe, write_json, write_table
from lfp_mech.config_base import StageConfig
from lfp_mech.errors import LfpMechError
from lfp_mech.models.coerce import ModelLike, as_hooked_model
from lfp_mech.plotting import save_figure
from lfp_mech.probes.artifacts import PREFERENCE_SUMMARY_FILE, PREFERENCE_TABLE
from lfp_mech.probes.features import mean_pooled_features
from lfp_mech.probes.fit import LinearProbe, to_numpy
from lfp_mech.probes.plots import pca_figure
from lfp_mech.saes.io import SAELike, load_saes

__all__ = [
    "LogisticProbeResult",
    "PCAResult",
    "PreferenceProbeConfig",
    "fit_logistic_probe",
    "fit_preference_probes",
    "pca_explained",
    "run_preference_probe",
]

logger = logging.getLogger(__name__)

LabelMode = Literal["preference", "delta"]


@dataclass
class PreferenceProbeConfig(StageConfig):
    """Options of the logistic preference probe (paper Table 3, Figure 5); not a stage section."""

    section = "preference_probe"

    test_fraction: float = 0.2
    """Fraction of preference pairs held out (split by pair: both texts on the same side)."""
    C: float = 1.0
    """Inverse L2 strength of the logistic regression (on standardised features)."""
    n_pca_components: int = 2
    """PCA components reported (Figure 5 plots the first two)."""
    batch_size: int = 32
    """Texts per forward pass."""
    seed: int = 0
    """Seeds the train/test split."""
    device: str = "cpu"
    """Torch device."""
    dtype: str = "float32"
    """Precision of the policy's forward passes ("float32", "bfloat16", "float16"); the
    features are float32 and the logistic probe is fitted in float64 whatever it is."""

    def __post_init__(self) -> None:
        self.require_between("test_fraction", 0, 1, low_open=True, high_open=True)
        self.require_positive("C")
        self.require_at_least(1, "n_pca_components", "batch_size")


@dataclass
class LogisticProbeResult:
    """A logistic preference probe and its accuracies."""

    labels: str
    train_accuracy: float
    test_accuracy: float
    n_train: int
    n_test: int
    label_agreement: float
    """Fraction of samples whose label equals the preference label (1 for labels='preference')."""
    probe: LinearProbe = field(repr=False)
    inputs: Float[np.ndarray, "sample d"] = field(repr=False)
    targets: Int[np.ndarray, " sample"] = field(repr=False)

    def row(self) -> dict[str, Any]:
        """One row of the preference-probe table."""
        return {
            "labels": self.labels,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "label_agreement_with_preference": self.label_agreement,
        }


@dataclass
class PCAResult:
    """PCA of probe inputs."""

    projected: Float[np.ndarray, "sample component"]
    explained_variance_ratio: Float[np.ndarray, " component"]


def fit_logistic_probe(
    features_chosen: Float[Tensor, "pair d"],
    features_rejected: Float[Tensor, "pair d"],
    *,
    labels: LabelMode = "preference",
    test_fraction: float = 0.2,
    C: float = 1.0,
    seed: int = 0,
) -> LogisticProbeResult:
    """Logistic probe on mean-pooled features of chosen vs rejected texts (paper Table 3).

    Labels:

    * ``"preference"`` (default): chosen = 1, rejected = 0 — the preference itself.
    * ``"delta"``: the paper's "label from the averaged delta": with the mean pair delta
      ``d̄ = mean(A(chosen) − A(rejected))`` and the mean input ``m`` (both from the TRAIN pairs
      only), a text is labelled 1 iff ``(A(x) − m)·d̄ > 0``. These labels are a linear function
      of the inputs, so near-perfect accuracy is expected by construction; ``label_agreement``
      says how often they match the preference.

    The split is by pair (both texts of a pair on the same side), seeded. Features are
    standardised before ``LogisticRegression(C=C)``.
    """
    if features_chosen.shape != features_rejected.shape:
        raise ValueError(
            f"chosen {tuple(features_chosen.shape)} and rejected "
            f"{tuple(features_rejected.shape)} features must have the same shape"
        )
    n_pairs = features_chosen.shape[0]
    n_test = max(1, round(test_fraction * n_pairs))
    if n_pairs - n_test < 2:
        raise ValueError(f"need at least {n_test + 2} preference pairs, got {n_pairs}")
    perm = np.random.default_rng(seed).permutation(n_pairs)
    test_pairs, train_pairs = perm[:n_test], perm[n_test:]
    chosen, rejected = to_numpy(features_chosen), to_numpy(features_rejected)
    x = np.concatenate([chosen, rejected])
    pref = np.concatenate([np.ones(n_pairs, np.int64), np.zeros(n_pairs, np.int64)])
    train_idx = np.concatenate([train_pairs, train_pairs + n_pairs])
    test_idx = np.concatenate([test_pairs, test_pairs + n_pairs])
    y = _logistic_labels(labels, x, pref, chosen, rejected, train_pairs, train_idx)
    scaler = StandardScaler()
    clf = LogisticRegression(C=C, max_iter=5000)
    make_pipeline(scaler, clf).fit(x[train_idx], y[train_idx])
    weight = clf.coef_[0] / scaler.scale_
    bias = float(clf.intercept_[0] - scaler.mean_ @ weight)
    probe = LinearProbe(weight.astype(np.float64), bias, 1.0, 1.0 / C, kind="logistic")
    correct = ((x @ probe.weight + probe.bias) > 0).astype(np.int64) == y
    return LogisticProbeResult(
        labels=labels,
        train_accuracy=float(correct[train_idx].mean()),
        test_accuracy=float(correct[test_idx].mean()),
        n_train=int(train_idx.size),
        n_test=int(test_idx.size),
        label_agreement=float((y == pref).mean()),
        probe=probe,
        inputs=x,
        targets=y,
    )


def fit_preference_probes(
    chosen: Float[Tensor, "pair d"],
    rejected: Float[Tensor, "pair d"],
    config: PreferenceProbeConfig,
) -> tuple[dict[str, LogisticProbeResult], dict[str, str]]:
    """Both logistic probes of Table 3: ``labels="preference"`` (chosen = 1, the real question)
    and ``labels="delta"`` (the paper's). Returns the fitted ones by label mode and, for a mode
    that cannot be fitted (e.g. delta labels of one class on few pairs: a result, not a
    crash), the reason."""
    results: dict[str, LogisticProbeResult] = {}
    unfit: dict[str, str] = {}
    for mode in ("preference", "delta"):
        try:
            results[mode] = fit_logistic_probe(
                chosen,
                rejected,
                labels=mode,
                test_fraction=config.test_fraction,
                C=config.C,
                seed=config.seed,
            )
        except LfpMechError as error:
            logger.warning("preference probe, %s labels: not fitted (%s)", mode, error)
            unfit[mode] = str(error)
    return results, unfit


def pca_explained(inputs: Float[Tensor, "sample d"], n_components: int = 2) -> PCAResult:
    """PCA (``sklearn.decomposition.PCA``) of probe inputs: projections and explained-variance
    ratios."""
    x = to_numpy(inputs)
    k = min(n_components, x.shape[0], x.shape[1])
    pca = PCA(n_components=k, random_state=0).fit(x)
    return PCAResult(pca.transform(x), pca.explained_variance_ratio_.astype(np.float64))


def run_preference_probe(
    policy_model_path: ModelLike,
    sae_dirs: Mapping[str, SAELike],
    chosen: Sequence[str],
    rejected: Sequence[str],
    out_dir: str | os.PathLike[str],
    config: PreferenceProbeConfig | None = None,
) -> dict[str, Any]:
    """Logistic preference probe on the (DPO) policy's mean-pooled SAE features, plus PCA.

    Fits [`fit_logistic_probe`][lfp_mech.probes.preference.fit_logistic_probe] with
    ``labels="preference"`` and ``labels="delta"`` (the paper's), writes
    ``preference_probe.csv/.md/.json`` (train/held-out accuracy per label mode),
    ``preference_pca.png`` (Figure 5) and ``preference_summary.json``; returns the summary."""
    config = config or PreferenceProbeConfig()
    chosen, rejected = list(chosen), list(rejected)
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(
            f"need equally many chosen and rejected texts (got {len(chosen)} and {len(rejected)})"
        )
    out_dir = Path(out_dir)
    model = as_hooked_model(policy_model_path, device=config.device, dtype=config.dtype)
    saes = load_saes(sae_dirs, device=config.device)
    feats = mean_pooled_features(
        model, saes, chosen + rejected, batch_size=config.batch_size, device=config.device
    )
    results, unfit = fit_preference_probes(feats[: len(chosen)], feats[len(chosen) :], config)
    if "preference" not in results:
        raise LfpMechError(f"the preference probe cannot be fitted: {unfit['preference']}")
    pca = pca_explained(feats, config.n_pca_components)
    write_table(out_dir / PREFERENCE_TABLE, [r.row() for r in results.values()])
    figure = pca_figure(pca.projected, results["preference"].targets, pca.explained_variance_ratio)
    save_figure(figure, out_dir / "preference_pca.png")
    summary = {
        "n_pairs": len(chosen),
        "test_accuracy": {m: r.test_accuracy for m, r in results.items()},
        "train_accuracy": {m: r.train_accuracy for m, r in results.items()},
        "delta_label_agreement": results["delta"].label_agreement if "delta" in results else None,
        "not_fitted": unfit,
        "pca_explained_variance_ratio": pca.explained_variance_ratio.tolist(),
    }
    write_json(out_dir / PREFERENCE_SUMMARY_FILE, json_safe(summary))
    return json_safe(summary)


def _logistic_labels(
    mode: str,
    x: np.ndarray,
    pref: np.ndarray,
    chosen: np.ndarray,
    rejected: np.ndarray,
    train_pairs: np.ndarray,
    train_idx: np.ndarray,
) -> np.ndarray:
    """The targets of [`fit_logistic_probe`][lfp_mech.probes.preference.fit_logistic_probe]
    (``mode`` = its ``labels``)."""
    if mode == "preference":
        y = pref
    elif mode == "delta":
        mean_delta = (chosen[train_pairs] - rejected[train_pairs]).mean(axis=0)
        centre = x[train_idx].mean(axis=0)
        y = ((x - centre) @ mean_delta > 0).astype(np.int64)
    else:
        raise ValueError(f"labels must be 'preference' or 'delta', got {mode!r}")
    if np.unique(y[train_idx]).size < 2:
        raise LfpMechError(
            f"labels={mode!r}: the training split has a single class; use more pairs "
            "or labels='preference'"
        )
    return y
