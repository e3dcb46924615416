"""The tied-decoder SAE the paper uses, as a SAE-Lens training SAE (SAE-Lens has none)."""

from typing import Any

import torch
from sae_lens.saes.standard_sae import StandardTrainingSAE
from torch import Tensor

__all__ = ["TiedStandardTrainingSAE"]


class TiedStandardTrainingSAE(StandardTrainingSAE):
    """SAE-Lens's standard ReLU training SAE with a tied decoder: ``W_enc`` is ``W_dec.T``.

    Trainable parameters: ``W_dec`` (``[d_sae, d_in]``), ``b_enc``, ``b_dec``. Saved for
    inference as a plain standard SAE with ``W_enc = W_dec.T``, so ``sae_lens.SAE.load_from_disk``
    loads it without registering this class.
    """

    @property
    def W_enc(self) -> Tensor:  # noqa: N802 (SAE-Lens's name)
        return self.W_dec.T

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "W_enc":
            return  # tied: SAE-Lens's initialisation assigns W_enc; the encoder is W_dec.T
        super().__setattr__(name, value)

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        super().process_state_dict_for_saving_inference(state_dict)
        state_dict["W_enc"] = self.W_dec.detach().T.contiguous().clone()

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        """Fold the training-time input scale ``s`` into the biases, keeping the tie.

        With ``x' = s·x``: ``f(x') = s·ReLU((x − b_dec/s) W_decᵀ + b_enc/s)`` and the decoded
        ``x̂' = s·x̂``, so dividing both biases by ``s`` gives the same SAE on raw activations (its
        feature activations are ``1/s`` of the training-time ones). SAE-Lens's own folding
        rescales ``W_enc`` and ``W_dec`` in opposite directions, which would break the tie.
        """
        self.b_dec.data /= scaling_factor
        self.b_enc.data /= scaling_factor
        self.cfg.normalize_activations = "none"
