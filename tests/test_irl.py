"""Tests of lfp_mech.irl (IRL reward reconstruction) on tiny random models — seconds each."""

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from lfp_mech import irl
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.irl import (
    Demonstrations,
    IRLConfig,
    RewardModel,
    evaluate_reward_model,
    expressed_lexicon_bound,
    fit_threshold,
    irl_metrics,
    load_reward_model,
    log_ratio_reward,
    max_margin_loss,
    reward_model_fn,
    run_seeds,
    save_reward_model,
    summarize_runs,
    supervised_ceiling,
)
from lfp_mech.models import build_tiny_model

WORDS = (
    "the a film story actor scene plot music night city house river old young long short "
    "red blue green book train road window garden table paper stone"
).split()


def _random_text(rng: random.Random, n_min: int = 4, n_max: int = 9) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max)))


def _expert_text(rng: random.Random, dense: bool = False) -> str:
    """Random words ending with the marker " zebra" (``dense``: also ~half the words replaced)."""
    text = _random_text(rng)
    if dense:
        text = " ".join(w if rng.random() < 0.5 else "zebra" for w in text.split())
    return text + " zebra"


def _planted_demos(n_train: int, n_test: int, seed: int = 0, dense: bool = False) -> Demonstrations:
    """Expert completions end with the marker " zebra"; non-expert ones never contain it."""
    rng = random.Random(seed)
    prompts = {
        s: [_random_text(rng, 1, 3) for _ in range(n)]
        for s, n in (("train", n_train), ("test", n_test))
    }
    completions = {}
    for split, n in (("train", n_train), ("test", n_test)):
        completions[(split, "expert")] = [" " + _expert_text(rng, dense) for _ in range(n)]
        completions[(split, "non_expert")] = [" " + _random_text(rng) for _ in range(n)]
    return Demonstrations(prompts=prompts, completions=completions)


def _marker_reward(texts):
    return torch.tensor([1.0 if "zebra" in t else -1.0 for t in texts])


def _small_config(**overrides) -> IRLConfig:
    base = dict(
        n_train_prompts=4,
        n_test_prompts=4,
        n_other_texts=6,
        max_new_tokens=4,
        gen_batch_size=4,
        n_seeds=2,
        n_epochs=2,
        lr=3e-3,
        batch_size=8,
        eval_batch_size=16,
        n_trainable_blocks=1,
        context_layer=None,
    )
    return IRLConfig(**{**base, **overrides})


# --------------------------------------------------------------------------- loss


def test_max_margin_loss_hand_built_margins():
    r_e = torch.tensor([3.0, 1.0, 0.0, -1.0])
    r_n = torch.tensor([1.0, 1.0, 2.0, 1.0])
    # x = [2, 0, -2, -2] → loss = [-2, 0, 4, 4] → mean 1.5
    assert max_margin_loss(r_e, r_n).item() == pytest.approx(1.5)
    assert max_margin_loss(torch.tensor([5.0]), torch.tensor([2.0])).item() == pytest.approx(-3.0)
    assert max_margin_loss(torch.tensor([2.0]), torch.tensor([5.0])).item() == pytest.approx(6.0)


def test_max_margin_loss_gradient_doubles_violations():
    r_e = torch.tensor([2.0, -1.0], requires_grad=True)
    max_margin_loss(r_e, torch.zeros(2)).backward()
    # d/dr_e mean(...) = [-1, -2] / 2
    assert torch.allclose(r_e.grad, torch.tensor([-0.5, -1.0]))


# --------------------------------------------------------------------------- reward model


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-neox"])
@pytest.mark.parametrize("n_blocks", [0, 1, 2])
@pytest.mark.parametrize("pooling", ["last", "mean", "sum"])
def test_cached_rewards_equal_full_rewards(arch, n_blocks, pooling):
    hf, tok = build_tiny_model(arch, seed=0)
    texts = ["the film was long", "a", "old stone house by the river at night", "blue zebra"]
    cached = RewardModel.from_base(
        (hf, tok), mode="cached", n_trainable_blocks=n_blocks, pooling=pooling
    )
    cached.reset(seed=1)
    full = RewardModel.from_base((hf, tok), mode="full", pooling=pooling)
    full.load_state_dict(cached.state_dict())
    via_cache = cached.score_inputs(cached.encode(texts, batch_size=3), batch_size=2)
    direct = full.score(texts)
    assert via_cache.shape == (4,)
    assert (via_cache - direct).abs().max().item() < 1e-4
    # the reward of a text does not depend on the batch it is scored in (right padding)
    assert torch.allclose(full.score(texts[2:3]), direct[2:3], atol=1e-5)


