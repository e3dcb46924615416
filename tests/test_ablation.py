"""ablate_features: exactness, identity, generation, hook cleanup, errors; Tables 6 and 7."""

import csv
import json
import logging
import math
from types import SimpleNamespace

import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig

from lfp_mech.validate.ablation import (
    ValidateConfig,
    _frequency_rows,
    ablate_features,
    ablation_table,
    activation_frequency,
    feature_means,
    generate_with_ablation,
    matched_random_features,
    run_validate_stage,
)
from lfp_mech.validate.autointerp import AutointerpConfig
from lfp_mech.errors import ConfigError

HOOK = "blocks.1.hook_mlp_out"
TEXTS = [
    "A great movie, I loved it!",
    "The film was long and the ending was bad.",
    "I watched it on a train with a friend.",
    "What a wonderful, good story.",
]


def make_sae(d_in: int = 64, d_sae: int = 128, hook: str = HOOK, seed: int = 0, gain: float = 1.0):
    """A random SAE-Lens StandardSAE; ``gain`` scales the encoder so features fire strongly."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
        with torch.no_grad():
            sae.W_enc.mul_(gain)
            sae.b_enc.normal_(0.0, 0.05)
    sae.cfg.metadata.hook_name = hook
    return sae


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


def test_patched_activation_is_x_minus_selected_decoder_contributions(loud_model):
    sae = make_sae(gain=3.0)
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
    with ablate_features(loud_model, sae, list(range(128))):
        inside = loud_model.generate(prompts[0], max_new_tokens=8, do_sample=False, verbose=False)
    outside = loud_model.generate(prompts[0], max_new_tokens=8, do_sample=False, verbose=False)
    assert inside != outside
    assert outside == prompts[0] + clean[0] or outside.startswith(prompts[0])


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


def test_matched_random_features_nearest_frequency_and_exclusion():
    freqs = torch.tensor([0.50, 0.10, 0.11, 0.49, 0.30, 0.31, 0.90, 0.12, 0.0, 0.0])
    picks = matched_random_features(freqs, [0, 1, 4], seed=0)
    assert picks == [3, 2, 5]
    # excluded features are never drawn; picks are distinct
    picks = matched_random_features(freqs, [1, 2], seed=0, exclude=[7])
    assert set(picks).isdisjoint({1, 2, 7}) and len(set(picks)) == 2
    for chosen, pick in zip([1, 2], picks, strict=True):
        others = [i for i in range(10) if i not in {1, 2, 7}]
        best = min(abs(freqs[i] - freqs[chosen]) for i in others)
        assert abs(freqs[pick] - freqs[chosen]) >= best - 1e-9
    # ties are broken at random but reproducibly
    tie = torch.tensor([0.5, 0.2, 0.2, 0.2, 0.2, 0.2])
    draws = {matched_random_features(tie, [0], seed=s)[0] for s in range(20)}
    assert len(draws) > 1 and draws <= {1, 2, 3, 4, 5}
    assert matched_random_features(tie, [0], seed=4) == matched_random_features(tie, [0], seed=4)
    with pytest.raises(ConfigError, match="cannot match"):
        matched_random_features(torch.rand(3), [0, 1], seed=0)


def test_activation_frequency_table7():
    acts = torch.zeros(6, 4)
    acts[:3, 0] = 1.0  # feature 0 active on the 3 selected inputs
    acts[0, 1] = 2.0  # feature 1 once
    acts[3:, 2] = 1.0  # feature 2 only on unselected inputs
    mask = torch.tensor([True, True, True, False, False, False])
    res = activation_frequency(acts, [0], mask)
    assert res.per_feature.tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.0])
    assert res.task_related == pytest.approx(1.0)
    assert res.all_features == pytest.approx((1 + 1 / 3) / 4)
    assert res.alive_features == pytest.approx((1 + 1 / 3) / 3)
    assert res.ratio == pytest.approx(3.0)
    assert res.n_selected == 3
    with pytest.raises(ConfigError, match="no input is selected"):
        activation_frequency(acts, [0], torch.zeros(6, dtype=torch.bool))


def _length_reward(texts):
    return torch.tensor([float(len(t.split())) for t in texts])


def test_ablation_table_rows_and_cis(tiny_model, tiny_hf):
    from lfp_mech import hooked_from_hf

    other = hooked_from_hf(*tiny_hf)
    sae = make_sae(gain=4.0)
    freqs = torch.linspace(0, 1, 128)
    result = ablation_table(
        {"base": other, "tuned": tiny_model},
        {HOOK: sae},
        {HOOK: [10, 20, 30]},
        _length_reward,
        ["A great movie", "The film was", "I watched"],
        n_completions=6,
        freqs={HOOK: freqs},
        max_new_tokens=6,
        batch_size=3,
    )
    assert [(r["model"], r["condition"]) for r in result.rows] == [
        (m, c) for m in ("base", "tuned") for c in ("clean", "task", "random")
    ]
    random_ids = result.features["random"][HOOK]
    assert len(random_ids) == 3 and set(random_ids).isdisjoint({10, 20, 30})
    for r in result.rows:
        assert r["n"] == 6
        if not math.isnan(r["ci_low"]):
            assert r["ci_low"] <= r["mean_reward"] <= r["ci_high"]
        if r["condition"] == "clean":
            assert r["delta_vs_clean"] == 0.0
    assert len(result.completions["tuned"]["task"]) == 6
    with pytest.raises(ConfigError, match="freqs"):
        ablation_table({"m": tiny_model}, {HOOK: sae}, {HOOK: [1]}, _length_reward, ["a"])


def _small_validate_config(n_completions: int, max_new_tokens: int) -> ValidateConfig:
    """A validate stage small enough for a tiny model (offline labeler, 30 null contexts)."""
    return ValidateConfig(
        n_completions=n_completions,
        max_new_tokens=max_new_tokens,
        gen_batch_size=n_completions,
        autointerp={"k": 4, "n_null": 30, "use_llm": "never", "batch_size": 8},
    )


def test_run_validate_stage_writes_tables(tiny_model, tiny_hf, tmp_path):
    from lfp_mech import hooked_from_hf

    sae = make_sae(gain=3.0)
    sae_dir = tmp_path / "sae"
    sae.save_model(str(sae_dir))
    assert SAE.load_from_disk(str(sae_dir)).cfg.metadata.hook_name == HOOK
    config = _small_validate_config(n_completions=4, max_new_tokens=5)
    summary = run_validate_stage(
        hooked_from_hf(*tiny_hf),
        tiny_model,
        [sae_dir],
        {HOOK: [1, 2, 3]},
        TEXTS * 3,
        ["A great movie", "The film was"],
        tmp_path / "out",
        config,
    )
    out = tmp_path / "out"
    for name in ("descriptions", "activation_frequency", "ablation"):
        assert (out / f"{name}.csv").exists() and (out / f"{name}.md").exists()
    for name in (
        "ablation.png",
        "activation_frequency.png",
        "top_contexts.json",
        "completions.json",
        "features.json",
        "feature_frequencies.safetensors",
    ):
        assert (out / name).exists(), name
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["n_features_described"] == 3
    assert set(summary["mean_reward"]) == {
        f"{m}/{c}" for m in ("base", "tuned") for c in ("clean", "task", "random")
    }
    header = (out / "descriptions.csv").read_text().splitlines()[0]
    assert header.startswith("hook,layer,feature,description,task_related,p_value")


def test_run_validate_stage_table7_on_probe_inputs(tiny_model, tiny_hf, tmp_path):
    """Table 7 on the probe's inputs: those predicted with delta > 3 (signed, as in the paper)."""
    from lfp_mech import hooked_from_hf

    acts = torch.zeros(10, 128)
    acts[:, 5] = 1.0  # feature 5: active on every input
    acts[:3, 1] = 2.0  # feature 1: active on the three selected inputs only
    acts[4:6, 2] = 1.0  # feature 2: only on strongly *negative* predictions (not selected)
    predictions = torch.tensor([3.5, 4.0, 3.1, 3.0, -3.9, -4.0, 0.0, 1.0, 2.0, -1.0])
    config = _small_validate_config(n_completions=2, max_new_tokens=3)
    summary = run_validate_stage(
        hooked_from_hf(*tiny_hf),
        tiny_model,
        {HOOK: make_sae(gain=3.0)},
        {HOOK: [1, 2, 3]},
        TEXTS * 3,
        ["A great movie"],
        tmp_path / "out",
        config,
        probe_acts={HOOK: acts},
        probe_predictions=predictions,
    )
    with open(tmp_path / "out" / "activation_frequency.csv", newline="") as f:
        rows = {r["group"]: r for r in csv.DictReader(f)}
    for row in rows.values():
        assert row["source"] == "probe inputs"
        assert row["inputs"] == "probe inputs with predicted delta > 3: 3 of 10"
        assert (int(row["n_inputs"]), int(row["n_inputs_total"])) == (3, 10)
    average = 2 / 128  # features 1 and 5 are active on all selected inputs, no other feature
    assert float(rows["all features"]["active_share"]) == pytest.approx(average)
    assert float(rows["chosen"]["active_share"]) == pytest.approx(1 / 3)
    assert float(rows["chosen"]["ratio_to_average"]) == pytest.approx((1 / 3) / average)
    # over all 10 inputs: feature 1 on 3, feature 2 on 2, feature 3 never
    assert float(rows["chosen"]["active_share_all_inputs"]) == pytest.approx((0.3 + 0.2) / 3)
    assert summary["activation_frequency_inputs"] == {
        "source": "probe inputs",
        "inputs": "probe inputs with predicted delta > 3: 3 of 10",
        "n_selected": 3,
        "n_total": 10,
    }
    with pytest.raises(ConfigError, match="together"):
        run_validate_stage(
            tiny_model, tiny_model, [], {}, [], [], tmp_path / "x", config, probe_acts={}
        )


