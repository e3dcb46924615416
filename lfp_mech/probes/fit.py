"""The feedback probe: Ridge regression on dataset D, folded into one linear map, and its controls.

[`fit_feedback_probe`][lfp_mech.probes.fit.fit_feedback_probe] fits scikit-learn ``Ridge`` after
``StandardScaler`` (on by default: SAE features differ in scale by orders of magnitude, and the
penalty should not prefer the loud ones). α is picked from a log grid by cross-validation grouped by
word (``GroupKFold``: a word is never in both the fitting and the scoring part of a fold, matching
the held-out-word evaluation; ``RidgeCV`` leave-one-out when no words are given). The fitted
pipeline is folded into one linear map ``w·x + b`` on raw features
([`LinearProbe`][lfp_mech.probes.fit.LinearProbe]). Predictions are normalised to the VADER range:
``clip(4 · raw / max|raw on the training inputs|, −4, 4)``. The scale uses training predictions only
(no test labels) and keeps 0 fixed, so signs (sign accuracy) and ranks (Kendall τ) are those of the
raw probe.

Controls: [`xavier_probe`][lfp_mech.probes.fit.xavier_probe] (the paper's untrained baseline) and
[`shuffled_labels`][lfp_mech.probes.fit.shuffled_labels]."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from lfp_mech.probes.config import VADER_RANGE, ProbesConfig

logger = logging.getLogger(__name__)

__all__ = [
    "FeedbackProbe",
    "LinearProbe",
    "fit_feedback_probe",
    "shuffled_labels",
    "to_numpy",
    "xavier_probe",
]


@dataclass
class LinearProbe:
    """A linear probe ``pred(x) = clip(scale · (x·w + b), −4, 4)`` on raw (unstandardised) features.

    ``scale`` maps the largest |raw prediction| on the training inputs to 4 (the VADER range).
    """

    weight: Float[np.ndarray, " d"]
    bias: float
    scale: float
    alpha: float | None = None
    """Ridge penalty chosen by cross-validation (None for untrained probes)."""
    kind: str = "ridge"

    def raw_predict(self, inputs: Float[Tensor, "batch d"]) -> Float[np.ndarray, " batch"]:
        """``x·w + b`` before normalisation."""
        if inputs.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"probe expects {self.weight.shape[0]} features, got {inputs.shape[-1]}"
            )
        return to_numpy(inputs) @ self.weight + self.bias

    def predict(self, inputs: Float[Tensor, "batch d"]) -> Float[np.ndarray, " batch"]:
        """Predictions normalised to the VADER range [-4, 4]."""
        return np.clip(self.scale * self.raw_predict(inputs), -VADER_RANGE, VADER_RANGE)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for `lfp_mech._io.save_tensors`."""
        return {
            "weight": torch.from_numpy(np.ascontiguousarray(self.weight)).float(),
            "bias": torch.tensor([self.bias], dtype=torch.float32),
            "scale": torch.tensor([self.scale], dtype=torch.float32),
        }


FeedbackProbe = LinearProbe
"""The probe [`fit_feedback_probe`][lfp_mech.probes.fit.fit_feedback_probe] returns."""


def fit_feedback_probe(
    inputs: Float[Tensor, "sample d"],
    labels: Float[Tensor, " sample"],
    config: ProbesConfig | None = None,
    *,
    groups: Sequence[str] | None = None,
    alpha: float | None = None,
) -> LinearProbe:
    """Ridge regression probe with a cross-validated penalty, normalised to [-4, 4].

    The penalty α is chosen from ``config.alphas`` by mean squared error:

    * with ``groups`` (the word of each sample, as in
      [`ProbeDataset`][lfp_mech.probes.dataset.ProbeDataset]): ``GroupKFold`` with
      ``config.cv_folds`` folds, so a word is never in both the fitting and the scoring part of a
      fold — the probe is evaluated on unseen words, and α should be chosen that way too
      (leave-one-out would reward memorising words seen in other triples);
    * without: scikit-learn ``RidgeCV``'s efficient leave-one-out.

    ``alpha`` skips the search. With ``config.standardize`` the features are standardised
    (``StandardScaler``, fitted on all ``inputs``) before the Ridge fit; the fitted pipeline is
    folded back into raw-feature weights. The normalisation scale is ``4 / max|raw prediction|``
    over the training inputs (no test data involved).
    """
    config = config or ProbesConfig()
    x, y = to_numpy(inputs), to_numpy(labels)
    _check_fit_data(x, y)
    if groups is not None and len(groups) != x.shape[0]:
        raise ValueError(f"{len(groups)} groups for {x.shape[0]} samples")
    scaler = StandardScaler(with_mean=True, with_std=config.standardize).fit(x)
    xs = scaler.transform(x)
    if alpha is None:
        if groups is not None and len(set(groups)) >= config.cv_folds:
            alpha = _grouped_cv_alpha(xs, y, groups, config.alphas, config.cv_folds)
        else:
            alpha = float(RidgeCV(alphas=np.asarray(config.alphas)).fit(xs, y).alpha_)
    ridge = Ridge(alpha=alpha).fit(xs, y)
    scale = scaler.scale_ if config.standardize else np.ones(x.shape[1])
    weight = ridge.coef_ / scale
    bias = float(ridge.intercept_ - scaler.mean_ @ weight)
    probe = LinearProbe(np.asarray(weight, dtype=np.float64), bias, 1.0, float(alpha))
    probe.scale = _normalisation_scale(probe.raw_predict(inputs))
    logger.info("ridge probe: alpha=%.3g on %d samples x %d features", alpha, *x.shape)
    return probe


