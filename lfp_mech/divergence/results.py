"""What the ``divergence`` stage wrote, read back: divergence per layer and the selected layers."""

from typing import TYPE_CHECKING

from lfp_mech._io import load_tensors
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    import pandas as pd
    from jaxtyping import Float
    from matplotlib.figure import Figure
    from torch import Tensor

__all__ = [
    "CONCENTRATION_TABLE",
    "DIVERGENCE_TABLE",
    "DIVERGENCE_TENSORS",
    "DivergenceResults",
    "FIGURE_FILE",
    "LAYER_CHOICE_FIGURE",
    "LAYER_CHOICE_TABLE",
]

DIVERGENCE_TABLE = "divergence"
"""Table stem: one row per layer (layer, divergence, rank, selected)."""
DIVERGENCE_TENSORS = "divergence.safetensors"
"""The divergence per layer as a float64 tensor named ``divergence``."""
FIGURE_FILE = "divergence.png"
"""Divergence vs layer with the selected layers marked."""
LAYER_CHOICE_TABLE = "layer_choice"
"""Table stem: one row per layer, one column per measure (parameter, relative, activation,
patching, patching_logprob) and ``selected``."""
CONCENTRATION_TABLE = "concentration"
"""Table stem: one row per measure (top-k share, uniform share, Gini, max/median, its top
layers, whether the rule used it)."""
LAYER_CHOICE_FIGURE = "layer_choice.png"
"""One panel per measure (y from 0), the selected layers marked."""


class DivergenceResults(StageResults):
    """The divergence stage's folder: which blocks RLHF changed most.

    Example::

        div = DivergenceResults("runs/default/divergence")
        div.top_layers          # e.g. [29, 28, 27, 26, 25], most divergent first
        div.divergence          # DataFrame: layer, divergence, rank, selected
    """

    stage = "divergence"

    @property
    def top_layers(self) -> list[int]:
        """The selected layers, largest first by the rule's measure (``select_by``)."""
        return [int(layer) for layer in self.summary["top_layers"]]

    @property
    def top_layers_sorted(self) -> list[int]:
        """The selected layers in layer order (the order later stages use)."""
        return sorted(self.top_layers)

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks compared."""
        return int(self.summary["n_layers"])

    @property
    def divergence(self) -> "pd.DataFrame":
        """One row per layer: ``layer``, ``divergence``, ``rank`` (1 = most), ``selected``."""
        return self.table(DIVERGENCE_TABLE)

    @property
    def select_by(self) -> str:
        """The measure that chose the layers ("parameter" in runs made before it existed)."""
        return str(self.summary.get("select_by", "parameter"))

    @property
    def layer_choice(self) -> "pd.DataFrame":
        """One row per layer: every measure and ``selected``."""
        return self.table(LAYER_CHOICE_TABLE)

    @property
    def concentration(self) -> "pd.DataFrame":
        """One row per measure: ``top_k_share``, ``uniform_share``, ``gini``,
        ``max_over_median``, ``top_layers``, ``chosen_by_rule``."""
        return self.table(CONCENTRATION_TABLE)

    def values(self, measure: str = "parameter") -> "Float[Tensor, ' n_layers']":
        """A measure per layer at full (float64) precision ("parameter": the paper's
        divergence)."""
        tensors = load_tensors(self.file(DIVERGENCE_TENSORS))
        return tensors["divergence" if measure == "parameter" else measure]

    def measures(self) -> "dict[str, Float[Tensor, ' n_layers']]":
        """Every measure the stage computed, by name."""
        tensors = load_tensors(self.file(DIVERGENCE_TENSORS))
        names = ("parameter", "relative", "activation", "patching")
        return {n: tensors["divergence" if n == "parameter" else n] for n in names
                if (n == "parameter" or n in tensors)}  # fmt: skip

    def figure(self) -> "Figure":
        """Divergence vs layer, the selected layers marked (as in ``divergence.png``)."""
        from lfp_mech.divergence.plots import plot_layer_divergence

        return plot_layer_divergence(self.values(), top_layers=self.top_layers)

    def layer_choice_figure(self) -> "Figure":
        """Every measure per layer, the selected layers marked (as in ``layer_choice.png``)."""
        from lfp_mech.divergence.plots import plot_layer_choice

        return plot_layer_choice(
            self.measures(), selected=self.top_layers, select_by=self.select_by
        )
