"""Compose the stages into a resumable run.

A run lives in one folder::

    runs/<name>/
        manifest.json        config, package versions, seed, and per stage: fingerprint,
                             status, timings, peak RSS, summary, sha256 of every artifact
        model/ rlhf/ ...     one folder per stage, written only by that stage

Resume rule: a stage is skipped when the manifest says it completed with the same
fingerprint and every recorded artifact still has its recorded sha256. The fingerprint
hashes the stage's own config, the run's model and seed, and the fingerprints of the stages
it requires, so a changed config reruns that stage and every stage after it. A killed run
loses only the stage in progress (its folder is kept, so a stage with its own checkpoints,
such as RLHF, continues from them).

Stages are registered with :func:`register_stage`; each is a thin wrapper that reads its
inputs from earlier stage folders, calls the stage module's pure function and writes files.
"""

import contextlib
import copy
import logging
import os
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from lfp_mech._io import read_json, sha256_file, sha256_json, write_json
from lfp_mech.errors import ConfigError

logger = logging.getLogger(__name__)

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
    "accelerate",
)


# --------------------------------------------------------------------------- configuration


@dataclass
class RunConfig:
    """Everything that defines a run. ``stages`` maps a stage name to its config overrides."""

    name: str = "default"
    model: str = "smollm2-135m"
    seed: int = 0
    device: str = "cpu"
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ConfigError(
                f"unknown stage(s) in config: {sorted(unknown)}. Stages: {list(STAGES)}"
            )

    def stage(self, name: str) -> dict[str, Any]:
        return dict(self.stages.get(name, {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown run config key(s) {sorted(unknown)}; valid: {sorted(known)}"
            )
        return cls(**copy.deepcopy(dict(data)))


# Presets: the run each name stands for. Stage configs not given use the stage's defaults,
# which are sized for the offline SmolLM2 study on a 2-core CPU.
PRESETS: dict[str, dict[str, Any]] = {
    # Sized to finish within 45 min on 2 cores: 40k activation tokens per layer (the paper used
    # 75k) and 300k training activations per SAE (~7.5 passes over them) leave room for the
    # IRL stage's toxicity task.
    "default": {
        "name": "default",
        "model": "smollm2-135m",
        "stages": {
            "activations": {"n_tokens": 40_000},
            "saes": {"training_tokens": 300_000, "sweep_tokens": 150_000},
        },
    },
    "smoke": {"name": "smoke", "model": "tiny-llama", "stages": {}},
    "pythia-70m": {"name": "pythia-70m", "model": "pythia-70m"},
    "pythia-160m": {"name": "pythia-160m", "model": "pythia-160m"},
    "gpt-neo-125m": {"name": "gpt-neo-125m", "model": "gpt-neo-125M"},
}
# Stage overrides that make the smoke preset finish in well under two minutes.
SMOKE_STAGE_OVERRIDES: dict[str, dict[str, Any]] = {
    "rlhf": {
        "batch_size": 4,
        "num_generations": 2,
        "min_new_tokens": 2,
        "max_new_tokens": 8,
        "max_steps": 2,
        "n_train_prompts": 8,
        "n_eval_prompts": 8,
        "eval_batch_size": 8,
    },
    "divergence": {"top_k": 2},
    "activations": {
        "n_tokens": 3_000,
        "heldout_tokens": 600,
        "max_new_tokens": 16,
        "context_length": 48,
        "shard_tokens": 1_000,
    },
    "saes": {
        "training_tokens": 6_000,
        "batch_size": 256,
        "sweep_alphas": [1e-3, 1e-2],
        "sweep_tokens": 3_000,
        "eval_tokens": 500,
        "ce_texts": 8,
    },
    "probes": {"n_triples": 60, "n_carrier_templates": 2, "n_bootstrap": 200, "n_shuffles": 2},
    "validate": {"n_completions": 8, "max_new_tokens": 6, "autointerp": {"n_null": 20, "k": 4}},
    "irl": {
        "n_train_prompts": 12,
        "n_test_prompts": 8,
        "n_other_texts": 8,
        "max_new_tokens": 8,
        "rlhf_steps": 2,
        "rlhf_eval_prompts": 4,
        "toxicity_rlhf_steps": 2,
        "toxicity_irl_rlhf_steps": 1,
        "n_seeds": 2,
        "n_epochs": 2,
        "max_length": 48,
        "context_layer": 1,
    },
}


def preset_config(name: str) -> RunConfig:
    """The :class:`RunConfig` of a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    data = copy.deepcopy(PRESETS[name])
    if name == "smoke":
        data["stages"] = {k: dict(v) for k, v in SMOKE_STAGE_OVERRIDES.items() if k in STAGES}
    return RunConfig.from_dict(data)


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a run config from a ``.json`` or ``.toml`` file; ``preset = "..."`` sets the base."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(path.read_text(encoding="utf-8"))
    else:
        data = read_json(path)
    base = preset_config(data.pop("preset", "default")).to_dict()
    stages = base.pop("stages")
    for stage, overrides in data.pop("stages", {}).items():
        stages.setdefault(stage, {}).update(overrides)
    base.update(data)
    return RunConfig.from_dict({**base, "stages": stages})


def apply_overrides(config: RunConfig, assignments: Sequence[str]) -> RunConfig:
    """Apply ``key=value`` overrides: ``seed=1``, ``model=tiny-neox``, ``rlhf.max_steps=10``.

    Values are parsed as JSON when they parse (numbers, booleans, lists), else kept as strings.
    """
    import json

    data = config.to_dict()
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ConfigError(f"override {assignment!r} is not key=value (e.g. rlhf.max_steps=10)")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        stage, dot, option = key.partition(".")
        if dot:
            data["stages"].setdefault(stage, {})[option] = value
        else:
            data[key] = value
    return RunConfig.from_dict(data)


# --------------------------------------------------------------------------- stages


@dataclass
class StageContext:
    """What a stage wrapper gets: where to write, its config, and the earlier stages' folders."""

    run_dir: Path
    name: str
    config: RunConfig
    manifest: dict[str, Any]

    @property
    def dir(self) -> Path:
        return self.run_dir / self.name

    @property
    def options(self) -> dict[str, Any]:
        """This stage's config overrides (to build the stage module's config dataclass)."""
        return self.config.stage(self.name)

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def summary(self, name: str) -> dict[str, Any]:
        return self.manifest["stages"].get(name, {}).get("summary", {})


StageFn = Callable[[StageContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFn
    requires: tuple[str, ...]
    description: str


STAGES: dict[str, Stage] = {}


def register_stage(
    name: str, *, requires: Sequence[str] = (), description: str = ""
) -> Callable[[StageFn], StageFn]:
    """Register a stage function; stages run in registration order."""

    def decorator(fn: StageFn) -> StageFn:
        missing = [r for r in requires if r not in STAGES]
        if missing:
            raise ValueError(f"stage {name!r} requires unregistered stages {missing}")
        STAGES[name] = Stage(name, fn, tuple(requires), description or (fn.__doc__ or "").strip())
        return fn

    return decorator


def build_options(cls: type, options: Mapping[str, Any], stage: str):
    """Build a stage's config dataclass, turning unknown keys into a clear error."""
    valid = {f.name for f in fields(cls)}
    unknown = set(options) - valid
    if unknown:
        raise ConfigError(
            f"stage {stage!r}: unknown option(s) {sorted(unknown)}; valid: {sorted(valid)}"
        )
    return cls(**options)


# --------------------------------------------------------------------------- the run


def run_pipeline(
    config: RunConfig,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    stages: Sequence[str] | None = None,
    force: Sequence[str] = (),
) -> Path:
    """Run (or resume) every stage of ``config`` in ``run_dir`` (default ``runs/<name>``).

    Args:
        stages: run only these stages (and check that what they require is complete).
        force: rerun these stages even if they are complete (and so everything after them).

    Returns the run directory.
    """
    run_dir = Path(run_dir or Path("runs") / config.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(run_dir, config)
    selected = list(STAGES) if stages is None else list(stages)
    for name in selected:
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    fingerprints: dict[str, str] = {}
    forced = set(force)
    for index, stage in enumerate(STAGES.values(), start=1):
        fingerprints[stage.name] = _fingerprint(stage, config, fingerprints)
        entry = manifest["stages"].get(stage.name)
        done = _is_complete(run_dir, entry, fingerprints[stage.name])
        if stage.name not in selected:
            continue
        for required in stage.requires:
            if not _is_complete(run_dir, manifest["stages"].get(required), fingerprints[required]):
                raise ConfigError(
                    f"stage {stage.name!r} needs stage {required!r}, which is not complete in "
                    f"{run_dir}: run it first (lfp-mech run --stages {required},{stage.name})"
                )
        if done and stage.name not in forced:
            logger.info("[%d/%d] %s: complete, skipped", index, len(STAGES), stage.name)
            continue
        forced.update(s for s in STAGES if stage.name in STAGES[s].requires)
        logger.info("[%d/%d] %s: %s", index, len(STAGES), stage.name, stage.description)
        _run_stage(run_dir, stage, config, manifest, fingerprints[stage.name])
    from lfp_mech.report import write_report

    report_md, _ = write_report(run_dir)
    logger.info("report: %s (and report.html)", report_md)
    return run_dir


def _run_stage(
    run_dir: Path, stage: Stage, config: RunConfig, manifest: dict[str, Any], fingerprint: str
) -> None:
    stage_dir = run_dir / stage.name
    previous = manifest["stages"].get(stage.name, {})
    if previous.get("fingerprint") != fingerprint and stage_dir.exists():
        shutil.rmtree(stage_dir)  # config changed: old partial or complete results are stale
    stage_dir.mkdir(parents=True, exist_ok=True)
    manifest["stages"][stage.name] = {
        "fingerprint": fingerprint,
        "status": "running",
        "config": config.stage(stage.name),
        "started": _now(),
    }
    _save_manifest(run_dir, manifest)
    context = StageContext(run_dir, stage.name, config, manifest)
    start = time.perf_counter()
    with _peak_rss() as peak:
        summary = stage.run(context) or {}
    seconds = time.perf_counter() - start
    artifacts = {
        str(p.relative_to(run_dir)): sha256_file(p)
        for p in sorted(stage_dir.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(run_dir).parts)
    }
    manifest["stages"][stage.name].update(
        status="complete",
        finished=_now(),
        seconds=round(seconds, 2),
        peak_rss_mb=round(peak["mb"], 1),
        artifacts=artifacts,
        summary=dict(summary),
    )
    _save_manifest(run_dir, manifest)
    logger.info("%s: done in %.1f s (peak RSS %.0f MB)", stage.name, seconds, peak["mb"])


def _fingerprint(stage: Stage, config: RunConfig, upstream: Mapping[str, str]) -> str:
    return sha256_json(
        {
            "stage": stage.name,
            "options": config.stage(stage.name),
            "model": config.model,
            "seed": config.seed,
            "requires": {r: upstream[r] for r in stage.requires},
        }
    )


def _is_complete(run_dir: Path, entry: Mapping[str, Any] | None, fingerprint: str) -> bool:
    if not entry or entry.get("status") != "complete" or entry.get("fingerprint") != fingerprint:
        return False
    for rel, digest in entry.get("artifacts", {}).items():
        path = run_dir / rel
        if not path.is_file() or sha256_file(path) != digest:
            logger.warning("artifact %s is missing or changed: rerunning its stage", rel)
            return False
    return True


def _load_manifest(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    path = run_dir / MANIFEST
    manifest = read_json(path) if path.exists() else {"stages": {}}
    manifest.setdefault("stages", {})
    manifest["run"] = {
        "name": config.name,
        "config": config.to_dict(),
        "seed": config.seed,
        "device": config.device,
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "updated": _now(),
    }
    _save_manifest(run_dir, manifest)
    return manifest


def _save_manifest(run_dir: Path, manifest: Mapping[str, Any]) -> None:
    write_json(run_dir / MANIFEST, manifest)


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a run directory."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a run directory?")
    return read_json(path)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@contextlib.contextmanager
def _peak_rss(interval: float = 0.2) -> Iterator[dict[str, float]]:
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _register_builtin_stages() -> None:
    import lfp_mech.stages  # noqa: F401  (registers the stages on import)


_register_builtin_stages()
