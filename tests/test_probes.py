"""Tests of the probes' core on synthetic features: dataset D, the Ridge probe and its controls,
evaluation, preference probes, word frequencies and the configs."""

import numpy as np
import pytest
import torch

from lfp_mech import data
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.probes import (
    PreferenceProbeConfig,
    ProbesConfig,
    activation_deltas,
    build_probe_dataset,
    carrier_sentences,
    check_no_leak,
    evaluate_probe,
    fit_feedback_probe,
    fit_logistic_probe,
    frequency_error_correlation,
    heldout_lexicon_words,
    kendall_tau,
    paired_bootstrap_diff,
    pca_explained,
    shuffled_labels,
    sign_only_predictor,
    word_frequencies,
    xavier_probe,
)
from lfp_mech.rewards import vader_lexicon

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


def _lexicon_like(n: int = 300, seed: int = 0) -> np.ndarray:
    """Valences like the lexicon's: both signs, mild words included (|v| from 0.1 to 3.5)."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], size=n) * rng.uniform(0.1, 3.5, size=n)


def test_a_sign_predictor_has_no_within_sign_tau():
    """A predictor that knows only the sign: its τ is the sign-only reference, within-sign τ ≈ 0."""
    true = _lexicon_like()
    rng = np.random.default_rng(1)
    sign_plus_noise = np.sign(true) + 0.01 * rng.normal(size=true.size)  # breaks ties at random
    ev = evaluate_probe(sign_plus_noise, true, [str(i) for i in range(true.size)], n_bootstrap=200)
    sign_only = ev.tau_sign_only
    # half of the pairs of a balanced set cross sign → ≈ 0.5; the noisy sign predictor earns it
    n_pos = int((true > 0).sum())
    assert sign_only == pytest.approx(
        n_pos * (true.size - n_pos) / (true.size * (true.size - 1) / 2)
    )
    assert 0.45 < sign_only < 0.55
    assert ev.tau == pytest.approx(sign_only, abs=0.03)
    assert ev.tau_sign_only_ci[0] <= sign_only <= ev.tau_sign_only_ci[1]
    for tau, ci in [(ev.tau_positive, ev.tau_positive_ci), (ev.tau_negative, ev.tau_negative_ci)]:
        assert abs(tau) < 0.12 and ci[0] < 0 < ci[1]
    assert ev.sign_acc == 1.0 and ev.sign_acc_ci == (1.0, 1.0)
    # the exact sign predictor: within-sign τ is undefined (constant), reported as NaN; its τ-b
    # is inflated by its ties (≈ 0.71), which is why the reference is the tie-free expectation
    exact = evaluate_probe(np.sign(true), true, [str(i) for i in range(true.size)], n_bootstrap=50)
    assert np.isnan(exact.tau_positive) and exact.tau > 0.65
    reference = evaluate_probe(
        sign_only_predictor(true), true, [str(i) for i in range(true.size)], n_bootstrap=200
    )
    assert (
        reference.tau == pytest.approx(sign_only, abs=0.03) and abs(reference.tau_positive) < 0.12
    )


def test_a_magnitude_predictor_beats_the_sign_only_reference():
    true = _lexicon_like()
    rng = np.random.default_rng(2)
    graded = true + 0.3 * rng.normal(size=true.size)
    ev = evaluate_probe(graded, true, [str(i) for i in range(true.size)], n_bootstrap=200)
    assert ev.tau > ev.tau_sign_only + 0.2 and ev.tau_ci[0] > ev.tau_sign_only_ci[1]
    assert ev.tau_positive > 0.6 and ev.tau_negative > 0.6 and ev.tau_positive_ci[0] > 0.5
    assert 0.9 < ev.sign_acc < 1.0
    expected = np.mean((graded > 0) == (true > 0))
    assert ev.sign_acc == pytest.approx(expected)
    row = ev.kendall_row()
    assert row["tau_sign_only"] == ev.tau_sign_only and row["sign_acc_ci_low"] <= ev.sign_acc


def test_paired_difference_permutation_p_is_uniform_ish_under_the_null():
    """Two equally good probes (independent noise): the paired permutation p is not small;
    a better probe gets a small p and a CI above 0."""
    true = _lexicon_like(200)
    rng = np.random.default_rng(3)
    a = true + rng.normal(size=200)
    b = 10 * (true + rng.normal(size=200))  # another scale: the rank transform handles it
    tie = paired_bootstrap_diff(a, b, true, n=400, seed=0)
    assert tie.p_value > 0.05 and tie.ci_low < 0 < tie.ci_high
    better = paired_bootstrap_diff(true + 0.2 * rng.normal(size=200), b, true, n=400, seed=0)
    assert better.p_value < 0.01 and better.ci_low > 0


def test_heldout_lexicon_words_split_by_word():
    config = ProbesConfig(n_eval_words=1000, seed=3)
    words = heldout_lexicon_words(config)
    train, _ = data.heldout_words(seed=3, heldout_fraction=config.heldout_fraction)
    assert len(words) == 1000 and not set(words) & {w.lower() for w in train}
    assert words == heldout_lexicon_words(ProbesConfig(n_eval_words=1000, seed=3))
    assert words != heldout_lexicon_words(ProbesConfig(n_eval_words=1000, seed=4))
    lexicon = vader_lexicon()
    valences = np.array([lexicon[w] for w in words])
    assert (np.abs(valences) < 1).mean() > 0.1  # mild words are in
    assert (valences > 0).any() and (valences < 0).any()
    everything = heldout_lexicon_words(ProbesConfig(n_eval_words=0))
    assert len(everything) > 6000


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
    assert rho == pytest.approx(-1.0) and p < 1e-6


def test_config_validation():
    with pytest.raises(
        ConfigError, match=r"^probes\.baselines = .*: unknown \['nope'\]; valid: xav"
    ):
        ProbesConfig(baselines=("xavier", "nope"))
    with pytest.raises(ConfigError, match="heldout_fraction"):
        ProbesConfig(heldout_fraction=1.0)
    with pytest.raises(ConfigError, match="cv_folds"):
        ProbesConfig(cv_folds=1)
    with pytest.raises(ConfigError, match=r"^probes\.alphas = \(\): must be a non-empty"):
        ProbesConfig(alphas=())


def test_preference_probe_config_errors_name_the_option():
    with pytest.raises(ConfigError, match=r"^preference_probe\.test_fraction = 1\.0: must be in"):
        PreferenceProbeConfig(test_fraction=1.0)
    with pytest.raises(ConfigError, match=r"^preference_probe\.C = 0\.0: must be > 0"):
        PreferenceProbeConfig(C=0.0)
    with pytest.raises(ConfigError, match=r"^preference_probe\.batch_size = 0: must be >= 1"):
        PreferenceProbeConfig(batch_size=0)


def test_logistic_probe_label_errors():
    x = torch.randn(10, 4)
    with pytest.raises((ValueError, TypeError)):  # jaxtyping checks the Literal in tests
        fit_logistic_probe(x, x + 1, labels="other")
    with pytest.raises(ValueError, match="need at least"):
        fit_logistic_probe(x[:2], x[:2] + 1)


def test_carrier_sentences_put_each_word_in_each_template():
    texts, spans = carrier_sentences(["good", "awful"], ["It was {}.", "{} film"])
    assert texts == ["It was good.", "good film", "It was awful.", "awful film"]
    assert [t[s:e] for t, (s, e) in zip(texts, spans, strict=True)] == [
        "good", "good", "awful", "awful"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="exactly one"):
        carrier_sentences(["good"], ["no slot"])


def test_kendall_tau_is_nan_when_undefined():
    assert np.isnan(kendall_tau(np.array([1.0]), np.array([2.0])))
    assert np.isnan(kendall_tau(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])))
    assert kendall_tau(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1.0)