def xavier_probe(train_inputs: Float[Tensor, "sample d"], *, seed: int = 0) -> LinearProbe:
    """The paper's baseline: an untrained ``Linear(d, 1)`` with ``xavier_uniform_`` weights.

    Bias 0; seeded with its own generator (the global RNG is untouched). The normalisation scale
    is fitted on ``train_inputs`` like a trained probe's (no labels involved).
    """
    d = train_inputs.shape[-1]
    linear = torch.nn.Linear(d, 1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(linear.weight, generator=generator)
        linear.bias.zero_()
    weight = rearrange(linear.weight.detach(), "1 d -> d").numpy().copy()
    probe = LinearProbe(weight, 0.0, 1.0, None, kind="xavier")
    probe.scale = _normalisation_scale(probe.raw_predict(train_inputs))
    return probe


def shuffled_labels(labels: Float[Tensor, " sample"], *, seed: int = 0) -> Float[Tensor, " sample"]:
    """``labels`` randomly permuted (seeded): the shuffled-label control."""
    generator = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(labels.shape[0], generator=generator)]


def to_numpy(x: Tensor) -> np.ndarray:
    """A tensor as a float64 CPU numpy array."""
    return x.detach().to("cpu", torch.float64).numpy()


def _check_fit_data(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] < 3:
        raise ValueError(f"need at least 3 samples to fit a probe, got {x.shape[0]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("probe inputs or labels contain NaN/inf")


def _grouped_cv_alpha(
    x: np.ndarray, y: np.ndarray, groups: Sequence[str], alphas: Sequence[float], n_folds: int
) -> float:
    """α with the lowest GroupKFold mean squared error; one eigendecomposition per fold.

    Per fold, with centred training data ``Xc`` and targets ``yc``, the Ridge prediction for
    every α is ``H · (b / (s + α)) + mean(y)``: in the dual (kernel ``Xc Xcᵀ = U s Uᵀ``,
    ``H = (X_test − μ) Xcᵀ U``, ``b = Uᵀ yc``) when samples <= features, otherwise in the primal
    (``Xcᵀ Xc = V s Vᵀ``, ``H = (X_test − μ) V``, ``b = Vᵀ Xcᵀ yc``).
    """
    alphas_arr = np.asarray(alphas, dtype=np.float64)
    sq_err = np.zeros_like(alphas_arr)
    for train, test in GroupKFold(n_splits=n_folds).split(x, y, groups=list(groups)):
        mu, y_mean = x[train].mean(axis=0), y[train].mean()
        xc, yc, xt = x[train] - mu, y[train] - y_mean, x[test] - mu
        if xc.shape[0] <= xc.shape[1]:
            s, u = np.linalg.eigh(xc @ xc.T)
            h, b = (xt @ xc.T) @ u, u.T @ yc
        else:
            s, v = np.linalg.eigh(xc.T @ xc)
            h, b = xt @ v, v.T @ (xc.T @ yc)
        s = np.clip(s, 0.0, None)
        preds = h @ (b[:, None] / (s[:, None] + alphas_arr[None, :])) + y_mean
        sq_err += ((preds - y[test, None]) ** 2).sum(axis=0)
    return float(alphas_arr[int(np.argmin(sq_err))])


def _normalisation_scale(raw_train: np.ndarray) -> float:
    peak = float(np.max(np.abs(raw_train)))
    return VADER_RANGE / peak if peak > 0 else 1.0
