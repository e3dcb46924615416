"""Tests of lfp_mech.probes on tiny models, tiny random SAE-Lens SAEs and synthetic features."""

import copy

import numpy as np
import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from lfp_mech import data, probes
from lfp_mech._io import read_json
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.probes import (
    PreferenceProbeConfig,
    ProbesConfig,
    activation_deltas,
    build_probe_dataset,
    check_no_leak,
    collect_feature_sets,
    concat_activations,
    concat_features,
    evaluate_probe,
    fit_feedback_probe,
    fit_logistic_probe,
    frequency_error_correlation,
    mean_pooled_features,
    ordered_hooks,
    paired_bootstrap_diff,
    pca_explained,
    run_preference_probe,
    run_probes_stage,
    shuffled_labels,
    word_frequencies,
    xavier_probe,
)

HOOK0, HOOK1 = "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"
TEXTS = [
    "The film has wonderful dialogue and long pauses.",
    "It was dreadful.",
    "Her performance in the final scene was extraordinarily moving.",
]
WORDS = ["wonderful", "dreadful", "extraordinarily"]
SPANS = [(t.index(w), t.index(w) + len(w)) for t, w in zip(TEXTS, WORDS, strict=True)]


def _sae(hook: str | None, d_sae: int, seed: int, d_in: int = 64) -> StandardSAE:
    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name=hook))
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.1)
    return sae.eval()


@pytest.fixture
def saes():
    return {HOOK0: _sae(HOOK0, 32, seed=1), HOOK1: _sae(HOOK1, 48, seed=2)}


def _manual(model, hook_to_sae, text, span):
    """A_concat by hand: one unpadded forward, data.char_span_to_token_span with offset 1 (BOS)."""
    tokens = model.to_tokens(text)  # TL prepends BOS
    _, cache = model.run_with_cache(tokens)
    start, end = data.char_span_to_token_span(model.tokenizer, text, span, offset=1)
    parts = []
    for hook, sae in sorted(hook_to_sae.items(), key=lambda kv: int(kv[0].split(".")[1])):
        acts = cache[hook][0, start:end]
        feats = acts if sae is None else sae.encode(acts)
        parts.append(feats.mean(0))
    return torch.cat(parts)


# --------------------------------------------------------------------------- features


def test_concat_features_equals_manual_span_average(tiny_model, saes):
    # mapping given in reverse layer order: A_concat must still be layer 0 then layer 1
    reversed_saes = {HOOK1: saes[HOOK1], HOOK0: saes[HOOK0]}
    out = concat_features(tiny_model, reversed_saes, TEXTS, SPANS, batch_size=2)
    assert out.shape == (3, 32 + 48)
    # a word that splits into several tokens is really averaged over several positions
    s, e = data.char_span_to_token_span(tiny_model.tokenizer, TEXTS[2], SPANS[2], offset=1)
    assert e - s > 1 and s >= 1
    with torch.no_grad():
        for i in range(3):
            expected = _manual(tiny_model, saes, TEXTS[i], SPANS[i])
            torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-4)


def test_sequence_of_saes_uses_hook_metadata(tiny_model, saes):
    a = concat_features(tiny_model, [saes[HOOK1], saes[HOOK0]], TEXTS, SPANS)
    b = concat_features(tiny_model, saes, TEXTS, SPANS)
    torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="hook_name"):
        concat_features(tiny_model, [_sae(None, 8, 0)], TEXTS, SPANS)


def test_raw_and_embedding_activations(tiny_model):
    raw = concat_activations(tiny_model, [HOOK1, HOOK0], TEXTS, SPANS, batch_size=3)
    assert raw.shape == (3, 128)
    with torch.no_grad():
        torch.testing.assert_close(
            raw[1], _manual(tiny_model, {HOOK0: None, HOOK1: None}, TEXTS[1], SPANS[1])
        )
    emb = concat_activations(tiny_model, ["hook_embed"], TEXTS, SPANS)
    tokens = tiny_model.to_tokens(TEXTS[0])[0]
    s, e = data.char_span_to_token_span(tiny_model.tokenizer, TEXTS[0], SPANS[0], offset=1)
    torch.testing.assert_close(emb[0], tiny_model.W_E[tokens[s:e]].mean(0).detach())


