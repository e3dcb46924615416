"""Layer divergence on tiny models: zero for identical models, the perturbed block is the max."""

import copy

import pytest
import torch

from lfp_mech import build_tiny_model
from lfp_mech._io import load_tensors, read_json
from lfp_mech.divergence import (
    DivergenceConfig,
    layer_divergence,
    run_divergence_stage,
    top_divergent_layers,
)
from lfp_mech.errors import ConfigError, LfpMechError


def test_identical_models_have_zero_divergence(tiny_hf):
    hf, _ = tiny_hf
    div = layer_divergence(hf, copy.deepcopy(hf))
    assert div.shape == (hf.config.num_hidden_layers,)
    assert torch.equal(div, torch.zeros_like(div))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-neox"])
@pytest.mark.parametrize("block", [0, 1])
def test_perturbed_block_is_the_maximum(name, block):
    base, _ = build_tiny_model(name, seed=0)
    tuned = copy.deepcopy(base)
    layers = tuned.model.layers if name == "tiny-llama" else tuned.gpt_neox.layers
    with torch.no_grad():
        weight = layers[block].mlp.down_proj.weight if name == "tiny-llama" else None
        if weight is None:
            weight = layers[block].mlp.dense_4h_to_h.weight
        delta = torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)) * 0.01
        weight += delta
    div = layer_divergence(base, tuned)
    assert top_divergent_layers(div, k=1) == [block]
    assert div[block] == pytest.approx(torch.linalg.norm(delta.double()).item(), rel=1e-5)
    assert div[1 - block] == 0


def test_sum_over_parameters_of_frobenius_norms(tiny_hf):
    base, _ = tiny_hf
    tuned = copy.deepcopy(base)
    layer = tuned.model.layers[1]
    with torch.no_grad():
        layer.mlp.up_proj.weight += 0.5
        layer.input_layernorm.weight += 0.25
    div = layer_divergence(base, tuned)
    up = 0.5 * layer.mlp.up_proj.weight.numel() ** 0.5
    norm = 0.25 * layer.input_layernorm.weight.numel() ** 0.5
    assert div[1].item() == pytest.approx(up + norm, rel=1e-5)


def test_param_filter_restricts_to_mlp(tiny_hf):
    base, _ = tiny_hf
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.model.layers[0].self_attn.q_proj.weight += 1.0
    assert layer_divergence(base, tuned)[0] > 0
    assert layer_divergence(base, tuned, DivergenceConfig(param_filter=r"\.mlp\."))[0] == 0


def test_top_divergent_layers_order_and_range():
    div = torch.tensor([1.0, 5.0, 3.0, 5.0], dtype=torch.float64)
    assert top_divergent_layers(div, k=3) == [1, 3, 2]
    with pytest.raises(ConfigError, match="out of range"):
        top_divergent_layers(div, k=5)


def test_different_architectures_raise():
    llama, _ = build_tiny_model("tiny-llama")
    neox, _ = build_tiny_model("tiny-neox")
    with pytest.raises(LfpMechError, match="different architectures"):
        layer_divergence(llama, neox)


def test_different_shapes_raise(tiny_hf):
    base, _ = tiny_hf
    tuned = copy.deepcopy(base)
    tuned.model.layers[0].mlp.up_proj.weight = torch.nn.Parameter(torch.zeros(3, 3))
    with pytest.raises(LfpMechError, match="different parameter shapes"):
        layer_divergence(base, tuned)


def test_bad_block_pattern_is_a_clear_error(tiny_hf):
    base, _ = tiny_hf
    with pytest.raises(ConfigError, match="capture group"):
        DivergenceConfig(block_pattern=r"layers\.\d+")
    with pytest.raises(LfpMechError, match="no parameter name matches"):
        layer_divergence(base, base, DivergenceConfig(block_pattern=r"blocks_(\d+)_"))


def test_stage_writes_artifacts(tiny_hf, tmp_path):
    base, tok = tiny_hf
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.model.layers[1].mlp.gate_proj.weight += 0.1
    checkpoint = tmp_path / "tuned"
    tuned.save_pretrained(checkpoint)
    tok.save_pretrained(checkpoint)
    out = tmp_path / "divergence"
    summary = run_divergence_stage(base, checkpoint, out, DivergenceConfig(top_k=2))
    assert summary["top_layers"] == [1, 0]
    assert read_json(out / "summary.json")["top_layers"] == [1, 0]
    saved = load_tensors(out / "divergence.safetensors")["divergence"]
    assert saved[1] > 0 and saved[0] == 0
    assert (out / "divergence.png").stat().st_size > 1000
    assert (out / "divergence.csv").read_text().splitlines()[0] == "layer,divergence,rank"
