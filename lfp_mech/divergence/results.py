"""What the ``divergence`` stage wrote, read back: divergence per layer and the selected layers."""

from typing import TYPE_CHECKING

from lfp_mech._io import load_tensors
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    import pandas as pd
    from jaxtyping import Float
    from matplotlib.figure import Figure
    from torch import Tensor

__all__ = ["DIVERGENCE_TABLE", "DIVERGENCE_TENSORS", "DivergenceResults", "FIGURE_FILE"]

DIVERGENCE_TABLE = "divergence"
"""Table stem: one row per layer (layer, divergence, rank, selected)."""
DIVERGENCE_TENSORS = "divergence.safetensors"
"""The divergence per layer as a float64 tensor named ``divergence``."""
FIGURE_FILE = "divergence.png"
"""Divergence vs layer with the selected layers marked."""


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
        """The selected layers, most divergent first."""
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

    def values(self) -> "Float[Tensor, ' n_layers']":
        """The divergence per layer at full (float64) precision."""
        return load_tensors(self.file(DIVERGENCE_TENSORS))["divergence"]

    def figure(self) -> "Figure":
        """Divergence vs layer, the selected layers marked (as in ``divergence.png``)."""
        from lfp_mech.divergence.plots import plot_layer_divergence

        return plot_layer_divergence(self.values(), top_layers=self.top_layers)