def test_collect_feature_sets_one_pass_matches_separate_calls(tiny_model, saes):
    sets = collect_feature_sets(
        tiny_model,
        {"sae": saes, "mlp": dict.fromkeys(saes), "embed": {"hook_embed": None}},
        TEXTS,
        SPANS,
    )
    torch.testing.assert_close(sets["sae"], concat_features(tiny_model, saes, TEXTS, SPANS))
    torch.testing.assert_close(
        sets["mlp"], concat_activations(tiny_model, [HOOK0, HOOK1], TEXTS, SPANS)
    )
    assert sets["embed"].shape == (3, 64)


def test_mean_pooled_features_average_all_tokens_but_bos(tiny_model, saes):
    out = mean_pooled_features(tiny_model, {HOOK0: None}, TEXTS[:2])
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tiny_model.to_tokens(TEXTS[1]))
    torch.testing.assert_close(out[1], cache[HOOK0][0, 1:].mean(0))


def test_feature_errors_name_the_problem(tiny_model):
    with pytest.raises(ConfigError, match="layer 5 out of range.*0–1"):
        concat_activations(tiny_model, ["blocks.5.hook_mlp_out"], TEXTS, SPANS)
    with pytest.raises(ConfigError, match="d_in=32"):
        concat_features(tiny_model, {HOOK0: _sae(HOOK0, 8, 0, d_in=32)}, TEXTS, SPANS)
    with pytest.raises(ValueError, match="one span per text"):
        concat_activations(tiny_model, [HOOK0], TEXTS, SPANS[:2])
    with pytest.raises(ValueError, match="outside the text"):
        concat_activations(tiny_model, [HOOK0], ["short"], [(2, 40)])


def test_ordered_hooks_is_by_layer():
    hooks = ordered_hooks(dict.fromkeys(["blocks.10.hook_mlp_out", "blocks.2.x", "hook_embed"]))
    assert [h for h, _ in hooks] == ["hook_embed", "blocks.2.x", "blocks.10.hook_mlp_out"]


# --------------------------------------------------------------------------- dataset D


def test_activation_deltas_hand_built():
    a_neu = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    a_pos = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    a_neg = torch.tensor([[0.0, -2.0], [4.0, 5.0]])
    inputs, labels = activation_deltas(a_pos, a_neu, a_neg)
    torch.testing.assert_close(inputs, torch.cat([a_pos, a_neg]))
    torch.testing.assert_close(labels, torch.tensor([5.0, 1.0, -2.0, -5.0]))


def test_probe_dataset_words_and_heldout_never_leak():
    triples = data.make_triples(300, seed=3, heldout_fraction=0.25, split="train")
    _, test_words = data.heldout_words(seed=3, heldout_fraction=0.25)
    f = torch.randn(len(triples), 4)
    ds = build_probe_dataset(f, f + 1, f - 1, triples)
    assert ds.words == [t.words[0] for t in triples] + [t.words[2] for t in triples]
    used = set(ds.words) | set(ds.neutral_words)
    assert used.isdisjoint(test_words) and len(test_words) > 20
    check_no_leak(ds.words, sorted(test_words))  # does not raise
    with pytest.raises(LfpMechError, match="appear in the probe's training"):
        check_no_leak(ds.words, [triples[0].words[0]])


# --------------------------------------------------------------------------- probes


def test_probe_recovers_known_linear_function():
    rng = np.random.default_rng(0)
    w = rng.normal(size=30)
    x = torch.from_numpy(rng.normal(size=(600, 30)))
    y = x.numpy() @ w + 0.1 * rng.normal(size=600)
    probe = fit_feedback_probe(x[:400], torch.from_numpy(y[:400]), ProbesConfig())
    pred = probe.predict(x[400:])
    assert np.abs(probe.predict(x[:400])).max() == pytest.approx(4.0)  # train max → VADER range
    assert np.abs(pred).max() <= 4.0
    ev = evaluate_probe(pred, y[400:], [f"w{i}" for i in range(200)], n_bootstrap=200)
    assert ev.tau > 0.9 and ev.p_value < 1e-10
    assert ev.tau_ci[0] > 0.85 and ev.tau_ci[1] <= 1.0


def test_probe_on_random_features_finds_nothing():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(600, 30)))
    y = torch.from_numpy(rng.normal(size=600))
    probe = fit_feedback_probe(x[:400], y[:400])
    ev = evaluate_probe(probe.predict(x[400:]), y[400:].numpy(), [str(i) for i in range(200)])
    assert abs(ev.tau) < 0.1 and ev.p_value > 0.05
    assert ev.tau_ci[0] < 0 < ev.tau_ci[1]