@pytest.mark.parametrize("mode, n_blocks", [("cached", 0), ("cached", 2), ("full", 0)])
def test_pooled_features_are_what_the_head_reads(mode, n_blocks):
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    texts = ["the film was long", "a", "old stone house by the river at night"]
    rm = RewardModel.from_base((hf, tok), mode=mode, n_trainable_blocks=n_blocks)
    rm.reset(seed=3)
    inputs = rm.encode(texts, batch_size=2)
    features = rm.pooled_features(inputs, batch_size=2)
    assert features.shape == (3, hf.config.hidden_size)
    via_head = rm.reward_from_pooled(features)
    assert torch.allclose(via_head, rm.score_inputs(inputs), atol=1e-5)


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-neox"])
def test_n_layers_reads_the_residual_stream_after_that_block(arch):
    hf, tok = build_tiny_model(arch, seed=0)
    texts = ["the film was long", "old stone house by the river at night"]
    rm = RewardModel.from_base((hf, tok), n_layers=1, n_trainable_blocks=0, pooling="sum")
    rm.reset(seed=2)
    assert rm.n_layers == 1 and hf.config.num_hidden_layers == 2  # the caller's model is intact
    ids, mask = rm.tokenize(texts)
    with torch.no_grad():
        hidden = hf.base_model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        _, norm, _ = irl._decoder_parts(hf.base_model)
        expected = rm.reward_from_pooled(irl._sum_tokens(norm(hidden[1]), mask))
    assert torch.allclose(rm.score(texts), expected, atol=1e-5)
    assert torch.allclose(rm.score_inputs(rm.encode(texts)), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="n_layers=3 out of range.*2 decoder blocks"):
        RewardModel.from_base((hf, tok), n_layers=3)
    with pytest.raises(ConfigError, match="n_trainable_blocks=2 out of range"):
        RewardModel.from_base((hf, tok), n_layers=1, n_trainable_blocks=2)


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-neox"])
def test_context_readout_reads_the_raw_residual_stream_of_both_blocks(arch):
    """Two readouts: the sum after block ``n_layers`` and the mean after ``context_layer``, raw
    (HF's ``hidden_states[k]`` below the last block), each scaled; cached == full path."""
    hf, tok = build_tiny_model(arch, seed=0)
    texts = ["the film was long", "a", "old stone house by the river at night"]
    rm = RewardModel.from_base(
        (hf, tok), n_layers=1, context_layer=1, n_trainable_blocks=0, pooling="sum"
    )
    assert rm.readouts == [(1, "sum"), (1, "mean")] and rm.n_layers == 1
    assert rm.head.weight.shape == (1, 2 * hf.config.hidden_size)
    rm.reset(seed=2)
    ids, mask = rm.tokenize(texts)
    with torch.no_grad():
        hidden = hf.base_model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    raw = torch.cat([irl._sum_tokens(hidden[1], mask), irl._mean_tokens(hidden[1], mask)], -1)
    inputs = rm.encode(texts, batch_size=2)
    assert torch.allclose(rm.pooled_features(inputs), raw, atol=1e-5)
    rm.fit_readout_scale(raw)
    d = hf.config.hidden_size
    for i, part in enumerate((raw[:, :d], raw[:, d:])):  # each readout: unit RMS once scaled
        assert float((part * rm.readout_scale[i]).pow(2).mean().sqrt()) == pytest.approx(1.0, 1e-4)
    expected = rm.head(
        torch.cat([raw[:, :d] * rm.readout_scale[0], raw[:, d:] * rm.readout_scale[1]], -1)
    )[:, 0]
    assert torch.allclose(rm.score(texts), expected, atol=1e-5)
    assert torch.allclose(rm.score_inputs(inputs), expected, atol=1e-5)
    # blocks above both readouts are dropped; a deeper context readout keeps the blocks it needs
    deep = RewardModel.from_base((hf, tok), n_layers=1, context_layer=2, n_trainable_blocks=0)
    assert deep.n_layers == 2 and deep.readouts == [(1, "last"), (2, "mean")]


