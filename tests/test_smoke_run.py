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

    again = _run(run_dir)  # a third run does nothing
    assert again.returncode == 0
    assert again.stderr.count("complete, skipped") == len(after)
