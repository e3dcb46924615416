"""The ``lfp-mech`` commands."""

from lfp_mech.runner.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "models" in out and "config" in out and "examples:" in out


def test_models_shows_offline_default(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "tiny-llama" in out


def test_stages_name_their_package_and_presets_list(capsys):
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    assert "1. model:" in out and "lfp_mech/irl/stage.py" in out
    assert main(["presets"]) == 0
    assert "smoke: model tiny-llama" in capsys.readouterr().out


def test_config_prints_toml_that_runs_back(capsys, tmp_path):
    assert main(["config", "--preset", "smoke", "--set", "rlhf.max_steps=3"]) == 0
    text = capsys.readouterr().out
    assert "[stages.rlhf]" in text and "max_steps = 3" in text
    path = tmp_path / "smoke.toml"
    path.write_text(text)
    assert main(["config", "--config", str(path)]) == 0
    assert capsys.readouterr().out == text


def test_bad_preset_is_a_clean_error():
    assert main(["run", "--preset", "nope"]) == 2


def test_run_model_stage(tmp_path):
    assert main(["run", "--preset", "smoke", "--run-dir", str(tmp_path), "--stages", "model"]) == 0
    assert (tmp_path / "manifest.json").exists()
    from lfp_mech import load_run

    run = load_run(tmp_path)
    assert run.model.n_layers == 2 and run.model.card["parity_max_abs_logprob_diff"] < 1e-3
    assert run.status.loc["model", "status"] == "complete"
    assert run.status.loc["rlhf", "status"] == "not run"
    assert run.status.loc["diff", "uses"] == "saes, validate"  # optional inputs, shown
