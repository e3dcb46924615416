"""The smoke preset end to end through the CLI, including a run killed mid-stage and resumed."""

import subprocess
from pathlib import Path

from smoke_helpers import read_manifest_stages, smoke_command

from lfp_mech import load_run


def test_killed_run_resumes_without_redoing_finished_stages(smoke_run):
    killed = smoke_run.killed
    finished = {name: e["finished"] for name, e in killed.items() if e["status"] == "complete"}
    assert {"model", "rlhf", "divergence", "activations"} <= set(finished)
    assert killed["saes"]["status"] == "running"
    after = read_manifest_stages(smoke_run.run_dir)
    assert all(entry["status"] == "complete" for entry in after.values())
    for name, stamp in finished.items():
        assert after[name]["finished"] == stamp, f"{name} was redone"
    log = smoke_run.resumed.stderr
    assert "saes: complete, skipped" not in log and "rlhf: complete, skipped" in log
    report = (smoke_run.run_dir / "report.md").read_text()
    assert all(f"## {name}" in report for name in after)
    _check_table7_uses_probe_inputs(smoke_run.run_dir)
    _check_irl_ran_both_tasks(smoke_run.run_dir)


def test_a_finished_run_does_nothing_the_second_time(smoke_run):
    again = subprocess.run(
        smoke_command(smoke_run.run_dir), capture_output=True, text=True, timeout=600, check=False
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("complete, skipped") == len(read_manifest_stages(smoke_run.run_dir))


def _check_table7_uses_probe_inputs(run_dir: Path) -> None:
    """The probes stage saves its inputs per hook with predictions; validate's Table 7 uses them."""
    run = load_run(run_dir)
    n = run.probes.summary["n_train_samples"]
    inputs = run.probes.probe_inputs()
    sae_dirs = run.saes.small_sae_dirs()
    assert inputs is not None and list(inputs.features) == list(sae_dirs)
    saes = run.saes.load_saes()
    for hook, sae in saes.items():
        assert tuple(inputs.features[hook].shape) == (n, sae.cfg.d_sae)
    assert tuple(inputs.predicted_delta.shape) == (n,)
    n_selected = int((inputs.predicted_delta > 3).sum())
    frequency = run.validate.activation_frequency
    assert set(frequency["hook"]) == set(sae_dirs)
    assert (frequency["source"] == "probe inputs").all()
    assert (frequency["n_inputs"] == n_selected).all()
    assert (frequency["n_inputs_total"] == n).all()
    assert run.validate.summary["activation_frequency_inputs"]["n_selected"] == n_selected


def _check_irl_ran_both_tasks(run_dir: Path) -> None:
    """The IRL stage recovers the VADER and the toxicity reward, each with its control."""
    run = load_run(run_dir)
    for task in ("vader", "toxicity"):
        results = run.irl.task(task)
        assert (
            results.summary["task"] == task and results.summary["n_runs"] == 2
        )  # a run per seed (smoke: 2 seeds), epoch chosen on validation
        assert set(results.summary["supervised_ceiling"]) >= {"acc", "f1", "spearman"}
        assert "irl_heatmaps" in results.figures()
    summary = run.manifest["stages"]["irl"]["summary"]
    assert "toxicity_acc_median" in summary and "toxicity_policy_toxicity" in summary
    table = run.irl.irl_rlhf("toxicity")
    assert list(table["policy"]) == ["base", "RLHF (true reward)", "RLHF (IRL reward)"]
    assert table["toxicity_mean"].between(0.0, 1.0).all()
