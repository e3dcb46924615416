"""Options of the ``model`` stage (the model itself is the run's ``model``, ``--model``)."""

from dataclasses import dataclass

from lfp_mech.config_base import StageConfig

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
