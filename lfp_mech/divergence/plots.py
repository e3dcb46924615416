"""Figures of the divergence stage: per-layer parameter divergence (one line per model), and
the layer-choice figure (one panel per measure)."""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lfp_mech.divergence.choice import concentration
from lfp_mech.plotting import new_figure

if TYPE_CHECKING:
    import pandas as pd
    from jaxtyping import Float
    from torch import Tensor

__all__ = ["plot_layer_choice", "plot_layer_divergence"]

_LABELS = {
    "parameter": r"$\sum_p \|\Delta\theta_p\|_F$",
    "relative": r"$\sum_p \|\Delta\theta_p\|_F / \sum_p \|\theta_p\|_F$",
    "activation": r"$\|\Delta$ mlp_out$\|$ / $\|$mlp_out$\|$",
    "patching": "share of log-prob gap\nrecovered by patching",
}

Divergence: TypeAlias = "Float[Tensor, ' n_layers'] | Sequence[float] | pd.DataFrame"
"""One model's divergence per layer: a tensor, a list, or the stage's ``divergence`` table."""


def plot_layer_divergence(
    divergences: "Mapping[str, Divergence] | Divergence",
    *,
    top_layers: Sequence[int] = (),
    title: str = "Parameter divergence between base and fine-tuned model",
) -> Figure:
    """Divergence vs layer (paper appendix figure), one line per model; top layers marked.

    The y-axis starts at 0, so that a flat divergence looks flat (not like a peak).

    Args:
        divergences: ``{model name: divergence per layer}`` or a single model's divergence
            (a tensor, a list, or a DataFrame with a ``divergence`` column in layer order).
        top_layers: layers to mark (the ones the SAE stage will use), for the first model.
    """
    if not isinstance(divergences, Mapping):
        divergences = {"tuned vs base": divergences}
    fig, ax = new_figure(figsize=(7.0, 3.6))
    highest = 0.0
    for index, (name, div) in enumerate(divergences.items()):
        values = _values(div)
        highest = max([highest, *values])
        (line,) = ax.plot(range(len(values)), values, marker="o", markersize=3, label=name)
        if index == 0 and top_layers:
            ax.scatter(
                list(top_layers),
                [values[layer] for layer in top_layers],
                s=70,
                facecolors="none",
                edgecolors=line.get_color(),
                linewidths=1.5,
                label=f"top {len(top_layers)}: {sorted(top_layers)}",
                zorder=3,
            )
    ax.set_ylim(0.0, 1.1 * highest if highest > 0 else 1.0)  # from 0, with room for markers
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (transformer block)")
    ax.set_ylabel(r"$\sum_p \|\theta_{base} - \theta_{tuned}\|_F$")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _values(div: Any) -> list[float]:
    if hasattr(div, "columns"):  # the stage's table
        div = div.sort_values("layer")["divergence"]
    if hasattr(div, "detach"):  # a tensor
        div = div.detach().cpu().double()
    return [float(v) for v in div.tolist()] if hasattr(div, "tolist") else [float(v) for v in div]


def plot_layer_choice(
    measures: "Mapping[str, Divergence]",
    *,
    selected: Sequence[int] = (),
    select_by: str = "parameter",
    title: str = "Layer choice: where did tuning change the model?",
) -> Figure:
    """One panel per measure (bars per layer, y-axis from 0 or below when negative), with each
    panel's top-k share and Gini in its title and the ``selected`` layers highlighted."""
    names = list(measures)
    fig, axes = new_figure(nrows=len(names), figsize=(7.5, 1.9 * len(names) + 0.6), sharex=True)
    axes = list(axes) if len(names) > 1 else [axes]
    k = max(len(selected), 1)
    for ax, name in zip(axes, names, strict=True):
        values = _values(measures[name])
        colours = ["tab:red" if layer in selected else "tab:blue" for layer in range(len(values))]
        ax.bar(range(len(values)), values, color=colours)
        low, high = min([0.0, *values]), max([0.0, *values])
        ax.set_ylim(1.1 * low, 1.1 * high if high > 0 else 1.0)
        ax.axhline(0.0, color="black", linewidth=0.6)
        spread = concentration(torch.tensor(values, dtype=torch.float64), k)
        rule = " (rule)" if name == select_by else ""
        ax.set_title(
            f"{name}{rule}: top-{k} share {spread['top_k_share']:.2f} "
            f"(flat {spread['uniform_share']:.2f}), Gini {spread['gini']:.2f}",
            fontsize=9,
        )
        ax.set_ylabel(_LABELS.get(name, name), fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel(f"layer (red: selected by {select_by}: {sorted(selected)})")
    fig.suptitle(title)
    return fig
