"""``load_run(run_dir)``: typed access to everything a run wrote.

Notebooks, docs and the report read a run only through this::

    from lfp_mech import load_run

    run = load_run("runs/default")
    run.status                      # DataFrame: stage, status, seconds, peak RSS
    run.config.stages.saes          # the resolved config the run used
    run.probes.kendall              # a table, as a pandas DataFrame
    run.rlhf.summary                # a stage's summary.json
    run.saes.load_saes()            # artifacts: {hook: SAE}
    run["irl"].figures()            # every figure of a stage, by name

Each stage's results class lives in its package (``lfp_mech/<stage>/results.py``).
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lfp_mech.errors import LfpMechError
from lfp_mech.runner.manifest import read_manifest
from lfp_mech.runner.registry import STAGES, stage_names
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    import pandas as pd

    from lfp_mech.activations.results import ActivationsResults
    from lfp_mech.diff.results import DiffResults
    from lfp_mech.divergence.results import DivergenceResults
    from lfp_mech.irl.results import IRLResults
    from lfp_mech.models.results import ModelResults
    from lfp_mech.probes.results import ProbesResults
    from lfp_mech.rlhf.results import RLHFResults
    from lfp_mech.runner.config import RunConfig
    from lfp_mech.saes.results import SAEsResults
    from lfp_mech.validate.results import ValidateResults

__all__ = ["Run", "load_run", "small_sae_dirs"]


class Run:
    """A run directory: its manifest, config and every stage's results."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)

    def __repr__(self) -> str:
        done = [name for name in stage_names() if self.is_complete(name)]
        return f"Run({str(self.path)!r}, complete: {', '.join(done) or 'none'})"

    @property
    def config(self) -> "RunConfig":
        """The resolved run config (as ``lfp-mech config`` prints it)."""
        from lfp_mech.runner.config import config_from_dict

        return config_from_dict(self.manifest["run"]["config"])

    @property
    def is_smoke(self) -> bool:
        """Whether the run used a tiny random test model (its numbers mean nothing)."""
        return str(self.manifest["run"]["config"]["model"]).startswith("tiny")

    def is_complete(self, stage: str) -> bool:
        """Whether ``stage`` completed in this run."""
        return self.manifest["stages"].get(stage, {}).get("status") == "complete"

    @property
    def status(self) -> "pd.DataFrame":
        """One row per stage: requires, uses (optional inputs, read when they have run),
        description, status, seconds, peak RSS, artifacts."""
        import pandas as pd

        rows = []
        for spec in STAGES:
            entry = self.manifest["stages"].get(spec.name, {})
            rows.append(
                {
                    "stage": spec.name,
                    "requires": ", ".join(spec.requires) or "-",
                    "uses": ", ".join(spec.uses) or "-",
                    "what it does": spec.description,
                    "status": entry.get("status", "not run"),
                    "seconds": entry.get("seconds"),
                    "peak RSS (MB)": entry.get("peak_rss_mb"),
                    "artifacts": len(entry.get("artifacts", {})),
                }
            )
        return pd.DataFrame(rows).set_index("stage")

    @property
    def headlines(self) -> "pd.DataFrame":
        """The scalar entries of every stage's manifest summary: (stage, quantity) -> value."""
        import pandas as pd

        rows = [
            {"stage": name, "quantity": key, "value": value}
            for name, entry in self.manifest["stages"].items()
            for key, value in entry.get("summary", {}).items()
            if isinstance(value, bool | int | float)
        ]
        return pd.DataFrame(rows, columns=["stage", "quantity", "value"]).set_index(
            ["stage", "quantity"]
        )

    @property
    def versions(self) -> dict[str, str]:
        """Versions of the packages the run used."""
        return dict(self.manifest["run"]["versions"])

    def __getitem__(self, stage: str) -> StageResults:
        spec = next((s for s in STAGES if s.name == stage), None)
        if spec is None and stage not in self.manifest["stages"]:
            raise LfpMechError(f"unknown stage {stage!r}; stages: {', '.join(stage_names())}")
        if not self.is_complete(stage):
            status = self.manifest["stages"].get(stage, {}).get("status", "not run")
            raise LfpMechError(
                f"stage {stage!r} is {status} in {self.path}: run it first "
                f"(lfp-mech run --run-dir {self.path} --stages ...,{stage})"
            )
        # a stage outside the registry (a custom pipeline) gets the generic reader
        results_class = spec.results() if spec is not None else StageResults
        return results_class(self.path / stage)

    @property
    def model(self) -> "ModelResults":
        """The ``model`` stage: the base model's card."""
        return self["model"]  # type: ignore[return-value]

    @property
    def rlhf(self) -> "RLHFResults":
        """The ``rlhf`` stage: the tuned policy, its training log, base-vs-tuned evaluation."""
        return self["rlhf"]  # type: ignore[return-value]

    @property
    def divergence(self) -> "DivergenceResults":
        """The ``divergence`` stage: per-layer parameter divergence, the chosen layers."""
        return self["divergence"]  # type: ignore[return-value]

    @property
    def activations(self) -> "ActivationsResults":
        """The ``activations`` stage: stored hook activations of the tuned policy."""
        return self["activations"]  # type: ignore[return-value]

    @property
    def saes(self) -> "SAEsResults":
        """The ``saes`` stage: the dictionaries and their metrics."""
        return self["saes"]  # type: ignore[return-value]

    @property
    def probes(self) -> "ProbesResults":
        """The ``probes`` stage: feedback probes against VADER, baselines."""
        return self["probes"]  # type: ignore[return-value]

    @property
    def validate(self) -> "ValidateResults":
        """The ``validate`` stage: feature descriptions, activation frequency, ablation."""
        return self["validate"]  # type: ignore[return-value]

    @property
    def diff(self) -> "DiffResults":
        """The ``diff`` stage: tuned-specific features, ablated and added during generation."""
        return self["diff"]  # type: ignore[return-value]

    @property
    def irl(self) -> "IRLResults":
        """The ``irl`` stage: recovered rewards, their evaluation, IRL-RLHF."""
        return self["irl"]  # type: ignore[return-value]


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """The results of the run in ``run_dir`` (see [`Run`][lfp_mech.runner.results.Run])."""
    return Run(run_dir)


def small_sae_dirs(run_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """``{hook_name: folder}`` of a run's small SAEs (the dictionaries the probes use)."""
    return load_run(run_dir).saes.small_sae_dirs()
