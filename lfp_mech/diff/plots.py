"""Figure of the diff stage: dose-response of ablating (tuned) / adding (base) the top-k latents,
with the random-latent and difference-of-means baselines."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from lfp_mech.plotting import new_figure

__all__ = ["plot_dose_response"]


def plot_dose_response(rows: "Sequence[Mapping[str, Any]] | Any") -> Figure:
    """Share of the tuned − base reward gap removed (ablation) / added (steering) vs k, with CIs.

    ``rows``: the ``interventions`` table (a list of dicts or a DataFrame)."""
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    rows = [
        {**r, **{c: _finite(r.get(c)) for c in ("gap_share", "ci_low", "ci_high")}} for r in rows
    ]
    fig, ax = new_figure(figsize=(7.0, 3.8))
    for group, label, color in (
        ("ablate", "ablate top-k (tuned)", "C0"),
        ("steer", "add top-k (base)", "C1"),
    ):
        pts = sorted((r for r in rows if r["group"] == group), key=lambda r: r["k"])
        if not pts:
            continue
        ks = [r["k"] for r in pts]
        ax.plot(ks, [r["gap_share"] for r in pts], marker="o", color=color, label=label)
        ax.fill_between(
            ks, [r["ci_low"] for r in pts], [r["ci_high"] for r in pts], color=color, alpha=0.15
        )
    baselines = (
        ("random", "C2", "random latents (ablate)"),
        ("dom_project", "C3", "diff. of means projected out (first block and later)"),
        ("dom_project_dictionary_blocks", "C6", "diff. of means projected out (dictionary blocks)"),
        ("dom_add", "C4", "diff. of means added"),
        ("lfp_probe", "C5", "LFP probe features"),
    )
    for group, color, label in baselines:
        for i, r in enumerate(
            r for r in rows if r["group"] == group and r["gap_share"] == r["gap_share"]
        ):
            ax.axhline(
                r["gap_share"],
                color=color,
                linestyle="--",
                linewidth=1,
                label=label if i == 0 else None,
            )
    all_k = [r["k"] for r in rows if r["group"] in ("ablate", "steer") and r["k"] > 0]
    if all_k:  # explicit limits: with undefined (NaN) shares there is no data to autoscale on
        ax.set_xscale("log")
        ax.set_xlim(min(all_k) / 1.3, max(all_k) * 1.3)
    ax.set_xlabel("k (top tuned-specific latents)")
    ax.set_ylabel("share of the reward gap")
    ax.set_title("What RLHF changed: ablation and steering dose-response")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _finite(value: Any) -> float:
    """The value as a float, NaN when missing or infinite (no gap: shares are undefined)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan
