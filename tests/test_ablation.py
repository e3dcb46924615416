"""ablate_features: exactness, identity, generation with and without KV cache, hook cleanup,
errors (Tables 6 and 7: test_validate_tables.py; the stage: test_validate_stage.py)."""

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from validate_helpers import HOOK, TEXTS, make_sae

from lfp_mech.errors import ConfigError
from lfp_mech.validate import ablate_features, feature_means, generate_with_ablation


@pytest.fixture
def loud_model(tiny_model):
    """tiny-llama with MLP outputs scaled to O(1) (random init leaves them ~1e-3), so that
    absolute tolerances of 1e-5 on hook_mlp_out are meaningful."""
    with torch.no_grad():
        for block in tiny_model.blocks:
            block.mlp.W_out.mul_(300.0)
    return tiny_model


def record(store: dict, key: str):
    def hook(x, hook):
        store[key] = x.detach().clone()

    return hook


def test_no_features_ablated_leaves_logits_unchanged(loud_model):
    sae = make_sae()
    tokens = loud_model.to_tokens(TEXTS)
    clean = loud_model(tokens)
    with ablate_features(loud_model, sae, []):
        zero = loud_model(tokens)
    with ablate_features(loud_model, sae, [], mode="mean", means=torch.rand(128)):
        mean = loud_model(tokens)
    assert (clean - zero).abs().max().item() <= 1e-5
    assert (clean - mean).abs().max().item() <= 1e-5


def _matching_pursuit_sae():
    """A random matching-pursuit dictionary as lfp_mech loads one (its incremental encoder)."""
    from sae_lens.saes.matching_pursuit_sae import MatchingPursuitSAEConfig

    from lfp_mech.saes import GramMatchingPursuitSAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = MatchingPursuitSAEConfig(d_in=64, d_sae=128, residual_threshold=0.0, max_iterations=8)
        sae = GramMatchingPursuitSAE(cfg)
        with torch.no_grad():
            sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(128, 64), dim=1))
    sae.cfg.metadata.hook_name = HOOK
    return sae


@pytest.mark.parametrize("kind", ["relu", "matching_pursuit"])
def test_patched_activation_is_x_minus_selected_decoder_contributions(loud_model, kind):
    sae = make_sae(gain=3.0) if kind == "relu" else _matching_pursuit_sae()
    feats = [3, 17, 17, 40, 99]  # duplicates are ignored
    tokens = loud_model.to_tokens(TEXTS)  # a padded batch
    seen: dict = {}
    # the outer hook is installed first, so it sees x before the ablation; the inner one after
    with loud_model.hooks(fwd_hooks=[(HOOK, record(seen, "before"))]):
        with ablate_features(loud_model, sae, feats):
            with loud_model.hooks(fwd_hooks=[(HOOK, record(seen, "after"))]):
                _, cache = loud_model.run_with_cache(tokens, names_filter=HOOK)
    x = seen["before"]
    ids = torch.tensor([3, 17, 40, 99])
    z = sae.encode(x).detach()
    expected = x - z[..., ids] @ sae.W_dec[ids].detach()
    assert (seen["after"] - expected).abs().max().item() <= 1e-5
    assert (cache[HOOK] - expected).abs().max().item() <= 1e-5  # run_with_cache sees the patch
    assert x.abs().max().item() > 0.5
    assert (x - expected).abs().max().item() > 0.1  # the ablation did something


def test_dict_form_several_hooks_and_mean_mode(loud_model):
    h0 = "blocks.0.hook_mlp_out"
    sae0, sae1 = make_sae(hook=h0, seed=1, gain=3.0), make_sae(seed=2, gain=3.0)
    means = {
        h0: feature_means(loud_model, sae0, TEXTS),
        HOOK: feature_means(loud_model, sae1, TEXTS),
    }
    assert means[h0].shape == (128,) and (means[h0] >= 0).all() and means[h0].sum() > 0
    seen: dict = {}
    tokens = loud_model.to_tokens(TEXTS[:2])
    with loud_model.hooks(fwd_hooks=[(h0, record(seen, "before"))]):
        with ablate_features(
            loud_model, {h0: (sae0, [5, 6]), HOOK: (sae1, [7])}, mode="mean", means=means
        ):
            with loud_model.hooks(fwd_hooks=[(h0, record(seen, "after"))]):
                loud_model(tokens)
    x, ids = seen["before"], torch.tensor([5, 6])
    z = sae0.encode(x).detach()
    expected = x - (z[..., ids] - means[h0][ids]) @ sae0.W_dec[ids].detach()
    assert (seen["after"] - expected).abs().max().item() <= 1e-5
    for name in (h0, HOOK):
        assert loud_model.hook_dict[name].fwd_hooks == []


