"""Run the stages in order in one folder, resuming what is already done.

A run lives in one folder::

    runs/<name>/
        manifest.json        config, package versions, seed, and per stage: fingerprint,
                             status, timings, peak RSS, summary, sha256 of every artifact
        model/ rlhf/ ...     one folder per stage, written only by that stage

Resume rule: a stage is skipped when the manifest says it completed with the same fingerprint
and every recorded artifact still has its recorded sha256. A stage's fingerprint hashes its
resolved config section (every option, defaults included, with the run's seed, device and dtype), the
run's model, the versions of lfp_mech and of the packages that change its output, and the
fingerprints of the stages it requires or uses (optional inputs). So a changed option, a default
changed in code or a new library version reruns that stage and every stage after it. A killed run
loses only the stage in progress (its folder is kept, so a stage that resumes from its own files,
such as RLHF's checkpoints or the finished dictionaries of saes, continues); a complete stage run
again (forced, an artifact changed, an input re-run) starts from an empty folder.

Several processes (``accelerate launch --num_processes N -m lfp_mech run ...``): the data-parallel
stages ([`StageSpec.parallel`][lfp_mech.runner.registry.StageSpec.parallel], RLHF) run on every
process; every other stage runs on the main process while the others wait at a barrier; only the
main process writes the manifest, the artifacts and the report. After the last data-parallel stage
the other processes leave and the main process goes on alone
([`lfp_mech.distributed`][lfp_mech.distributed]).

The run option ``tracking`` is not in any fingerprint (it only observes, see
[`lfp_mech.tracking`][lfp_mech.tracking]): each stage runs inside its tracking context (on the main
process), logging to ``<run_dir>/tracking/<stage>/``, outside the stage folders whose files are
hashed.
"""

import copy
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lfp_mech._io import json_safe, sha256_file, sha256_json
from lfp_mech.devices import resolve_precision
from lfp_mech.distributed import Processes
from lfp_mech.errors import ConfigError
from lfp_mech.runner.manifest import (
    MANIFEST,
    now,
    open_manifest,
    package_versions,
    peak_rss,
    read_manifest,
    save_manifest,
)
from lfp_mech.runner.registry import STAGES, StageSpec, stage_names
from lfp_mech.stage_api import StageContext
from lfp_mech.tracking import TRACKING_DIR, check_backend, tracking

logger = logging.getLogger(__name__)

__all__ = ["fingerprint", "for_this_machine", "run_pipeline"]


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

    The run's device and dtype are checked against this machine first (``dtype="auto"``
    resolved). Under ``accelerate launch`` the data-parallel stages run on every process and the
    others on the main process only (see [`lfp_mech.distributed`][lfp_mech.distributed]).

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
    config = for_this_machine(config)
    run_dir = Path(run_dir or Path("runs") / config.name)
    selected = set(names if stages is None else stages)
    fingerprints = _fingerprints(registry, config)
    done = _check_plan(registry, run_dir, selected, fingerprints)
    _preflight(registry, config, done, selected, set(force), fingerprints)
    processes = Processes(config.device)
    manifest = _open_manifest(run_dir, config, processes)
    last_parallel = max(
        (i for i, s in enumerate(registry) if s.parallel and s.name in selected), default=-1
    )
    forced = set(force)
    for index, spec in enumerate(registry):
        if index > last_parallel and processes.count > 1 and not processes.detach():
            return run_dir  # not the main process: the rest runs on the main process
        if spec.name not in selected:
            continue
        _check_requirements(run_dir, spec, manifest, fingerprints)
        position = f"[{index + 1}/{len(registry)}] {spec.name}"
        done = _is_complete(run_dir, manifest["stages"].get(spec.name), fingerprints[spec.name])
        if done and spec.name not in forced:
            logger.info("%s: complete, skipped", position)
            continue
        forced.update(s.name for s in registry if spec.name in s.reads)
        logger.info("%s: %s", position, spec.description)
        manifest = _run_on(processes, run_dir, spec, config, manifest, fingerprints[spec.name])
    if processes.count > 1 and not processes.detach():
        return run_dir
    if report:
        from lfp_mech.runner.report import write_report

        report_md, _ = write_report(run_dir)
        logger.info("report: %s (and report.html)", report_md)
    return run_dir


