"""Options of the ``model`` stage (the model itself is the run's ``model``, ``--model``)."""

from dataclasses import dataclass
from typing import Any

from lfp_mech.config_base import StageConfig, check_depths

__all__ = ["ModelConfig"]


@dataclass
class ModelConfig(StageConfig):
    """Options of the ``model`` stage: load the base model both ways and check parity."""

    section = "model"

    parity_tolerance: float = 1e-3
    """Largest allowed max |Δ log-prob| between the Hugging Face model and its TransformerLens
    conversion on the parity tokens; above it the stage stops (the conversion is not faithful)."""

    def __post_init__(self) -> None:
        self.require_positive("parity_tolerance")

    def check_environment(self, run: Any) -> None:
        """Before any stage of a run runs (this stage or a later one): the run's model resolves,
        its architecture converts, and every block option of every stage fits its depth — from
        its config alone, no weights loaded."""
        from lfp_mech.models.conversion import architecture_of, check_architecture, model_depth
        from lfp_mech.models.loading import load_hf_config

        config = load_hf_config(run.model)
        check_architecture(architecture_of(config), run.model)
        check_depths(run.stages, model_depth(config), run.model)
