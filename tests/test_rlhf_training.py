"""The RLHF trainers on tiny-llama with TRL: GRPO/RLOO/DPO end to end, resume, budget, the stage.

TRL is imported by these tests only (the import costs 10–20 s once per session).
"""

import json
import math
import warnings

import pytest
import torch
from rlhf_helpers import PROMPTS, assert_loads_with_parity, e_reward, tiny_rl_config

from lfp_mech.models import load_hf_model
from lfp_mech.rlhf import (
    DPO_LOG_COLUMNS,
    RL_LOG_COLUMNS,
    DPOConfigLite,
    RLHFResults,
    make_preference_pairs,
    read_train_log,
    train_dpo,
    train_policy,
)


def test_grpo_smoke_trains_logs_and_loads_into_transformer_lens(tiny_hf, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = train_policy(tiny_hf, e_reward, PROMPTS, tiny_rl_config(), tmp_path)
    # TRL's per-step deprecation warning from transformers is silenced (it repeated every step)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
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


def test_stage_run_rloo_writes_every_artifact(tmp_path):
    from lfp_mech.rlhf.stage import run
    from lfp_mech.runner.config import RunConfig, StagesConfig
    from lfp_mech.stage_api import StageContext

    options = tiny_rl_config(method="rloo", n_train_prompts=8, n_eval_prompts=6, max_steps=1)
    config = RunConfig(model="tiny-llama", stages=StagesConfig(rlhf=options))
    summary = run(StageContext(tmp_path, "rlhf", config, manifest={"stages": {}}))
    out = tmp_path / "rlhf"
    for name in ("policy", "train_log.csv", "reward_curve.png", "eval.csv", "eval.md",
                 "completions.jsonl", "summary.json"):  # fmt: skip
        assert (out / name).exists(), name
    assert summary["method"] == "rloo" and summary["steps"] == 1
    assert summary["n_eval_prompts"] == 6 and summary["n_train_prompts"] == 8
    assert summary["reward_gain"] == pytest.approx(summary["tuned_reward"] - summary["base_reward"])
    assert "config" not in summary

    results = RLHFResults(out)
    assert results.summary["config"]["method"] == "rloo"
    assert list(results.eval["policy"]) == ["base", "tuned"]
    assert results.eval["mean_reward"].tolist() == pytest.approx(
        [summary["base_reward"], summary["tuned_reward"]]
    )
    assert len(results.completion_texts("tuned")) == len(results.completion_texts("base")) == 6
    assert results.train_log["step"].tolist() == [1]
    assert summary["final_train_reward"] == pytest.approx(results.train_log["reward_mean"][0])
    assert_loads_with_parity(results.policy_dir)
    assert results.load_policy(hooked=True).cfg.n_layers == 2


def test_mini_batches_update_several_times_per_rollout_batch(tiny_hf, tmp_path):
    """PPO-style mini-batches: 8 rollouts per generation feed 8 / 4 = 2 optimizer updates, so two
    steps sample once (one reward call of 8 completions) where plain GRPO would sample twice."""
    calls: list[int] = []

    def counting_reward(texts):
        calls.append(len(texts))
        return e_reward(texts)

    config = tiny_rl_config(batch_size=8, mini_batch_size=4, max_steps=2)
    train_policy(tiny_hf, counting_reward, PROMPTS, config, tmp_path / "mini")
    assert calls == [8]
    calls.clear()
    train_policy(tiny_hf, counting_reward, PROMPTS, tiny_rl_config(batch_size=8), tmp_path / "full")
    assert calls == [8, 8]


def test_mini_batch_must_divide_the_batch():
    with pytest.raises(ValueError, match="mini_batch_size"):
        tiny_rl_config(batch_size=8, mini_batch_size=3)
