"""The ``lfp-mech`` commands."""

import pytest

from lfp_mech.runner.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
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
    out = capsys.readouterr().out
    assert "smoke: model tiny-llama; a tiny random 2-layer model" in out
    from lfp_mech.runner.presets import PRESET_SUMMARIES, PRESETS

    assert set(PRESET_SUMMARIES) == set(PRESETS)  # every preset says what it is
    assert main(["run", "--preset", "smoke", "--stages", ""]) == 2  # not silently "all"


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


def test_help_text_is_plain_and_joined(capsys):
    assert main(["run", "--help-stage", "saes"]) == 0
    out = capsys.readouterr().out
    # reST literals and mkdocs links are shown as plain text; a sentence is not cut at markup
    assert "``" not in out and "][lfp_mech." not in out
    assert "SAE-Lens TopK SAEs, exactly k active latents per token" in " ".join(out.split())


def test_help_with_a_bad_preset_is_an_error_not_other_defaults(capsys):
    assert main(["run", "--help", "--preset", "nosuch"]) == 2
    assert main(["run", "--help", "--set", "rlhf.max_stepz=3"]) == 2


def test_input_errors_before_anything_is_written(tmp_path, capsys):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert main(["report", str(not_a_run)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert main(["run", "--preset", "smoke", "--run-dir", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert (
        main(["run", "--preset", "smoke", "--run-dir", str(fresh), "--stages", "model,saes"]) == 2
    )
    assert "needs stage 'activations'" in capsys.readouterr().err
    assert not fresh.exists()
    assert main(["run", "-v", "--preset", "smoke", "--set", "name="]) == 2
    assert "is not a run name" in capsys.readouterr().err


def test_block_options_are_checked_against_a_finished_model_stage(tmp_path, capsys):
    run = ["run", "--preset", "smoke", "--run-dir", str(tmp_path)]
    assert main([*run, "--stages", "model"]) == 0
    capsys.readouterr()
    # resumed: the model stage is complete, yet a later stage's block index is checked against
    # its depth before the rlhf stage starts
    assert main([*run, "--stages", "model,rlhf", "--set", "diff.layers=[0,99]"]) == 2
    assert "do not fit tiny-llama, which has 2 decoder blocks" in capsys.readouterr().err
    assert not (tmp_path / "rlhf").exists()
    unknown = tmp_path / "unknown"
    assert (
        main(["run", "--preset", "smoke", "--run-dir", str(unknown), "--set", "model=nosuch"]) == 2
    )
    assert "unknown model 'nosuch'" in capsys.readouterr().err and not unknown.exists()


def test_config_errors_say_what_the_value_should_be(tmp_path, capsys):
    table = tmp_path / "bad.toml"
    table.write_text("[stages]\nrlhf = 3\n")
    assert main(["config", "--config", str(table)]) == 2
    assert "'rlhf' is a stage, not an option" in capsys.readouterr().err
    assert main(["config", "--set", "saes.sweep_alphas=[a,b]"]) == 2
    assert "expected a list of float" in capsys.readouterr().err
    assert main(["config", "--preset", "smoke", "--set", "rlhf.prompts=none"]) == 0
    assert 'prompts = "None"' in capsys.readouterr().out