def for_this_machine(config: Any) -> Any:
    """``config`` with its dtype resolved for this machine (``"auto"`` → bfloat16/float32),
    after checking that its device exists and supports that dtype: a one-line
    [`ConfigError`][lfp_mech.errors.ConfigError] before any stage runs otherwise."""
    dtype = resolve_precision(config.device, config.dtype)
    if dtype == config.dtype:
        return config
    logger.info("dtype auto on %s: %s", config.device, dtype)
    return dataclasses.replace(copy.deepcopy(config), dtype=dtype)


def fingerprint(spec: StageSpec, config: Any, upstream: Mapping[str, str]) -> str:
    """The hash that decides whether a completed stage is still valid (see the module doc)."""
    section = getattr(config.stages, spec.name)
    run = {
        "model": config.model,
        "seed": config.seed,
        "device": config.device,
        "dtype": config.dtype,
    }
    inputs = {
        "stage": spec.name,
        "options": json_safe(dataclasses.asdict(section)),
        "run": run,
        "versions": package_versions(("lfp_mech", *spec.packages)),
        "requires": {name: upstream[name] for name in spec.requires},
    }
    if spec.uses:  # only when there are any: the other stages' fingerprints stay as they were
        inputs["uses"] = {name: upstream[name] for name in spec.uses}
    return sha256_json(inputs)


def _fingerprints(registry: tuple[StageSpec, ...], config: Any) -> dict[str, str]:
    """Every stage's [`fingerprint`][lfp_mech.runner.pipeline.fingerprint], in registry order."""
    fingerprints: dict[str, str] = {}
    for spec in registry:
        fingerprints[spec.name] = fingerprint(spec, config, fingerprints)
    return fingerprints


def _open_manifest(run_dir: Path, config: Any, processes: Processes) -> dict[str, Any]:
    """The run's manifest: opened (and refreshed) by the main process, read by the others."""
    if processes.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = open_manifest(run_dir, config.to_dict(), processes=processes.count)
    processes.wait()
    return manifest if processes.is_main else read_manifest(run_dir)


def _run_on(
    processes: Processes,
    run_dir: Path,
    spec: StageSpec,
    config: Any,
    manifest: dict[str, Any],
    fingerprint: str,
) -> dict[str, Any]:
    """Run one stage: on every process if it is data-parallel, else on the main process while
    the others wait; only the main process writes the manifest. Returns the manifest."""
    if processes.count == 1 or (processes.is_main and not spec.parallel):
        _run_stage(run_dir, spec, config, manifest, fingerprint)
    elif spec.parallel:
        if processes.is_main:
            _start_stage(run_dir, spec, config, manifest, fingerprint)
        processes.wait()  # the stage folder exists and is empty for every process
        _run_stage(
            run_dir, spec, config, manifest, fingerprint, processes.count,
            start=False, record=processes.is_main,
        )  # fmt: skip
    processes.wait()  # the others wait for the main process's stage
    return manifest if processes.is_main else read_manifest(run_dir)


def _preflight(
    registry: tuple[StageSpec, ...],
    config: Any,
    done: Mapping[str, Any],
    selected: set[str],
    force: set[str],
    fingerprints: Mapping[str, str],
) -> None:
    """Before anything is written: the environment checks (``check_environment(config)``, files
    and hub access) of every stage that will run, i.e. selected and not complete with its
    fingerprint (artifact hashes are checked later), forced, or after one that will run; and,
    when any will, of the stages that check every run
    ([`StageSpec.checks_every_run`][lfp_mech.runner.registry.StageSpec.checks_every_run])."""
    pending: set[str] = set()
    for spec in registry:
        stale = not _recorded_complete(done.get(spec.name), fingerprints[spec.name])
        if spec.name in selected and (
            stale or spec.name in force or any(r in pending for r in spec.reads)
        ):
            pending.add(spec.name)
    for spec in registry:
        if spec.name in pending or (pending and spec.checks_every_run):
            check = getattr(getattr(config.stages, spec.name), "check_environment", None)
            if callable(check):
                check(config)