def test_generation_with_and_without_kv_cache(loud_model):
    sae = make_sae(gain=4.0)
    prompts = ["A great movie", "The film was", "I watched it"]
    kwargs = dict(max_new_tokens=8, temperature=0.0, batch_size=2)
    clean = generate_with_ablation(loud_model, prompts, None, **kwargs)
    empty = generate_with_ablation(loud_model, prompts, {HOOK: (sae, [])}, **kwargs)
    strong = {HOOK: (sae, list(range(128)))}
    ablated_kv = generate_with_ablation(loud_model, prompts, strong, **kwargs)
    ablated_nokv = generate_with_ablation(
        loud_model, prompts, strong, use_past_kv_cache=False, **kwargs
    )
    assert empty == clean
    assert ablated_kv == ablated_nokv
    assert ablated_kv != clean
    assert len(clean) == 3 and all(isinstance(t, str) for t in clean)
    # plain model.generate inside the context is ablated too, and hooks are gone afterwards
    before = loud_model.generate(prompts[0], max_new_tokens=8, do_sample=False, verbose=False)
    with ablate_features(loud_model, sae, list(range(128))):
        inside = loud_model.generate(prompts[0], max_new_tokens=8, do_sample=False, verbose=False)
    outside = loud_model.generate(prompts[0], max_new_tokens=8, do_sample=False, verbose=False)
    assert inside != outside
    assert outside == before


def test_sampled_generation_is_seeded(tiny_model):
    sae = make_sae()
    a = generate_with_ablation(
        tiny_model, ["The film"] * 3, {HOOK: (sae, [1])}, seed=3, max_new_tokens=6
    )
    b = generate_with_ablation(
        tiny_model, ["The film"] * 3, {HOOK: (sae, [1])}, seed=3, max_new_tokens=6
    )
    assert a == b


def test_hooks_removed_after_exit_and_after_exception(tiny_model):
    sae = make_sae()
    with ablate_features(tiny_model, sae, [1, 2]):
        assert len(tiny_model.hook_dict[HOOK].fwd_hooks) == 1
    assert tiny_model.hook_dict[HOOK].fwd_hooks == []
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_features(tiny_model, sae, [1, 2]):
            tiny_model(tiny_model.to_tokens("hello"))
            raise RuntimeError("boom")
    assert tiny_model.hook_dict[HOOK].fwd_hooks == []
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())


def test_bad_inputs_raise_documented_errors(tiny_model):
    sae = make_sae()
    with pytest.raises(ConfigError, match=r"unknown hook name 'blocks\.7\.hook_mlp_out'.*blocks\."):
        with ablate_features(tiny_model, {"blocks.7.hook_mlp_out": (sae, [1])}):
            pass
    with pytest.raises(ConfigError, match=r"feature id 128 out of range.*d_sae=128"):
        with ablate_features(tiny_model, sae, [1, 128]):
            pass
    with pytest.raises(ConfigError, match=r"feature id -1 out of range"):
        with ablate_features(tiny_model, sae, [-1]):
            pass
    narrow = make_sae(d_in=32)
    with pytest.raises(ConfigError, match=r"d_in=32 .*width of 'blocks\.1\.hook_mlp_out' \(64\)"):
        with ablate_features(tiny_model, narrow, [1]):
            pass
    with pytest.raises(ConfigError, match="mode='mean' needs"):
        with ablate_features(tiny_model, sae, [1], mode="mean"):
            pass
    with pytest.raises(ConfigError, match=r"shape \(3,\)"):
        with ablate_features(tiny_model, sae, [1], mode="mean", means=torch.zeros(3)):
            pass
    with pytest.raises(ConfigError, match="'zero' or 'mean'"):
        with ablate_features(tiny_model, sae, [1], mode="half"):
            pass
    no_hook = StandardSAE(StandardSAEConfig(d_in=64, d_sae=8))
    with pytest.raises(ConfigError, match="hook_name"):
        with ablate_features(tiny_model, no_hook, [1]):
            pass
    assert isinstance(ConfigError("x"), ValueError)
    assert all(not hp.fwd_hooks for hp in tiny_model.hook_dict.values())


