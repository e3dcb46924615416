"""What a stage package is written against: the context its runner gets, the base of its results.

A stage is a package ``lfp_mech/<stage>/`` with

* ``config.py`` — its config dataclass (a
  [`lfp_mech.config_base.StageConfig`][lfp_mech.config_base.StageConfig]);
* pure core modules — the method, usable from Python without a run directory;
* ``stage.py`` — ``run(ctx: StageContext) -> dict``: reads its inputs from earlier stages' folders
  (through their results classes), calls the core, writes its artifacts into ``ctx.dir`` and
  returns a small summary for the manifest;
* ``results.py`` — a [`StageResults`][lfp_mech.stage_api.StageResults] subclass: typed access to
  what ``stage.py`` wrote (tables as pandas DataFrames, the summary, figures, and loaders for
  models, SAEs, probes, ...).

The run machinery ([`lfp_mech.runner`][lfp_mech.runner]) registers, orders, fingerprints and resumes
stages; it never reads a stage's files itself."""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfp_mech._io import read_json
from lfp_mech.errors import LfpMechError

if TYPE_CHECKING:
    import pandas as pd

    from lfp_mech.runner.config import RunConfig

__all__ = ["StageContext", "StageResults"]

SUMMARY_FILE = "summary.json"


@dataclass
class StageContext:
    """What a stage's ``run`` gets: where to write, the resolved run config, earlier stages."""

    run_dir: Path
    """The run directory (``runs/<name>``)."""
    name: str
    """This stage's name (its folder is ``run_dir / name``)."""
    config: "RunConfig"
    """The resolved run config: ``config.model``, ``config.seed``, ``config.device``,
    ``config.dtype`` (resolved: never "auto"), and every stage's section
    (``config.stages.<stage>``)."""
    manifest: dict[str, Any]
    """The run's manifest (earlier stages' summaries, timings, artifacts)."""

    @property
    def dir(self) -> Path:
        """This stage's folder, where it writes everything."""
        return self.run_dir / self.name

    @property
    def options(self) -> Any:
        """This stage's config section (its config dataclass, seed, device and dtype set from the
        run)."""
        return getattr(self.config.stages, self.name)

    @property
    def device(self) -> str:
        """The run's torch device ("cpu", "cuda", ...)."""
        return self.config.device

    @property
    def dtype(self) -> str:
        """The run's model precision ("float32", "bfloat16" or "float16"); turn it into a torch
        dtype with [`lfp_mech.devices.torch_dtype`][lfp_mech.devices.torch_dtype]."""
        return self.config.dtype

    def stage_dir(self, name: str) -> Path:
        """The folder of stage ``name``."""
        return self.run_dir / name

    def summary(self, name: str) -> dict[str, Any]:
        """The manifest summary of stage ``name`` (empty if it has not run)."""
        return self.manifest["stages"].get(name, {}).get("summary", {})


class StageResults:
    """Read what one stage wrote: the base of every stage's ``results.py`` class.

    Generic access works for any stage (``summary``, ``table(name)``, ``tables()``,
    ``figures()``, ``json(name)``, ``jsonl(name)``); the subclasses add typed properties and
    loaders named after the stage's artifacts.
    """

    stage: str = ""
    """The stage name (the folder name in a run directory)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def exists(self) -> bool:
        """Whether the stage wrote its summary (it completed at least once)."""
        return (self.path / SUMMARY_FILE).is_file()

    def file(self, relative: str) -> Path:
        """The path of an artifact, which must exist (a clear error names the stage otherwise)."""
        path = self.path / relative
        if not path.exists():
            raise LfpMechError(
                f"{path} does not exist: has the {self.stage or self.path.name!r} stage run "
                "to completion in this run directory?"
            )
        return path

    @property
    def summary(self) -> dict[str, Any]:
        """The stage's ``summary.json``."""
        return read_json(self.file(SUMMARY_FILE))

    def json(self, name: str) -> Any:
        """A JSON artifact, by path relative to the stage folder, without ``.json``."""
        return read_json(self.file(f"{name}.json"))

    def table(self, name: str) -> "pd.DataFrame":
        """A table (``<name>.csv``, path relative to the stage folder) as a DataFrame."""
        import pandas as pd

        return pd.read_csv(self.file(f"{name}.csv"))

    def jsonl(self, name: str) -> "pd.DataFrame":
        """A JSON-lines artifact (``<name>.jsonl``) as a DataFrame, one row per line."""
        import pandas as pd

        with open(self.file(f"{name}.jsonl"), encoding="utf-8") as f:
            return pd.DataFrame([json.loads(line) for line in f if line.strip()])

    def tables(self) -> dict[str, "pd.DataFrame"]:
        """Every table of the stage, keyed by its path relative to the stage folder (no suffix)."""
        return {name: self.table(name) for name in self._names(".csv")}

    def figures(self) -> dict[str, Path]:
        """Every figure (PNG) of the stage, keyed by its relative path without suffix."""
        return {name: self.path / f"{name}.png" for name in self._names(".png")}

    def _names(self, suffix: str) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.path).with_suffix(""))
            for p in self.path.rglob(f"*{suffix}")
            if not any(part.startswith(".") for part in p.relative_to(self.path).parts)
        )
