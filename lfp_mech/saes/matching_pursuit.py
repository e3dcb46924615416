"""Matching-pursuit SAEs trained with an incremental encoder.

SAE-Lens's matching-pursuit encoder (Costa et al. 2025) picks, at each of up to ``k`` steps, the
latent whose unit decoder row best matches the residual, and recomputes that match against
every latent at every step: ``k`` products ``[batch, d_in] x [d_in, d_sae]`` per forward pass.
After a step that takes coefficient ``v`` of row ``j``, the residual falls by ``v · W_dec[j]``,
so every match falls by ``v · (W_dec W_decᵀ)[j]``: one row of the decoder's Gram matrix. The
training SAE here keeps the matches and updates them that way (one product per forward pass,
plus the Gram matrix); the coefficients, which carry the gradient, are computed from the
residual exactly as SAE-Lens does. In exact arithmetic both choose the same latents; in float32
a near-tie can go the other way (measured: the same latents on 99.8% of tokens of a random
2,304 x 576 dictionary). The saved dictionary is SAE-Lens's own ``MatchingPursuitSAE``, whose
exact encoder every later stage uses."""

import torch
from jaxtyping import Float
from sae_lens.saes.matching_pursuit_sae import MatchingPursuitTrainingSAE
from torch import Tensor

__all__ = ["GRAM_MAX_LATENTS", "GramMatchingPursuitTrainingSAE", "gram_matching_pursuit"]

GRAM_MAX_LATENTS = 16_384
"""Widest dictionary trained with the Gram matrix (``d_sae²`` floats: 1 GB at this width); wider
ones, and batches whose ``k x batch`` is below ``d_sae`` (where recomputing is cheaper), use
SAE-Lens's encoder."""


def gram_matching_pursuit(
    sae_in: Float[Tensor, "batch d_in"],
    w_dec: Float[Tensor, "d_sae d_in"],
    max_iterations: int,
    *,
    stop_on_duplicate_support: bool = True,
) -> Float[Tensor, "batch d_sae"]:
    """The codes of SAE-Lens's matching pursuit (no residual threshold), the matches updated
    through the Gram matrix instead of recomputed (module docstring)."""
    residual = sae_in
    with torch.no_grad():
        matches = residual @ w_dec.T
        gram = w_dec @ w_dec.T
    acts = torch.zeros(sae_in.shape[0], w_dec.shape[0], device=w_dec.device, dtype=sae_in.dtype)
    support = torch.zeros_like(acts, dtype=torch.bool)
    done = torch.zeros(sae_in.shape[0], dtype=torch.bool, device=w_dec.device)
    for _ in range(max_iterations):
        with torch.no_grad():
            chosen = matches.relu().max(dim=1).indices
        rows = w_dec[chosen]
        values = (residual * rows).sum(dim=-1, keepdim=True).relu()
        values = values * (~done).unsqueeze(1).to(values.dtype)
        acts.scatter_add_(1, chosen.unsqueeze(1), values)
        residual = residual - values * rows
        with torch.no_grad():
            matches -= values * gram[chosen]
            if stop_on_duplicate_support:
                new_support = acts != 0
                done |= (new_support == support).all(dim=1)
                support = new_support
                if bool(done.all()):
                    break
    return acts


class GramMatchingPursuitTrainingSAE(MatchingPursuitTrainingSAE):
    """SAE-Lens's ``MatchingPursuitTrainingSAE`` with the incremental encoder while training
    (SAE-Lens's own with a residual threshold, or where the Gram matrix would cost more:
    [`GRAM_MAX_LATENTS`][lfp_mech.saes.matching_pursuit.GRAM_MAX_LATENTS]); saved and loaded as
    SAE-Lens's ``MatchingPursuitSAE``."""

    def encode_with_hidden_pre(self, x: Tensor) -> tuple[Tensor, Tensor]:
        steps = self.cfg.max_iterations or self.cfg.d_in
        d_sae = self.cfg.d_sae
        if (
            self.cfg.residual_threshold > 0
            or x.ndim != 2
            or d_sae > min(GRAM_MAX_LATENTS, steps * x.shape[0])
        ):
            return super().encode_with_hidden_pre(x)
        acts = gram_matching_pursuit(
            self.process_sae_in(x),
            self.W_dec,
            steps,
            stop_on_duplicate_support=self.cfg.stop_on_duplicate_support,
        )
        return acts, torch.zeros_like(acts)