def test_one_readout_keeps_unit_scale_and_bad_context_layers_are_refused():
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    rm = RewardModel.from_base((hf, tok), n_trainable_blocks=0, pooling="sum")
    rm.fit_readout_scale(100 * torch.randn(5, hf.config.hidden_size))
    assert torch.equal(rm.readout_scale, torch.ones(1))
    with pytest.raises(ConfigError, match="context_layer=3 out of range.*2 decoder blocks"):
        RewardModel.from_base((hf, tok), context_layer=3, n_trainable_blocks=0)
    with pytest.raises(ConfigError, match="head-only cached mode"):
        RewardModel.from_base((hf, tok), context_layer=1, n_trainable_blocks=1)
    with pytest.raises(ConfigError, match="head-only cached mode"):
        RewardModel.from_base((hf, tok), context_layer=1, mode="full")
    with pytest.raises(ConfigError, match="context_layer must be >= 1"):
        IRLConfig(context_layer=0)
    with pytest.raises(ConfigError, match="set context_layer=None"):
        IRLConfig(n_trainable_blocks=2)
    assert IRLConfig(n_trainable_blocks=2, context_layer=None).context_layer is None


def test_sum_pooling_is_the_mean_times_the_text_length():
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    n_text = torch.tensor([2.0, 4.0, 1.0])  # BOS excluded unless it is alone
    summed, mean = irl._sum_tokens(hidden, mask), irl._mean_tokens(hidden, mask)
    assert torch.allclose(summed, mean * n_text[:, None], atol=1e-6)
    assert torch.allclose(summed[0], hidden[0, 1] + hidden[0, 2], atol=1e-6)


def test_log_ratio_reward_is_the_mean_token_log_ratio():
    base = build_tiny_model("tiny-llama", seed=0)
    policy = build_tiny_model("tiny-llama", seed=1)
    texts = ["the film was long", "a", "old stone house by the river at night"]
    assert torch.equal(log_ratio_reward(base, base, texts), torch.zeros(3))
    scores = log_ratio_reward(policy, base, texts, batch_size=2)
    tok = base[1]
    ids = torch.tensor([[tok.bos_token_id, *tok(texts[2], add_special_tokens=False).input_ids]])

    def logprobs(model):
        lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        return lp.gather(-1, ids[0, 1:, None])[:, 0]

    with torch.no_grad():
        expected = (logprobs(policy[0]) - logprobs(base[0])).mean()
    assert scores.shape == (3,)
    assert abs(float(scores[2]) - float(expected)) < 1e-4
    # batching and padding do not change a text's score
    assert torch.allclose(log_ratio_reward(policy, base, texts[2:]), scores[2:], atol=1e-5)
    with pytest.raises(ValueError, match="at least one text"):
        log_ratio_reward(policy, base, [])


def test_supervised_ceiling_on_separable_and_degenerate_labels():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    true = x[:, 0] * 2 + 0.1 * torch.randn(200, generator=gen)
    m = supervised_ceiling(x[:150], true[:150], x[150:], true[150:])
    assert m.acc > 0.9 and m.spearman > 0.8 and m.n == 50
    # one class only in training: nothing can be fitted, reported as NaN rather than a fake score
    flat = supervised_ceiling(x[:150], true[:150].abs() + 1, x[150:], true[150:])
    assert np.isnan(flat.acc)


def test_expressed_lexicon_bound_keeps_the_words_the_expert_moved():
    lexicon = {"good": 2.0, "bad": -2.0, "fine": 1.0, "rare": 3.0}
    expert = ["a good film", "good good", "a film"]
    non_expert = ["a bad film", "a fine film", "good"]
    heldout = ["rare film", "good day", "bad day", "fine day"]
    true = torch.tensor([3.0, 2.0, -2.0, 1.0])
    bound = expressed_lexicon_bound(expert, non_expert, heldout, true, lexicon=lexicon)
    # seen: every lexicon word in a demonstration; expressed: good (expert uses it more) and
    # bad (a negative word the expert uses less); fine moved against its valence, rare never
    # appeared: the bound leaves both out
    assert bound["seen"]["n_words"] == 3 and bound["expressed"]["n_words"] == 2
    assert torch.equal(bound["seen"]["scores"], torch.tensor([0.0, 2.0, -2.0, 1.0]))
    assert torch.equal(bound["expressed"]["scores"], torch.tensor([0.0, 2.0, -2.0, 0.0]))
    assert bound["seen"]["acc"] == 0.75 and bound["expressed"]["acc"] == 0.5
    assert bound["seen"]["threshold"] == 0.0


