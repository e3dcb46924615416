"""SAE-Lens dictionaries: tied variant, save/load round trip, training, metrics, splicing.

The stage and its results class: ``test_saes_stage.py``.
"""

import dataclasses
import logging
import math

import pytest
import torch
from sae_lens import SAE, HookedSAETransformer

from lfp_mech.activations import capture_activations
from lfp_mech.errors import ConfigError
from lfp_mech.saes import (
    SAEConfig,
    SameNormRandomError,
    TiedStandardTrainingSAE,
    build_training_sae,
    ce_loss_recovered,
    ce_recovered_ci,
    ce_recovered_difference_ci,
    l1_sweep,
    load_sae,
    mmcs,
    mmcs_with_index,
    sae_metrics,
    save_sae,
    spliced_ce_losses,
    tensor_batches,
    text_ce_losses,
    tied_vs_untied_table,
    train_sae,
    train_saes,
)

D_IN = 16


def _sparse_data(n=4096, d_in=D_IN, n_atoms=24, seed=0):
    """Sparse non-negative combinations of random unit directions, scaled like real acts."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, d_in, generator=g), dim=1)
    codes = torch.rand(n, n_atoms, generator=g) * (torch.rand(n, n_atoms, generator=g) < 0.1)
    return 5.0 * codes @ atoms


def _batches(acts, batch_size):
    def batches(epoch):
        order = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(epoch))
        for start in range(0, acts.shape[0] - batch_size + 1, batch_size):
            yield acts[order[start : start + batch_size]]

    return batches


def _config(**overrides):
    base = dict(
        architecture="l1", tied=True, expansion_factors=(1, 2), base_model=False,
        batch_size=128, training_tokens=128 * 60, l1_coefficient=1e-3, sweep_alphas=(),
        eval_tokens=1024, ce_texts=8, ce_batch_size=4,
    )  # fmt: skip
    return SAEConfig(**{**base, **overrides})


@pytest.mark.parametrize("tied", [True, False])
def test_save_load_round_trip_via_sae_lens(tmp_path, tied):
    acts = _sparse_data()
    sae, stats = train_sae(
        _batches(acts, 128), D_IN, 2 * D_IN, _config(), tied=tied, metadata={"hook_name": "h"}
    )
    assert stats["steps"] == 60
    save_sae(sae, tmp_path / "sae", stats)
    loaded = SAE.load_from_disk(tmp_path / "sae")
    assert type(loaded).__name__ == "StandardSAE"
    assert loaded.cfg.metadata.hook_name == "h"
    x = acts[:256]
    torch.testing.assert_close(loaded.encode(x), sae.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), sae.decode(sae.encode(x)))
    if tied:
        assert torch.equal(loaded.W_enc, loaded.W_dec.T)
    assert load_sae(tmp_path / "sae").cfg.d_sae == 2 * D_IN


def test_tied_decoder_equals_encoder_transpose_after_training():
    acts = _sparse_data()
    before = build_training_sae(D_IN, D_IN, tied=True, alpha=1e-3, config=_config(), n_steps=60)
    w_before = before.W_dec.detach().clone()
    sae, _ = train_sae(_batches(acts, 128), D_IN, D_IN, _config(), tied=True)
    assert isinstance(sae, TiedStandardTrainingSAE)
    assert "W_enc" not in dict(sae.named_parameters())
    assert set(dict(sae.named_parameters())) == {"W_dec", "b_enc", "b_dec"}
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert not torch.equal(sae.W_dec, w_before), "the tied decoder must have trained"


def test_tied_fold_of_activation_scale_is_exact():
    config = _config(normalize_activations=True)
    sae = build_training_sae(D_IN, D_IN, tied=True, alpha=0.0, config=config, n_steps=1)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x, scale = torch.randn(32, D_IN), 3.7
    scaled_out = sae.decode(sae.encode(x * scale)) / scale
    sae.fold_activation_norm_scaling_factor(scale)
    torch.testing.assert_close(sae.decode(sae.encode(x)), scaled_out)
    assert torch.equal(sae.W_enc, sae.W_dec.T)


def test_training_learns_a_good_reconstruction_and_alpha_controls_l0():
    acts, heldout = _sparse_data(seed=0), _sparse_data(n=1024, seed=0)[:512]
    rows = l1_sweep(acts, heldout, [1e-4, 0.3], _config(sweep_tokens=128 * 300), expansion_factor=2)
    weak, strong = rows
    assert weak["fvu"] < 0.2
    assert strong["l0"] < weak["l0"]
    assert weak["sae_lens_l1_coefficient"] == pytest.approx(1e-4 * D_IN)


def test_mmcs_with_itself_is_one_and_checks_width():
    sae = build_training_sae(D_IN, 2 * D_IN, tied=False, alpha=0.0, config=_config(), n_steps=1)
    values = mmcs(sae, sae)
    assert values.shape == (2 * D_IN,)
    torch.testing.assert_close(values, torch.ones(2 * D_IN))
    other = build_training_sae(8, 8, tied=False, alpha=0.0, config=_config(), n_steps=1)
    with pytest.raises(ConfigError, match="different widths"):
        mmcs(other, sae)


def test_sae_metrics_of_a_mean_only_sae():
    sae = build_training_sae(D_IN, D_IN, tied=False, alpha=0.0, config=_config(), n_steps=1)
    acts = _sparse_data(n=512)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.W_enc.zero_()
        sae.b_enc.fill_(-1.0)
        sae.b_dec.copy_(acts.mean(0))
    metrics = sae_metrics(sae, acts)
    assert metrics["fvu"] == pytest.approx(1.0, rel=1e-4)
    assert metrics["l0"] == 0 and metrics["dead_fraction"] == 1.0
    with pytest.raises(ConfigError, match="width"):
        sae_metrics(sae, torch.zeros(4, 3))


def test_spliced_ce_matches_hooked_sae_transformer(tiny_model):
    hook = "blocks.1.hook_mlp_out"
    sae = build_training_sae(
        64, 128, tied=True, alpha=0.0, config=_config(), n_steps=1, metadata={"hook_name": hook}
    )
    tokens = torch.randint(3, 1000, (3, 12), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 1
    mask = torch.ones_like(tokens, dtype=torch.bool)
    losses = spliced_ce_losses(tiny_model, tokens, mask, {hook: [sae]}, batch_size=2)
    hooked = HookedSAETransformer(tiny_model.cfg, tokenizer=tiny_model.tokenizer)
    hooked.load_state_dict(tiny_model.state_dict(), strict=False)
    with torch.no_grad():
        reference = hooked.run_with_saes(tokens, saes=[sae], return_type="loss").item()
        clean = tiny_model(tokens, return_type="loss").item()
        zeroed = tiny_model.run_with_hooks(
            tokens, return_type="loss", fwd_hooks=[(hook, lambda act, hook: torch.zeros_like(act))]
        ).item()
    assert losses["sae"][hook][0] == pytest.approx(reference, rel=1e-4)
    assert losses["clean"] == pytest.approx(clean, rel=1e-5)
    assert losses["zero"][hook] == pytest.approx(zeroed, rel=1e-5) and zeroed != clean
    assert ce_loss_recovered(2.0, 2.0, 3.0) == 1.0 and ce_loss_recovered(2.0, 3.0, 3.0) == 0.0
    assert math.isnan(ce_loss_recovered(2.0, 2.5, 2.0))


def test_same_norm_random_error_keeps_the_error_norm_not_its_direction(tiny_model):
    """The control moves each token by the SAE's error norm in a seeded random direction, and
    splices in like an SAE (the same loss as a full run hooked with a same-seeded control)."""
    hook = "blocks.1.hook_mlp_out"
    sae = build_training_sae(64, 128, tied=False, alpha=0.0, config=_config(), n_steps=1)
    act = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sae_error = act - sae.decode(sae.encode(act))
    moved = SameNormRandomError(sae, seed=5)(act)
    control_error = moved - act
    assert control_error.norm(dim=-1) == pytest.approx(sae_error.norm(dim=-1), rel=1e-4)
    cosine = torch.nn.functional.cosine_similarity(control_error, sae_error, dim=-1)
    assert cosine.abs().max() < 0.6  # 64 dims: a random direction is nearly orthogonal
    assert torch.equal(SameNormRandomError(sae, seed=5)(act), moved)
    assert not torch.equal(SameNormRandomError(sae, seed=6)(act), moved)
    assert SameNormRandomError(sae)(act.to(torch.bfloat16)).dtype == torch.bfloat16

    tokens = torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(4))
    tokens[:, 0] = 1
    mask = torch.ones_like(tokens, dtype=torch.bool)
    losses = spliced_ce_losses(
        tiny_model, tokens, mask, {hook: [sae, SameNormRandomError(sae, seed=5)]}
    )
    reference = SameNormRandomError(sae, seed=5)
    with torch.no_grad(), tiny_model.hooks(fwd_hooks=[(hook, lambda a, hook: reference(a))]):
        expected = tiny_model(tokens, return_type="loss").item()
    assert losses["sae"][hook][1] == pytest.approx(expected, rel=1e-4)
    assert losses["sae"][hook][1] != pytest.approx(losses["sae"][hook][0], rel=1e-4)
    # any function of the activation splices the same way: zeros give the zero-ablated loss
    zeroed = spliced_ce_losses(tiny_model, tokens, mask, {hook: [torch.zeros_like]})
    assert zeroed["sae"][hook][0] == pytest.approx(zeroed["zero"][hook], rel=1e-6)


def test_padding_is_ignored_by_the_ce_loss(tiny_model):
    hook = "blocks.0.hook_mlp_out"
    sae = build_training_sae(64, 64, tied=False, alpha=0.0, config=_config(), n_steps=1)
    tokens = torch.randint(3, 1000, (2, 10), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = 1
    mask = torch.ones_like(tokens, dtype=torch.bool)
    short = tokens.clone()
    short[1, 6:] = 0
    short_mask = mask.clone()
    short_mask[1, 6:] = False
    both = spliced_ce_losses(tiny_model, short, short_mask, {hook: [sae]})
    first = spliced_ce_losses(tiny_model, tokens[:1], mask[:1], {hook: [sae]})
    second = spliced_ce_losses(tiny_model, tokens[1:, :6], mask[1:, :6], {hook: [sae]})
    expected = (first["clean"] * 9 + second["clean"] * 5) / 14
    assert both["clean"] == pytest.approx(expected, rel=1e-5)


def test_per_text_ce_sums_to_the_means_and_gives_a_ci(tiny_model):
    """``per_text`` holds each text's summed CE (padding ignored): it adds up to the reported
    mean, and its bootstrap CI brackets the point estimate of the CE loss recovered."""
    hook = "blocks.1.hook_mlp_out"
    sae = build_training_sae(64, 128, tied=False, alpha=0.0, config=_config(), n_steps=1)
    tokens = torch.randint(3, 1000, (12, 10), generator=torch.Generator().manual_seed(2))
    tokens[:, 0] = 1
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[::3, 7:] = False  # some texts shorter
    losses = spliced_ce_losses(tiny_model, tokens, mask, {hook: [sae]}, batch_size=5)
    per_text = losses["per_text"]
    n_predictions = int((mask[:, 1:] & mask[:, :-1]).sum())
    assert per_text["clean"].shape == (12,)
    assert float(per_text["clean"].sum()) / n_predictions == pytest.approx(losses["clean"])
    assert float(per_text["zero"][hook].sum()) / n_predictions == pytest.approx(
        losses["zero"][hook]
    )
    text_sae = per_text["sae"][hook][0]
    assert float(text_sae.sum()) / n_predictions == pytest.approx(losses["sae"][hook][0])
    point = ce_loss_recovered(losses["clean"], losses["sae"][hook][0], losses["zero"][hook])
    low, high = ce_recovered_ci(per_text["clean"], text_sae, per_text["zero"][hook])
    assert low < point < high


def test_ce_recovered_ci_cases():
    generator = torch.Generator().manual_seed(0)
    clean = 20 + torch.rand(64, generator=generator, dtype=torch.float64)
    zero = clean + 2 + torch.rand(64, generator=generator, dtype=torch.float64)
    # an SAE that recovers 80% of every text's gap, plus noise that differs between texts
    noise = 0.3 * torch.randn(64, generator=generator, dtype=torch.float64)
    sae = zero - 0.8 * (zero - clean) + noise
    low, high = ce_recovered_ci(clean, sae, zero)
    point = float((zero - sae).sum() / (zero - clean).sum())
    assert low < point < high and high - low < 0.2
    few_low, few_high = ce_recovered_ci(clean[:8], sae[:8], zero[:8])
    assert few_high - few_low > high - low  # fewer texts, wider interval
    assert ce_recovered_ci(clean, clean, zero) == pytest.approx((1.0, 1.0))
    assert all(math.isnan(x) for x in ce_recovered_ci(clean, sae, clean))  # no gap
    assert all(math.isnan(x) for x in ce_recovered_ci(clean[:1], sae[:1], zero[:1]))

    # against a reference that recovers 60% (with its own noise): a difference of about 0.2
    other_noise = 0.3 * torch.randn(64, generator=generator, dtype=torch.float64)
    reference = zero - 0.6 * (zero - clean) + other_noise
    low, high = ce_recovered_difference_ci(clean, sae, reference, zero)
    point = float((reference - sae).sum() / (zero - clean).sum())
    assert low < point < high and abs(point - 0.2) < 0.05 and low > 0.1
    assert ce_recovered_difference_ci(clean, sae, sae, zero) == pytest.approx((0.0, 0.0))
    assert all(math.isnan(x) for x in ce_recovered_difference_ci(clean, sae, reference, clean))


def test_clear_errors(tmp_path, tiny_model):
    with pytest.raises(ConfigError, match="expansion_factors"):
        SAEConfig(expansion_factors=(2, 1))
    with pytest.raises(ConfigError, match=r"saes.training_tokens = 100: must be >= batch_size"):
        SAEConfig(batch_size=512, training_tokens=100)
    store = capture_activations(tiny_model, ["some text here"], [0], tmp_path / "s")
    with pytest.raises(ConfigError, match=r"not in the activation store.*captured: \[0\]"):
        train_saes(store, [1], tmp_path / "out", _config())


def test_text_ce_losses_tokenise_as_the_capture_does(tiny_model):
    from lfp_mech.activations import tokenize_for_model

    hook = "blocks.1.hook_mlp_out"
    sae = build_training_sae(64, 64, tied=True, alpha=0.0, config=_config(), n_steps=1)
    texts = ["I loved it.", "A slow, quiet drama about two brothers.", "Bad."]
    tokens, mask = tokenize_for_model(tiny_model.tokenizer, texts, 8)
    expected = spliced_ce_losses(tiny_model, tokens, mask, {hook: [sae]}, batch_size=2)
    got = text_ce_losses(tiny_model, texts, {hook: [sae]}, context_length=8, batch_size=2)
    got_texts, expected_texts = got.pop("per_text"), expected.pop("per_text")
    assert got == expected
    assert torch.equal(got_texts["clean"], expected_texts["clean"])
    assert torch.equal(got_texts["sae"][hook][0], expected_texts["sae"][hook][0])
    with pytest.raises(ConfigError, match="not inside a transformer block"):
        text_ce_losses(tiny_model, texts, {"hook_embed": [sae]})


def test_mmcs_index_points_at_the_matching_big_feature():
    small = build_training_sae(D_IN, D_IN, tied=False, alpha=0.0, config=_config(), n_steps=1)
    big = build_training_sae(D_IN, 2 * D_IN, tied=False, alpha=0.0, config=_config(), n_steps=1)
    generator = torch.Generator().manual_seed(0)
    permutation = torch.randperm(2 * D_IN, generator=generator)
    with torch.no_grad():
        small.W_dec.copy_(torch.randn(D_IN, D_IN, generator=generator))
        big.W_dec.copy_(torch.randn(2 * D_IN, D_IN, generator=generator))
        big.W_dec[permutation[:D_IN]] = 3.0 * small.W_dec  # same directions, other norms
    values, index = mmcs_with_index(small, big)
    torch.testing.assert_close(values, torch.ones(D_IN))
    assert torch.equal(index, permutation[:D_IN])


def test_tied_vs_untied_table_averages_small_saes_per_variant():
    def row(variant, size, fvu):
        return {"variant": variant, "size": size, "fvu": fvu, "nmse": fvu / 2, "l0_scaled": 0.5,
                "dead_fraction": 0.0, "ce_recovered": 1 - fvu}  # fmt: skip

    rows = [row("tied", "small", 0.2), row("tied", "small", 0.4), row("tied", "big", 0.9),
            row("untied", "small", 0.1)]  # fmt: skip
    table = tied_vs_untied_table(rows)
    assert [r["variant"] for r in table] == ["tied", "untied"]
    assert table[0]["n_layers"] == 2 and table[0]["fvu"] == pytest.approx(0.3)
    assert table[1]["ce_recovered"] == pytest.approx(0.9)
    assert tied_vs_untied_table(rows[:2])[0]["variant"] == "tied"
    assert len(tied_vs_untied_table(rows[:2])) == 1


def test_tensor_batches_cover_every_full_batch_once_per_epoch():
    acts = torch.arange(10 * 3, dtype=torch.float32).reshape(10, 3)
    batches = tensor_batches(acts, _config(batch_size=4, training_tokens=8))
    epoch0, epoch1 = list(batches(0)), list(batches(1))
    assert [b.shape for b in epoch0] == [(4, 3), (4, 3)]
    rows = torch.cat(epoch0)[:, 0].tolist()
    assert len(set(rows)) == 8 and set(rows) <= set(acts[:, 0].tolist())
    assert not torch.equal(torch.cat(epoch0), torch.cat(epoch1))
    with pytest.raises(ConfigError, match="fewer than one batch"):
        tensor_batches(acts[:3], _config(batch_size=4, training_tokens=8))


def test_train_saes_keeps_what_an_interrupted_run_finished(tmp_path, tiny_model, caplog):
    texts = [f"A film about {i} brothers, slow and quiet, with a long ending." for i in range(40)]
    store = capture_activations(tiny_model, texts, [1], tmp_path / "s")
    config = _config(expansion_factors=(1,), training_tokens=128 * 4)
    first = train_saes(store, [1], tmp_path / "out", config)
    weights = first[(1, "small")] / "sae_weights.safetensors"
    written = weights.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="lfp_mech.saes.training"):
        again = train_saes(store, [1], tmp_path / "out", config)
    assert again == first and weights.stat().st_mtime_ns == written  # kept, not retrained
    assert "already trained with these inputs" in caplog.text
    train_saes(store, [1], tmp_path / "out", dataclasses.replace(config, lr=5e-4))
    assert weights.stat().st_mtime_ns != written  # another option: trained again


def test_incremental_matching_pursuit_chooses_sae_lens_latents_and_trains():
    from sae_lens.saes.matching_pursuit_sae import _encode_matching_pursuit

    from lfp_mech.saes.matching_pursuit import gram_matching_pursuit

    g = torch.Generator().manual_seed(0)
    w_dec = torch.nn.functional.normalize(torch.randn(256, 32, generator=g), dim=1)
    x = 3 * torch.randn(512, 32, generator=g)
    ours = gram_matching_pursuit(x, w_dec, 16)
    theirs = _encode_matching_pursuit(x, w_dec, 0.0, 16, True)
    same = ((ours != 0) == (theirs != 0)).all(dim=1)
    assert same.float().mean() >= 0.99  # float32 near-ties may go the other way
    torch.testing.assert_close(ours[same], theirs[same], rtol=1e-4, atol=1e-4)
    assert ((ours != 0).sum(dim=1) <= 16).all() and (ours >= 0).all()
    # the coefficients carry the gradient to the decoder, SAE-Lens's gradient where the latents
    # agree (tokens with a near-tie left out of both)
    grads = []
    for encode in (
        gram_matching_pursuit,
        lambda x, w, k: _encode_matching_pursuit(x, w, 0.0, k, True),
    ):
        w = w_dec.clone().requires_grad_(True)
        x_in = x[same].clone().requires_grad_(True)
        codes = encode(x_in, w, 16)
        ((x_in - codes @ w) ** 2).sum().backward()
        grads.append((w.grad, x_in.grad))
    assert grads[0][0].abs().sum() > 0
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-3, atol=1e-3)
    # the hand-written backward pass against finite differences (float64, choices stable)
    w64 = torch.nn.functional.normalize(torch.randn(40, 8, generator=g, dtype=torch.float64), dim=1)
    x64 = 3 * torch.randn(6, 8, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x, w: gram_matching_pursuit(x, w, 5),
        (x64.requires_grad_(True), w64.requires_grad_(True)),
        eps=1e-6,
        atol=1e-5,
    )

    config = _config(architecture="matching_pursuit", tied=False, expansion_factors=(2,), k=4)
    sae, stats = train_sae(_batches(_sparse_data(), 128), D_IN, 2 * D_IN, config, tied=False)
    assert type(sae).__name__ == "GramMatchingPursuitTrainingSAE" and stats["k"] == 4
    metrics = sae_metrics(sae, _sparse_data(n=512, seed=1))
    assert metrics["l0"] <= 4 and metrics["fvu"] < 0.5


def test_loaded_matching_pursuit_dictionary_encodes_like_sae_lens(tmp_path):
    from sae_lens.saes.matching_pursuit_sae import MatchingPursuitSAE

    from lfp_mech.saes.matching_pursuit import GramMatchingPursuitSAE

    config = _config(architecture="matching_pursuit", tied=False, expansion_factors=(2,), k=4)
    sae, _ = train_sae(_batches(_sparse_data(), 128), D_IN, 2 * D_IN, config, tied=False)
    path = save_sae(sae, tmp_path / "mp", {})
    exact, fast = SAE.load_from_disk(str(path)).eval(), load_sae(path)
    assert type(exact) is MatchingPursuitSAE and type(fast) is GramMatchingPursuitSAE
    assert not fast.training and torch.equal(fast.W_dec, exact.W_dec)
    x = _sparse_data(n=512, seed=1).reshape(8, 64, D_IN)  # [batch, pos, d_in], as in a hook
    with torch.no_grad():
        theirs, ours = exact.encode(x), fast.encode(x)
        one_at_a_time = torch.stack([fast.encode(x[:, p]) for p in range(x.shape[1])], dim=1)
    assert ours.shape == theirs.shape == (8, 64, 2 * D_IN)
    same = ((ours != 0) == (theirs != 0)).all(dim=-1)
    assert same.float().mean() >= 0.99
    torch.testing.assert_close(ours[same], theirs[same], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(one_at_a_time, ours, rtol=1e-5, atol=1e-6)
    # the kept Gram matrix follows the decoder: changed weights encode like SAE-Lens again
    with torch.no_grad():
        for model in (fast, exact):
            model.W_dec.mul_(-1)
        again = fast.encode(x)
        agree = ((again != 0) == (exact.encode(x) != 0)).all(dim=-1).float().mean()
    assert agree >= 0.99 and not torch.equal(again, ours)
