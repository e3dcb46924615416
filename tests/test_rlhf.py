"""Tests of the RLHF package without TRL: distinct-n, config, evaluation, pairs, plots, results.

The TRL trainers and the stage end to end are in ``test_rlhf_training.py``.
"""

import json
import math
import subprocess
import sys

import pytest
from rlhf_helpers import PROMPTS, e_reward

from lfp_mech._io import read_json, write_json, write_jsonl
from lfp_mech.errors import ConfigError, HubUnavailableError, LfpMechError
from lfp_mech.rlhf import (
    DPO_LOG_COLUMNS,
    RL_LOG_COLUMNS,
    DPOConfigLite,
    RLHFConfig,
    RLHFResults,
    compare_policies,
    distinct_n,
    dpo_curve_figure,
    evaluate_policy,
    load_preference_pairs,
    make_preference_pairs,
    read_train_log,
    reward_curve_figure,
    write_train_log,
)
from lfp_mech.rlhf.config import TASKS
from lfp_mech.rlhf.tasks import task_prompts


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["a b c", "a b d"], 3 / 4),  # (a,b) twice, (b,c), (b,d)
        (["great great great great"], 1 / 3),  # three (great, great)
        (["Great great GREAT!"], 2 / 3),  # case-folded; "!" is a word: (great,great)x2, (great,!)
        (["one two", "three four"], 1.0),  # n-grams never span two texts
        (["single", ""], 0.0),  # no bigram at all: degenerate
    ],
)
def test_distinct_2_hand_built(texts, expected):
    assert distinct_n(texts, 2) == pytest.approx(expected)


def test_distinct_1_counts_words():
    assert distinct_n(["a a b"], 1) == pytest.approx(2 / 3)


def test_config_validation_names_the_option():
    with pytest.raises(ConfigError, match="rlhf.batch_size = 10: .*multiple of num_generations"):
        RLHFConfig(batch_size=10, num_generations=4)
    config = RLHFConfig()  # (under the tests' type checker, RLHFConfig(method="ppo") fails earlier)
    config.method = "ppo"
    with pytest.raises(ConfigError, match="rlhf.method = 'ppo': must be one of"):
        config.__post_init__()
    with pytest.raises(ConfigError, match="rlhf.min_new_tokens"):
        RLHFConfig(min_new_tokens=30, max_new_tokens=20)
    with pytest.raises(ConfigError, match="method='dpo'"):
        RLHFConfig(task="hh")
    with pytest.raises(ConfigError, match="dpo.learning_rate"):
        DPOConfigLite(learning_rate=0.0)


def test_defaults_are_the_verified_cpu_recipe():
    config = RLHFConfig()
    assert (config.method, config.learning_rate, config.beta) == ("grpo", 5e-5, 0.04)
    assert (config.batch_size, config.num_generations) == (16, 8)
    assert (config.min_new_tokens, config.max_new_tokens) == (8, 20)
    assert config.repetition_penalty > 1.0
    # max_steps ends training (reproducible); the budget is a safety cap far above its ~15 min on
    # 2 idle cores, so that a loaded machine does not end training early
    assert config.max_steps == 70
    assert config.budget_minutes is not None and 30 <= config.budget_minutes <= 45
    assert config.n_eval_prompts >= 256
    assert config.to_dpo_config().max_length == 44 + config.max_new_tokens


