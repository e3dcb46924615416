"""IRL training and evaluation on tiny random models: the loss, seeds × epochs, metrics, controls."""

import random

import numpy as np
import pytest
import torch
from irl_helpers import expert_text, marker_reward, planted_demos, random_text, small_config
from scipy import stats

from lfp_mech.irl import (
    METRICS,
    Demonstrations,
    RewardModel,
    auroc_with_ci,
    evaluate_reward_model,
    expressed_lexicon_bound,
    fit_threshold,
    irl_metrics,
    log_ratio_reward,
    max_margin_loss,
    run_seeds,
    summarize_runs,
    supervised_ceiling,
    train_step,
)
from lfp_mech.models import build_tiny_model

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


def test_zero_grad_is_called_every_step(tiny_hf):
    rm = RewardModel.from_base(tiny_hf, mode="cached", n_trainable_blocks=1)
    rm.reset(seed=0)
    inputs = rm.encode(["a b c zebra", "the film", "x zebra", "old house"])
    e, n = inputs.select(torch.tensor([0, 2])), inputs.select(torch.tensor([1, 3]))
    params = [p for p in rm.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=0.0)  # lr 0: weights stay, only gradients matter
    grads = []
    for _ in range(2):
        train_step(rm, optimizer, e, n, grad_clip=1e9)
        grads.append([p.grad.clone() for p in params])
    for g1, g2 in zip(*grads, strict=True):
        assert torch.allclose(g1, g2)  # accumulated gradients would be 2× the first


# --------------------------------------------------------------------------- seeds × epochs


@pytest.mark.parametrize("pooling", ["last", "mean", "sum"])
def test_planted_marker_is_recovered_cached(pooling):
    """IRL from behaviour alone recovers a planted reward (texts with the marker are good).

    Mean and sum pooling add one marker to ~10 random tokens of a random model, so their expert
    texts carry the marker more densely (on a real model the pooled heads were better)."""
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    dense = pooling != "last"
    demos = planted_demos(48, 24, dense=dense)
    rng = random.Random(7)

    def held_out(i: int) -> str:
        return expert_text(rng, dense) if i % 2 else random_text(rng)

    other = [held_out(i) for i in range(24)]
    config = small_config(n_seeds=2, n_epochs=3, pooling=pooling)
    rm = RewardModel.from_base((hf, tok), mode="cached", n_trainable_blocks=1, pooling=pooling)
    runs = run_seeds(rm, demos, marker_reward, config, other_texts=other)
    assert len(runs.rows) == 2 and len(runs.epoch_rows) == 2 * 3  # seeds; seeds × epochs
    assert all(1 <= r["epoch"] <= 3 and "val_acc" in r for r in runs.rows)
    summary = summarize_runs(runs.rows)
    assert summary["final_epoch"]["acc"]["median"] >= 0.9
    assert summary["final_epoch"]["pair_acc"]["median"] >= 0.9
    # rm holds the best run: it also separates brand-new texts
    fresh = [held_out(i) for i in range(40)]
    fit = demos.texts("train", "expert") + demos.texts("train", "non_expert")
    result = evaluate_reward_model(rm, fresh, marker_reward, fit_texts=fit)
    assert result.acc >= 0.9
    assert result.spearman > 0.5
    assert runs.heldout_sources == ["expert_test"] * 24 + ["non_expert_test"] * 24 + ["other"] * 24
    assert torch.equal(runs.best_state["head.weight"], rm.head.weight.detach())


def test_planted_marker_is_recovered_by_the_default_two_readout_head():
    """The default head shape (sum after a low block + mean after a higher one, head only)."""
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    demos = planted_demos(48, 24, dense=True)
    rng = random.Random(7)
    other = [expert_text(rng, True) if i % 2 else random_text(rng) for i in range(24)]
    config = small_config(
        n_epochs=3, pooling="sum", n_trainable_blocks=0, n_layers=1, context_layer=2
    )
    rm = RewardModel.from_base(
        (hf, tok), n_trainable_blocks=0, pooling="sum", n_layers=1, context_layer=2
    )
    runs = run_seeds(rm, demos, marker_reward, config, other_texts=other)
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
        s: [random_text(rng, 1, 3) for _ in range(n)] for s, n in (("train", 64), ("test", 32))
    }
    completions = {}
    for split, n in (("train", 64), ("test", 32)):
        completions[(split, "expert")] = [" " + insert(random_text(rng)) for _ in range(n)]
        completions[(split, "non_expert")] = [" " + random_text(rng) for _ in range(n)]
    demos = Demonstrations(prompts=prompts, completions=completions)
    medians = {}
    for n_blocks in (0, 2):
        rm = RewardModel.from_base(
            build_tiny_model("tiny-llama", seed=0), n_trainable_blocks=n_blocks, pooling="last"
        )
        config = small_config(n_seeds=2, n_epochs=4, pooling="last")
        runs = run_seeds(rm, demos, marker_reward, config)
        medians[n_blocks] = summarize_runs(runs.rows)["final_epoch"]["acc"]["median"]
    assert medians[2] >= 0.85
    assert medians[0] <= 0.75


