"""The run config: one source of truth (dataclasses -> tyro) for flags, --set, TOML and presets."""

import dataclasses
import subprocess
import sys
import time

import pytest

from lfp_mech.errors import ConfigError
from lfp_mech.runner.commands import load_config, resolve
from lfp_mech.runner.config import RunConfig, config_from_dict, parse_args, set_args, stage_options
from lfp_mech.runner.presets import PRESETS, preset_config


def test_run_level_seed_and_device_reach_every_stage_and_nested_config():
    config = parse_args(set_args(["seed=3", "device=meta", "dtype=bfloat16"]))
    expected = {"seed": 3, "device": "meta", "dtype": "bfloat16"}
    for section in dataclasses.fields(config.stages):
        options = getattr(config.stages, section.name)
        for name in ("seed", "device", "dtype"):
            if hasattr(options, name):
                assert getattr(options, name) == expected[name]
    # every stage that builds models has the run's dtype (the divergence stage compares weights
    # in float64 and has none)
    with_dtype = {f.name for f in dataclasses.fields(config.stages)
                  if hasattr(getattr(config.stages, f.name), "dtype")}  # fmt: skip
    assert with_dtype == {"rlhf", "activations", "saes", "probes", "validate", "irl"}
    assert config.stages.validate.autointerp.seed == 3


def test_set_flags_and_toml_are_one_parser():
    by_set = parse_args(set_args(["rlhf.max_steps=5", "saes.sweep_alphas=[1e-3,1e-2]"]))
    by_flag = parse_args(["--rlhf.max_steps", "5", "--saes.sweep_alphas", "1e-3", "1e-2"])
    by_dict = config_from_dict(
        {"stages": {"rlhf": {"max_steps": 5}, "saes": {"sweep_alphas": [1e-3, 1e-2]}}}
    )
    assert by_set == by_flag == by_dict
    assert by_set.stages.rlhf.max_steps == 5 and by_set.stages.saes.sweep_alphas == (1e-3, 1e-2)


def test_later_sources_win():
    config = resolve("smoke", None, ["rlhf.max_steps=4"], ["--rlhf.max_steps", "6"])
    assert config.stages.rlhf.max_steps == 6 and config.model == "tiny-llama"


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (
            "rlhf.max_stepz=3",
            r"unknown option 'rlhf.max_stepz' \(did you mean rlhf.max_steps\?\); rlhf options: .*rlhf.max_steps",
        ),
        ("irl.n_seeds=abc", r"irl.n_seeds: invalid value .*'abc'.*expected int"),
        ("saes.l1_coefficient=-1", r"saes.l1_coefficient = -1.0: must be >= 0"),
        ("rlhf.method=ppo", r"rlhf.method = 'ppo': must be one of grpo, rloo, dpo"),
        (
            "diff.cross_block_rank=best",
            r"diff.cross_block_rank = 'best': must be one of attribution, relative, score, round_robin",
        ),
        ("validate.autointerp.alpha=2", r"validate.autointerp.alpha = 2.0: must be in \(0, 1\)"),
        ("sede=1", r"unknown option 'sede' \(did you mean seed\?\)"),
        ("nope.x=1", r"unknown stage 'nope'"),
        ("seed", r"is not KEY=VALUE"),
    ],
)
def test_invalid_options_are_one_line_errors(assignment, message):
    with pytest.raises(ConfigError, match=message) as error:
        resolve(None, None, [assignment], [])
    assert "\n" not in str(error.value)


def test_toml_round_trip_gives_the_identical_config(tmp_path):
    for name in PRESETS:
        config = resolve(name, None, ["rlhf.budget_minutes=None", "seed=4"], [])
        path = tmp_path / f"{name}.toml"
        path.write_text(config.to_toml())
        assert load_config(path) == config, name


def test_toml_with_a_preset_key_and_partial_sections(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "smoke"\nseed = 7\n[stages.rlhf]\nmax_steps = 3\n')
    config = load_config(path)
    assert (config.name, config.seed, config.model) == ("smoke", 7, "tiny-llama")
    assert config.stages.rlhf.max_steps == 3 and config.stages.rlhf.batch_size == 4
    path.write_text("[stages.rlhf]\nmax_stepz = 3\n")
    with pytest.raises(ConfigError, match="unknown option 'rlhf.max_stepz'"):
        load_config(path)
    path.write_text('preset = "smoke"\n')
    with pytest.raises(ConfigError, match="disagree"):
        resolve("default", str(path), [], [])


def test_presets_resolve_and_smoke_is_small():
    smoke = preset_config("smoke")
    assert smoke.model == "tiny-llama" and smoke.stages.rlhf.max_steps == 4
    assert smoke.stages.validate.autointerp.n_null == 20
    assert preset_config("default").stages.activations.n_tokens == 48_000
    paper = preset_config("pythia-70m").stages.irl
    assert (paper.mode, paper.n_seeds, paper.context_layer) == ("full", 13, None)
    with pytest.raises(ConfigError, match="unknown preset 'nope'; presets: default, full, smoke"):
        preset_config("nope")


def test_every_option_is_documented():
    """The CLI's help comes from the dataclasses' attribute docstrings: none may be missing."""
    from tyro._docstrings import get_field_docstring

    def check(cls, prefix):
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type):
                check(f.type, f"{prefix}{f.name}.")
            else:
                assert get_field_docstring(cls, f.name, ()), f"{prefix}{f.name} has no docstring"

    check(RunConfig, "")
    assert "irl.toxicity_lr" in stage_options("irl")


def test_cli_config_errors_exit_fast_with_one_line(tmp_path):
    """Bad options fail in seconds, before any stage runs, with one line naming the option."""
    for option, needle in [
        ("rlhf.max_stepz=3", "rlhf.max_steps"),
        ("irl.n_seeds=abc", "irl.n_seeds"),
        ("saes.l1_coefficient=-1", "saes.l1_coefficient"),
    ]:
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "lfp_mech", "run", "--run-dir", str(tmp_path), "--set", option],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        elapsed = time.monotonic() - start
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0] and "ERROR" in lines[0], result.stderr
        assert elapsed < 10, f"{option}: {elapsed:.1f} s"
        assert not (tmp_path / "manifest.json").exists()


def test_help_lists_every_stage_option(capsys):
    from lfp_mech.runner.cli import main

    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--irl.n_seeds" in out and "--rlhf.max_steps" in out and "--run-dir" in out
    assert "--validate.autointerp.k" in out
    assert out.count("usage:") == 1, out[:2000]  # the command's, not tyro's as well
    assert main(["run", "--help-stage", "irl"]) == 0
    out = capsys.readouterr().out
    assert "--irl.n_seeds" in out and "--rlhf.max_steps" not in out
    assert "Independent runs" in out  # the attribute docstring is the help line


@pytest.mark.parametrize(
    "word, value", [("false", False), ("False", False), ("no", False), ("true", True), ("1", True)]
)
def test_set_reads_yes_no_options_as_toml_and_python_write_them(word, value):
    config = parse_args(set_args([f"activations.base_model={word}", f"saes.base_model={word}"]))
    assert config.stages.activations.base_model is value and config.stages.saes.base_model is value


def test_set_keeps_a_bad_yes_no_value_an_error():
    with pytest.raises(ConfigError, match="base_model"):
        parse_args(set_args(["activations.base_model=maybe"]))