def test_package_import_is_light():
    """Config errors must come fast: importing the package and its config loads no ML library."""
    code = (
        "import sys, lfp_mech.rlhf, lfp_mech.rlhf.config, lfp_mech.divergence.config\n"
        "heavy = {'torch', 'transformers', 'trl', 'transformer_lens', 'sae_lens'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_task_prompts_draw_the_configured_numbers():
    config = RLHFConfig(n_train_prompts=8, n_eval_prompts=6, seed=3)
    train, test = task_prompts(config, "train"), task_prompts(config, "test")
    assert len(train) == 8 and len(test) == 6
    assert train == task_prompts(RLHFConfig(n_train_prompts=8, seed=3), "train")
    assert train != task_prompts(RLHFConfig(n_train_prompts=8, seed=4), "train")
    assert set(TASKS) == {"vader", "toxicity", "hh"}


def test_evaluate_policy_is_deterministic_and_ci_contains_mean(tiny_hf):
    kwargs = dict(n_new_tokens=10, min_new_tokens=4, batch_size=4, seed=3)
    first = evaluate_policy(tiny_hf, PROMPTS, e_reward, name="base", **kwargs)
    second = evaluate_policy(tiny_hf, PROMPTS, e_reward, name="base", **kwargs)
    other_seed = evaluate_policy(tiny_hf, PROMPTS, e_reward, **kwargs | {"seed": 4})
    assert first.completions == second.completions and first.rewards == second.rewards
    assert first.completions != other_seed.completions
    assert first.n == len(PROMPTS) == len(first.completions)
    assert first.ci_low < first.mean_reward < first.ci_high
    assert first.mean_reward == pytest.approx(sum(first.rewards) / first.n)
    assert first.mean_reward == pytest.approx(
        e_reward([p + c for p, c in zip(PROMPTS, first.completions, strict=True)]).mean().item()
    )
    assert all(4 <= n <= 10 for n in first.lengths)
    assert 0.0 <= first.distinct_2 <= 1.0
    assert json.dumps(first.summary())  # JSON-able headline numbers


def test_reward_returning_the_wrong_count_is_a_clear_error(tiny_hf):
    with pytest.raises(LfpMechError, match="one score per text"):
        evaluate_policy(tiny_hf, PROMPTS, lambda texts: [1.0], n_new_tokens=4, min_new_tokens=1)


def test_compare_policies_writes_the_table(tiny_hf, tmp_path):
    kwargs = dict(n_new_tokens=6, min_new_tokens=2, batch_size=6)
    base = evaluate_policy(tiny_hf, PROMPTS, e_reward, name="base", seed=0, **kwargs)
    tuned = evaluate_policy(tiny_hf, PROMPTS, e_reward, name="tuned", seed=1, **kwargs)
    rows = compare_policies([base, tuned], tmp_path)
    assert [r["policy"] for r in rows] == ["base", "tuned"]
    assert rows[1]["delta_vs_base"] == pytest.approx(tuned.mean_reward - base.mean_reward)
    assert math.isnan(rows[0]["welch_p"]) and 0.0 <= rows[1]["welch_p"] <= 1.0
    csv_lines = (tmp_path / "eval.csv").read_text().splitlines()
    assert csv_lines[0].startswith("policy,n,mean_reward,ci95_low,ci95_high")
    assert len(csv_lines) == 3
    assert "| tuned |" in (tmp_path / "eval.md").read_text()
    assert read_json(tmp_path / "eval.json")[0]["welch_p"] is None  # NaN is null in JSON


def test_preference_pairs_prefer_higher_reward(tiny_hf):
    pairs = make_preference_pairs(tiny_hf, PROMPTS, e_reward, 4, n_new_tokens=8, batch_size=8)
    assert pairs and {p["prompt"] for p in pairs} <= set(PROMPTS)
    for pair in pairs:
        chosen, rejected = e_reward(
            [pair["prompt"] + pair["chosen"], pair["prompt"] + pair["rejected"]]
        )
        assert chosen.item() == pytest.approx(pair["chosen_reward"])
        assert chosen.item() > rejected.item()


def test_hub_preference_data_offline_names_the_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="make_preference_pairs"):
        load_preference_pairs("hh-rlhf")
    with pytest.raises(ConfigError, match="offline"):
        load_preference_pairs("imdb")


def test_train_log_round_trip(tmp_path):
    rows = [{"step": 1.0, "loss": 0.5, "elapsed_s": 1.25}, {"step": 2.0, "elapsed_s": 2.5}]
    path = write_train_log(tmp_path / "train_log.csv", rows, DPO_LOG_COLUMNS)
    assert path.read_text().splitlines()[0].split(",") == list(DPO_LOG_COLUMNS)
    back = read_train_log(path)
    assert [r["step"] for r in back] == [1.0, 2.0] and back[0]["loss"] == 0.5
    assert math.isnan(back[1]["loss"]) and back[1]["elapsed_s"] == 2.5  # missing cells are NaN
    assert read_train_log(tmp_path / "absent.csv") == []


