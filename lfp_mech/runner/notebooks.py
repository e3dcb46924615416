"""The run a notebook reads: a finished run, or the smoke preset computed on the spot."""

import os
from pathlib import Path

from filelock import FileLock

from lfp_mech.runner.pipeline import run_pipeline
from lfp_mech.runner.presets import preset_config
from lfp_mech.runner.results import Run, load_run

__all__ = ["run_for_notebooks"]


def run_for_notebooks(preset: str = "smoke") -> Run:
    """The run a notebook reads: ``$LFP_MECH_RUN_DIR`` if set (relative paths are taken from the
    repository root), else preset ``preset`` computed (or resumed) into ``runs/<preset>`` there.

    The smoke preset is a tiny random model: its numbers only show that the code runs. Notebooks
    executed in parallel compute it once: the others wait on a lock, then read it.
    """
    root = _repository_root()
    chosen = os.environ.get("LFP_MECH_RUN_DIR")
    if chosen:
        path = Path(chosen).expanduser()
        return load_run(path if path.is_absolute() or path.exists() else root / path)
    run_dir = root / "runs" / preset
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(run_dir.parent / f".{preset}.lock"):
        return load_run(run_pipeline(preset_config(preset), run_dir))


def _repository_root() -> Path:
    """The nearest folder at or above the working directory holding pyproject.toml (else cwd)."""
    here = Path.cwd().resolve()
    return next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file()), here)
