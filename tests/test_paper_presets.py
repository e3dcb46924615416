"""The paper presets: their settings are the papers' (as tabulated in docs/paper-presets.md), and
each preset's resolved stage configs run end to end on a tiny random model of its architecture.

Only sizes shrink (the smoke preset's), and hub-only data (IMDB prompts, HH-RLHF pairs) is
swapped for the shipped offline sets; every other setting (learning rates, KL, mini-batches,
tied L1 SAEs on unnormalised activations, the IRL paper's full fine-tuning with a last-token
head, DPO for Gemma) is the preset's own, so the run takes the same code paths.
"""

import copy
import functools
import re
from pathlib import Path

import pytest

from lfp_mech import load_run
from lfp_mech.models.tiny import TINY_ARCHITECTURES, save_tiny_model
from lfp_mech.runner.config import config_from_dict
from lfp_mech.runner.pipeline import run_pipeline
from lfp_mech.runner.presets import PRESETS, SMOKE, preset_config

PAPER_PRESETS = ("pythia-70m", "pythia-160m", "pythia-410m", "gpt-neo-125m", "gemma-2b-it")
DOCS_TABLE = Path(__file__).parent.parent / "docs" / "paper-presets.md"

TINY_OF_SAME_ARCHITECTURE = {
    "pythia-70m": "tiny-neox",
    "pythia-160m": "tiny-neox",
    "pythia-410m": "tiny-neox",
    "gpt-neo-125m": "tiny-neo",
    "gemma-2b-it": "tiny-gemma",
}

NOT_SIZES = {"irl": {"context_layer"}}
"""Smoke-preset keys that are layer choices for the 2-layer model, not sizes."""


def smoke_sizes() -> dict:
    sizes = copy.deepcopy(SMOKE)
    for section, keys in NOT_SIZES.items():
        for key in keys:
            sizes[section].pop(key)
    return sizes


def scaled_down(name: str, model: str) -> dict:
    """Preset ``name`` at smoke sizes on ``model``, hub data swapped for offline."""
    sizes = smoke_sizes()
    stages = PRESETS[name]["stages"]
    rlhf = stages["rlhf"]
    sizes["rlhf"] |= {"prompts": "reviews"} if rlhf.get("prompts") == "imdb" else {}
    if rlhf.get("mini_batch_size"):  # keep several updates per rollout batch
        sizes["rlhf"]["mini_batch_size"] = sizes["rlhf"]["batch_size"] // 2
    if rlhf.get("method") == "dpo":  # HH-RLHF is hub only: offline pairs on the toxicity task
        sizes["rlhf"] |= {"task": "toxicity", "preference_data": "offline", "n_pair_prompts": 16}
    return {"model": model, "stages": sizes}


def as_list(value):
    return list(value) if isinstance(value, tuple | list) else value


@functools.cache
def resolved_stages(name: str) -> dict:
    return preset_config(name).to_dict()["stages"]


def test_every_paper_preset_has_a_tiny_architecture_twin():
    assert set(PAPER_PRESETS) <= set(PRESETS)
    assert set(TINY_OF_SAME_ARCHITECTURE) == set(PAPER_PRESETS)


def test_the_three_pythia_presets_differ_only_in_the_model():
    configs = [preset_config(n) for n in ("pythia-70m", "pythia-160m", "pythia-410m")]
    assert len({c.model for c in configs}) == 3
    assert all(c.to_dict()["stages"] == resolved_stages("pythia-70m") for c in configs)


def docs_rows() -> list[tuple[str, str, str]]:
    """(option, preset value, presets it applies to) of each row of the docs' settings table."""
    rows = []
    pattern = re.compile(r"^\| `(\w+)\.(\w+)` \|[^|]*\| `([^`]*)` \| ([^|]+) \|")
    for line in DOCS_TABLE.read_text().splitlines():
        if match := pattern.match(line):
            section, option, value, applies = match.groups()
            rows.append((f"{section}.{option}", value, applies.strip()))
    return rows


def test_docs_table_states_the_presets_values():
    rows = docs_rows()
    assert len(rows) >= 25
    for option, value, applies in rows:
        names = PAPER_PRESETS if applies == "all" else [n.strip() for n in applies.split(",")]
        section, key = option.split(".")
        for name in names:
            actual = resolved_stages(name)[section][key]
            assert str(actual) == value, f"{name}: {option} is {actual!r}, the docs say {value}"


def test_every_setting_a_preset_changes_is_in_the_docs_table():
    documented = {option for option, _, _ in docs_rows()}
    for name in PAPER_PRESETS:
        for section, values in PRESETS[name]["stages"].items():
            missing = {f"{section}.{k}" for k in values} - documented
            assert not missing, f"{name} sets {sorted(missing)} without a row in the docs table"


@pytest.mark.parametrize("name", ["pythia-70m", "gpt-neo-125m", "gemma-2b-it"])
def test_paper_preset_runs_end_to_end_on_its_tiny_architecture(name, tmp_path):
    """As ``lfp-mech run --preset NAME --set model=<tiny folder of its architecture>`` at smoke
    sizes."""
    base = preset_config(name)
    folder = save_tiny_model(TINY_OF_SAME_ARCHITECTURE[name], tmp_path / "checkpoint")
    scaled = scaled_down(name, str(folder))
    config = config_from_dict(scaled, base=base)
    for section, values in PRESETS[name]["stages"].items():  # the paper's settings survive
        resolved = config.to_dict()["stages"][section]
        for key, value in values.items():
            if key not in scaled["stages"].get(section, {}):
                assert as_list(resolved[key]) == as_list(value), f"{section}.{key}"
    run_dir = run_pipeline(config, tmp_path / name, report=False)
    run = load_run(run_dir)
    assert set(run.status["status"]) == {"complete"}
    assert run.config.stages.rlhf.learning_rate == base.stages.rlhf.learning_rate
    assert len(run.saes.load_saes()) > 0
    tiny = TINY_OF_SAME_ARCHITECTURE[name]
    assert (run.model.card["architecture"], run.model.card["n_layers"]) == (
        TINY_ARCHITECTURES[tiny],
        2,
    )
