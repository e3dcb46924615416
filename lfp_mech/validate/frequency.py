"""Table 7: how often the task-related features are active on strong-feedback inputs, against
the average feature.

The paper's inputs are the probe's inputs (its dataset D) that it predicts with ``delta > 3``
(strong positive feedback). Without probe inputs, the corpus tokens of strongly valenced VADER
words stand in, and every row says which inputs were used.
"""

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from scipy import stats
from torch import Tensor

from lfp_mech.errors import ConfigError
from lfp_mech.hooks import layer_of_hook
from lfp_mech.validate.autointerp.scan import FeatureScan
from lfp_mech.validate.config import ValidateConfig
from lfp_mech.validate.feature_ids import FeatureIds, feature_tensor

logger = logging.getLogger(__name__)

__all__ = ["ActivationFrequency", "activation_frequency", "frequency_rows"]


@dataclass(frozen=True)
class ActivationFrequency:
    """Table 7: how often features are active on the selected inputs."""

    per_feature: Float[Tensor, " d_sae"]
    """Share of the selected inputs on which each feature is active."""
    task_related: float
    """Mean share over the task-related (given) features."""
    all_features: float
    """Mean share over all features (the paper's "average feature")."""
    alive_features: float
    """Mean share over features active on at least one input (dead features excluded)."""
    n_selected: int
    """Number of selected inputs."""

    @property
    def ratio(self) -> float:
        """task_related / all_features (the paper saw 2–3x)."""
        return self.task_related / self.all_features if self.all_features > 0 else math.nan


def activation_frequency(
    feature_acts: Float[Tensor, "n_inputs d_sae"],
    feature_ids: FeatureIds,
    selected_inputs_mask: Bool[Tensor, " n_inputs"],
    *,
    threshold: float | int = 0.0,
) -> ActivationFrequency:
    """Share of the selected inputs on which each feature is active (activation > ``threshold``).

    The paper's inputs are the probe's inputs and the selection is "probe-predicted delta > 3"
    (``selected_inputs_mask = probe_predictions > 3``); ``feature_ids`` are the task-related
    features. Raises ``ConfigError`` if no input is selected.
    """
    n_inputs, d_sae = feature_acts.shape
    if selected_inputs_mask.shape[0] != n_inputs:
        raise ConfigError(
            f"selected_inputs_mask has {selected_inputs_mask.shape[0]} entries for {n_inputs} inputs"
        )
    n_selected = int(selected_inputs_mask.sum())
    if n_selected == 0:
        raise ConfigError(
            "activation_frequency: no input is selected (mask is all False); "
            "lower the delta threshold or pass more inputs"
        )
    ids = feature_tensor(feature_ids, d_sae, "feature_acts")
    active = (feature_acts[selected_inputs_mask.to(feature_acts.device)] > threshold).float()
    share = active.mean(dim=0).cpu()
    alive = (feature_acts > threshold).any(dim=0).cpu()
    return ActivationFrequency(
        per_feature=share,
        task_related=float(share[ids].mean()) if ids.numel() else math.nan,
        all_features=float(share.mean()),
        alive_features=float(share[alive].mean()) if alive.any() else 0.0,
        n_selected=n_selected,
    )


@dataclass(frozen=True)
class _Selection:
    """The probe inputs Table 7 counts: those with predicted delta above the threshold."""

    mask: Bool[Tensor, " n_inputs"]
    n_selected: int
    n_total: int
    inputs: str
    """What the ``inputs`` column says."""


def frequency_rows(
    scans: Mapping[str, FeatureScan],
    choice: Mapping[str, Sequence[int]],
    task_related: Mapping[str, Sequence[int]],
    config: ValidateConfig,
    probe_acts: Mapping[str, Tensor] | None = None,
    probe_predictions: Float[Tensor, " n_inputs"] | None = None,
) -> list[dict[str, Any]]:
    """Table 7 rows: per hook and feature group, mean share of the selected inputs where active.

    With probe inputs: those with ``predicted delta > config.delta_threshold`` (the paper); if
    none passes, the shares are NaN and ``n_inputs`` is 0 (with a warning), never other inputs.
    Without: corpus tokens of VADER words with ``|valence| >=
    config.autointerp.sentiment_word_threshold`` (the scans' ``frequency_selected``).
    ``source``/``inputs`` say which inputs were used, ``n_inputs`` how many were selected out of
    ``n_inputs_total``; ``active_share_all_inputs`` is the share over all of them;
    ``ratio_ci_low``/``ratio_ci_high`` a bootstrap CI of ``ratio_to_average`` over the selected
    probe inputs (NaN for corpus tokens). Groups per
    hook: "task-related", "chosen" (when not empty) and "all features".
    """
    use_probe = probe_acts is not None and probe_predictions is not None
    selection = _select_probe_inputs(probe_predictions, config) if use_probe else None
    rows = []
    for hook, scan in scans.items():
        d_sae = scan.frequency.numel()
        active = None
        if selection is not None:
            share, overall = _probe_shares(hook, probe_acts, selection, d_sae)
            if selection.n_selected:
                active = probe_acts[hook].detach().float().cpu()[selection.mask] > 0
            meta = {"source": "probe inputs", "inputs": selection.inputs}
            meta |= {"n_inputs": selection.n_selected, "n_inputs_total": selection.n_total}
        else:
            threshold = config.autointerp.sentiment_word_threshold
            share, overall = scan.frequency_selected, scan.frequency
            meta = {
                "source": "corpus tokens",
                "inputs": f"corpus tokens of VADER words with |valence| >= {threshold:g}",
                "n_inputs": scan.n_selected,
                "n_inputs_total": scan.n_tokens,
            }
        groups = [
            ("task-related", task_related.get(hook, [])),
            ("chosen", choice.get(hook, [])),
            ("all features", list(range(d_sae))),
        ]
        new_rows = _group_rows(hook, share, overall, groups, meta)
        for row, ids in zip(new_rows, [ids for _, ids in groups if ids], strict=True):
            row |= _ratio_ci(active, ids, config)
        rows += new_rows
    return rows


