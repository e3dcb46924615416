"""Figures of the SAE stage: the L1-coefficient sweep and the small↔big MMCS distribution."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from jaxtyping import Float
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from torch import Tensor


def plot_l1_sweep(
    rows: Sequence[Mapping[str, Any]], *, chosen: float | None = None, layer: int | None = None
) -> Figure:
    """Reconstruction loss and L0 vs the L1 coefficient α (paper appendix figure).

    ``rows``: :func:`lfp_mech.saes.l1_sweep` output (keys ``alpha``, ``nmse``, ``fvu``, ``l0``,
    ``d_sae``). ``chosen``: the α used for the stage's dictionaries, marked with a line.
    """
    rows = sorted(rows, key=lambda r: r["alpha"])
    alphas = [max(r["alpha"], 1e-12) for r in rows]
    fig, (ax_rec, ax_l0) = plt.subplots(1, 2, figsize=(9, 3.4))
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
    fig.tight_layout()
    return fig


def plot_mmcs(
    mmcs_by_layer: Mapping[int, Float[Tensor, " d_sae_small"]], *, threshold: float | None = None
) -> Figure:
    """Distribution of each small-dictionary feature's MMCS with the big dictionary, per layer."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for layer, values in mmcs_by_layer.items():
        ax.hist(
            values.detach().cpu().numpy(), bins=40, range=(0, 1), histtype="step", label=f"L{layer}"
        )
    if threshold is not None:
        ax.axvline(threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("max cosine similarity with any big-dictionary feature (MMCS)")
    ax.set_ylabel("small-dictionary features")
    ax.set_title("Feature overlap between the small and the big dictionary")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
