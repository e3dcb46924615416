"""Figures of the ``validate`` stage: the ablation table (paper Table 6) and activation
frequencies (paper Table 7) as bar charts with their uncertainty."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lfp_mech.plots._style import plt

_CONDITION_LABELS = {
    "clean": "no ablation",
    "task": "task-related features ablated",
    "random": "matched random features ablated",
}


def ablation_figure(rows: Sequence[Mapping[str, Any]], *, confidence: float = 0.95) -> Figure:
    """Grouped bars: mean reward per model (groups) and condition (bars), CI error bars.

    ``rows`` are :attr:`lfp_mech.validate.ablation.AblationResult.rows`.
    """
    models = list(dict.fromkeys(r["model"] for r in rows))
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    cell = {(r["model"], r["condition"]): r for r in rows}
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(models), 3.6))
    width = 0.8 / max(len(conditions), 1)
    x = np.arange(len(models))
    for c, condition in enumerate(conditions):
        means, errs = [], [[], []]
        for model in models:
            r = cell.get((model, condition))
            mean = r["mean_reward"] if r else math.nan
            means.append(mean)
            lo, hi = (r["ci_low"], r["ci_high"]) if r else (math.nan, math.nan)
            errs[0].append(0.0 if math.isnan(lo) else mean - lo)
            errs[1].append(0.0 if math.isnan(hi) else hi - mean)
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
    fig.tight_layout()
    return fig


def activation_frequency_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Bars per hook: share of selected inputs on which each feature group is active."""
    hooks = list(dict.fromkeys(r["hook"] for r in rows))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    cell = {(r["hook"], r["group"]): r["active_share"] for r in rows}
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(hooks), 3.4))
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
    fig.tight_layout()
    return fig
