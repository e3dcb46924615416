"""Helpers of the smoke-run fixture (``conftest.smoke_run``) and the tests that read it."""

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SmokeRun:
    """A smoke-preset run killed (SIGKILL) in its saes stage, then resumed to the end."""

    run_dir: Path
    killed: dict  # the manifest's stage entries when the run was killed
    resumed: subprocess.CompletedProcess  # the resuming `lfp-mech run`


def smoke_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "lfp_mech", "run", "--preset", "smoke", "--run-dir", str(run_dir)]


def read_manifest_stages(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "manifest.json").read_text())["stages"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def stage_files(run_dir: Path, *, exact_names: bool = False) -> dict[str, list[str]]:
    """``{stage folder: sorted file paths inside it}`` of a run directory ("." for its top-level
    files: manifest and report). The completion cache is left out: it is no stage's artifact
    (it holds what a run sampled, and which process sampled it is not fixed). Two names depend
    on results, and unless ``exact_names`` they are normalised (the number of files still
    counts): dashboard pages are named by latent id, which depends on the trained dictionary
    (``latent_<id>`` becomes ``latent_N``), and the IRL stage's held-out input cache by the
    configuration chosen on validation (``reward_inputs_<pooling>_<layer>_heldout`` becomes
    ``reward_inputs_SELECTED_heldout``)."""
    from lfp_mech.models.completions import COMPLETIONS_DIR

    run_dir = Path(run_dir)
    files: dict[str, list[str]] = {".": sorted(p.name for p in run_dir.iterdir() if p.is_file())}
    folders = (p for p in run_dir.iterdir() if p.is_dir() and p.name != COMPLETIONS_DIR)
    for folder in sorted(folders):
        paths = (str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        files[folder.name] = sorted(p if exact_names else _normalised(p) for p in paths)
    return files


def _normalised(path: str) -> str:
    path = re.sub(r"latent_\d+", "latent_N", path)
    return re.sub(r"reward_inputs_[^/]+_heldout", "reward_inputs_SELECTED_heldout", path)
