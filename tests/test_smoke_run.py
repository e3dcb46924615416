"""The smoke preset end to end through the CLI, including a run killed mid-stage and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "lfp_mech.cli"]


def _manifest(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"stages": {}}


def _run(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "run", "--preset", "smoke", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_killed_run_resumes_without_redoing_finished_stages(tmp_path):
    run_dir = tmp_path / "smoke"
    process = subprocess.Popen(
        [*CLI, "run", "--preset", "smoke", "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        stages = _manifest(run_dir)["stages"]
        if stages.get("saes", {}).get("status") == "running":
            os.killpg(process.pid, signal.SIGKILL)  # like kill -9 / a lost machine
            break
        if process.poll() is not None:
            pytest.fail("the run finished before it could be killed in the saes stage")
        time.sleep(0.02)
    else:
        pytest.fail("the saes stage never started")
    process.wait()
    before = _manifest(run_dir)["stages"]
    finished = {name: e["finished"] for name, e in before.items() if e["status"] == "complete"}
    assert {"model", "rlhf", "divergence", "activations"} <= set(finished)
    assert before["saes"]["status"] == "running"

    result = _run(run_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    after = _manifest(run_dir)["stages"]
    assert all(entry["status"] == "complete" for entry in after.values())
    for name, stamp in finished.items():
        assert after[name]["finished"] == stamp, f"{name} was redone"
    assert "saes: complete, skipped" not in result.stderr
    assert "rlhf: complete, skipped" in result.stderr
    report = (run_dir / "report.md").read_text()
    assert all(f"## {name}" in report for name in after)
    _check_table7_uses_probe_inputs(run_dir)
    _check_irl_ran_both_tasks(run_dir)

    again = _run(run_dir)  # a third run does nothing
    assert again.returncode == 0
    assert again.stderr.count("complete, skipped") == len(after)


def _check_table7_uses_probe_inputs(run_dir: Path) -> None:
    """The probes stage saves its inputs per hook with predictions; validate's Table 7 uses them."""
    import csv

    from lfp_mech.probes import PROBE_INPUTS_FILE, load_probe_inputs
    from lfp_mech.stages import small_sae_dirs

    n = json.loads((run_dir / "probes" / "summary.json").read_text())["n_train_samples"]
    inputs = load_probe_inputs(run_dir / "probes" / PROBE_INPUTS_FILE)
    sae_dirs = small_sae_dirs(run_dir)
    assert list(inputs.features) == list(sae_dirs)
    for hook, folder in sae_dirs.items():
        d_sae = json.loads((folder / "cfg.json").read_text())["d_sae"]
        assert tuple(inputs.features[hook].shape) == (n, d_sae)
    assert tuple(inputs.predicted_delta.shape) == (n,)
    n_selected = int((inputs.predicted_delta > 3).sum())
    with open(run_dir / "validate" / "activation_frequency.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["hook"] for r in rows} == set(sae_dirs)
    for row in rows:
        assert row["source"] == "probe inputs"
        assert (int(row["n_inputs"]), int(row["n_inputs_total"])) == (n_selected, n)
    validate = json.loads((run_dir / "validate" / "summary.json").read_text())
    assert validate["activation_frequency_inputs"]["n_selected"] == n_selected


def _check_irl_ran_both_tasks(run_dir: Path) -> None:
    """The IRL stage recovers the VADER and the toxicity reward, each with its control."""
    import csv

    irl_summary = json.loads((run_dir / "manifest.json").read_text())["stages"]["irl"]["summary"]
    for task in ("vader", "toxicity"):
        summary = json.loads((run_dir / "irl" / task / "summary.json").read_text())
        assert summary["task"] == task and summary["n_runs"] == 4
        assert set(summary["supervised_ceiling"]) >= {"acc", "f1", "spearman"}
        assert (run_dir / "irl" / task / "irl_heatmaps.png").exists()
    assert "toxicity_acc_median" in irl_summary and "toxicity_policy_toxicity" in irl_summary
    with open(run_dir / "irl" / "toxicity" / "irl_rlhf" / "irl_rlhf.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["policy"] for r in rows] == ["base", "RLHF (true reward)", "RLHF (IRL reward)"]
    assert all(0.0 <= float(r["toxicity_mean"]) <= 1.0 for r in rows)
