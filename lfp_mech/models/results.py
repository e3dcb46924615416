"""What the ``model`` stage wrote, read back
([`lfp_mech.runner.results.Run.model`][lfp_mech.runner.results.Run.model])."""

from typing import Any

from lfp_mech.stage_api import StageResults

__all__ = ["CARD_FILE", "ModelResults"]

CARD_FILE = "model.json"


class ModelResults(StageResults):
    """The base model's card: architecture, sizes, HF ↔ TransformerLens parity."""

    stage = "model"

    @property
    def card(self) -> dict[str, Any]:
        """``model.json``: name, architecture, n_layers, d_model, d_mlp, d_vocab, n_params, parity."""
        return self.json("model")

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks of the base model."""
        return int(self.card["n_layers"])
