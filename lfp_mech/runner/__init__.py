"""The run machinery: the stage registry, the run config and presets, the pipeline that runs and
resumes stages, the results API, the report and the ``lfp-mech`` command line.

It only wires stages: what a stage does lives in its own package (``lfp_mech/<stage>/``). Modules:
[`registry`][lfp_mech.runner.registry] (the stages, a leaf module),
[`config`][lfp_mech.runner.config] ([`RunConfig`][lfp_mech.runner.config.RunConfig], parsing),
[`presets`][lfp_mech.runner.presets], [`pipeline`][lfp_mech.runner.pipeline]
([`run_pipeline`][lfp_mech.runner.pipeline.run_pipeline], fingerprints),
[`manifest`][lfp_mech.runner.manifest], [`results`][lfp_mech.runner.results]
([`load_run`][lfp_mech.runner.results.load_run]), [`report`][lfp_mech.runner.report],
[`cli`][lfp_mech.runner.cli] and [`commands`][lfp_mech.runner.commands]."""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "STAGES": "registry",
        "StageSpec": "registry",
        "RunConfig": "config",
        "StagesConfig": "config",
        "config_from_dict": "config",
        "load_config": "commands",
        "small_sae_dirs": "results",
        "PRESETS": "presets",
        "preset_config": "presets",
        "run_pipeline": "pipeline",
        "read_manifest": "manifest",
        "Run": "results",
        "load_run": "results",
        "run_for_notebooks": "notebooks",
        "write_report": "report",
    },
)
__all__ = [
    "PRESETS",
    "STAGES",
    "Run",
    "RunConfig",
    "StageSpec",
    "StagesConfig",
    "config_from_dict",
    "load_config",
    "small_sae_dirs",
    "load_run",
    "run_for_notebooks",
    "preset_config",
    "read_manifest",
    "run_pipeline",
    "write_report",
]
