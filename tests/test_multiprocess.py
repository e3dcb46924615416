"""Two processes through ``accelerate launch`` on the CPU (gloo): the smoke run trains its RLHF
stage data-parallel, runs every other stage on process 0, and writes what one process writes."""

import json
import subprocess
import sys
from pathlib import Path

from smoke_helpers import stage_files


def test_two_process_smoke_run_completes_with_the_artifacts_of_one_process(smoke_run, tmp_path):
    run_dir = tmp_path / "two"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "lfp_mech", "run", "--preset", "smoke", "--run-dir", str(run_dir),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]  # every process exited 0
    assert done.stdout.count("run complete") == 1  # printed by the main process only
    log = done.stderr
    assert "process 0 of 2" in log and "process 1 of 2" in log
    assert "process 1: data-parallel stages done, leaving" in log

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["run"]["processes"] == 2
    assert {name: entry["status"] for name, entry in manifest["stages"].items()} == dict.fromkeys(
        manifest["stages"], "complete"
    )
    assert manifest["stages"]["rlhf"]["processes"] == 2
    assert manifest["stages"]["rlhf"]["summary"]["processes"] == 2  # TRL saw two processes
    assert manifest["stages"]["saes"]["processes"] == 1

    single = stage_files(smoke_run.run_dir)
    assert set(single) == set(manifest["stages"]) | {"."}
    assert stage_files(run_dir) == single
    # every file is recorded once, by the main process: no stray or half-written artifact
    recorded = {p for entry in manifest["stages"].values() for p in entry["artifacts"]}
    by_stage = stage_files(run_dir, exact_names=True)
    written = {str(Path(s) / f) for s, files in by_stage.items() if s != "." for f in files}
    assert recorded == written