def test_table7_without_selected_probe_inputs_says_so(caplog):
    scans = {HOOK: SimpleNamespace(frequency=torch.full((8,), 0.5))}
    described = SimpleNamespace(scans=scans)
    acts = {HOOK: torch.ones(4, 8)}
    predictions = torch.tensor([-4.0, -3.5, 2.9, 3.0])  # nothing above 3: no fallback
    config = ValidateConfig()
    with caplog.at_level(logging.WARNING, logger="lfp_mech.validate.ablation"):
        rows = _frequency_rows(described, {HOOK: [1, 2]}, {}, config, acts, predictions)
    assert "none of the 4 probe inputs has predicted delta > 3" in caplog.text
    assert [r["group"] for r in rows] == ["chosen", "all features"]
    for row in rows:
        assert row["source"] == "probe inputs" and row["n_inputs"] == 0
        assert row["inputs"] == "probe inputs with predicted delta > 3: 0 of 4"
        assert math.isnan(row["active_share"]) and math.isnan(row["ratio_to_average"])
        assert row["active_share_all_inputs"] == 1.0
    with pytest.raises(ConfigError, match="no features for"):
        _frequency_rows(described, {}, {}, config, {"other": acts[HOOK]}, predictions)
    with pytest.raises(ConfigError, match="shape"):
        _frequency_rows(described, {}, {}, config, {HOOK: torch.ones(4, 9)}, predictions)


def test_validate_config_is_validated():
    with pytest.raises(ConfigError, match="n_completions"):
        ValidateConfig(n_completions=0)
    with pytest.raises(ConfigError, match="window"):
        ValidateConfig(autointerp={"window": [-1, 2]})
    assert isinstance(ValidateConfig(autointerp={"k": 3}).autointerp, AutointerpConfig)


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
