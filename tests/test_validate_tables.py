"""Tables 6 and 7 and their parts: matched random controls, activation frequencies, the
ablation table, and which features get validated."""

import logging
import math

import pytest
import torch
from validate_helpers import HOOK, length_reward, make_sae

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.validate import (
    ValidateConfig,
    ablation_table,
    activation_frequency,
    choose_features,
    frequency_rows,
    matched_random_features,
)
from lfp_mech.validate.autointerp.scan import FeatureScan
from lfp_mech.validate.features import high_mmcs_by_hook, standardized_weights
from lfp_mech.validate.table import t_interval, truncate_prompts


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


def test_ablation_table_rows_and_cis(tiny_model, tiny_hf):
    from lfp_mech import hooked_from_hf

    other = hooked_from_hf(*tiny_hf)
    sae = make_sae(gain=4.0)
    freqs = torch.linspace(0, 1, 128)
    task_ids = list(range(0, 128, 2))  # half the dictionary: enough to change what is written
    result = ablation_table(
        {"base": other, "tuned": tiny_model},
        {HOOK: sae},
        {HOOK: task_ids},
        length_reward,
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
    assert len(random_ids) == 64 and set(random_ids).isdisjoint(task_ids)
    for r in result.rows:
        assert r["n"] == 6
        if not math.isnan(r["ci_low"]):
            assert r["ci_low"] <= r["mean_reward"] <= r["ci_high"]
        if r["condition"] == "clean":
            assert r["delta_vs_clean"] == 0.0
    tuned = result.completions["tuned"]
    assert len(tuned["task"]) == 6
    # same prompts and seeds in every condition: the ablation, not the draw, changes the texts
    assert tuned["task"] != tuned["clean"] and tuned["random"] != tuned["clean"]
    with pytest.raises(ConfigError, match="freqs"):
        ablation_table({"m": tiny_model}, {HOOK: sae}, {HOOK: [1]}, length_reward, ["a"])


def _scan(frequency: torch.Tensor) -> FeatureScan:
    """A corpus scan with the given frequencies and no top contexts."""
    d_sae = frequency.numel()
    no_examples = torch.zeros((0, 1), dtype=torch.long)
    return FeatureScan(
        hook_name=HOOK,
        feature_ids=torch.zeros(0, dtype=torch.long),
        values=torch.zeros((0, 1)),
        text_index=no_examples,
        position=no_examples,
        context_acts=torch.zeros((0, 1, 3)),
        window=(1, 1),
        frequency=frequency,
        frequency_selected=torch.zeros(d_sae),
        mean_activation=torch.zeros(d_sae),
        n_tokens=10,
        n_selected=0,
    )


def test_table7_without_selected_probe_inputs_says_so(caplog):
    scans = {HOOK: _scan(frequency=torch.full((8,), 0.5))}
    acts = {HOOK: torch.ones(4, 8)}
    predictions = torch.tensor([-4.0, -3.5, 2.9, 3.0])  # nothing above 3: no fallback
    config = ValidateConfig()
    with caplog.at_level(logging.WARNING, logger="lfp_mech.validate.frequency"):
        rows = frequency_rows(scans, {HOOK: [1, 2]}, {}, config, acts, predictions)
    assert "none of the 4 probe inputs has predicted delta > 3" in caplog.text
    assert [r["group"] for r in rows] == ["chosen", "all features"]
    for row in rows:
        assert row["source"] == "probe inputs" and row["n_inputs"] == 0
        assert row["inputs"] == "probe inputs with predicted delta > 3: 0 of 4"
        assert math.isnan(row["active_share"]) and math.isnan(row["ratio_to_average"])
        assert row["active_share_all_inputs"] == 1.0
    with pytest.raises(ConfigError, match="no features for"):
        frequency_rows(scans, {}, {}, config, {"other": acts[HOOK]}, predictions)
    with pytest.raises(ConfigError, match="shape"):
        frequency_rows(scans, {}, {}, config, {HOOK: torch.ones(4, 9)}, predictions)


def test_table7_ratio_has_a_bootstrap_ci_over_the_selected_inputs():
    generator = torch.Generator().manual_seed(0)
    acts = (torch.rand(60, 8, generator=generator) < 0.2).float()
    acts[:, 1] = 1.0  # the task-related feature fires on every input
    predictions = torch.linspace(-4, 4, 60)
    scans = {HOOK: _scan(frequency=torch.full((8,), 0.5))}
    rows = frequency_rows(
        scans, {HOOK: [1, 2]}, {HOOK: [1]}, ValidateConfig(), {HOOK: acts}, predictions
    )
    by_group = {r["group"]: r for r in rows}
    task = by_group["task-related"]
    assert task["n_inputs"] == int((predictions > 3).sum())
    assert task["ratio_ci_low"] <= task["ratio_to_average"] <= task["ratio_ci_high"]
    assert task["ratio_ci_low"] > 1.5  # clearly above the average feature
    assert by_group["all features"]["ratio_to_average"] == pytest.approx(1.0)
    corpus = frequency_rows(scans, {HOOK: [1]}, {}, ValidateConfig())
    assert all(math.isnan(r["ratio_ci_low"]) for r in corpus)


def test_t_interval_edge_cases():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0], 0.95)
    assert mean == 2.0 and lo < 2.0 < hi
    assert hi - mean == pytest.approx(4.302653 * (1 / math.sqrt(3)), rel=1e-5)  # t_{0.975, 2}
    assert t_interval([2.0, 2.0], 0.95) == (2.0, 2.0, 2.0)
    one = t_interval([5.0], 0.95)
    assert one[0] == 5.0 and math.isnan(one[1]) and math.isnan(one[2])


