"""The stages of a run, in order: names, what each needs, and where its code lives.

A leaf module: it imports nothing from lfp_mech. A stage ``X`` is the package ``lfp_mech.X``
(``lfp_mech.models`` for the ``model`` stage) with ``stage.run(ctx)``, its config dataclass in
``config.py`` (the run config's section ``stages.X``) and its results class in ``results.py``.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STAGES", "StageSpec", "stage_names", "get_stage"]

_TORCH = ("torch", "transformers", "transformer-lens")


@dataclass(frozen=True)
class StageSpec:
    """One stage of the pipeline."""

    name: str
    """Stage name: its folder in a run directory and its section in the run config."""
    package: str
    """The package that implements it (``lfp_mech.<package>``)."""
    description: str
    """One line for ``lfp-mech stages`` and the logs."""
    results_class: str
    """Name of its [`lfp_mech.stage_api.StageResults`][lfp_mech.stage_api.StageResults] subclass in
    ``results.py``."""
    requires: tuple[str, ...] = ()
    """Stages whose outputs it reads (their fingerprints enter its own)."""
    packages: tuple[str, ...] = ()
    """Distributions whose versions change its output (they enter its fingerprint)."""
    run_fn: Callable[[Any], Any] | None = field(default=None, compare=False)
    """The runner, when it is not ``lfp_mech.<package>.stage.run`` (tests)."""
    parallel: bool = False
    """Data-parallel under ``accelerate launch``: runs on every process (the others run on the
    main process only)."""
    uses: tuple[str, ...] = ()
    """Stages whose outputs it reads when they are in the run (optional inputs): their
    fingerprints enter its own, and re-running one re-runs it, but it runs without them."""
    checks_every_run: bool = False
    """Its config's ``check_environment`` runs before any stage of a run runs, not only when it
    will run itself: it checks the other stages' options against what it loads (the model
    stage: every block index against the model's depth, also when resuming a finished model)."""

    @property
    def reads(self) -> tuple[str, ...]:
        """Every stage whose outputs it reads: ``requires`` and ``uses``. A re-run of one of
        them re-runs this stage."""
        return (*self.requires, *self.uses)

    def runner(self) -> Callable[[Any], Any]:
        """``run(ctx) -> summary``, imported on first use (stage modules import heavy libraries)."""
        if self.run_fn is not None:
            return self.run_fn
        return importlib.import_module(f"lfp_mech.{self.package}.stage").run

    def results(self) -> type:
        """The stage's results class (imported on first use)."""
        module = importlib.import_module(f"lfp_mech.{self.package}.results")
        return getattr(module, self.results_class)


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        "model", "models", "resolve the base model and check HF ↔ TransformerLens parity",
        "ModelResults", (), _TORCH, checks_every_run=True,
    ),
    StageSpec(
        "rlhf", "rlhf", "RLHF-tune the base model on the reward", "RLHFResults", ("model",),
        (*_TORCH, "trl", "accelerate", "datasets", "vaderSentiment", "alt-profanity-check"),
        parallel=True,
    ),
    StageSpec(
        "divergence", "divergence",
        "where RLHF changed the model: per-block divergence, MLP-output change and patching; "
        "choose the layers",
        "DivergenceResults", ("rlhf",), ("torch", "transformers"),
    ),
    StageSpec(
        "activations", "activations",
        "capture MLP outputs of the chosen layers (tuned policy and base model, same tokens)",
        "ActivationsResults", ("divergence",), _TORCH,
    ),
    StageSpec(
        "saes", "saes", "train SAE-Lens dictionaries (TopK or BatchTopK; tuned and base model)",
        "SAEsResults", ("activations",), (*_TORCH, "sae-lens"),
    ),
    StageSpec(
        "probes", "probes", "feedback probes on SAE features vs VADER + baselines",
        "ProbesResults", ("saes",),
        (*_TORCH, "sae-lens", "scikit-learn", "scipy", "vaderSentiment"),
    ),
    StageSpec(
        "validate", "validate",
        "describe the LFP features, activation frequency, ablation during generation",
        "ValidateResults", ("probes",), (*_TORCH, "sae-lens", "scipy", "vaderSentiment"),
    ),
    StageSpec(
        "diff", "diff",
        "model diffing: tuned-specific latents, ablated in the policy and added to the base model",
        "DiffResults", ("rlhf",), (*_TORCH, "scipy", "vaderSentiment"),
        uses=("saes", "validate"),  # the LFP-probe control row, when they have run
    ),
    StageSpec(
        "irl", "irl",
        "recover the reward from behaviour (max-margin IRL), compare with the probe, "
        "re-train a policy on the recovered reward",
        "IRLResults", ("rlhf",),
        (*_TORCH, "trl", "accelerate", "sae-lens", "scikit-learn", "scipy", "vaderSentiment",
         "alt-profanity-check"),
        uses=("saes", "probes"),  # the comparison with the LFP probe, when they have run
    ),
)  # fmt: skip
"""Every stage, in the order a run executes them."""


def stage_names(stages: tuple[StageSpec, ...] = STAGES) -> list[str]:
    """The stage names, in run order."""
    return [spec.name for spec in stages]


def get_stage(name: str, stages: tuple[StageSpec, ...] = STAGES) -> StageSpec:
    """The spec of stage ``name`` (``KeyError`` naming the valid stages otherwise)."""
    for spec in stages:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stage {name!r}; stages: {', '.join(stage_names(stages))}")