def _check_plan(
    registry: tuple[StageSpec, ...],
    run_dir: Path,
    selected: set[str],
    fingerprints: Mapping[str, str],
) -> dict[str, Any]:
    """Before anything is written: ``run_dir`` is a folder (or absent), and every stage the
    selected ones require is selected too or already complete with this config (by the
    manifest; the artifacts' hashes are checked when the stage is reached). Returns the
    manifest's stage entries (empty for a new run)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(
            f"run directory {run_dir} is a file: pass --run-dir a new folder or a run directory"
        )
    path = run_dir / MANIFEST
    done = read_manifest(run_dir)["stages"] if path.is_file() else {}
    for spec in registry:
        if spec.name not in selected:
            continue
        for required in spec.requires:
            complete = _recorded_complete(done.get(required), fingerprints[required])
            if required not in selected and not complete:
                raise ConfigError(_missing_requirement(spec.name, required, run_dir))
    return done


def _missing_requirement(stage: str, required: str, run_dir: Path) -> str:
    return (
        f"stage {stage!r} needs stage {required!r}, which is not complete with this config in "
        f"{run_dir}: run it first (lfp-mech run --stages {required},{stage})"
    )


def _check_requirements(
    run_dir: Path, spec: StageSpec, manifest: dict[str, Any], fingerprints: Mapping[str, str]
) -> None:
    for required in spec.requires:
        if not _is_complete(run_dir, manifest["stages"].get(required), fingerprints[required]):
            raise ConfigError(_missing_requirement(spec.name, required, run_dir))


def _start_stage(
    run_dir: Path, spec: StageSpec, config: Any, manifest: dict[str, Any], fingerprint: str
) -> None:
    stage_dir = run_dir / spec.name
    previous = manifest["stages"].get(spec.name, {})
    if previous.get("fingerprint") != fingerprint or previous.get("status") == "complete":
        # config or code changed: old partial or complete results (and their logs) are stale;
        # a complete stage run again (forced, an artifact changed, an input re-run) starts
        # clean too. Only an interrupted stage keeps its folder, to resume from what it finished.
        for stale in (stage_dir, run_dir / TRACKING_DIR / spec.name):
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


def _run_stage(
    run_dir: Path,
    spec: StageSpec,
    config: Any,
    manifest: dict[str, Any],
    fingerprint: str,
    n_processes: int = 1,
    *,
    start: bool = True,
    record: bool = True,
) -> None:
    """Run one stage in this process (``start``: prepare its folder and manifest entry first;
    ``record``: record it as complete; the other processes of a data-parallel stage only take
    part in its work)."""
    if start:
        _start_stage(run_dir, spec, config, manifest, fingerprint)
    context = StageContext(run_dir, spec.name, config, manifest)
    begin = time.perf_counter()
    backend = getattr(config, "tracking", "none") if record else "none"  # main process logs
    from lfp_mech.models.completions import COMPLETIONS_DIR, completion_cache

    with (
        completion_cache(run_dir / COMPLETIONS_DIR),  # stages reuse each other's completions
        peak_rss() as peak,
        tracking(
            backend,
            run_dir / TRACKING_DIR / spec.name,
            base=run_dir / spec.name,
            group=config.name,
            prefix=spec.name,
        ),
    ):
        summary = spec.runner()(context) or {}
    seconds = time.perf_counter() - begin
    if not record:
        return
    manifest["stages"][spec.name].update(
        status="complete",
        finished=now(),
        seconds=round(seconds, 2),
        peak_rss_mb=round(peak["mb"], 1),
        processes=n_processes,
        artifacts=_artifact_hashes(run_dir, run_dir / spec.name),
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


def _recorded_complete(entry: Mapping[str, Any] | None, fingerprint: str) -> bool:
    """The manifest says the stage completed with ``fingerprint`` (its artifacts unchecked)."""
    return bool(entry) and (entry.get("status"), entry.get("fingerprint")) == (
        "complete",
        fingerprint,
    )


def _is_complete(run_dir: Path, entry: Mapping[str, Any] | None, fingerprint: str) -> bool:
    if not _recorded_complete(entry, fingerprint):
        return False
    for relative, digest in entry.get("artifacts", {}).items():
        path = run_dir / relative
        if not path.is_file() or sha256_file(path) != digest:
            logger.warning("artifact %s is missing or changed: rerunning its stage", relative)
            return False
    return True
