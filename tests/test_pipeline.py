import json
from collections import Counter

import pytest

from lfp_mech import pipeline
from lfp_mech._io import atomic_path, read_json, write_json
from lfp_mech.errors import ConfigError
from lfp_mech.pipeline import RunConfig, register_stage, run_pipeline


@pytest.fixture
def toy_stages(monkeypatch):
    """Replace the registry with three toy stages a -> b -> c that count their runs."""
    monkeypatch.setattr(pipeline, "STAGES", {})
    calls: Counter[str] = Counter()
    failures: set[str] = set()

    def make(name):
        def run(ctx):
            calls[name] += 1
            if name in failures:
                (ctx.dir / "partial.txt").write_text("half done")
                raise RuntimeError(f"{name} killed")
            value = ctx.options.get("value", 0)
            upstream = [ctx.summary(r).get("total", 0) for r in pipeline.STAGES[name].requires]
            total = value + sum(upstream)
            write_json(ctx.dir / "out.json", {"total": total})
            return {"total": total}

        return run

    register_stage("a")(make("a"))
    register_stage("b", requires=["a"])(make("b"))
    register_stage("c", requires=["b"])(make("c"))
    return calls, failures


def _config(**stages):
    return RunConfig(name="toy", model="tiny-llama", stages=stages)


def test_rerun_skips_complete_stages(tmp_path, toy_stages):
    calls, _ = toy_stages
    run_pipeline(_config(a={"value": 1}), tmp_path)
    run_pipeline(_config(a={"value": 1}), tmp_path)
    assert calls == Counter(a=1, b=1, c=1)


def test_changed_config_reruns_that_stage_and_later_ones(tmp_path, toy_stages):
    calls, _ = toy_stages
    run_pipeline(_config(a={"value": 1}), tmp_path)
    run_pipeline(_config(a={"value": 1}, b={"value": 5}), tmp_path)
    assert calls == Counter(a=1, b=2, c=2)
    assert read_json(tmp_path / "c" / "out.json") == {"total": 6}


def test_killed_stage_loses_only_itself(tmp_path, toy_stages):
    calls, failures = toy_stages
    failures.add("b")
    with pytest.raises(RuntimeError, match="b killed"):
        run_pipeline(_config(), tmp_path)
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["stages"]["a"]["status"] == "complete"
    assert manifest["stages"]["b"]["status"] == "running"
    assert (tmp_path / "b" / "partial.txt").exists()  # kept, so a stage can resume from it
    failures.clear()
    run_pipeline(_config(), tmp_path)
    assert calls == Counter(a=1, b=2, c=1)


def test_changed_artifact_reruns_its_stage(tmp_path, toy_stages):
    calls, _ = toy_stages
    run_pipeline(_config(), tmp_path)
    (tmp_path / "a" / "out.json").write_text('{"total": 99}')
    run_pipeline(_config(), tmp_path)
    assert calls == Counter(a=2, b=2, c=2)


def test_force_reruns_stage_and_dependents(tmp_path, toy_stages):
    calls, _ = toy_stages
    run_pipeline(_config(), tmp_path)
    run_pipeline(_config(), tmp_path, force=["b"])
    assert calls == Counter(a=1, b=2, c=2)


def test_selected_stage_needs_its_requirements(tmp_path, toy_stages):
    with pytest.raises(ConfigError, match="needs stage 'a'"):
        run_pipeline(_config(), tmp_path, stages=["b"])


def test_manifest_records_config_versions_seed_and_hashes(tmp_path, toy_stages):
    run_pipeline(_config(a={"value": 2}), tmp_path)
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["run"]["seed"] == 0
    assert manifest["run"]["config"]["stages"] == {"a": {"value": 2}}
    assert manifest["run"]["versions"]["torch"] != "not installed"
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


def test_overrides_and_config_files(tmp_path):
    config = pipeline.apply_overrides(
        pipeline.preset_config("smoke"), ["seed=3", "model=tiny-neox", "model.note=hi"]
    )
    assert config.seed == 3 and config.model == "tiny-neox"
    assert config.stages["model"]["note"] == "hi"
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "smoke"\nseed = 7\n[stages.model]\nnote = "x"\n')
    loaded = pipeline.load_config(toml)
    assert (loaded.name, loaded.seed, loaded.model) == ("smoke", 7, "tiny-llama")
    assert loaded.stages["model"] == {"note": "x"}


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown preset"):
        pipeline.preset_config("nope")
    with pytest.raises(ConfigError, match="unknown stage"):
        RunConfig(stages={"nope": {}})
    with pytest.raises(ConfigError, match="key=value"):
        pipeline.apply_overrides(RunConfig(), ["seed"])
    with pytest.raises(ConfigError, match="unknown run config key"):
        RunConfig.from_dict({"sede": 1})


def test_model_stage_on_tiny_model(tmp_path):
    run_pipeline(pipeline.preset_config("smoke"), tmp_path, stages=["model"])
    card = read_json(tmp_path / "model" / "model.json")
    assert card["n_layers"] == 2 and card["parity_max_abs_logprob_diff"] < 1e-3


def test_report_has_every_stage_summary_and_figure(tmp_path, toy_stages):
    import matplotlib.pyplot as plt

    from lfp_mech.plots import save_figure

    run_pipeline(_config(a={"value": 4}), tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "b" / "curve.png")
    from lfp_mech.report import write_report

    md, page = write_report(tmp_path)
    text = md.read_text()
    assert "## a" in text and "## c" in text and "| total | 4 |" in text
    assert "![curve](b/curve.png)" in text
    assert "data:image/png;base64," in page.read_text()
