"""Figure of the divergence stage: per-layer parameter divergence, one line per model."""

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from jaxtyping import Float
from matplotlib.figure import Figure
from torch import Tensor


def plot_layer_divergence(
    divergences: Mapping[str, Float[Tensor, " n_layers"]] | Float[Tensor, " n_layers"],
    *,
    top_layers: Sequence[int] = (),
    title: str = "Parameter divergence between base and fine-tuned model",
) -> Figure:
    """Divergence vs layer (paper appendix figure), one line per model; top layers marked.

    Args:
        divergences: ``{model name: divergence per layer}`` or a single tensor.
        top_layers: layers to mark (the ones the SAE stage will use), for the first model.
    """
    if not isinstance(divergences, Mapping):
        divergences = {"tuned vs base": divergences}
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for index, (name, div) in enumerate(divergences.items()):
        values = div.detach().cpu().double().tolist()
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
    ax.set_xlabel("layer (transformer block)")
    ax.set_ylabel(r"$\sum_p \|\theta_{base} - \theta_{tuned}\|_F$")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
