"""Run the stages in order in one folder, resuming what is already done.

A run lives in one folder::

    runs/<name>/
        manifest.json        config, package versions, seed, and per stage: fingerprint,
                             status, timings, peak RSS, summary, sha256 of every artifact
        model/ rlhf/ ...     one folder per stage, written only by that stage

Resume rule: a stage is skipped when the manifest says it completed with the same fingerprint
and every recorded artifact still has its recorded sha256. A stage's fingerprint hashes its
resolved config section (every option, defaults included, with the run's seed and device), the
run's model, the versions of lfp_mech and of the packages that change its output, and the
fingerprints of the stages it requires. So a changed option, a default changed in code or a new
library version reruns that stage and every stage after it. A killed run loses only the stage in
progress (its folder is kept, so a stage with its own checkpoints, such as RLHF, continues).

The run option ``tracking`` is not in any fingerprint (it only observes, see
[`lfp_mech.tracking`][lfp_mech.tracking]): each stage runs inside its tracking context, logging
to ``<run_dir>/tracking/<stage>/``, outside the stage folders whose files are hashed.
"""

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lfp_mech._io import json_safe, sha256_file, sha256_json
from lfp_mech.errors import ConfigError
from lfp_mech.runner.manifest import now, open_manifest, package_versions, peak_rss, save_manifest
from lfp_mech.runner.registry import STAGES, StageSpec, stage_names
from lfp_mech.stage_api import StageContext
from lfp_mech.tracking import TRACKING_DIR, check_backend, tracking

logger = logging.getLogger(__name__)

__all__ = ["fingerprint", "run_pipeline"]


