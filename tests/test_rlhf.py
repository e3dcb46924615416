"""Tests of the RLHF stage on tiny-llama: GRPO/RLOO/DPO end to end, resume, budget, evaluation.

TRL is imported by the four training tests only (the import costs 10–20 s once per session).
"""

import json
import math

import pytest
import torch

from lfp_mech.errors import ConfigError, HubUnavailableError
from lfp_mech.models import load_hf_model, load_model, logprob_parity, parity_tokens
from lfp_mech.rlhf import (
    DPO_LOG_COLUMNS,
    RL_LOG_COLUMNS,
    DPOConfigLite,
    RLHFConfig,
    compare_policies,
    distinct_n,
    evaluate_policy,
    load_preference_pairs,
    make_preference_pairs,
    read_train_log,
    run_rlhf_stage,
    train_dpo,
    train_policy,
)

PROMPTS = ["The film", "A movie about", "I saw it on", "Once upon a", "The plot of", "Our hero"]


def e_reward(texts):
    """A tiny local reward: how many letters 'e' the text has (varies on random-model output)."""
    return torch.tensor([t.count("e") / 5.0 for t in texts], dtype=torch.float32)


def tiny_rl_config(**overrides) -> RLHFConfig:
    base = dict(
        batch_size=4, num_generations=2, min_new_tokens=2, max_new_tokens=8, max_steps=2,
        save_steps=1, budget_minutes=None, n_eval_prompts=4, eval_batch_size=4,
    )  # fmt: skip
    return RLHFConfig(**base | overrides)


def assert_loads_with_parity(policy_dir) -> None:
    hf, tokenizer = load_hf_model(policy_dir)
    hooked = load_model(policy_dir)
    assert logprob_parity(hf, hooked, parity_tokens(tokenizer)) < 1e-3


# --------------------------------------------------------------------------- no TRL


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


def test_config_validation_names_the_problem():
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        RLHFConfig(batch_size=10, num_generations=4)
    with pytest.raises(ConfigError, match="unknown method"):
        RLHFConfig(method="ppo")
    with pytest.raises(ConfigError, match="min_new_tokens"):
        RLHFConfig(min_new_tokens=30, max_new_tokens=20)
    with pytest.raises(ConfigError, match="method='dpo'"):
        RLHFConfig(task="hh")
    with pytest.raises(ConfigError, match="learning_rate"):
        DPOConfigLite(learning_rate=0.0)


def test_defaults_are_the_verified_cpu_recipe():
    config = RLHFConfig()
    assert (config.method, config.learning_rate, config.beta) == ("grpo", 5e-5, 0.04)
    assert (config.batch_size, config.num_generations) == (16, 8)
    assert (config.min_new_tokens, config.max_new_tokens) == (8, 20)
    assert config.repetition_penalty > 1.0
    # max_steps ends training (reproducible); the budget is a safety cap above its ~9 min on 2 cores
    assert config.max_steps == 70
    assert config.budget_minutes is not None and 10 < config.budget_minutes <= 20
    assert config.n_eval_prompts >= 256


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


def test_compare_policies_writes_csv_and_markdown(tiny_hf, tmp_path):
    kwargs = dict(n_new_tokens=6, min_new_tokens=2, batch_size=6)
    base = evaluate_policy(tiny_hf, PROMPTS, e_reward, name="base", seed=0, **kwargs)
    tuned = evaluate_policy(tiny_hf, PROMPTS, e_reward, name="tuned", seed=1, **kwargs)
    rows = compare_policies([base, tuned], tmp_path)
    assert [r["policy"] for r in rows] == ["base", "tuned"]
    assert rows[1]["delta_vs_base"] == pytest.approx(tuned.mean_reward - base.mean_reward)
    assert math.isnan(rows[0]["welch_p"]) and 0.0 <= rows[1]["welch_p"] <= 1.0
    csv_lines = (tmp_path / "eval.csv").read_text().splitlines()
    assert (
        csv_lines[0].startswith("policy,n,mean_reward,ci95_low,ci95_high") and len(csv_lines) == 3
    )
    assert "| tuned |" in (tmp_path / "eval.md").read_text()


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


def test_reward_curve_figure_from_log(tmp_path):
    from lfp_mech.plots import save_figure
    from lfp_mech.plots.rlhf import reward_curve_figure
    from lfp_mech.rlhf import write_train_log

    rows = [
        {"step": s, "reward_mean": 0.1 * s, "reward_std": 0.5, "distinct_2": 0.9 - 0.01 * s}
        for s in range(1, 6)
    ]
    path = write_train_log(tmp_path / "log.csv", rows, RL_LOG_COLUMNS)
    fig = reward_curve_figure(path, distinct2_threshold=0.6)
    assert len(fig.axes) == 2  # reward axis and the distinct-2 twin
    assert list(fig.axes[0].lines[0].get_ydata()) == pytest.approx([0.1 * s for s in range(1, 6)])
    assert save_figure(fig, tmp_path / "curve.png").stat().st_size > 1000