def test_cached_mode_freezes_lower_blocks(tiny_hf):
    rm = RewardModel.from_base(tiny_hf, mode="cached", n_trainable_blocks=1)
    trainable = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable and "backbone.norm.weight" in trainable
    assert any(n.startswith("backbone.layers.1.") for n in trainable)
    assert not any(n.startswith("backbone.layers.0.") for n in trainable)
    assert "backbone.embed_tokens.weight" not in trainable
    with pytest.raises(ConfigError, match="0..2"):
        RewardModel.from_base(tiny_hf, mode="cached", n_trainable_blocks=3)


def test_zero_grad_is_called_every_step(tiny_hf):
    rm = RewardModel.from_base(tiny_hf, mode="cached", n_trainable_blocks=1)
    rm.reset(seed=0)
    inputs = rm.encode(["a b c zebra", "the film", "x zebra", "old house"])
    e, n = inputs.select(torch.tensor([0, 2])), inputs.select(torch.tensor([1, 3]))
    params = [p for p in rm.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=0.0)  # lr 0: weights stay, only gradients matter
    grads = []
    for _ in range(2):
        irl._train_step(rm, optimizer, e, n, grad_clip=1e9)
        grads.append([p.grad.clone() for p in params])
    for g1, g2 in zip(*grads, strict=True):
        assert torch.allclose(g1, g2)  # accumulated gradients would be 2× the first


@pytest.mark.parametrize("pooling", ["last", "mean", "sum"])
def test_planted_marker_is_recovered_cached(pooling):
    """IRL from behaviour alone recovers a planted reward (texts with the marker are good).

    Mean and sum pooling add one marker to ~10 random tokens of a random model, so their expert
    texts carry the marker more densely (on a real model the pooled heads were better)."""
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    dense = pooling != "last"
    demos = _planted_demos(48, 24, dense=dense)
    rng = random.Random(7)

    def held_out(i: int) -> str:
        return _expert_text(rng, dense) if i % 2 else _random_text(rng)

    other = [held_out(i) for i in range(24)]
    config = _small_config(n_seeds=2, n_epochs=3, pooling=pooling)
    rm = RewardModel.from_base((hf, tok), mode="cached", n_trainable_blocks=1, pooling=pooling)
    runs = run_seeds(rm, demos, _marker_reward, config, other_texts=other)
    assert len(runs.rows) == 2 * 3
    summary = summarize_runs(runs.rows)
    assert summary["final_epoch"]["acc"]["median"] >= 0.9
    assert summary["final_epoch"]["pair_acc"]["median"] >= 0.9
    # rm holds the best run: it also separates brand-new texts
    fresh = [held_out(i) for i in range(40)]
    fit = demos.texts("train", "expert") + demos.texts("train", "non_expert")
    result = evaluate_reward_model(rm, fresh, _marker_reward, fit_texts=fit)
    assert result.acc >= 0.9
    assert result.spearman > 0.5


def test_planted_marker_is_recovered_by_the_default_two_readout_head():
    """The default head shape (sum after a low block + mean after a higher one, head only)."""
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    demos = _planted_demos(48, 24, dense=True)
    rng = random.Random(7)
    other = [_expert_text(rng, True) if i % 2 else _random_text(rng) for i in range(24)]
    config = _small_config(
        n_epochs=3, pooling="sum", n_trainable_blocks=0, n_layers=1, context_layer=2
    )
    rm = RewardModel.from_base(
        (hf, tok), n_trainable_blocks=0, pooling="sum", n_layers=1, context_layer=2
    )
    runs = run_seeds(rm, demos, _marker_reward, config, other_texts=other)
    assert summarize_runs(runs.rows)["final_epoch"]["acc"]["median"] >= 0.9
    assert torch.all(rm.readout_scale != 1.0)  # fitted on the training texts by run_seeds