def test_probe_without_standardisation_and_weights_fold_back():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(200, 5)) * [1, 10, 100, 0.1, 1])
    y = torch.from_numpy(x.numpy() @ np.array([1.0, 0.1, 0.01, 10.0, -1.0]))
    for standardize in (True, False):
        probe = fit_feedback_probe(x, y, ProbesConfig(standardize=standardize, alphas=(1e-6,)))
        np.testing.assert_allclose(probe.raw_predict(x), y.numpy(), atol=1e-3)


def test_grouped_cv_picks_penalty_for_unseen_words():
    """Per-word offsets are memorisable; only word-grouped CV sees that they do not generalise."""
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(40) for _ in range(10)]
    word_id = np.repeat(np.arange(40), 10)
    onehot = np.eye(40)[word_id]  # word identity features
    signal = rng.normal(size=(400, 1))
    x = torch.from_numpy(np.hstack([onehot, signal]))
    y = torch.from_numpy(rng.normal(size=40)[word_id] * 3 + signal[:, 0])
    cfg = ProbesConfig(alphas=(1e-3, 1e-1, 10.0, 1e3))
    grouped = fit_feedback_probe(x, y, cfg, groups=words)
    loo = fit_feedback_probe(x, y, cfg)
    assert grouped.alpha > loo.alpha
    fixed = fit_feedback_probe(x, y, cfg, alpha=5.0)
    assert fixed.alpha == 5.0


def test_sign_accuracy_and_negative_tau_hand_built():
    true = np.array([2.0, 3.0, 1.0, -1.0, -2.0, -3.0])
    pred = np.array([1.0, -0.5, 0.2, -0.1, -2.0, 0.3])
    ev = evaluate_probe(pred, true, list("abcdef"), n_bootstrap=50)
    assert (ev.n_positive, ev.n_negative) == (3, 3)
    assert ev.sign_acc_positive == pytest.approx(2 / 3)
    assert ev.sign_acc_negative == pytest.approx(2 / 3)
    # negative words: true (-1, -2, -3) vs pred (-0.1, -2.0, 0.3): pairs +1, -1, -1 → τ = -1/3
    assert ev.tau_negative == pytest.approx(-1 / 3)
    # positive words: true (2, 3, 1) vs pred (1, -0.5, 0.2): pairs -1, +1, -1 → τ = -1/3
    assert ev.tau_positive == pytest.approx(-1 / 3)
    assert [r["word"] for r in ev.table()] == list("abcdef")
    assert ev.table()[1] == {"word": "b", "true_valence": 3.0, "predicted": -0.5}


def test_xavier_baseline_is_deterministic_for_a_seed():
    x = torch.randn(50, 20)
    a, b, c = xavier_probe(x, seed=7), xavier_probe(x, seed=7), xavier_probe(x, seed=8)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)
    bound = np.sqrt(6 / (20 + 1))
    assert np.abs(a.weight).max() <= bound and a.bias == 0.0
    assert np.abs(a.predict(x)).max() == pytest.approx(4.0)


def test_shuffled_labels_is_a_seeded_permutation():
    y = torch.arange(10.0)
    s = shuffled_labels(y, seed=0)
    assert sorted(s.tolist()) == y.tolist() and not torch.equal(s, y)
    assert torch.equal(s, shuffled_labels(y, seed=0))


def test_paired_bootstrap_diff():
    rng = np.random.default_rng(0)
    true = rng.normal(size=80)
    same = paired_bootstrap_diff(true, true, true, n=200)
    assert same.diff == 0 and same.ci_low == 0 and same.ci_high == 0
    good = true + 0.3 * rng.normal(size=80)
    noise = rng.normal(size=80)
    d = paired_bootstrap_diff(good, noise, true, n=500, seed=1)
    assert d.diff > 0.4 and d.ci_low > 0.2 and d.p_value < 0.01
    assert d == paired_bootstrap_diff(good, noise, true, n=500, seed=1)


# --------------------------------------------------------------------------- preference probes