# --------------------------------------------------------------------------- TRL (tiny-llama)


def test_grpo_smoke_trains_logs_and_loads_into_transformer_lens(tiny_hf, tmp_path):
    policy = train_policy(tiny_hf, e_reward, PROMPTS, tiny_rl_config(), tmp_path)
    assert policy == tmp_path / "policy"
    assert (policy / "model.safetensors").exists() and (policy / "tokenizer.json").exists()
    assert not list(policy.glob("*.bin")) and not list(policy.glob("*.pt"))  # no pickles
    assert_loads_with_parity(policy)
    base_weights = tiny_hf[0].state_dict()
    tuned_weights = load_hf_model(policy)[0].state_dict()
    assert any(not torch.equal(base_weights[k], tuned_weights[k]) for k in base_weights)

    header = (tmp_path / "train_log.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == RL_LOG_COLUMNS
    log = read_train_log(tmp_path / "train_log.csv")
    assert [r["step"] for r in log] == [1.0, 2.0]
    for row in log:
        assert not math.isnan(row["reward_mean"]) and not math.isnan(row["kl"])
        assert 2 <= row["completion_length"] <= 8 and 0.0 <= row["distinct_2"] <= 1.0
    assert log[1]["elapsed_s"] >= log[0]["elapsed_s"] > 0
    meta = json.loads((policy / "lfp_mech_training.json").read_text())
    assert meta["steps"] == 2 and meta["stop_reason"] == "max_steps"


def test_budget_stop_saves_then_rerun_resumes_from_checkpoint(tiny_hf, tmp_path, caplog):
    config = tiny_rl_config(
        max_steps=3, budget_minutes=1e-6, distinct2_threshold=1.0, keep_checkpoints=True
    )
    with caplog.at_level("WARNING", logger="lfp_mech.rlhf"):
        policy = train_policy(tiny_hf, e_reward, PROMPTS, config, tmp_path)
    assert "budget" in caplog.text
    meta = json.loads((policy / "lfp_mech_training.json").read_text())
    assert (meta["steps"], meta["stop_reason"]) == (1, "budget")  # stopped after one step
    assert (tmp_path / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists()
    assert_loads_with_parity(policy)
    first_row = read_train_log(tmp_path / "train_log.csv")[0]

    resumed = train_policy(tiny_hf, e_reward, PROMPTS, tiny_rl_config(max_steps=3), tmp_path)
    meta = json.loads((resumed / "lfp_mech_training.json").read_text())
    assert (meta["steps"], meta["stop_reason"]) == (3, "max_steps")
    log = read_train_log(tmp_path / "train_log.csv")
    assert [r["step"] for r in log] == [1.0, 2.0, 3.0]
    assert log[0] == first_row  # step 1 was kept, not redone
    assert log[1]["elapsed_s"] > first_row["elapsed_s"]  # the clock continues across resumes


def test_dpo_smoke_offline_pairs(tiny_hf, tmp_path):
    pairs = make_preference_pairs(tiny_hf, PROMPTS, e_reward, 4, n_new_tokens=8, batch_size=8)
    policy = train_dpo(tiny_hf, pairs, DPOConfigLite(batch_size=2, max_steps=2), tmp_path)
    assert_loads_with_parity(policy)
    header = (tmp_path / "train_log.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == DPO_LOG_COLUMNS
    log = read_train_log(tmp_path / "train_log.csv")
    assert len(log) == 2 and log[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)


def test_run_rlhf_stage_rloo_writes_every_artifact(tmp_path):
    config = tiny_rl_config(method="rloo", n_train_prompts=8, n_eval_prompts=6, max_steps=1)
    summary = run_rlhf_stage("tiny-llama", tmp_path, config)
    for name in ("policy", "train_log.csv", "reward_curve.png", "eval.csv", "eval.md",
                 "completions.jsonl", "summary.json"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    assert summary["method"] == "rloo" and summary["steps"] == 1
    assert summary["n_eval_prompts"] == 6 and summary["n_train_prompts"] == 8
    assert summary["reward_gain"] == pytest.approx(summary["tuned_reward"] - summary["base_reward"])
    samples = [
        json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()
    ]
    assert sorted({s["policy"] for s in samples}) == ["base", "tuned"] and len(samples) == 12
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["method"] == "rloo"
    assert_loads_with_parity(tmp_path / "policy")
