"""What the ``activations`` stage wrote, read back: the train and held-out activation stores."""

from typing import TYPE_CHECKING, Any

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    from lfp_mech.activations.store import ActivationStore

__all__ = ["BASE_PREFIX", "HELDOUT_DIR", "MODELS", "TRAIN_DIR", "ActivationsResults", "store_dir"]

TRAIN_DIR = "train"
"""The store of the SAE training activations."""
HELDOUT_DIR = "heldout"
"""The store of the held-out activations (SAE metrics; texts for CE loss and validation)."""
BASE_PREFIX = "base_"
"""The base model's stores: ``base_train/`` and ``base_heldout/`` (the same tokens)."""
MODELS = ("tuned", "base")
"""Whose activations: the tuned policy's (default) or the base model's."""


def store_dir(split: str, model: str = "tuned") -> str:
    """The folder of the ``split`` (``TRAIN_DIR``/``HELDOUT_DIR``) store of ``model``."""
    if model not in MODELS:
        raise ConfigError(f"model must be one of {MODELS}, got {model!r}")
    return split if model == "tuned" else BASE_PREFIX + split


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
        """The tuned policy's training activations (``train/``)."""
        return self.store("train")

    @property
    def has_heldout(self) -> bool:
        """Whether held-out activations were captured (``heldout_tokens > 0``)."""
        from lfp_mech.activations.store import STORE_FILE

        return (self.path / HELDOUT_DIR / STORE_FILE).is_file()

    @property
    def has_base(self) -> bool:
        """Whether the base model's activations were captured (``base_model``)."""
        from lfp_mech.activations.store import STORE_FILE

        return (self.path / store_dir(TRAIN_DIR, "base") / STORE_FILE).is_file()

    @property
    def heldout_store(self) -> "ActivationStore":
        """The tuned policy's held-out activations (``heldout/``)."""
        return self.store("heldout")

    def store(self, split: str = "train", model: str = "tuned") -> "ActivationStore":
        """The ``split`` (``"train"``/``"heldout"``) store of ``model`` (``"tuned"``/``"base"``;
        the base model's are on exactly the same tokens)."""
        from lfp_mech.activations.store import ActivationStore

        if split not in (TRAIN_DIR, HELDOUT_DIR):
            raise ConfigError(f"split must be {TRAIN_DIR!r} or {HELDOUT_DIR!r}, got {split!r}")
        if model == "base" and not self.has_base:
            raise LfpMechError(
                f"{self.path} has no base-model activations: rerun the activations stage with "
                "activations.base_model = true"
            )
        if split == HELDOUT_DIR and not self.has_heldout:
            raise LfpMechError(
                f"{self.path} has no held-out activations ({HELDOUT_DIR}/): rerun the "
                "activations stage with heldout_tokens > 0"
            )
        return ActivationStore(self.path / store_dir(split, model))

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