def _ratio_ci(
    active: Bool[Tensor, "n_selected d_sae"] | None, ids: Sequence[int], config: ValidateConfig
) -> dict[str, float]:
    """``ratio_ci_low`` / ``ratio_ci_high``: percentile bootstrap CI (``scipy.stats.bootstrap``
    over the selected probe inputs, ``config.confidence``, seeded) of the group's ratio to the
    average feature; NaN without per-input activity (corpus tokens) or with < 2 inputs."""
    if active is None or active.shape[0] < 2:
        return {"ratio_ci_low": math.nan, "ratio_ci_high": math.nan}
    on = active.numpy().astype(np.float64)
    index = np.asarray(list(ids), dtype=np.int64)

    def ratio(rows: np.ndarray) -> float:
        sub = on[rows.astype(np.int64)]
        average = sub.mean()
        return float(sub[:, index].mean() / average) if average > 0 else math.nan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.bootstrap(
            (np.arange(on.shape[0]),),
            ratio,
            n_resamples=1000,
            vectorized=False,
            method="percentile",
            confidence_level=config.confidence,
            rng=np.random.default_rng(config.seed),
        )
    boots = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return {"ratio_ci_low": math.nan, "ratio_ci_high": math.nan}
    tail = 100 * (1 - config.confidence) / 2
    low, high = np.percentile(boots, [tail, 100 - tail])
    return {"ratio_ci_low": float(low), "ratio_ci_high": float(high)}


def _select_probe_inputs(predictions: Tensor, config: ValidateConfig) -> _Selection:
    predictions = predictions.detach().float().cpu().reshape(-1)
    mask = predictions > config.delta_threshold
    n_selected, n_total = int(mask.sum()), int(predictions.numel())
    inputs = (
        f"probe inputs with predicted delta > {config.delta_threshold:g}: {n_selected} of {n_total}"
    )
    if n_selected == 0:
        logger.warning(
            "Table 7: none of the %d probe inputs has predicted delta > %g (max %.3g); "
            "its active shares are NaN",
            n_total,
            config.delta_threshold,
            float(predictions.max()) if n_total else math.nan,
        )
    else:
        logger.info("Table 7: %s", inputs)
    return _Selection(mask, n_selected, n_total, inputs)


def _probe_shares(
    hook: str, probe_acts: Mapping[str, Tensor], selection: _Selection, d_sae: int
) -> tuple[Float[Tensor, " d_sae"], Float[Tensor, " d_sae"]]:
    """(share of the selected probe inputs, share of all probe inputs) where each feature is on."""
    if hook not in probe_acts:
        raise ConfigError(
            f"probe_acts has no features for {hook!r} (has {sorted(probe_acts)}); "
            "Table 7 needs the probe inputs of every SAE hook"
        )
    acts = probe_acts[hook].detach().float().cpu()
    if tuple(acts.shape) != (selection.n_total, d_sae):
        raise ConfigError(
            f"probe_acts[{hook!r}] has shape {tuple(acts.shape)}; expected "
            f"({selection.n_total}, {d_sae}) = (inputs with a prediction, d_sae)"
        )
    everything = torch.ones(selection.n_total, dtype=torch.bool)
    overall = activation_frequency(acts, [], everything).per_feature
    if selection.n_selected:
        share = activation_frequency(acts, [], selection.mask).per_feature
    else:
        share = torch.full((d_sae,), math.nan)
    return share, overall


def _group_rows(
    hook: str,
    share: Float[Tensor, " d_sae"],
    overall: Float[Tensor, " d_sae"],
    groups: Sequence[tuple[str, Sequence[int]]],
    meta: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One row per non-empty feature group: its mean share and its ratio to the average."""
    average = float(share.mean())
    rows = []
    for group, ids in groups:
        if not ids:
            continue
        value = float(share[ids].mean())
        rows.append(
            {"hook": hook, "layer": layer_of_hook(hook), "group": group, "n_features": len(ids)}
            | dict(meta)
            | {
                "active_share": value,
                "ratio_to_average": value / average if average > 0 else math.nan,
                "active_share_all_inputs": float(overall[ids].mean()),
            }
        )
    return rows