def test_truncate_prompts_keeps_short_prompts_and_cuts_long_ones(tiny_model):
    tokenizer = tiny_model.tokenizer
    long = "the film was long and slow and then it ended with a song"
    short, cut = truncate_prompts(tiny_model, ["A film", long], 4)
    assert short == "A film"
    assert cut == tokenizer.decode(tokenizer(long, add_special_tokens=False).input_ids[:4])
    assert long.startswith(cut) and len(cut) < len(long)


def test_choose_features_high_mmcs_and_largest_probe_weights():
    h0, h1 = "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"
    high = high_mmcs_by_hook(
        {
            "1": {"hook_name": h1, "top_features": [7, 3, 5], "mean_mmcs": 0.4},
            "0": {"hook_name": h0, "top_features": [2, 0, 1]},
        }
    )
    assert high == {h1: [7, 3, 5], h0: [2, 0, 1]}  # the file's order
    # the probe reads A_concat = [block 0's 4 features, block 1's 6 features]
    weight = torch.tensor([0.1, -0.9, 0.0, 0.2, 0.0, 0.3, -0.5, 0.0, 0.0, 0.05])
    choice = choose_features(high, weight, {h1: 6, h0: 4}, n_per_hook=2)
    assert list(choice) == [h1, h0]
    assert choice[h0] == [0, 1, 2, 3]  # MMCS: 2, 0 -- |weight|: 1 (0.9), 3 (0.2)
    assert choice[h1] == [1, 2, 3, 7]  # MMCS: 7, 3 -- |weight|: 2 (0.5), 1 (0.3)
    with pytest.raises(LfpMechError, match="10 weights but the SAEs have 9 features"):
        choose_features(high, weight, {h1: 5, h0: 4}, n_per_hook=2)


def test_standardized_weights_rank_by_effect_not_by_rarity():
    """A rarely active feature with a huge raw coefficient moves the prediction less than a busy
    feature with a moderate one: standardised weights (coef x std) rank the busy one first."""
    h0, h1 = "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"
    generator = torch.Generator().manual_seed(0)
    busy = torch.rand(200, 3, generator=generator) * torch.tensor([2.0, 0.0, 1.0])
    rare = torch.zeros(200, 2)
    rare[0, 0] = 0.01  # active once, tiny
    features = {h1: rare, h0: busy}  # any order: concatenated in model order (h0, h1)
    weight = torch.tensor([0.5, 0.0, 0.1, 50.0, 0.0])
    std = torch.cat([busy.double().std(0), rare.double().std(0)])
    got = standardized_weights(weight, features)
    torch.testing.assert_close(got, weight.double() * std)
    assert got[1] == 0 and got[4] == 0  # constant features get 0
    assert int(weight.abs().argmax()) == 3 and int(got.abs().argmax()) == 0
    high = {h0: [], h1: []}
    assert choose_features(high, got, {h0: 3, h1: 2}, n_per_hook=1)[h0] == [0]
    with pytest.raises(LfpMechError, match="5 weights but its inputs have 3 features"):
        standardized_weights(weight, {h0: busy})


def test_validate_config_completions_give_a_0_1_ci_at_the_tuned_reward_sd():
    """The default n gives a 95% CI half-width of ~0.1 on a cell's mean at reward sd 1.1."""
    n = ValidateConfig().n_completions
    assert 1.96 * 1.1 / math.sqrt(n) == pytest.approx(0.1, abs=0.002)
    assert ValidateConfig().weight_selection == "standardized"


def test_predicted_delta_figure_counts_the_selected_inputs():
    from lfp_mech.validate import predicted_delta_figure

    predicted = torch.tensor([3.5, 4.0, -3.2, 0.1, 2.9, -4.0])
    label = torch.tensor([1.0, 1.0, -1.0, 1.0, -1.0, -1.0])
    fig = predicted_delta_figure(predicted, label, threshold=3.0)
    ax = fig.axes[0]
    assert ax.get_title() == "probe inputs: 2 of 6 above 3"
    assert sum(patch.get_height() for patch in ax.patches) == 6  # stacked: every input once
