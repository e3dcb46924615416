"""What the ``activations`` stage wrote, read back: the train and held-out activation stores."""

from typing import TYPE_CHECKING, Any

from lfp_mech.errors import LfpMechError
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    from lfp_mech.activations.store import ActivationStore

__all__ = ["HELDOUT_DIR", "TRAIN_DIR", "ActivationsResults"]

TRAIN_DIR = "train"
"""The store of the SAE training activations."""
HELDOUT_DIR = "heldout"
"""The store of the held-out activations (SAE metrics; texts for CE loss and validation)."""


class ActivationsResults(StageResults):
    """The activation stores of a run and the capture's summary.

    Example::

        acts = ActivationsResults("runs/default/activations")
        acts.hook_names                  # ['blocks.25.hook_mlp_out', ...]
        x = acts.heldout_store.load_all(acts.hook_names[0])
    """

    stage = "activations"

    @property
    def train_store(self) -> "ActivationStore":
        """The training activations (``train/``)."""
        from lfp_mech.activations.store import ActivationStore

        return ActivationStore(self.file(TRAIN_DIR))

    @property
    def has_heldout(self) -> bool:
        """Whether held-out activations were captured (``heldout_tokens > 0``)."""
        from lfp_mech.activations.store import STORE_FILE

        return (self.path / HELDOUT_DIR / STORE_FILE).is_file()

    @property
    def heldout_store(self) -> "ActivationStore":
        """The held-out activations (``heldout/``)."""
        from lfp_mech.activations.store import ActivationStore

        if not self.has_heldout:
            raise LfpMechError(
                f"{self.path} has no held-out activations ({HELDOUT_DIR}/): rerun the "
                "activations stage with heldout_tokens > 0"
            )
        return ActivationStore(self.path / HELDOUT_DIR)

    def train_texts(self) -> list[str]:
        """The texts of the training activations."""
        return self.train_store.texts()

    def heldout_texts(self) -> list[str]:
        """The held-out texts (not seen by the SAEs in training)."""
        return self.heldout_store.texts()

    @property
    def layers(self) -> list[int]:
        """The captured block indices (the divergence stage's top layers, sorted)."""
        return [int(layer) for layer in self.summary["layers"]]

    @property
    def hook_names(self) -> list[str]:
        """The captured hooks, in the order of
        [`layers`][lfp_mech.activations.results.ActivationsResults.layers]."""
        return list(self.summary["hook_names"])

    @property
    def config(self) -> dict[str, Any]:
        """The capture's options (``ActivationConfig`` as a dict)."""
        return dict(self.summary["config"])
