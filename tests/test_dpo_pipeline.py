"""The DPO study through `lfp-mech run` at smoke size: Table 3 and Figure 5 in the run directory,
with held-out accuracy against the true preference; the hub preference sets fail clearly offline."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from lfp_mech.errors import HubUnavailableError

STAGES = "model,rlhf,divergence,activations,saes,probes"
DPO_SETTINGS = [
    "rlhf.method=dpo",
    "rlhf.task=toxicity",  # a reward that varies on a tiny random model's text (VADER is ~0)
    "rlhf.n_pair_prompts=16",  # pairs per split: 8 train prompts, up to 16 held-out ones
    "rlhf.n_eval_prompts=16",
]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dpo") / "run"
    command = [sys.executable, "-m", "lfp_mech", "run", "--preset", "smoke",
               "--run-dir", str(run_dir), "--stages", STAGES]  # fmt: skip
    for setting in DPO_SETTINGS:
        command += ["--set", setting]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def test_dpo_run_writes_table3_and_figure5(dpo_run):
    rlhf = json.loads((dpo_run / "rlhf" / "summary.json").read_text())
    assert rlhf["method"] == "dpo" and rlhf["n_pairs"] >= 1
    heldout = [json.loads(line) for line in (dpo_run / "rlhf" / "heldout_pairs.jsonl").open()]
    assert len(heldout) == rlhf["n_heldout_pairs"] >= 10
    train_prompts = {
        json.loads(line)["prompt"] for line in (dpo_run / "rlhf" / "pairs.jsonl").open()
    }
    assert not train_prompts & {p["prompt"] for p in heldout}  # held-out prompts only
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in heldout)

    probes = dpo_run / "probes"
    table = pd.read_csv(probes / "preference_probe.csv").set_index("labels")
    assert set(table.index) == {"preference", "delta"}
    for column in ("train_accuracy", "test_accuracy", "test_accuracy_vs_preference",
                   "label_agreement_with_preference"):  # fmt: skip
        assert table[column].between(0, 1).all(), column
    # on the preference labels the probe's own labels are the true preference
    pref = table.loc["preference"]
    assert pref["test_accuracy_vs_preference"] == pytest.approx(pref["test_accuracy"])
    assert pref["label_agreement_with_preference"] == 1.0
    assert (
        table["n_test"].min() >= 2
        and (table["n_train"] + table["n_test"]).eq(2 * len(heldout)).all()
    )
    assert (probes / "preference_pca.png").stat().st_size > 1000
    summary = json.loads((probes / "preference_summary.json").read_text())
    ratios = summary["pca_explained_variance_ratio"]
    assert len(ratios) == 2 and 0 < ratios[1] <= ratios[0] <= 1
    manifest = json.loads((dpo_run / "manifest.json").read_text())
    assert manifest["stages"]["probes"]["summary"]["preference"]["n_pairs"] == len(heldout)


def test_load_run_reads_the_dpo_table3(dpo_run, tmp_path):
    from lfp_mech import load_run
    from lfp_mech.probes import ProbesResults

    run = load_run(dpo_run)
    probes = run.probes
    assert probes.has_preference
    pd.testing.assert_frame_equal(
        probes.preference, pd.read_csv(dpo_run / "probes" / "preference_probe.csv")
    )
    assert probes.preference_summary["n_pairs"] == len(run.rlhf.heldout_pairs)
    assert "preference_pca" in probes.figures()
    grpo = ProbesResults(tmp_path)  # a GRPO run's probes folder has no Table 3
    assert not grpo.has_preference and grpo.preference is None
    assert grpo.preference_summary is None


def test_hub_preference_data_offline_is_a_clear_error(monkeypatch):
    from lfp_mech.rlhf.dpo import load_preference_pairs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("hh-rlhf", "toxic-dpo"):
        with pytest.raises(HubUnavailableError, match="offline alternative"):
            load_preference_pairs(name, "test", n=4)