def _log_rows():
    return [
        {"step": s, "reward_mean": 0.1 * s, "reward_std": 0.5, "distinct_2": 0.9 - 0.01 * s}
        for s in range(1, 6)
    ]


def test_reward_curve_figure_from_rows_and_dataframe(tmp_path):
    import pandas as pd

    from lfp_mech.plotting import save_figure

    for log in (_log_rows(), pd.DataFrame(_log_rows())):
        fig = reward_curve_figure(log, distinct2_threshold=0.6)
        assert len(fig.axes) == 2  # reward axis and the distinct-2 twin
        expected = [0.1 * s for s in range(1, 6)]
        assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx(expected)
    assert save_figure(fig, tmp_path / "curve.png").stat().st_size > 1000


def test_dpo_curve_figure_has_loss_and_margins():
    rows = [{"step": s, "loss": 0.69 - 0.1 * s, "reward_margin": 0.1 * s} for s in range(1, 4)]
    fig = dpo_curve_figure(rows)
    assert len(fig.axes) == 2
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx([0.59, 0.49, 0.39])


def _fake_rlhf_folder(path):
    """An rlhf stage folder as stage.py writes it, without training anything."""
    (path / "policy").mkdir(parents=True)
    write_json(path / "policy" / "lfp_mech_training.json", {"steps": 2, "kind": "dpo"})
    write_train_log(path / "train_log.csv", _log_rows(), RL_LOG_COLUMNS)
    samples = [
        {"policy": policy, "prompt": f"P{i} ", "completion": f"{policy} {i}", "reward": 0.1 * i}
        for policy in ("base", "tuned")
        for i in range(3)
    ]
    write_jsonl(path / "completions.jsonl", samples)
    config = {"distinct2_threshold": 0.6}
    write_json(path / "summary.json", {"method": "grpo", "steps": 5, "config": config})
    return path


def test_results_read_the_stage_folder(tmp_path):
    results = RLHFResults(_fake_rlhf_folder(tmp_path / "rlhf"))
    assert results.exists and results.policy_dir == tmp_path / "rlhf" / "policy"
    assert results.training["steps"] == 2
    assert results.completion_texts() == ["P0 tuned 0", "P1 tuned 1", "P2 tuned 2"]
    assert results.completion_texts("base")[0] == "P0 base 0"
    with pytest.raises(LfpMechError, match="policies there: base, tuned"):
        results.completion_texts("irl")
    assert list(results.completions["policy"]) == ["base"] * 3 + ["tuned"] * 3
    assert list(results.train_log["step"]) == [1, 2, 3, 4, 5]
    assert len(results.reward_curve_figure().axes) == 2
    with pytest.raises(LfpMechError, match="has the 'rlhf' stage run"):
        results.eval  # noqa: B018 (the property reads eval.csv, which this folder lacks)


def test_completion_pairs_prefer_the_higher_reward(tmp_path):
    path = _fake_rlhf_folder(tmp_path / "rlhf")
    rewards = {"base": [0.5, 0.2, 0.0], "tuned": [0.1, 0.9, 0.0]}  # prompt 2 is a tie
    samples = [
        {"policy": policy, "prompt": f"P{i} ", "completion": f"{policy} {i}", "reward": r}
        for policy, values in rewards.items()
        for i, r in enumerate(values)
    ]
    write_jsonl(path / "completions.jsonl", samples)
    pairs = RLHFResults(path).completion_pairs()
    assert list(pairs["prompt"]) == ["P0 ", "P1 "]
    assert list(pairs["chosen"]) == ["base 0", "tuned 1"]
    assert list(pairs["rejected"]) == ["tuned 0", "base 1"]
    assert list(pairs["chosen_reward"]) == [0.5, 0.9]
    assert list(pairs["rejected_reward"]) == [0.1, 0.2]
    assert list(pairs["chosen_policy"]) == ["base", "tuned"]
