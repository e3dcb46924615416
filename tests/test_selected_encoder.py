"""selected_encoder: the selected features' activations equal SAE-Lens's ``encode`` for every
architecture it claims, and it declines (None) what it cannot reproduce."""

import dataclasses

import pytest
import torch
from sae_lens import (
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

from lfp_mech.validate.ablation import ablate_activation
from lfp_mech.validate.selected_encoder import selected_encoder

D_IN, D_SAE = 64, 96  # D_IN: the d_model of the tiny_model fixture
IDS = torch.tensor([0, 7, 50, 95])


def _randomised(sae, seed: int = 0):
    """Every parameter random (biases and thresholds included), so each term of encode matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        if hasattr(sae, "threshold"):
            sae.threshold.abs_()
    return sae.eval()


def _sae(arch: str, **cfg):
    if arch == "standard":
        return _randomised(StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, **cfg)))
    if arch == "jumprelu":
        return _randomised(JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, **cfg)))
    return _randomised(TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=8, **cfg)))


CASES = [
    ("standard", {}),
    ("standard", {"apply_b_dec_to_input": False}),
    ("jumprelu", {}),
    ("jumprelu", {"apply_b_dec_to_input": False}),
    ("topk", {}),
    ("topk", {"rescale_acts_by_decoder_norm": True}),
]


@pytest.mark.parametrize(("arch", "cfg"), CASES)
def test_selected_activations_equal_sae_lens_encode(arch, cfg):
    sae = _sae(arch, **cfg)
    encode = selected_encoder(sae, IDS)
    assert encode is not None
    x = torch.randn(3, 5, D_IN) * 2
    with torch.no_grad():
        expected = sae.encode(x)[..., IDS]
        got = encode(x)
    assert got.shape == (3, 5, len(IDS))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (expected > 0).any() and (expected == 0).any()  # both branches exercised


def test_topk_selects_only_features_in_the_top_k():
    sae = _sae("topk")
    every = torch.arange(D_SAE)
    x = torch.randn(64, D_IN)
    with torch.no_grad():
        acts = selected_encoder(sae, every)(x)
    assert ((acts > 0).sum(-1) <= 8).all() and (acts > 0).sum(-1).float().mean() > 4


def test_declines_what_it_cannot_reproduce():
    normalised = _sae("standard", normalize_activations="layer_norm")
    assert selected_encoder(normalised, IDS) is None
    hooked = _sae("jumprelu")
    hooked.hook_sae_acts_post.add_hook(lambda acts, hook: acts * 0)
    assert selected_encoder(hooked, IDS) is None
    hooked.hook_sae_acts_post.remove_hooks()
    assert selected_encoder(hooked, IDS) is not None
    # a matching-pursuit code is chosen greedily over every latent: no per-feature shortcut
    from sae_lens.saes.matching_pursuit_sae import MatchingPursuitSAE, MatchingPursuitSAEConfig

    pursuit = MatchingPursuitSAE(MatchingPursuitSAEConfig(d_in=D_IN, d_sae=D_SAE))
    assert selected_encoder(pursuit, IDS) is None


@pytest.mark.parametrize("fast", [True, False])
def test_rescaled_topk_ablation_of_every_feature_removes_the_reconstruction(tiny_model, fast):
    """A TopK SAE with rescale_acts_by_decoder_norm encodes a_f·||W_dec[f]|| and decodes with unit
    rows: ablating all features must remove exactly decode(encode(x)) − b_dec, on the fast path and
    on the sae.encode fallback."""
    from lfp_mech.validate.ablation import resolve_ablations

    sae = _sae("topk", rescale_acts_by_decoder_norm=True)
    hook = "blocks.0.hook_mlp_out"
    (spec,) = resolve_ablations(tiny_model, {hook: (sae, range(D_SAE))}, None, "zero", None)
    if not fast:
        spec = dataclasses.replace(spec, encode_selected=None)  # the sae.encode fallback
    assert (spec.encode_selected is not None) == fast
    x = torch.randn(4, 6, D_IN)
    with torch.no_grad():
        expected = x - (sae.decode(sae.encode(x)) - sae.b_dec)
        torch.testing.assert_close(ablate_activation(x, spec), expected, rtol=1e-4, atol=1e-4)