def test_planted_marker_is_recovered_full_finetuning():
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    demos = planted_demos(32, 16, seed=1)
    config = small_config(mode="full", n_seeds=1, n_epochs=3, lr=1e-3)
    rm = RewardModel.from_base((hf, tok), mode="full")
    runs = run_seeds(rm, demos, marker_reward, config)
    assert runs.rows[-1]["acc"] >= 0.9
    assert runs.final_scores.shape == (1, 32)
    assert len(runs.epoch_rows) == 3 and "acc" not in runs.epoch_rows[0]  # validation only


def test_seeds_give_different_heads_but_reproducible_runs(tiny_hf):
    demos = planted_demos(16, 8, seed=2)
    config = small_config(n_seeds=2, n_epochs=1)
    first = run_seeds(RewardModel.from_base(tiny_hf), demos, marker_reward, config)
    again = run_seeds(RewardModel.from_base(tiny_hf), demos, marker_reward, config)
    assert torch.allclose(first.final_scores, again.final_scores)
    assert not torch.allclose(first.final_scores[0], first.final_scores[1])
    train = demos.texts("train", "expert") + demos.texts("train", "non_expert")
    assert torch.equal(first.train_true, marker_reward(train))
    assert [(r["seed"], r["epoch"]) for r in first.rows] == [(0, 1), (1, 1)]
    assert list(first.rows[0])[:3] == ["seed", "epoch", "n"]  # the runs table's column order
    assert list(first.rows[0])[-2:] == ["train_loss", "train_pair_acc"]
    assert [(r["seed"], r["epoch"]) for r in first.epoch_rows] == [(0, 1), (1, 1)]


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
    # one swapped pair of six: Spearman 1 - 6 * 2 / (6 * 35), Kendall (14 - 1) / 15
    assert m.spearman == pytest.approx(33 / 35) and m.kendall == pytest.approx(13 / 15)
    assert m.pearson == pytest.approx(stats.pearsonr(irl_scores, true).statistic)
    flat = irl_metrics(torch.ones(6), true, threshold=0.0)
    assert np.isnan(flat.pearson)


def test_auroc_with_ci_matches_sklearn_and_tests_against_chance():
    from sklearn.metrics import roc_auc_score

    gen = torch.Generator().manual_seed(0)
    true = torch.randn(200, generator=gen)
    informative = true + torch.randn(200, generator=gen)
    res = auroc_with_ci(informative, true)
    assert res["auroc"] == pytest.approx(roc_auc_score(true > 0, informative))
    low, high = res["auroc_ci95"]
    assert 0.5 < low < res["auroc"] < high < 1.0 and res["auroc_p_vs_chance"] < 1e-6
    noise = auroc_with_ci(torch.randn(200, generator=gen), true)
    assert noise["auroc_ci95"][0] < 0.5 < noise["auroc_ci95"][1]
    assert noise["auroc_p_vs_chance"] > 0.01
    one_class = auroc_with_ci(informative, true.abs() + 1)
    assert np.isnan(one_class["auroc"]) and np.isnan(one_class["auroc_p_vs_chance"])


def test_summarize_runs_labels_mean_median_best():
    rows = [
        {"seed": s, "epoch": e, **{m: 0.5 + 0.1 * s + 0.01 * e for m in METRICS}}
        for s in range(3)
        for e in (1, 2)
    ]
    summary = summarize_runs(rows)
    assert summary["n_seeds"] == 3 and summary["n_runs"] == 6
    assert summary["final_epoch"]["acc"]["median"] == pytest.approx(0.62)
    assert summary["final_epoch"]["acc"]["mean"] == pytest.approx(0.62)
    assert summary["best_run"]["seed"] == 2 and summary["best_run"]["epoch"] == 2
    assert "best_run" in summary["labels"]


