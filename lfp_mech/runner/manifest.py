"""``manifest.json``: what a run directory holds (config, versions, per-stage status and hashes)."""

import contextlib
import os
import platform
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from lfp_mech._io import read_json, write_json
from lfp_mech.errors import NotARunError

__all__ = ["MANIFEST", "TRACKED_PACKAGES", "package_versions", "read_manifest"]

MANIFEST = "manifest.json"
TRACKED_PACKAGES = (
    "lfp_mech",
    "torch",
    "transformers",
    "transformer-lens",
    "sae-lens",
    "trl",
    "datasets",
    "scikit-learn",
    "scipy",
    "einops",
    "jaxtyping",
    "vaderSentiment",
    "alt-profanity-check",
    "accelerate",
)
"""Packages whose versions the manifest records."""


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """``{distribution: version}`` ("not installed" for a missing one)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a run directory."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise NotARunError(
            f"{run_dir} is not a run directory (no {MANIFEST}): pass the folder `lfp-mech run` "
            "wrote (runs/<name>, or its --run-dir)"
        )
    return read_json(path)


def open_manifest(
    run_dir: Path, run_config: Mapping[str, Any], *, processes: int = 1
) -> dict[str, Any]:
    """The run's manifest (kept stage entries) with its ``run`` block refreshed, saved.

    ``processes``: how many processes run it (``accelerate launch``)."""
    path = run_dir / MANIFEST
    manifest = read_json(path) if path.exists() else {"stages": {}}
    manifest.setdefault("stages", {})
    manifest["run"] = {
        "name": run_config["name"],
        "config": dict(run_config),
        "seed": run_config["seed"],
        "device": run_config["device"],
        "dtype": run_config.get("dtype", "float32"),
        "processes": processes,
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "updated": now(),
    }
    save_manifest(run_dir, manifest)
    return manifest


def save_manifest(run_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Write the manifest atomically."""
    write_json(run_dir / MANIFEST, manifest)


def now() -> str:
    """UTC time, ISO format, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def peak_rss(interval: float = 0.2) -> Iterator[dict[str, float]]:
    """Track this process's peak resident memory (MB) while the block runs."""
    import psutil

    process = psutil.Process()
    peak = {"mb": process.memory_info().rss / 2**20}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak["mb"] = max(peak["mb"], process.memory_info().rss / 2**20)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak["mb"] = max(peak["mb"], process.memory_info().rss / 2**20)
