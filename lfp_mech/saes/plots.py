"""Figures of the SAE stage: the L1-coefficient sweep and the small↔big MMCS distribution.

Both take plain data (rows or a DataFrame; arrays or tensors), so a notebook draws them from
[`SAEsResults`][lfp_mech.saes.results.SAEsResults] (``results.l1_sweep``,
``results.mmcs_values()``)."""

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from lfp_mech.plotting import new_figure

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["plot_l1_sweep", "plot_mmcs"]


def plot_l1_sweep(
    rows: "Sequence[Mapping[str, Any]] | pd.DataFrame",
    *,
    chosen: float | None = None,
    layer: int | None = None,
) -> Figure:
    """Reconstruction loss and L0 vs the L1 coefficient α (paper appendix figure).

    ``rows``: [`lfp_mech.saes.l1_sweep`][lfp_mech.saes.sweep.l1_sweep] output or the stage's
    ``l1_sweep`` table (keys ``alpha``, ``nmse``, ``fvu``, ``l0``, optionally ``d_sae``).
    ``chosen``: the α used for the stage's dictionaries, marked with a dashed line."""
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    rows = sorted(rows, key=lambda r: r["alpha"])
    alphas = [max(r["alpha"], 1e-12) for r in rows]
    fig, (ax_rec, ax_l0) = new_figure(1, 2, figsize=(9.0, 3.4))
    ax_rec.plot(alphas, [r["nmse"] for r in rows], marker="o", label=r"$\|x-\hat x\|^2/\|x\|^2$")
    ax_rec.plot(alphas, [r["fvu"] for r in rows], marker="s", label="FVU")
    ax_rec.set_ylabel("held-out reconstruction loss")
    ax_rec.legend(fontsize=8)
    ax_l0.plot(alphas, [r["l0"] for r in rows], marker="o", color="tab:green")
    ax_l0.set_ylabel("L0 (active features per token)")
    if rows and "d_sae" in rows[0]:
        ax_l0.set_title(f"d_sae = {rows[0]['d_sae']}", fontsize=9)
    for ax in (ax_rec, ax_l0):
        ax.set_xscale("log")
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(r"L1 coefficient $\alpha$")
        ax.grid(alpha=0.3)
        if chosen is not None and chosen > 0 and not math.isnan(chosen):
            ax.axvline(chosen, color="grey", linestyle="--", linewidth=1)
    where = f" (layer {layer})" if layer is not None else ""
    fig.suptitle(f"L1 coefficient sweep{where}; dashed: default α")
    return fig


def plot_mmcs(mmcs_by_layer: Mapping[int, Any], *, threshold: float | None = None) -> Figure:
    """Distribution of each small-dictionary feature's MMCS with the big dictionary, per layer.

    ``mmcs_by_layer``: ``{layer: values}`` (a tensor, array or list of one value per
    small-dictionary feature).
    """
    fig, ax = new_figure(figsize=(7.0, 3.4))
    for layer, values in mmcs_by_layer.items():
        ax.hist(_as_array(values), bins=40, range=(0, 1), histtype="step", label=f"L{layer}")
    if threshold is not None:
        ax.axvline(threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("max cosine similarity with any big-dictionary feature (MMCS)")
    ax.set_ylabel("small-dictionary features")
    ax.set_title("Feature overlap between the small and the big dictionary")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)
