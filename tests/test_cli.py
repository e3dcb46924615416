from lfp_mech.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "models" in out and "examples:" in out


def test_models_shows_offline_default(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "tiny-llama" in out


def test_stages_and_presets(capsys):
    assert main(["stages"]) == 0
    assert "model" in capsys.readouterr().out
    assert main(["presets"]) == 0
    assert "smoke" in capsys.readouterr().out


def test_bad_preset_is_a_clean_error(capsys):
    assert main(["run", "--preset", "nope"]) == 2


def test_run_model_stage(tmp_path):
    assert main(["run", "--preset", "smoke", "--run-dir", str(tmp_path), "--stages", "model"]) == 0
    assert (tmp_path / "manifest.json").exists()