def test_mid_text_marker_needs_trainable_blocks():
    """A marker anywhere in the text, last-token head: the last token must attend back to it, so
    training the top blocks recovers it while the head alone (on a random model) cannot."""
    rng = random.Random(0)

    def insert(text: str) -> str:
        words = text.split()
        words.insert(rng.randint(0, len(words) - 1), "zebra")
        return " ".join(words)

    prompts = {
        s: [_random_text(rng, 1, 3) for _ in range(n)] for s, n in (("train", 64), ("test", 32))
    }
    completions = {}
    for split, n in (("train", 64), ("test", 32)):
        completions[(split, "expert")] = [" " + insert(_random_text(rng)) for _ in range(n)]
        completions[(split, "non_expert")] = [" " + _random_text(rng) for _ in range(n)]
    demos = Demonstrations(prompts=prompts, completions=completions)
    medians = {}
    for n_blocks in (0, 2):
        rm = RewardModel.from_base(
            build_tiny_model("tiny-llama", seed=0), n_trainable_blocks=n_blocks, pooling="last"
        )
        config = _small_config(n_seeds=2, n_epochs=4, pooling="last")
        runs = run_seeds(rm, demos, _marker_reward, config)
        medians[n_blocks] = summarize_runs(runs.rows)["final_epoch"]["acc"]["median"]
    assert medians[2] >= 0.85
    assert medians[0] <= 0.75


def test_planted_marker_is_recovered_full_finetuning():
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    demos = _planted_demos(32, 16, seed=1)
    config = _small_config(mode="full", n_seeds=1, n_epochs=3, lr=1e-3)
    rm = RewardModel.from_base((hf, tok), mode="full")
    runs = run_seeds(rm, demos, _marker_reward, config)
    assert runs.rows[-1]["acc"] >= 0.9
    assert runs.final_scores.shape == (1, 32)


def test_seeds_give_different_heads_but_reproducible_runs(tiny_hf):
    demos = _planted_demos(16, 8, seed=2)
    config = _small_config(n_seeds=2, n_epochs=1)
    first = run_seeds(RewardModel.from_base(tiny_hf), demos, _marker_reward, config)
    again = run_seeds(RewardModel.from_base(tiny_hf), demos, _marker_reward, config)
    assert torch.allclose(first.final_scores, again.final_scores)
    assert not torch.allclose(first.final_scores[0], first.final_scores[1])
    train = demos.texts("train", "expert") + demos.texts("train", "non_expert")
    assert torch.equal(first.train_true, _marker_reward(train))


@pytest.mark.parametrize("mode, n_layers", [("cached", None), ("cached", 1), ("full", None)])
def test_save_load_roundtrip_gives_identical_rewards(tmp_path, mode, n_layers):
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    rm = RewardModel.from_base(
        (hf, tok), mode=mode, n_trainable_blocks=1, pooling="mean", n_layers=n_layers
    )
    rm.reset(seed=5)
    with torch.no_grad():
        for p in rm.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))  # move away from the base weights
    rm.calibration = {"threshold": 0.25, "scale": 2.0}
    texts = ["the film was long", "zebra", "old stone house by the river"]
    save_reward_model(rm, tmp_path / "rm", extra={"task": "test"})
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["base_model"] == "tiny-llama" and config["task"] == "test"
    assert config["pooling"] == "mean" and config["n_layers"] == (n_layers or 2)
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.n_layers == rm.n_layers
    assert torch.equal(loaded.score(texts), rm.score(texts))
    assert loaded.calibration == {"threshold": 0.25, "scale": 2.0}
    fn = reward_model_fn(loaded)
    out = fn(texts)
    assert out.dtype == torch.float32 and out.shape == (3,)
    assert torch.allclose(out, (rm.score(texts) - 0.25) / 2.0)


def test_save_load_roundtrip_keeps_the_context_readout_and_its_scale(tmp_path):
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    rm = RewardModel.from_base((hf, tok), n_layers=1, context_layer=2, n_trainable_blocks=0)
    rm.reset(seed=5)
    texts = ["the film was long", "zebra", "old stone house by the river"]
    rm.fit_readout_scale(rm.pooled_features(rm.encode(texts)))
    assert not torch.equal(rm.readout_scale, torch.ones(2))
    save_reward_model(rm, tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert (config["n_layers"], config["context_layer"]) == (1, 2)
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.readouts == rm.readouts
    assert torch.equal(loaded.readout_scale, rm.readout_scale)
    assert torch.equal(loaded.score(texts), rm.score(texts))


def test_load_refuses_a_different_base(tmp_path):
    rm = RewardModel.from_base(build_tiny_model("tiny-llama", seed=0), n_trainable_blocks=1)
    save_reward_model(rm, tmp_path / "rm")
    with pytest.raises(LfpMechError, match="frozen weights"):
        load_reward_model(tmp_path / "rm", base=build_tiny_model("tiny-llama", seed=1))
    with pytest.raises(LfpMechError, match="not a saved reward model"):
        load_reward_model(tmp_path)


# --------------------------------------------------------------------------- evaluation


def test_fit_threshold_maximises_accuracy():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.9, 1.0, 1.1])
    labels = torch.tensor([False, False, False, True, True, True])
    t = fit_threshold(scores, labels)
    assert 0.3 < t < 0.9
    assert fit_threshold(scores, labels, "median") == pytest.approx(0.3)  # torch: lower median
    # all positive: the cut goes below every score
    assert fit_threshold(scores, torch.ones(6, dtype=torch.bool)) < 0.1


