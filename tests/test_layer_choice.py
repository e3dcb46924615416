"""Layer choice: the activation and patching measures find a planted change, concentration
numbers, the selection rule and the stage's layer-choice artifacts."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from lfp_mech import build_tiny_model
from lfp_mech.divergence import DivergenceConfig, DivergenceResults, write_divergence
from lfp_mech.divergence.behaviour import behaviour_measures, mlp_modules
from lfp_mech.divergence.choice import (
    concentration,
    select_layers,
    selection_frequency,
    top_layers,
)
from lfp_mech.errors import ConfigError
from lfp_mech.models.tiny import tiny_config

PROMPTS = ["the film was", "a quiet story about", "i watched it and", "the actors",
           "this movie is", "what a", "the plot of the", "my friend said"]  # fmt: skip


def _deep_tiny(name: str, n_layers: int = 4, seed: int = 0):
    """A tiny random model with ``n_layers`` blocks (the shipped tiny models have 2)."""
    _, tokenizer = build_tiny_model(name, seed=seed)
    config = tiny_config(name)
    config.num_hidden_layers = n_layers
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval(), tokenizer


def _plant(model, block: int, scale: float = 0.5):
    """Add a random matrix to block ``block``'s MLP output projection (in place)."""
    mlp = mlp_modules(model)[block]
    weight = mlp.down_proj.weight if hasattr(mlp, "down_proj") else mlp.dense_4h_to_h.weight
    generator = torch.Generator().manual_seed(block + 7)
    with torch.no_grad():
        weight += scale * weight.abs().mean() * torch.randn(weight.shape, generator=generator) * 10
    return model


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-neox"])
@pytest.mark.parametrize("block", [1, 2])
def test_planted_mlp_change_is_the_top_block_of_activation_and_patching(name, block):
    base, tokenizer = _deep_tiny(name)
    tuned = _plant(copy.deepcopy(base), block)
    result = behaviour_measures((base, tokenizer), tuned, PROMPTS, max_new_tokens=8, batch_size=3)
    assert top_layers(result.activation, 1) == [block]
    assert top_layers(result.patching, 1) == [block]
    # blocks before the planted one see identical inputs: no change, no patching effect
    assert result.activation[:block].abs().max() < 1e-5
    assert result.patching[:block].abs().max() < 1e-6
    # patching the planted block alone reproduces the tuned model exactly (its inputs are
    # unchanged), so it recovers the whole log-prob gap
    assert abs(result.logprob_gap) > 1e-4
    assert result.patching[block].item() == pytest.approx(1.0, abs=1e-4)
    assert result.n_sequences == len(PROMPTS) and result.n_completion_tokens > len(PROMPTS)


def test_resampled_patching_sums_back_to_the_measure():
    base, tokenizer = _deep_tiny("tiny-llama", n_layers=3)
    tuned = _plant(copy.deepcopy(base), 2)
    result = behaviour_measures((base, tokenizer), tuned, PROMPTS[:5], max_new_tokens=6)
    table = result.sequence_logprobs
    assert table.shape == (5, 3 + 3) and table[:, -1].sum() == result.n_completion_tokens
    resampled = result.patching_resampled(50, seed=0)
    assert resampled.shape == (50, 3)
    assert resampled[:, 2].tolist() == pytest.approx([1.0] * 50, abs=1e-4)
    frequency = selection_frequency(resampled, 1)
    assert frequency.tolist() == [0.0, 0.0, 1.0]
    assert selection_frequency(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), 1).tolist() == [0.5, 0.5]


def test_identical_models_have_no_behaviour_change(tiny_hf):
    base, tokenizer = tiny_hf
    result = behaviour_measures((base, tokenizer), copy.deepcopy(base), PROMPTS[:3])
    assert result.activation.abs().max() == 0
    assert result.logprob_gap == pytest.approx(0.0, abs=1e-9)
    assert torch.equal(result.patching, torch.zeros(2, dtype=torch.float64))


def test_concentration_numbers():
    flat = concentration(torch.ones(10, dtype=torch.float64), k=2)
    assert flat["top_k_share"] == pytest.approx(0.2) and flat["uniform_share"] == 0.2
    assert flat["gini"] == pytest.approx(0.0) and flat["max_over_median"] == pytest.approx(1.0)
    peaked = concentration(torch.tensor([0.0, 0.0, 0.0, 4.0], dtype=torch.float64), k=1)
    assert peaked["top_k_share"] == 1.0 and peaked["gini"] == pytest.approx(0.75)
    # negative values (a patch that hurts) count as zero
    mixed = concentration(torch.tensor([-1.0, 1.0, 1.0, 2.0], dtype=torch.float64), k=1)
    assert mixed["top_k_share"] == pytest.approx(0.5)
    assert mixed["max_over_median"] == pytest.approx(2.0)


def test_select_layers_uses_the_named_measure():
    measures = {
        "parameter": torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64),
        "patching": torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64),
    }
    assert select_layers(measures, "parameter", 2) == [0, 1]
    assert select_layers(measures, "patching", 2) == [2, 1]
    with pytest.raises(ConfigError, match="behaviour=True"):
        select_layers(measures, "activation", 2)


def test_config_rejects_a_behaviour_measure_without_behaviour():
    with pytest.raises(ConfigError, match="select_by"):
        DivergenceConfig(select_by="patching", behaviour=False)
    assert DivergenceConfig(select_by="relative", behaviour=False).select_by == "relative"


def test_write_divergence_chooses_by_patching_and_writes_the_layer_choice(tmp_path):
    base, tokenizer = _deep_tiny("tiny-llama")
    tuned = _plant(copy.deepcopy(base), 1)
    with torch.no_grad():  # a larger parameter change elsewhere that changes behaviour less
        mlp_modules(tuned)[3].up_proj.weight.mul_(1.02)
    config = DivergenceConfig(top_k=1, max_new_tokens=8)
    out = tmp_path / "divergence"
    summary = write_divergence((base, tokenizer), tuned, out, config, prompts=PROMPTS)
    assert summary["select_by"] == "patching" and summary["top_layers"] == [1]
    assert set(summary["top_layers_by"]) == {"parameter", "relative", "activation", "patching"}
    assert summary["behaviour"]["n_sequences"] == len(PROMPTS)
    # the planted block wins on (nearly) every bootstrap resample of the validation sequences
    assert summary["patching_top_k_frequency"]["1"] >= 0.9
    results = DivergenceResults(out)
    table = results.layer_choice
    assert list(table.columns) == [
        "layer", "parameter", "relative", "activation", "patching", "patching_logprob",
        "patching_top_k_frequency", "selected",
    ]  # fmt: skip
    assert table["selected"].tolist() == [False, True, False, False]
    assert table["parameter"].tolist() == pytest.approx(results.values().tolist())
    spread = results.concentration.set_index("measure")
    assert (
        spread.loc["patching", "chosen_by_rule"] and not spread.loc["parameter", "chosen_by_rule"]
    )
    assert (spread["top_k_share"] >= spread["uniform_share"] - 1e-12).all()
    assert 0 <= spread["gini"].min() and spread["gini"].max() <= 1
    assert (out / "layer_choice.png").stat().st_size > 1000
    assert len(results.layer_choice_figure().axes) == 4
    assert torch.equal(results.values("patching"), results.measures()["patching"])


def test_write_divergence_without_prompts_needs_a_parameter_rule(tiny_hf, tmp_path):
    base, _ = tiny_hf
    with pytest.raises(ConfigError, match="validation prompts"):
        write_divergence(base, copy.deepcopy(base), tmp_path, DivergenceConfig(top_k=1))