def test_summarize_runs_breaks_accuracy_ties_by_spearman_nan_last():
    rows = [
        {"seed": 0, "epoch": 1, **dict.fromkeys(METRICS, 0.7), "spearman": float("nan")},
        {"seed": 1, "epoch": 1, **dict.fromkeys(METRICS, 0.7), "spearman": -0.2},
    ]
    summary = summarize_runs(rows)
    assert summary["best_run"]["seed"] == 1
    assert summary["final_epoch"]["spearman"]["median"] == pytest.approx(-0.2)  # NaN dropped


def test_summarize_runs_selects_the_best_run_on_validation_not_heldout():
    """The saved run is the best on validation even when another seed is better held out."""
    rows = [
        {"seed": 0, "epoch": 2, **dict.fromkeys(METRICS, 0.9), "val_acc": 0.7, "val_auroc": 0.8},
        {"seed": 1, "epoch": 1, **dict.fromkeys(METRICS, 0.6), "val_acc": 0.8, "val_auroc": 0.5},
        {"seed": 2, "epoch": 3, **dict.fromkeys(METRICS, 0.8), "val_acc": 0.8, "val_auroc": 0.6},
    ]
    summary = summarize_runs(rows)
    assert summary["best_run"]["seed"] == 2  # val acc tie broken by val AUROC
    assert summary["best_run_selected_on"] == "validation"
    assert summary["final_epoch"]["acc"]["median"] == pytest.approx(0.8)  # one row per seed


def test_run_seeds_chooses_epochs_on_validation_and_scores_heldout_once(tiny_hf):
    """Validation texts drive the epoch and threshold; held-out texts are scored only by the
    chosen model (its threshold is the validation one)."""
    demos = planted_demos(24, 8, seed=3)
    rng = random.Random(5)
    val = [expert_text(rng) if i % 2 else random_text(rng) for i in range(10)]
    config = small_config(n_seeds=2, n_epochs=3)
    runs = run_seeds(RewardModel.from_base(tiny_hf), demos, marker_reward, config, val_texts=val)
    assert runs.val_texts[-10:] == val and len(runs.epoch_rows) == 6
    for row in runs.rows:
        epochs = [r for r in runs.epoch_rows if r["seed"] == row["seed"]]
        best = max(epochs, key=lambda r: (r["val_acc"], r["val_auroc"]))
        assert row["epoch"] == best["epoch"] and row["val_acc"] == best["val_acc"]
        assert row["threshold"] == best["threshold"]
    only_val = run_seeds(
        RewardModel.from_base(tiny_hf), demos, marker_reward, config, val_texts=val,
        score_heldout=False,
    )  # fmt: skip
    assert only_val.heldout_texts == [] and "acc" not in only_val.rows[0]
    assert [r["val_acc"] for r in only_val.rows] == [r["val_acc"] for r in runs.rows]


# --------------------------------------------------------------------------- controls


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


# --------------------------------------------------------------------------- IRL-RLHF helpers


def test_gain_ratio_point_and_bootstrap_interval():
    from lfp_mech.irl.policies import gain_ratio

    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 0.1, 200)
    true = base + 2.0
    irl = base + 1.0
    out = gain_ratio(base, true, irl, n_boot=500)
    assert out["gain_ratio"] == pytest.approx(0.5)
    assert out["gain_ratio_ci95"][0] <= 0.5 <= out["gain_ratio_ci95"][1]
    assert out["gain"] == pytest.approx(1.0) and out["gain_true_reward_policy"] == pytest.approx(
        2.0
    )


def test_monitored_reward_records_the_true_reward_without_changing_the_trained_one():
    from lfp_mech.irl.policies import MonitoredReward

    monitored = MonitoredReward(lambda t: torch.ones(len(t)), marker_reward)
    out = monitored(["a zebra", "a cat"])
    assert torch.equal(out, torch.ones(2))
    assert monitored.rows == [{"call": 1, "irl_reward_mean": 1.0, "true_reward_mean": 0.0}]