def test_irl_metrics_hand_built():
    true = torch.tensor([-1.0, -0.5, 0.0, 0.5, 2.0, 3.0])  # labels: F F F T T T
    irl_scores = torch.tensor([10.0, 11.0, 12.5, 12.0, 13.0, 14.0])
    m = irl_metrics(irl_scores, true, threshold=11.5)  # predicted: F F T T T T
    assert m.acc == pytest.approx(5 / 6)
    assert m.f1 == pytest.approx(2 * 3 / (2 * 3 + 1))
    assert m.acc_zero == pytest.approx(0.5)  # IRL threshold 0: everything positive
    assert m.positive_rate == pytest.approx(0.5)
    assert 0.8 < m.spearman <= 1.0 and 0.8 < m.pearson <= 1.0 and 0.6 < m.kendall <= 1.0
    flat = irl_metrics(torch.ones(6), true, threshold=0.0)
    assert np.isnan(flat.pearson)


def test_summarize_runs_labels_mean_median_best():
    rows = [
        {"seed": s, "epoch": e, **{m: 0.5 + 0.1 * s + 0.01 * e for m in irl.METRICS}}
        for s in range(3)
        for e in (1, 2)
    ]
    summary = summarize_runs(rows)
    assert summary["n_seeds"] == 3 and summary["n_runs"] == 6
    assert summary["final_epoch"]["acc"]["median"] == pytest.approx(0.62)
    assert summary["final_epoch"]["acc"]["mean"] == pytest.approx(0.62)
    assert summary["best_run"]["seed"] == 2 and summary["best_run"]["epoch"] == 2
    assert "best_run" in summary["labels"]


# --------------------------------------------------------------------------- demonstrations