def test_logistic_probe_and_pca():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    base = rng.normal(size=(60, 16))
    chosen = torch.from_numpy(base + 3 * direction)
    rejected = torch.from_numpy(base - 3 * direction + 0.1 * rng.normal(size=(60, 16)))
    res = fit_logistic_probe(chosen, rejected, test_fraction=0.25, seed=0)
    assert res.test_accuracy == 1.0 and res.n_test == 30 and res.n_train == 90
    delta = fit_logistic_probe(chosen, rejected, labels="delta", seed=0)
    assert delta.label_agreement == 1.0 and delta.test_accuracy == 1.0
    pca = pca_explained(torch.cat([chosen, rejected]), 2)
    assert pca.projected.shape == (120, 2) and pca.explained_variance_ratio[0] > 0.8
    with pytest.raises((ValueError, TypeError)):  # jaxtyping's TypeCheckError in tests
        fit_logistic_probe(chosen, rejected[:10])


# --------------------------------------------------------------------------- word frequency


def test_word_frequencies_use_reward_tokenizer():
    completions = ["A GREAT film, great!", "Not great... awful (awful)", "greatness"]
    freqs = word_frequencies(completions, ["great", "awful", "bad"])
    assert freqs == {"great": 3, "awful": 2, "bad": 0}
    rho, p = frequency_error_correlation(np.array([0.0, 1, 5, 20]), np.array([3.0, 2, 1, 0.5]))
    assert rho == pytest.approx(-1.0) and p < 0.5


# --------------------------------------------------------------------------- the stage


def test_run_probes_stage_on_tiny_models(tiny_model, saes, tmp_path):
    base = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in tiny_model.blocks[1].mlp.parameters():
            p.add_(0.05 * torch.randn_like(p))
    dirs = {}
    for hook, sae in saes.items():
        dirs[hook] = tmp_path / "saes" / hook
        sae.save_model(dirs[hook])
    triples = data.make_triples(40, seed=0, heldout_fraction=0.25, split="train")
    _, test_words = data.heldout_words(seed=0, heldout_fraction=0.25)
    eval_words = sorted(test_words)[:24]
    config = ProbesConfig(n_carrier_templates=2, n_bootstrap=50, batch_size=32, n_shuffles=3)
    out = tmp_path / "probes"
    summary = run_probes_stage(
        base,
        tiny_model,
        dirs,
        ["what a wonderful, wonderful film", "an awful plot"],
        out,
        config,
        triples=triples,
        eval_words=eval_words,
    )
    expected = {"tuned_sae", *probes.BASELINES}
    assert set(summary["tau"]) == expected
    assert len(summary["shuffled_null_tau"]) == config.n_shuffles
    assert summary["n_eval_words"] == 24 and summary["n_triples"] == 40
    for name in [
        "kendall.csv",
        "kendall.md",
        "sign_accuracy.csv",
        "sign_accuracy.md",
        "per_word.csv",
        "per_word.md",
        "predicted_vs_true.png",
        "word_frequency.png",
        "baselines.png",
        "probes.safetensors",
        "summary.json",
    ]:
        assert (out / name).stat().st_size > 0, name
    assert read_json(out / "summary.json")["n_eval_words"] == 24
    assert (out / "kendall.csv").read_text().splitlines()[1].startswith("tuned_sae,24,")
    # the probe's inputs (dataset D) per hook with its predictions: paper Table 7's inputs
    inputs = probes.load_probe_inputs(out / probes.PROBE_INPUTS_FILE)
    assert list(inputs.features) == [HOOK0, HOOK1]
    assert [tuple(f.shape) for f in inputs.features.values()] == [(80, 32), (80, 48)]
    assert all(f.dtype == torch.float32 for f in inputs.features.values())
    assert inputs.n_inputs == 80 == summary["n_probe_inputs"]
    assert inputs.words == [t.words[0] for t in triples] + [t.words[2] for t in triples]
    assert len(inputs.texts) == 80 and inputs.words[0] in inputs.texts[0]
    assert (inputs.label_delta[:40] >= 0).all() and (inputs.label_delta[40:] <= 0).all()
    probe = probes.load_probe(out / "probes.safetensors")
    a_concat = torch.cat(list(inputs.features.values()), dim=1)
    np.testing.assert_allclose(inputs.predicted_delta.numpy(), probe.predict(a_concat), atol=1e-4)
    assert float(inputs.predicted_delta.abs().max()) == pytest.approx(4.0, abs=1e-4)
    assert summary["n_probe_inputs_predicted_above_3"] == int((inputs.predicted_delta > 3).sum())
    with pytest.raises(LfpMechError, match="not found"):
        probes.load_probe_inputs(out / "missing.safetensors")
    with pytest.raises(ConfigError, match="add up to"):
        dataset = build_probe_dataset(a_concat[:2], a_concat[:2], a_concat[:2], triples[:2])
        probes.save_probe_inputs(tmp_path / "x.safetensors", dataset, {HOOK0: 32}, probe)
    # an evaluation word inside the training triples is refused
    with pytest.raises(LfpMechError, match="training triples"):
        run_probes_stage(
            base,
            tiny_model,
            dirs,
            [],
            tmp_path / "leak",
            config,
            triples=triples,
            eval_words=[*eval_words, triples[0].words[0]],
        )