def run_pipeline(
    config: Any,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    stages: Sequence[str] | None = None,
    force: Sequence[str] = (),
    registry: tuple[StageSpec, ...] = STAGES,
    report: bool = True,
) -> Path:
    """Run (or resume) every stage of ``config`` (a [`RunConfig`][lfp_mech.runner.config.RunConfig])
    in ``run_dir`` (default ``runs/<config.name>``).

    Args:
        stages: run only these stages (what they require must be complete).
        force: rerun these stages even if complete (and so every stage after them).
        registry: the stages (tests pass their own).
        report: write ``report.md`` / ``report.html`` at the end.

    Returns the run directory.
    """
    names = stage_names(registry)
    for name in [*(stages or ()), *force]:
        if name not in names:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(names)}")
    check_backend(getattr(config, "tracking", "none"))
    run_dir = Path(run_dir or Path("runs") / config.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = open_manifest(run_dir, config.to_dict())
    selected = set(names if stages is None else stages)
    _preflight(registry, config, manifest, selected, set(force))
    fingerprints: dict[str, str] = {}
    forced = set(force)
    for index, spec in enumerate(registry, start=1):
        fingerprints[spec.name] = fingerprint(spec, config, fingerprints)
        if spec.name not in selected:
            continue
        _check_requirements(run_dir, spec, manifest, fingerprints)
        position = f"[{index}/{len(registry)}] {spec.name}"
        done = _is_complete(run_dir, manifest["stages"].get(spec.name), fingerprints[spec.name])
        if done and spec.name not in forced:
            logger.info("%s: complete, skipped", position)
            continue
        forced.update(s.name for s in registry if spec.name in s.requires)
        logger.info("%s: %s", position, spec.description)
        _run_stage(run_dir, spec, config, manifest, fingerprints[spec.name])
    if report:
        from lfp_mech.runner.report import write_report

        report_md, _ = write_report(run_dir)
        logger.info("report: %s (and report.html)", report_md)
    return run_dir


def fingerprint(spec: StageSpec, config: Any, upstream: Mapping[str, str]) -> str:
    """The hash that decides whether a completed stage is still valid (see the module doc)."""
    section = getattr(config.stages, spec.name)
    return sha256_json(
        {
            "stage": spec.name,
            "options": json_safe(dataclasses.asdict(section)),
            "run": {"model": config.model, "seed": config.seed, "device": config.device},
            "versions": package_versions(("lfp_mech", *spec.packages)),
            "requires": {name: upstream[name] for name in spec.requires},
        }
    )


def _preflight(
    registry: tuple[StageSpec, ...],
    config: Any,
    manifest: dict[str, Any],
    selected: set[str],
    force: set[str],
) -> None:
    """Before any stage runs: the environment checks (``check_environment(config)``, files and
    hub access) of every stage that will run, i.e. selected and not complete with its
    fingerprint (artifact hashes are checked later), forced, or after one that will run."""
    fingerprints: dict[str, str] = {}
    pending: set[str] = set()
    for spec in registry:
        fingerprints[spec.name] = fingerprint(spec, config, fingerprints)
        entry = manifest["stages"].get(spec.name) or {}
        stale = (entry.get("status"), entry.get("fingerprint")) != (
            "complete",
            fingerprints[spec.name],
        )
        if spec.name in selected and (
            stale or spec.name in force or any(r in pending for r in spec.requires)
        ):
            pending.add(spec.name)
            check = getattr(getattr(config.stages, spec.name), "check_environment", None)
            if callable(check):
                check(config)


def _check_requirements(
    run_dir: Path, spec: StageSpec, manifest: dict[str, Any], fingerprints: Mapping[str, str]
) -> None:
    for required in spec.requires:
        if not _is_complete(run_dir, manifest["stages"].get(required), fingerprints[required]):
            raise ConfigError(
                f"stage {spec.name!r} needs stage {required!r}, which is not complete with this "
                f"config in {run_dir}: run it first (lfp-mech run --stages {required},{spec.name})"
            )


def _run_stage(
    run_dir: Path, spec: StageSpec, config: Any, manifest: dict[str, Any], fingerprint: str
) -> None:
    stage_dir = run_dir / spec.name
    previous = manifest["stages"].get(spec.name, {})
    tracking_dir = run_dir / TRACKING_DIR / spec.name
    if previous.get("fingerprint") != fingerprint:
        # config or code changed: old partial or complete results (and their logs) are stale
        for stale in (stage_dir, tracking_dir):
            if stale.exists():
                shutil.rmtree(stale)
    stage_dir.mkdir(parents=True, exist_ok=True)
    options = json_safe(dataclasses.asdict(getattr(config.stages, spec.name)))
    manifest["stages"][spec.name] = {
        "fingerprint": fingerprint,
        "status": "running",
        "config": options,
        "started": now(),
    }
    save_manifest(run_dir, manifest)
    context = StageContext(run_dir, spec.name, config, manifest)
    start = time.perf_counter()
    backend = getattr(config, "tracking", "none")
    with (
        peak_rss() as peak,
        tracking(backend, tracking_dir, base=stage_dir, group=config.name, prefix=spec.name),
    ):
        summary = spec.runner()(context) or {}
    seconds = time.perf_counter() - start
    manifest["stages"][spec.name].update(
        status="complete",
        finished=now(),
        seconds=round(seconds, 2),
        peak_rss_mb=round(peak["mb"], 1),
        artifacts=_artifact_hashes(run_dir, stage_dir),
        summary=json_safe(dict(summary)),
    )
    save_manifest(run_dir, manifest)
    logger.info("%s: done in %.1f s (peak RSS %.0f MB)", spec.name, seconds, peak["mb"])


def _artifact_hashes(run_dir: Path, stage_dir: Path) -> dict[str, str]:
    return {
        str(path.relative_to(run_dir)): sha256_file(path)
        for path in sorted(stage_dir.rglob("*"))
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(run_dir).parts)
    }


def _is_complete(run_dir: Path, entry: Mapping[str, Any] | None, fingerprint: str) -> bool:
    if not entry or entry.get("status") != "complete" or entry.get("fingerprint") != fingerprint:
        return False
    for relative, digest in entry.get("artifacts", {}).items():
        path = run_dir / relative
        if not path.is_file() or sha256_file(path) != digest:
            logger.warning("artifact %s is missing or changed: rerunning its stage", relative)
            return False
    return True
