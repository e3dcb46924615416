"""The pipeline: resume, fingerprints (config, code defaults, versions), forced reruns, manifest."""

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass

import pytest
from toy_run import ToyConfig, ToyRun, ToyStages

from lfp_mech._io import atomic_path, read_json, write_json
from lfp_mech.errors import ConfigError
from lfp_mech.runner import pipeline
from lfp_mech.runner.pipeline import run_pipeline
from lfp_mech.runner.registry import StageSpec


@dataclass
class ToyConfigNewDefault:
    """The same option with another default, as after a change of the code."""

    value: int = 7


@pytest.fixture
def toy():
    """Three toy stages a -> b -> c that count their runs and can be made to fail."""
    calls: Counter[str] = Counter()
    failures: set[str] = set()

    def make(name, requires):
        def run(ctx):
            calls[name] += 1
            if name in failures:
                (ctx.dir / "partial.txt").write_text("half done")
                raise RuntimeError(f"{name} killed")
            total = ctx.options.value + sum(ctx.summary(r).get("total", 0) for r in requires)
            write_json(ctx.dir / "out.json", {"total": total})
            return {"total": total}

        return StageSpec(name, "toy", f"toy {name}", "ToyResults", requires, (), run)

    registry = (make("a", ()), make("b", ("a",)), make("c", ("b",)))
    return registry, calls, failures


def _run(tmp_path, registry, config=None, **kwargs):
    return run_pipeline(config or ToyRun(), tmp_path, registry=registry, **kwargs)


def _config(**values):
    return ToyRun(stages=ToyStages(**{k: ToyConfig(v) for k, v in values.items()}))


def test_rerun_skips_complete_stages(tmp_path, toy):
    registry, calls, _ = toy
    _run(tmp_path, registry, _config(a=1))
    _run(tmp_path, registry, _config(a=1))
    assert calls == Counter(a=1, b=1, c=1)


def test_changed_option_reruns_that_stage_and_later_ones(tmp_path, toy):
    registry, calls, _ = toy
    _run(tmp_path, registry, _config(a=1))
    _run(tmp_path, registry, _config(a=1, b=5))
    assert calls == Counter(a=1, b=2, c=2)
    assert read_json(tmp_path / "c" / "out.json") == {"total": 6}


def test_changed_default_in_code_reruns_that_stage_and_later_ones(tmp_path, toy):
    """The fingerprint hashes the resolved config: a new default reruns, with no option set."""
    registry, calls, _ = toy
    _run(tmp_path, registry)
    changed = ToyRun(stages=ToyStages(b=ToyConfigNewDefault()))  # b's code default moved 0 -> 7
    _run(tmp_path, registry, changed)
    assert calls == Counter(a=1, b=2, c=2)
    assert read_json(tmp_path / "c" / "out.json") == {"total": 7}


def test_new_library_version_reruns_the_stages_that_depend_on_it(tmp_path, toy, monkeypatch):
    registry, calls, _ = toy
    registry = (registry[0], dataclasses.replace(registry[1], packages=("scipy",)), registry[2])
    _run(tmp_path, registry)
    real = pipeline.package_versions
    monkeypatch.setattr(
        pipeline,
        "package_versions",
        lambda names: {**real(names), **({"scipy": "99.0"} if "scipy" in names else {})},
    )
    _run(tmp_path, registry)
    assert calls == Counter(a=1, b=2, c=2)


def test_killed_stage_loses_only_itself(tmp_path, toy):
    registry, calls, failures = toy
    failures.add("b")
    with pytest.raises(RuntimeError, match="b killed"):
        _run(tmp_path, registry)
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["stages"]["a"]["status"] == "complete"
    assert manifest["stages"]["b"]["status"] == "running"
    assert (tmp_path / "b" / "partial.txt").exists()  # kept, so a stage can resume from it
    failures.clear()
    _run(tmp_path, registry)
    assert calls == Counter(a=1, b=2, c=1)


def test_changed_artifact_reruns_its_stage(tmp_path, toy):
    registry, calls, _ = toy
    _run(tmp_path, registry)
    (tmp_path / "a" / "out.json").write_text('{"total": 99}')
    _run(tmp_path, registry)
    assert calls == Counter(a=2, b=2, c=2)


def test_force_reruns_stage_and_dependents(tmp_path, toy):
    registry, calls, _ = toy
    _run(tmp_path, registry)
    (tmp_path / "b" / "leftover.txt").write_text("from the first run")
    _run(tmp_path, registry, force=["b"])
    assert calls == Counter(a=1, b=2, c=2)
    # a complete stage run again starts from an empty folder (an interrupted one resumes)
    assert not (tmp_path / "b" / "leftover.txt").exists()


def test_optional_input_enters_the_fingerprint_but_is_not_required(tmp_path, toy):
    """c reads b's output when b has run (``uses``), as diff reads saes/validate: a changed or
    forced b reruns c; c runs alone, without b."""
    registry, calls, _ = toy
    registry = (*registry[:2], dataclasses.replace(registry[2], requires=("a",), uses=("b",)))
    _run(tmp_path, registry, stages=["a", "c"])
    assert calls == Counter(a=1, c=1)
    _run(tmp_path, registry, _config(b=5))
    assert calls == Counter(a=1, b=1, c=2)
    _run(tmp_path, registry, _config(b=5), force=["b"])
    assert calls == Counter(a=1, b=2, c=3)
    _run(tmp_path, registry, _config(b=5))
    assert calls == Counter(a=1, b=2, c=3)


def test_selected_stage_needs_its_requirements(tmp_path, toy):
    registry, _, _ = toy
    with pytest.raises(ConfigError, match="needs stage 'a'"):
        _run(tmp_path, registry, stages=["b"])
    with pytest.raises(ConfigError, match="unknown stage 'd'"):
        _run(tmp_path, registry, stages=["d"])


def test_manifest_records_config_versions_seed_and_hashes(tmp_path, toy):
    registry, _, _ = toy
    _run(tmp_path, registry, _config(a=2))
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["run"]["seed"] == 0 and manifest["run"]["config"]["model"] == "tiny-llama"
    assert manifest["run"]["versions"]["torch"] != "not installed"
    assert manifest["stages"]["a"]["config"] == {"value": 2}
    artifacts = manifest["stages"]["a"]["artifacts"]
    assert list(artifacts) == ["a/out.json"] and len(artifacts["a/out.json"]) == 64
    assert manifest["stages"]["a"]["peak_rss_mb"] > 0


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("garbage")
            raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_report_has_every_stage_summary_table_and_figure(tmp_path, toy):
    from lfp_mech._io import write_table
    from lfp_mech.plotting import new_figure, save_figure
    from lfp_mech.runner.report import write_report

    registry, _, _ = toy
    _run(tmp_path, registry, _config(a=4), report=False)
    fig, ax = new_figure()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "b" / "curve.png")
    write_table(tmp_path / "c" / "scores", [{"word": "good", "score": 0.5}])
    md, page = write_report(tmp_path)
    text = md.read_text()
    assert "## a" in text and "## c" in text and "| total | 4 |" in text
    assert "![curve](b/curve.png)" in text
    assert "**scores**" in text and "| good | 0.5 |" in text
    assert "data:image/png;base64," in page.read_text()