def test_run_preference_probe_on_tiny_model(tiny_model, saes, tmp_path):
    dirs = {}
    for hook, sae in saes.items():
        dirs[hook] = tmp_path / hook
        sae.save_model(dirs[hook])
    chosen = [f"Thank you, here is a kind answer number {i}." for i in range(12)]
    rejected = [f"Go away, you stupid idiot number {i}!" for i in range(12)]
    summary = run_preference_probe(
        tiny_model, dirs, chosen, rejected, tmp_path / "pref", PreferenceProbeConfig(seed=1)
    )
    assert set(summary["test_accuracy"]) == {"preference", "delta"}
    assert 0.0 <= summary["test_accuracy"]["preference"] <= 1.0
    assert len(summary["pca_explained_variance_ratio"]) == 2
    for name in ["preference_probe.csv", "preference_probe.md", "preference_pca.png"]:
        assert (tmp_path / "pref" / name).stat().st_size > 0


def test_load_saes_checks_the_hook(saes, tmp_path):
    saes[HOOK0].save_model(tmp_path / "s0")
    loaded = probes.load_saes({HOOK0: tmp_path / "s0"})
    assert isinstance(loaded[HOOK0], SAE)
    with pytest.raises(ConfigError, match="trained on"):
        probes.load_saes({HOOK1: tmp_path / "s0"})
    with pytest.raises(LfpMechError, match="not found"):
        probes.load_saes({HOOK1: tmp_path / "missing"})


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown baseline"):
        ProbesConfig(baselines=("xavier", "nope"))
    with pytest.raises(ConfigError, match="heldout_fraction"):
        ProbesConfig(heldout_fraction=1.0)
    with pytest.raises(ConfigError, match="cv_folds"):
        ProbesConfig(cv_folds=1)


@pytest.mark.slow
def test_smollm2_span_features_match_manual(smollm2):
    """Real tokenizer (no BOS of its own; TL prepends <|im_start|>): spans land on the word."""
    texts = ["The acting is breathtaking.", "It was a dull, lifeless film."]
    spans = [(14, 26), (11, 16)]
    hooks = {"blocks.3.hook_mlp_out": None}
    out = concat_activations(smollm2, list(hooks), texts, spans, batch_size=2)
    with torch.no_grad():
        for i in range(2):
            torch.testing.assert_close(
                out[i], _manual(smollm2, hooks, texts[i], spans[i]), atol=1e-4, rtol=1e-4
            )


def test_probe_reward_is_the_vader_formula_over_word_features(tiny_model, saes, tmp_path):
    import re

    from lfp_mech.probes import LinearProbe, load_probe, probe_reward

    d = sum(s.cfg.d_sae for s in saes.values())
    rng = np.random.default_rng(0)
    probe = LinearProbe(weight=rng.normal(size=d), bias=0.1, scale=0.5)
    texts = ["The plot was wonderful, and the ending didn't drag.", "Bad acting", "!!"]
    got = probe_reward(tiny_model, saes, probe, texts, batch_size=2)
    expected = []
    for text in texts:
        spans = [m.span() for m in re.finditer(r"[^\W_]+(?:'[^\W_]+)*", text)]
        if not spans:
            expected.append(0.0)
            continue
        feats = concat_features(tiny_model, saes, [text] * len(spans), spans)
        expected.append(float(np.clip(probe.predict(feats).sum() / 5, -10, 10)))
    assert got.tolist() == pytest.approx(expected, abs=1e-5)
    assert got[2] == 0.0

    from lfp_mech._io import save_tensors

    save_tensors(
        tmp_path / "p.safetensors", {f"tuned_sae.{k}": v for k, v in probe.state_dict().items()}
    )
    loaded = load_probe(tmp_path / "p.safetensors")
    assert np.allclose(loaded.weight, probe.weight, atol=1e-6) and loaded.scale == pytest.approx(
        0.5
    )
