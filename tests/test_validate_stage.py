"""The validate stage: run_validation on models in memory, run(ctx) on a run directory, what
ValidateResults reads back, and the config's checks."""

import csv
import json

import pytest
import torch
from sae_lens import SAE
from validate_helpers import HOOK, TEXTS, make_sae, small_validate_config

from lfp_mech.errors import ConfigError
from lfp_mech.validate import AutointerpConfig, ValidateConfig, ValidateResults, run_validation


def test_run_validation_writes_tables(tiny_model, tiny_hf, tmp_path):
    from lfp_mech import hooked_from_hf

    sae = make_sae(gain=3.0)
    sae_dir = tmp_path / "sae"
    sae.save_model(str(sae_dir))
    assert SAE.load_from_disk(str(sae_dir)).cfg.metadata.hook_name == HOOK
    config = small_validate_config(n_completions=4, max_new_tokens=5)
    summary = run_validation(
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
        for suffix in (".csv", ".md", ".json"):
            assert (out / f"{name}{suffix}").exists(), name + suffix
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
    _check_results(ValidateResults(out), summary, n_completions=4)


def _check_results(results: ValidateResults, summary: dict, n_completions: int) -> None:
    """ValidateResults reads back what the stage wrote."""
    assert results.exists and results.summary == json.loads(json.dumps(summary))
    assert list(results.descriptions["feature"]) == [1, 2, 3]
    ablation = results.ablation
    assert len(ablation) == 6 and set(ablation["condition"]) == {"clean", "task", "random"}
    cells = dict(
        zip(ablation["model"] + "/" + ablation["condition"], ablation["mean_reward"], strict=True)
    )
    assert cells == pytest.approx(summary["mean_reward"], abs=1e-4)
    assert set(results.activation_frequency["group"]) >= {"chosen", "all features"}
    assert results.ablated_set == summary["ablated_set"]
    ablated = results.ablated_features
    assert ablated["clean"] == {} and set(ablated["random"][HOOK]).isdisjoint({1, 2, 3})
    related = results.task_related_features()
    assert set(related.get(HOOK, [])) <= {1, 2, 3}
    assert sum(map(len, related.values())) == summary["n_task_related"]
    rewards = results.rewards
    assert len(rewards) == 6 * n_completions
    completions = results.completions
    assert set(completions.columns) >= {"model", "condition", "prompt", "completion", "reward"}
    assert len(completions) == 6 * min(n_completions, 8)
    contexts = results.top_contexts(HOOK, 1)
    assert set(contexts["feature"]) <= {1} and list(contexts["rank"]) == list(range(len(contexts)))
    assert results.feature_frequencies()[HOOK].shape == (128,)
    assert set(results.figures()) == {"ablation", "activation_frequency"}
    assert results.ablation_figure().axes and results.activation_frequency_figure().axes


def test_run_validation_table7_on_probe_inputs(tiny_model, tiny_hf, tmp_path):
    """Table 7 on the probe's inputs: those predicted with delta > 3 (signed, as in the paper)."""
    from lfp_mech import hooked_from_hf

    acts = torch.zeros(10, 128)
    acts[:, 5] = 1.0  # feature 5: active on every input
    acts[:3, 1] = 2.0  # feature 1: active on the three selected inputs only
    acts[4:6, 2] = 1.0  # feature 2: only on strongly *negative* predictions (not selected)
    predictions = torch.tensor([3.5, 4.0, 3.1, 3.0, -3.9, -4.0, 0.0, 1.0, 2.0, -1.0])
    config = small_validate_config(n_completions=2, max_new_tokens=3)
    summary = run_validation(
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
        run_validation(
            tiny_model, tiny_model, [], {}, [], [], tmp_path / "x", config, probe_acts={}
        )


def test_run_reads_earlier_stages_through_their_results(tiny_model, tmp_path, monkeypatch):
    """run(ctx): features chosen from the SAEs' high-MMCS list and the probe's weights, inputs
    read through the earlier stages' results classes (stubbed here: their files are theirs)."""
    from lfp_mech.activations.results import ActivationsResults
    from lfp_mech.probes.inputs import ProbeInputs
    from lfp_mech.probes.results import ProbesResults
    from lfp_mech.rlhf.results import RLHFResults
    from lfp_mech.runner.config import RunConfig, StagesConfig
    from lfp_mech.saes.results import SAEsResults
    from lfp_mech.stage_api import StageContext
    from lfp_mech.validate import stage

    sae = make_sae(gain=3.0)
    weight = torch.zeros(128)
    weight[[40, 41]] = torch.tensor([-2.0, 1.0])
    acts = torch.zeros(6, 128)
    acts[:2, 40] = 1.0
    acts[2:5, 41] = 1.0  # features are chosen by |weight x std over the probe inputs|
    acts[5, 90] = 0.01  # a big weight on a feature that barely varies is not chosen
    weight[90] = 50.0
    inputs = ProbeInputs(
        features={HOOK: acts},
        predicted_delta=torch.tensor([3.5, 3.2, 0.0, -1.0, 1.0, 2.0]),
        predicted_delta_raw=torch.zeros(6),
        label_delta=torch.zeros(6),
        words=["w"] * 6,
        texts=["t"] * 6,
    )
    high = {"1": {"hook_name": HOOK, "top_features": [7, 3, 5, 9]}}
    monkeypatch.setattr(SAEsResults, "load_saes", lambda self, size, device: {HOOK: sae})
    monkeypatch.setattr(SAEsResults, "high_mmcs_features", lambda self: high)
    monkeypatch.setattr(ProbesResults, "probe_weights", lambda self: weight)
    monkeypatch.setattr(ProbesResults, "probe_inputs", lambda self: inputs)
    monkeypatch.setattr(ActivationsResults, "heldout_texts", lambda self: TEXTS * 3)
    monkeypatch.setattr(RLHFResults, "policy_dir", property(lambda self: tiny_model))
    validate = small_validate_config(n_completions=2, max_new_tokens=3)
    validate.n_features_per_hook = 2
    config = RunConfig(model="tiny-llama", stages=StagesConfig(validate=validate))
    ctx = StageContext(tmp_path, "validate", config, {"stages": {}})
    summary = stage.run(ctx)
    results = ValidateResults(tmp_path / "validate")
    assert results.feature_choice == {HOOK: [3, 7, 40, 41]}
    assert list(results.descriptions["feature"]) == [3, 7, 40, 41]
    assert summary["activation_frequency_inputs"]["source"] == "probe inputs"
    assert summary["activation_frequency_inputs"]["n_selected"] == 2
    assert results.summary["mean_reward"] == summary["mean_reward"]


def test_validate_config_is_validated():
    with pytest.raises(ConfigError, match="n_completions"):
        ValidateConfig(n_completions=0)
    with pytest.raises(ConfigError, match="n_features_per_hook"):
        ValidateConfig(n_features_per_hook=0)
    with pytest.raises(ConfigError, match="window"):
        ValidateConfig(autointerp=AutointerpConfig(window=(-1, 2)))
    nested = ValidateConfig(seed=5, device="cpu", autointerp=AutointerpConfig(k=3, seed=1))
    assert nested.autointerp.k == 3
    assert nested.autointerp.seed == 5  # the descriptions use the stage's seed
