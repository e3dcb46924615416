"""The activations of a few selected SAE features, computing only what they depend on.

An ablation needs ``a_F(x)`` for its handful of features ``F``, not the whole code: for ReLU
(L1) and JumpReLU SAEs — the saes stage saves its BatchTopK dictionaries as JumpReLU — each
feature depends on its own encoder column only, so ``x @ W_enc[:, F]`` replaces a
``d_in × d_sae`` matmul; a TopK feature is active only when its pre-activation is among the
``k`` largest, so the full pre-activation is still computed, but the dense code (a zero tensor
of ``d_sae`` per token and a scatter into it) and SAE-Lens's hook points are skipped. During
generation the ablation hook runs at every hook point for every new token, so this is what
ablated generation pays over plain generation (``benchmarks/bench_generation.py``).

[`selected_encoder`][lfp_mech.validate.selected_encoder.selected_encoder] returns ``None`` for
anything it does not know to be exactly SAE-Lens's ``encode`` (other architectures, input
normalisation, a hook someone attached to the SAE's hook points), and the caller falls back to
``sae.encode(x)[..., F]``.
"""

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from sae_lens import JumpReLUSAE, StandardSAE, TopKSAE
from sae_lens.saes.topk_sae import TopK
from torch import Tensor, nn

__all__ = ["SelectedEncoder", "selected_encoder"]

SelectedEncoder = Callable[[Float[Tensor, "*batch d_in"]], Float[Tensor, "*batch n_sel"]]
"""``x -> sae.encode(x)[..., F]``, the activations of the selected features."""

_SAE_HOOKS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post")


def selected_encoder(sae: nn.Module, feature_ids: Int[Tensor, " n_sel"]) -> SelectedEncoder | None:
    """``x -> sae.encode(x)[..., feature_ids]`` without the unselected features' work, or
    ``None`` when the SAE is not one whose encoder this reproduces exactly (see module doc)."""
    if not _plain_encoder(sae):
        return None
    ids = feature_ids.to(sae.W_enc.device)
    b_dec_in = sae.b_dec.detach() * float(sae.cfg.apply_b_dec_to_input)
    if type(sae) is TopKSAE and isinstance(sae.activation_fn, TopK):
        return _topk(sae, ids, b_dec_in)
    relu = isinstance(getattr(sae, "activation_fn", None), nn.ReLU)  # SAE-Lens's default
    if type(sae) not in (JumpReLUSAE, StandardSAE) or not relu:
        return None  # e.g. matching pursuit: a greedy code over every latent, and no b_enc
    w_enc = sae.W_enc.detach().index_select(1, ids).contiguous()
    b_enc = sae.b_enc.detach().index_select(0, ids)
    if type(sae) is JumpReLUSAE:
        threshold = sae.threshold.detach().index_select(0, ids)
        return lambda x: _jumprelu(_sae_in(x, sae.dtype, b_dec_in) @ w_enc + b_enc, threshold)
    return lambda x: torch.relu(_sae_in(x, sae.dtype, b_dec_in) @ w_enc + b_enc)


def _plain_encoder(sae: nn.Module) -> bool:
    """No input normalisation or reshaping, and nothing attached to the SAE's hook points."""
    cfg = sae.cfg
    if getattr(cfg, "normalize_activations", "none") != "none":
        return False
    if getattr(cfg, "reshape_activations", "none") != "none":
        return False
    hooks = [getattr(sae, name, None) for name in _SAE_HOOKS]
    return all(
        isinstance(h, nn.Module) and not (h._forward_hooks or h._forward_pre_hooks) for h in hooks
    )


def _sae_in(x: Tensor, dtype: torch.dtype, b_dec_in: Tensor) -> Tensor:
    return x.to(dtype) - b_dec_in


def _jumprelu(pre: Tensor, threshold: Tensor) -> Tensor:
    # SAE-Lens: relu(pre) * (pre > threshold)
    return torch.relu(pre) * (pre > threshold).to(pre.dtype)


def _topk(sae: nn.Module, ids: Tensor, b_dec_in: Tensor) -> SelectedEncoder:
    k = int(sae.activation_fn.k)
    w_enc, b_enc = sae.W_enc.detach(), sae.b_enc.detach()
    rescale = (
        sae.W_dec.detach().norm(dim=-1) if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False)
        else None
    )  # fmt: skip

    def encode(x: Tensor) -> Tensor:
        pre = _sae_in(x, sae.dtype, b_dec_in) @ w_enc + b_enc  # as SAE-Lens computes it
        if rescale is not None:
            pre = pre * rescale
        # a feature is in the code iff its pre-activation reaches the k-th largest (ties at the
        # k-th value have probability zero for float activations); then ReLU, as TopK applies
        kth = pre.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        selected = pre.index_select(-1, ids)
        return torch.where(selected >= kth, torch.relu(selected), 0.0)

    return encode
