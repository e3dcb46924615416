"""Figures of the ``validate`` stage: the ablation table (paper Table 6) and activation
frequencies (paper Table 7) as bar charts with their uncertainty, and the probe inputs Table 7
selects (the probe's predicted delta on its inputs, with the threshold).

Each function takes the table's rows (a DataFrame from
[`ValidateResults`][lfp_mech.validate.results.ValidateResults] or the list of dicts the stage
computed) and returns a matplotlib ``Figure``."""

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from lfp_mech.plotting import new_figure

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ablation_figure", "activation_frequency_figure", "predicted_delta_figure"]

_CONDITION_LABELS = {
    "clean": "no ablation",
    "task": "task-related features ablated",
    "random": "matched random features ablated",
}


def ablation_figure(
    rows: "pd.DataFrame | Sequence[Mapping[str, Any]]", *, confidence: float = 0.95
) -> Figure:
    """Grouped bars: mean reward per model (groups) and condition (bars), CI error bars.

    ``rows``: the ablation table
    ([`ValidateResults.ablation`][lfp_mech.validate.results.ValidateResults.ablation], or
    [`rows`][lfp_mech.validate.table.AblationResult.rows])."""
    rows = _records(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    cell = {(r["model"], r["condition"]): r for r in rows}
    fig, ax = new_figure(figsize=(1.8 + 1.6 * len(models), 3.6))
    width = 0.8 / max(len(conditions), 1)
    x = np.arange(len(models))
    for c, condition in enumerate(conditions):
        means, errs = _means_and_errors([cell.get((model, condition)) for model in models])
        ax.bar(
            x + (c - (len(conditions) - 1) / 2) * width,
            means,
            width,
            yerr=errs,
            capsize=3,
            label=_CONDITION_LABELS.get(condition, condition),
        )
    ax.set_xticks(x, models)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("mean reward of completions")
    n = rows[0]["n"] if rows else 0
    ax.set_title(
        f"Ablating SAE features during generation ({n} completions, {confidence:.0%} CI)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best")
    return fig


def _means_and_errors(
    cells: Sequence[Mapping[str, Any] | None],
) -> tuple[list[float], list[list[float]]]:
    """Bar heights and (lower, upper) error-bar lengths of one condition's cells."""
    means: list[float] = []
    errs: list[list[float]] = [[], []]
    for r in cells:
        mean = r["mean_reward"] if r else math.nan
        means.append(mean)
        lo, hi = (r["ci_low"], r["ci_high"]) if r else (math.nan, math.nan)
        errs[0].append(0.0 if math.isnan(lo) else mean - lo)
        errs[1].append(0.0 if math.isnan(hi) else hi - mean)
    return means, errs


def activation_frequency_figure(rows: "pd.DataFrame | Sequence[Mapping[str, Any]]") -> Figure:
    """Bars per hook: share of selected inputs on which each feature group is active.

    ``rows``: the activation-frequency table
    ([`ValidateResults.activation_frequency`][lfp_mech.validate.results.ValidateResults.activation_frequency]).
    """
    rows = _records(rows)
    hooks = list(dict.fromkeys(r["hook"] for r in rows))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    cell = {(r["hook"], r["group"]): r["active_share"] for r in rows}
    fig, ax = new_figure(figsize=(1.8 + 1.4 * len(hooks), 3.4))
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(hooks))
    for g, group in enumerate(groups):
        values = [cell.get((h, group), math.nan) for h in hooks]
        ax.bar(x + (g - (len(groups) - 1) / 2) * width, values, width, label=group)
    ax.set_xticks(x, [h.replace("blocks.", "L").replace(".hook_", " ") for h in hooks], fontsize=7)
    ax.set_ylabel("share of selected inputs where active")
    inputs = rows[0]["inputs"] if rows else ""
    ax.set_title(f"Feature activation frequency\n({inputs})", fontsize=8)
    ax.legend(fontsize=7)
    return fig


def predicted_delta_figure(
    predicted: Sequence[float] | np.ndarray | Any,
    label: Sequence[float] | np.ndarray | Any,
    *,
    threshold: float,
    bins: int = 40,
) -> Figure:
    """Histogram of the probe's predicted delta on its inputs (normalised to [-4, 4]), stacked by
    the sign of their label (``A(x⁺)`` labelled +Δ⁺, ``A(x⁻)`` labelled −Δ⁻), with Table 7's
    selection threshold dashed.

    ``predicted`` and ``label``: ``ProbeInputs.predicted_delta`` and ``ProbeInputs.label_delta``
    ([`lfp_mech.probes.results.ProbesResults.probe_inputs`][lfp_mech.probes.results.ProbesResults.probe_inputs]).
    """
    pred = np.asarray(predicted, dtype=float)
    positive = np.asarray(label, dtype=float) > 0
    fig, ax = new_figure(figsize=(6.0, 3.2))
    names = ["A(x⁺), label +Δ⁺", "A(x⁻), label −Δ⁻"]
    ax.hist([pred[positive], pred[~positive]], bins=bins, stacked=True, label=names)
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1)
    selected = int((pred > threshold).sum())
    ax.set_title(f"probe inputs: {selected} of {pred.size} above {threshold:g}", fontsize=9)
    ax.set_xlabel("probe-predicted delta (normalised to [-4, 4])")
    ax.set_ylabel("probe inputs")
    ax.legend(fontsize=7)
    return fig


def _records(rows: Any) -> list[Mapping[str, Any]]:
    """Table rows as a list of dicts (from a DataFrame or any sequence of mappings)."""
    if hasattr(rows, "to_dict"):
        return rows.to_dict("records")
    return list(rows)