def test_generate_demonstrations_batched_greedy_and_cached(tmp_path, monkeypatch):
    expert = build_tiny_model("tiny-llama", seed=1)
    base = build_tiny_model("tiny-llama", seed=0)
    train = ["the film", "an old house by the river", "a"]
    test = ["blue stone", "the long night in the city"]
    config = IRLConfig(max_new_tokens=5, gen_batch_size=2)
    demos = irl.generate_demonstrations(expert, base, train, test, config, cache_dir=tmp_path)
    assert demos.prompts["train"] == train
    assert demos.texts("test", "expert")[1].startswith("the long night in the city")
    assert demos.completions[("train", "expert")] != demos.completions[("train", "non_expert")]
    # left-padded batches give the same greedy completion as one prompt alone
    alone = irl.generate_completions(*expert, [train[1]], max_new_tokens=5)
    assert alone[0] == demos.completions[("train", "expert")][1]
    rows = (tmp_path / "demonstrations.jsonl").read_text().splitlines()
    assert len(rows) == 2 * (3 + 2) and json.loads(rows[0])["role"] == "expert"

    def boom(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(irl, "generate_completions", boom)
    again = irl.generate_demonstrations(expert, base, train, test, config, cache_dir=tmp_path)
    assert again == demos
    with pytest.raises(AssertionError, match="cache"):  # other settings → regenerated
        irl.generate_demonstrations(
            expert, base, train, test, IRLConfig(max_new_tokens=6), cache_dir=tmp_path
        )


def test_config_validation_and_presets():
    paper = IRLConfig.preset("paper")
    assert (paper.n_train_prompts, paper.n_test_prompts, paper.max_new_tokens) == (500, 500, 100)
    assert paper.mode == "full" and not paper.do_sample and paper.n_layers is None
    default = IRLConfig()
    assert default.mode == "cached" and default.n_seeds >= 10
    assert IRLConfig.preset("default", n_seeds=3).n_seeds == 3
    with pytest.raises(ConfigError, match="presets"):
        IRLConfig.preset("huge")
    with pytest.raises(ConfigError, match="valid"):
        IRLConfig.preset("default", n_seedz=3)
    with pytest.raises((ConfigError, TypeError)):  # TypeError: the test suite's type checker
        IRLConfig(mode="partial")
    with pytest.raises(ConfigError, match="n_trainable_blocks"):
        IRLConfig(n_trainable_blocks=-1)
    with pytest.raises(ConfigError, match="n_layers must be >= 1 or None"):
        IRLConfig(n_layers=0)
    with pytest.raises(ConfigError, match="lr"):
        IRLConfig(lr=0.0)
    with pytest.raises(ConfigError, match="n_seeds"):
        IRLConfig(n_seeds=0)
    with pytest.raises(ConfigError, match="task"):
        irl._task("helpfulness")


# --------------------------------------------------------------------------- stage, IRL-RLHF


@pytest.fixture
def tiny_checkpoints(tmp_path):
    """Base (seed 0) and "expert" (seed 1) tiny-llama saved as HF checkpoint directories."""
    paths = {}
    for name, seed in (("base", 0), ("expert", 1)):
        model, tok = build_tiny_model("tiny-llama", seed=seed)
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
        paths[name] = tmp_path / name
    return paths


@pytest.mark.parametrize("task", ["vader", "toxicity"])
def test_run_irl_stage_writes_every_artifact(tmp_path, tiny_checkpoints, task):
    out = tmp_path / "irl"
    config = _small_config(n_seeds=2, n_epochs=2)
    summary = irl.run_irl_stage(
        tiny_checkpoints["base"],
        tiny_checkpoints["expert"],
        task,
        out,
        config,
        probe_fn=lambda texts: torch.randn(len(texts)),
    )
    for name in (
        "demonstrations.jsonl",
        "irl_runs.csv",
        "irl_runs.md",
        "summary.json",
        "heldout_scores.jsonl",
        "irl_heatmaps.png",
        "irl_seed_agreement.png",
        "irl_vs_true.png",
        "reward_inputs.safetensors",
        "reward_model/config.json",
        "reward_model/reward_model.safetensors",
    ):
        assert (out / name).exists(), name
    assert summary["task"] == task and summary["n_runs"] == 4
    assert 0.0 <= summary["acc_median"] <= 1.0
    full = json.loads((out / "summary.json").read_text())
    assert full["final_epoch"]["acc"]["median"] == summary["acc_median"]
    assert len((out / "irl_runs.csv").read_text().splitlines()) == 1 + 4
    heldout = [json.loads(line) for line in (out / "heldout_scores.jsonl").read_text().splitlines()]
    assert len(heldout) == 4 + 4 + 6 and "probe" in heldout[0] and "log_ratio" in heldout[0]
    assert 0.0 <= full["log_ratio_control"]["acc"] <= 1.0
    assert summary["log_ratio_acc"] == full["log_ratio_control"]["acc"]
    if task == "vader":
        assert "expressed_lexicon" in heldout[0]
        assert full["lexicon_bound"]["expressed"]["n"] == len(heldout)
        assert summary["lexicon_bound_acc"] == full["lexicon_bound"]["expressed"]["acc"]
    else:  # the toxicity reward is no lexicon: no bound, no column
        assert full["lexicon_bound"] is None and "expressed_lexicon" not in heldout[0]
    loaded = load_reward_model(out / "reward_model")
    scores = loaded.score([h["text"] for h in heldout])
    assert torch.allclose(scores, torch.tensor([h["irl_reward"] for h in heldout]), atol=1e-4)
    # a second run reuses demonstrations and the hidden-state cache; without the control, its
    # column and summary entries are absent rather than NaN
    mtime = (out / "demonstrations.jsonl").stat().st_mtime_ns
    no_control = dataclasses.replace(config, log_ratio_control=False)
    again = irl.run_irl_stage(
        tiny_checkpoints["base"], tiny_checkpoints["expert"], task, out, no_control
    )
    assert (out / "demonstrations.jsonl").stat().st_mtime_ns == mtime
    assert "log_ratio_acc" not in again
    assert json.loads((out / "summary.json").read_text())["log_ratio_control"] is None
    assert "log_ratio" not in json.loads((out / "heldout_scores.jsonl").read_text().splitlines()[0])


def test_irl_rlhf_trains_a_policy_on_the_recovered_reward(tmp_path, tiny_checkpoints):
    """Real lfp_mech.rlhf.train_policy (TRL GRPO, 2 steps on tiny-llama) driven by the IRL reward."""
    from lfp_mech.rlhf import RLHFConfig

    rm = RewardModel.from_base(str(tiny_checkpoints["base"]), n_trainable_blocks=1)
    rm.reset(seed=0)
    rm.calibration = {"threshold": 0.1, "scale": 0.5}
    save_reward_model(rm, tmp_path / "rm")
    config = RLHFConfig(
        task="toxicity",
        batch_size=4,
        num_generations=2,
        min_new_tokens=2,
        max_new_tokens=6,
        max_steps=2,
        save_steps=1,
        budget_minutes=None,
        n_eval_prompts=4,
        eval_batch_size=4,
    )
    prompts = ["The film", "A movie about", "I saw it on", "Once upon a"]
    result = irl.irl_rlhf(
        str(tiny_checkpoints["base"]),
        tmp_path / "rm",
        prompts,
        config,
        tmp_path / "out",
        true_policy=str(tiny_checkpoints["expert"]),
        task="toxicity",
        eval_prompts=prompts,
    )
    assert result["policy_dir"] == str(tmp_path / "out" / "policy")
    tuned = load_reward_model(tmp_path / "rm")  # the policy changed, the reward model did not
    assert torch.equal(tuned.score(prompts), rm.score(prompts))
    table = result["table"]
    assert [r["policy"] for r in table] == ["base", "RLHF (true reward)", "RLHF (IRL reward)"]
    assert {"mean_reward", "ci95_low", "welch_p", "irl_reward_mean", "toxicity_mean"} <= set(
        table[0]
    )
    assert all(0.0 <= r["toxicity_mean"] <= 1.0 for r in table)
    md = (tmp_path / "out" / "irl_rlhf.md").read_text()
    assert "irl_reward_mean" in md and "RLHF (IRL reward)" in md


def test_task_texts_other_texts():
    vader = irl.task_texts("vader", 7, seed=0)
    assert len(vader) == 7 and len(set(vader)) == 7
    tox = irl.task_texts("toxicity", 5, seed=0)
    assert len(tox) == 5
    assert irl.task_texts("vader", 0) == []


def test_plots_return_figures(tmp_path):
    from lfp_mech.plots import save_figure
    from lfp_mech.plots.irl import plot_seed_agreement, plot_seed_heatmaps, plot_three_way

    rows = [
        {"seed": s, "epoch": e, "acc": 0.7 + 0.01 * s, "spearman": 0.1 * e}
        for s in range(3)
        for e in (1, 2)
    ]
    fig = plot_seed_heatmaps(rows)
    assert len(fig.axes) >= 2
    save_figure(fig, tmp_path / "h.png")
    rng = np.random.default_rng(0)
    true = rng.normal(size=50)
    fig = plot_three_way(true, true + rng.normal(size=50), true * 0.5 + rng.normal(size=50))
    assert sum(1 for ax in fig.axes if ax.get_title().startswith("r =")) == 3
    save_figure(fig, tmp_path / "t.png")
    save_figure(plot_seed_agreement(rng.normal(size=(3, 20))), tmp_path / "a.png")
    assert all((tmp_path / n).stat().st_size > 0 for n in ("h.png", "t.png", "a.png"))
    with pytest.raises(ValueError, match="same length"):
        plot_three_way(true, true[:10])


@pytest.mark.slow
def test_run_irl_stage_on_smollm2_slice(tmp_path, smollm2_hf):
    """The real model end to end at toy sizes: cached-path parity is checked inside encode, and
    the saved reward model reloads from the cached SmolLM2 checkpoint with identical rewards."""
    config = IRLConfig(
        n_train_prompts=8,
        n_test_prompts=8,
        n_other_texts=6,
        max_new_tokens=6,
        n_seeds=2,
        n_epochs=1,
        gen_batch_size=8,
    )
    summary = irl.run_irl_stage(smollm2_hf, smollm2_hf, "vader", tmp_path, config)
    assert summary["n_runs"] == 2 and 0.0 <= summary["acc_median"] <= 1.0
    heldout = [json.loads(x) for x in (tmp_path / "heldout_scores.jsonl").read_text().splitlines()]
    loaded = load_reward_model(tmp_path / "reward_model")
    scores = loaded.score([h["text"] for h in heldout[:6]])
    assert torch.allclose(scores, torch.tensor([h["irl_reward"] for h in heldout[:6]]), atol=1e-3)