@pytest.mark.slow
def test_smollm2_exact_ablation(smollm2):
    hook = "blocks.15.hook_mlp_out"
    sae = make_sae(d_in=576, d_sae=1152, hook=hook)
    tokens = smollm2.to_tokens(["The film was a delight from start to end."])
    clean = smollm2(tokens, stop_at_layer=17)
    with ablate_features(smollm2, sae, []):
        same = smollm2(tokens, stop_at_layer=17)
    assert (clean - same).abs().max().item() <= 1e-5
    seen: dict = {}
    with smollm2.hooks(fwd_hooks=[(hook, record(seen, "before"))]):
        with ablate_features(smollm2, sae, [0, 5, 600]):
            _, cache = smollm2.run_with_cache(tokens, names_filter=hook, stop_at_layer=16)
    x, ids = seen["before"], torch.tensor([0, 5, 600])
    expected = x - sae.encode(x).detach()[..., ids] @ sae.W_dec[ids].detach()
    assert (cache[hook] - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2"])
def test_generation_runs_on_the_hf_twin_with_the_same_ablation(arch):
    """A model lfp_mech loaded generates on its HF twin, ablated by torch hooks that edit
    hook_mlp_out exactly as the TransformerLens hook does (GPT-2: TL's centred activations)."""
    from lfp_mech import load_model
    from lfp_mech.models.generation import generate_texts, hf_twin
    from lfp_mech.models.hf_hooks import decoder_layers, hf_hooks
    from lfp_mech.validate.ablation import ablate_activation, resolve_ablations

    model = load_model(arch)
    hf, tok = hf_twin(model)
    with torch.no_grad():  # O(1) MLP outputs in both (random init leaves them ~1e-3)
        for block, layer in zip(model.blocks, decoder_layers(hf), strict=True):
            block.mlp.W_out.mul_(300.0)
            block.mlp.b_out.mul_(300.0)
            for name, param in layer.mlp.named_parameters():
                if name.split(".")[0] in ("down_proj", "c_proj"):
                    param.mul_(300.0)
    sae = make_sae(gain=4.0)
    strong = {HOOK: (sae, list(range(128)))}
    tokens = model.to_tokens(TEXTS)
    (spec,) = resolve_ablations(model, strong, None, "zero", None)
    with torch.no_grad(), ablate_features(model, strong):
        theirs = model(tokens).log_softmax(-1)
    with torch.no_grad(), hf_hooks(hf, [(HOOK, lambda x: ablate_activation(x, spec))]):
        ours = hf(tokens).logits.log_softmax(-1)
    assert (ours - theirs).abs().max() < 1e-3
    with torch.no_grad():
        assert (hf(tokens).logits.log_softmax(-1) - theirs).abs().max() > 0.05

    prompts = ["A great movie", "The film was", "I watched it"]
    kwargs = dict(max_new_tokens=8, batch_size=2, seed=5)
    clean = generate_with_ablation(model, prompts, None, **kwargs)
    assert generate_with_ablation(model, prompts, {HOOK: (sae, [])}, **kwargs) == clean
    direct, _ = generate_texts(hf, tok, prompts, max_new_tokens=8, batch_size=2, seed=5)
    assert clean == direct  # the shared sampling path, same seeds
    ablated = generate_with_ablation(model, prompts, strong, **kwargs)
    hooked, _ = generate_texts(
        hf,
        tok,
        prompts,
        max_new_tokens=8,
        batch_size=2,
        seed=5,
        hooks=[(HOOK, lambda x: ablate_activation(x, spec))],
    )
    assert ablated == hooked != clean
