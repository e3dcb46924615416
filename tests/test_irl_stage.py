"""The IRL experiment, IRL-RLHF, the toxicity task, the stage and its results, on tiny models."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from irl_helpers import small_config

from lfp_mech.errors import ConfigError
from lfp_mech.irl import (
    IRLConfig,
    IRLResults,
    RewardModel,
    get_task,
    load_reward_model,
    save_reward_model,
    task_texts,
)
from lfp_mech.irl import demonstrations as demonstrations_module
from lfp_mech.irl import stage as irl_stage
from lfp_mech.irl import toxicity as toxicity_module
from lfp_mech.irl.demonstrations import generate_completions, generate_demonstrations
from lfp_mech.irl.experiment import run_task
from lfp_mech.irl.policies import irl_rlhf
from lfp_mech.irl.results import IRLTaskResults
from lfp_mech.models import build_tiny_model
from lfp_mech.stage_api import StageContext

TASK_FILES = (
    "demonstrations.jsonl",
    "irl_runs.csv",
    "irl_runs.md",
    "irl_runs.json",
    "summary.json",
    "heldout_scores.jsonl",
    "irl_heatmaps.png",
    "irl_seed_agreement.png",
    "irl_vs_true.png",
    "irl_epochs.csv",
    "validation_grid.csv",
    "reward_model/config.json",
    "reward_model/reward_model.safetensors",
)


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


# --------------------------------------------------------------------------- demonstrations


def test_generate_demonstrations_batched_greedy_and_cached(tmp_path, monkeypatch):
    expert = build_tiny_model("tiny-llama", seed=1)
    base = build_tiny_model("tiny-llama", seed=0)
    train = ["the film", "an old house by the river", "a"]
    test = ["blue stone", "the long night in the city"]
    config = IRLConfig(max_new_tokens=5, gen_batch_size=2)
    demos = generate_demonstrations(expert, base, train, test, config, cache_dir=tmp_path)
    assert demos.prompts["train"] == train
    assert demos.texts("test", "expert")[1].startswith("the long night in the city")
    assert demos.completions[("train", "expert")] != demos.completions[("train", "non_expert")]
    # left-padded batches give the same greedy completion as one prompt alone
    alone = generate_completions(*expert, [train[1]], max_new_tokens=5)
    assert alone[0] == demos.completions[("train", "expert")][1]
    rows = (tmp_path / "demonstrations.jsonl").read_text().splitlines()
    assert len(rows) == 2 * (3 + 2) and json.loads(rows[0])["role"] == "expert"

    def boom(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(demonstrations_module, "generate_completions", boom)
    again = generate_demonstrations(expert, base, train, test, config, cache_dir=tmp_path)
    assert again == demos
    with pytest.raises(AssertionError, match="cache"):  # other settings → regenerated
        generate_demonstrations(
            expert, base, train, test, IRLConfig(max_new_tokens=6), cache_dir=tmp_path
        )


def test_config_validation():
    default = IRLConfig()
    assert default.mode == "cached" and default.n_seeds >= 10
    with pytest.raises((ConfigError, TypeError)):  # TypeError: the test suite's type checker
        IRLConfig(mode="partial")
    with pytest.raises(ConfigError, match="irl.n_trainable_blocks = -1"):
        IRLConfig(n_trainable_blocks=-1)
    with pytest.raises(ConfigError, match="n_layers = 0: must be >= 1 or None"):
        IRLConfig(n_layers=0)
    with pytest.raises(ConfigError, match="lr"):
        IRLConfig(lr=0.0)
    with pytest.raises(ConfigError, match="n_seeds"):
        IRLConfig(n_seeds=0)
    with pytest.raises(ConfigError, match="toxicity_irl_rlhf_steps"):
        IRLConfig(toxicity_irl_rlhf_steps=-1)
    with pytest.raises(ConfigError, match="task"):
        get_task("helpfulness")


def test_validation_and_heldout_share_no_prompt_lexicon_word_or_template():
    """The VADER validation split (prompts, contrastive sentences) and the held-out one are
    disjoint in prompts, substituted lexicon words, neutral words and templates."""
    from lfp_mech.irl import split_triples, triple_vocabulary, validation_prompts
    from lfp_mech.irl.experiment import irl_prompts
    from lfp_mech.irl.tasks import policy_eval_prompts, task_prompts

    config = IRLConfig()
    train = task_prompts("reviews", "train", config.n_train_prompts, config.seed)
    test = task_prompts("reviews", "test", config.n_test_prompts, config.seed)
    val = validation_prompts("reviews", config.n_val_prompts, train, config.seed)
    assert len(val) == config.n_val_prompts
    assert not set(val) & set(test) and not set(val) & set(train)
    vocab = {split: triple_vocabulary(split) for split in ("validation", "test")}
    for kind in ("lexicon", "neutral", "templates"):
        assert vocab["validation"][kind] and vocab["test"][kind]
        assert not set(vocab["validation"][kind]) & set(vocab["test"][kind]), kind
    texts = {split: split_triples(split, 60) for split in ("validation", "test")}
    assert not set(texts["validation"]) & set(texts["test"])

    def parts(text: str, split: str) -> tuple[str, str]:
        for template in vocab[split]["templates"]:
            head, tail = template.split("{}")
            if text.startswith(head) and text.endswith(tail):
                return template, text[len(head) : len(text) - len(tail)]
        raise AssertionError(f"{text!r} matches no {split} template")

    words = vocab["validation"]["lexicon"] + vocab["validation"]["neutral"]
    for text in texts["validation"]:
        template, word = parts(text, "validation")
        assert word in words and template not in vocab["test"]["templates"]
    for text in texts["test"]:
        assert parts(text, "test")[1] not in words
    # the policies are compared on prompts that produced no IRL text
    used = irl_prompts("vader", config)
    assert set(train + val + test) <= set(used)
    assert not set(policy_eval_prompts("reviews", 128, used, 0)) & set(used)


def test_toxicity_splits_share_no_prompt():
    """The toxicity task's demonstration prompts (train / validation / held-out test; its
    sampled toxic texts complete the validation and test prompts themselves) are pairwise
    disjoint, and the policies are compared on prompts none of them uses."""
    from lfp_mech.irl.experiment import _prompts, irl_prompts
    from lfp_mech.irl.tasks import policy_eval_prompts
    from lfp_mech.irl.toxicity import task_config, task_spec

    config = task_config(IRLConfig())
    spec = task_spec(config)
    train, val, test = _prompts(spec, config)
    assert train and val and test
    assert len(set(train + val + test)) == len(train) + len(val) + len(test)
    used = irl_prompts(spec, config)
    assert set(train + val + test) <= set(used)
    compared = policy_eval_prompts(spec.prompt_set, config.rlhf_eval_prompts, used, config.seed)
    assert compared and not set(compared) & set(used)


def test_task_texts_other_texts():
    vader = task_texts("vader", 7, seed=0)
    assert len(vader) == 7 and len(set(vader)) == 7
    tox = task_texts("toxicity", 5, seed=0)
    assert len(tox) == 5
    assert task_texts("vader", 0) == []


# --------------------------------------------------------------------------- one experiment


@pytest.mark.parametrize("task", ["vader", "toxicity"])
def test_run_task_writes_every_artifact(tmp_path, tiny_checkpoints, task):
    out = tmp_path / "irl"
    config = small_config(n_seeds=2, n_epochs=2)
    summary = run_task(
        tiny_checkpoints["base"],
        tiny_checkpoints["expert"],
        task,
        out,
        config,
        probe_fn=lambda texts: torch.randn(len(texts)),
    )
    for name in TASK_FILES:
        assert (out / name).exists(), name
    assert summary["task"] == task and summary["n_runs"] == 2  # one row per seed
    assert summary["best_selected_on"] == "validation"
    assert 0.0 <= summary["acc_median"] <= 1.0
    full = json.loads((out / "summary.json").read_text())
    assert full["final_epoch"]["acc"]["median"] == summary["acc_median"]
    runs = pd.read_csv(out / "irl_runs.csv")
    assert len(runs) == 2  # the median is of the seeds' final-epoch accuracies
    assert summary["acc_median"] == pytest.approx(float(np.median(runs["acc"])))
    assert len((out / "irl_epochs.csv").read_text().splitlines()) == 1 + 2 * 2
    grid = (out / "validation_grid.csv").read_text().splitlines()
    assert len(grid) == 1 + 2 and "val_acc_median" in grid[0]  # sum / mean pooling
    assert full["selected_config"]["chosen_on"] == "validation"
    heldout = [json.loads(line) for line in (out / "heldout_scores.jsonl").read_text().splitlines()]
    n_other = 6 if task == "vader" else len(heldout) - 8  # toxicity: sampled toxic texts
    assert len(heldout) == 4 + 4 + n_other and 0 <= n_other <= 6
    assert "probe" in heldout[0] and "log_ratio" in heldout[0]
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
    again = run_task(tiny_checkpoints["base"], tiny_checkpoints["expert"], task, out, no_control)
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
    result = irl_rlhf(
        str(tiny_checkpoints["base"]),
        tmp_path / "rm",
        prompts,
        config,
        tmp_path / "irl_rlhf",
        true_policy=str(tiny_checkpoints["expert"]),
        task="toxicity",
        eval_prompts=prompts,
    )
    assert result["policy_dir"] == str(tmp_path / "irl_rlhf" / "policy")
    from safetensors.torch import load_file

    before = load_file(tiny_checkpoints["base"] / "model.safetensors")
    after = load_file(Path(result["policy_dir"]) / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[name], after[name]) for name in before)  # it was trained
    tuned = load_reward_model(tmp_path / "rm")  # the policy changed, the reward model did not
    assert torch.equal(tuned.score(prompts), rm.score(prompts))
    table = result["table"]
    assert [r["policy"] for r in table] == ["base", "RLHF (true reward)", "RLHF (IRL reward)"]
    assert {"mean_reward", "ci95_low", "welch_p", "irl_reward_mean", "toxicity_mean"} <= set(
        table[0]
    )
    assert all(0.0 <= r["toxicity_mean"] <= 1.0 for r in table)
    md = (tmp_path / "irl_rlhf" / "irl_rlhf.md").read_text()
    assert "irl_reward_mean" in md and "RLHF (IRL reward)" in md
    results = IRLResults(tmp_path)  # tmp_path stands for the irl stage folder here
    assert list(results.irl_rlhf()["policy"]) == [r["policy"] for r in table]
    assert list(results.irl_rlhf_train_log()["step"]) == [1, 2]
    assert len(results.irl_rlhf_curve_figure().axes) == 2


# --------------------------------------------------------------------------- the stage


def _context(tmp_path, tiny_checkpoints, **options) -> StageContext:
    """A stage context whose rlhf stage "tuned" the base into the expert checkpoint."""
    run_dir = tmp_path / "run"
    (run_dir / "rlhf").mkdir(parents=True)
    (run_dir / "rlhf" / "policy").symlink_to(tiny_checkpoints["expert"])
    config = SimpleNamespace(
        model=str(tiny_checkpoints["base"]),
        seed=0,
        device="cpu",
        stages=SimpleNamespace(irl=small_config(**options)),
    )
    return StageContext(run_dir, "irl", config, {"stages": {}})


def test_stage_runs_the_tasks_and_results_read_them_back(tmp_path, tiny_checkpoints, monkeypatch):
    """stage.run with IRL-RLHF off and the toxicity expert already trained (the GRPO runs are
    tested above): every table and figure is readable through IRLResults."""
    monkeypatch.setattr(irl_stage, "ProbeEstimate", lambda ctx: lambda t: torch.randn(len(t)))
    monkeypatch.setattr(
        toxicity_module, "train_expert", lambda base, out, cfg: tiny_checkpoints["expert"]
    )
    ctx = _context(
        tmp_path, tiny_checkpoints, rlhf_steps=0, toxicity_irl_rlhf_steps=0, rlhf_eval_prompts=4
    )
    for stage in ("saes", "probes"):  # the probe estimate is used when both stages ran
        (ctx.run_dir / stage).mkdir()
        (ctx.run_dir / stage / "summary.json").write_text("{}")
    summary = irl_stage.run(ctx)
    assert summary["task"] == "vader" and summary["n_runs"] == 2  # one row per seed
    assert "irl_rlhf_true_reward" not in summary
    assert {"toxicity_acc_median", "toxicity_policy_toxicity"} <= set(summary)
    assert summary["toxicity_policy_toxicity"].startswith("base ")
    results = IRLResults(ctx.dir)
    assert results.exists and results.summary["acc_median"] == summary["acc_median"]
    assert results.tasks == ["vader", "toxicity"]
    vader = results.vader
    assert isinstance(vader, IRLTaskResults) and vader.task == "vader"
    assert len(vader.runs) == 2 and {"seed", "epoch", "acc", "spearman"} <= set(vader.runs)
    assert len(vader.epochs) == 4 and "val_auroc" in vader.epochs
    assert vader.validation_grid is not None and vader.validation_grid["selected"].sum() == 1
    assert {"balanced_acc_median", "auroc_median", "val_acc_median"} <= set(vader.headline())
    assert vader.final_epoch.loc["acc", "median"] == summary["acc_median"]
    assert vader.headline()["acc_median"] == summary["acc_median"]
    headline = vader.headline()  # the selected run's AUROC, its CI and p against chance
    for key in ("best_auroc", "best_auroc_ci95", "best_auroc_p_vs_chance"):
        np.testing.assert_equal(headline[key], summary[key])
    low, high = headline["best_auroc_ci95"]
    assert np.isnan(headline["best_auroc"]) or 0 <= low <= high <= 1
    assert len(vader.heldout_scores) == 4 + 4 + 6 and "probe" in vader.heldout_scores
    assert len(vader.demonstrations) == 2 * (4 + 4 + 4)  # train, validation, test prompts
    three_way = results.three_way()
    assert list(three_way["pair"]) == ["IRL vs true", "probe vs true", "IRL vs probe"]
    assert three_way[["pearson", "spearman", "kendall"]].abs().le(1).all().all()
    assert list(results.toxicity.three_way()["pair"]) == ["IRL vs true"]  # no probe there
    by_source = vader.accuracy_by_source()
    assert by_source["n"].to_dict() == {"expert_test": 4, "non_expert_test": 4, "other": 6}
    assert by_source["accuracy"].between(0, 1).all()
    controls = vader.controls()
    assert controls.loc["acc", "IRL, median over seeds"] == summary["acc_median"]
    assert "supervised ceiling" in controls and "expressed-lexicon bound" in controls
    by_source = vader.accuracy_by_source()
    assert list(by_source.index) == ["expert_test", "non_expert_test", "other"]
    assert list(by_source["n"]) == [4, 4, 6] and "log_ratio_accuracy" in by_source
    overall = (by_source["accuracy"] * by_source["n"]).sum() / by_source["n"].sum()
    assert overall == pytest.approx(vader.summary["best_run"]["acc"])
    assert (vader.three_way("other")["n"] == 6).all()
    controls = vader.controls()
    assert list(controls.index) == ["acc", "f1", "spearman", "kendall"]
    assert controls.loc["acc", "IRL, median over seeds"] == summary["acc_median"]
    assert "supervised ceiling" in controls
    assert results.irl_rlhf() is None
    assert results.irl_rlhf_train_log() is None and results.irl_rlhf_curve_figure() is None
    policies = results.policy_table("toxicity")
    assert list(policies["policy"]) == ["base", "RLHF (true reward)"]
    assert "toxicity_mean" in policies
    assert {"irl_heatmaps", "irl_seed_agreement", "irl_vs_true"} <= set(vader.figures())
    assert len(vader.plot_seed_heatmaps().axes) >= 2
    assert len(vader.plot_three_way().axes) == 3
    rm = vader.load_reward_model()
    texts = list(vader.heldout_scores["text"][:3])
    expected = torch.tensor(vader.heldout_scores["irl_reward"][:3].to_numpy(), dtype=torch.float32)
    assert torch.allclose(rm.score(texts), expected, atol=1e-4)


# --------------------------------------------------------------------------- figures


def test_plots_return_figures(tmp_path):
    from lfp_mech.irl.plots import plot_seed_agreement, plot_seed_heatmaps, plot_three_way
    from lfp_mech.plotting import save_figure

    rows = [
        {"seed": s, "epoch": e, "acc": 0.7 + 0.01 * s, "spearman": 0.1 * e}
        for s in range(3)
        for e in (1, 2)
    ]
    fig = plot_seed_heatmaps(rows)
    assert len(fig.axes) >= 2
    save_figure(fig, tmp_path / "h.png")
    assert len(plot_seed_heatmaps(pd.DataFrame(rows)).axes) == len(fig.axes)  # a table works too
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
def test_run_task_on_smollm2_slice(tmp_path, smollm2_hf):
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
    summary = run_task(smollm2_hf, smollm2_hf, "vader", tmp_path, config)
    assert summary["n_runs"] == 2 and 0.0 <= summary["acc_median"] <= 1.0
    heldout = [json.loads(x) for x in (tmp_path / "heldout_scores.jsonl").read_text().splitlines()]
    loaded = load_reward_model(tmp_path / "reward_model")
    scores = loaded.score([h["text"] for h in heldout[:6]])
    assert torch.allclose(scores, torch.tensor([h["irl_reward"] for h in heldout[:6]]), atol=1e-3)


def test_jigsaw_toxicity_prompts_fail_early_with_the_offline_alternative(monkeypatch):
    """The hub path of the toxicity task: without the hub, one clear error before training."""
    from lfp_mech.errors import HubUnavailableError
    from lfp_mech.irl.toxicity import check_prompts_reachable, task_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = IRLConfig(toxicity_prompts="jigsaw")
    assert (
        task_spec(config).prompt_set == "jigsaw" and task_spec(IRLConfig()).prompt_set == "toxicity"
    )
    with pytest.raises(HubUnavailableError, match="'toxicity' shipped with lfp_mech"):
        check_prompts_reachable(config)
    check_prompts_reachable(IRLConfig(toxicity_rlhf_steps=0, toxicity_prompts="jigsaw"))  # unused
