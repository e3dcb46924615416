"""Layer divergence on tiny models: zero for identical models, the perturbed block is the max."""

import copy

import pytest
import torch

from lfp_mech import build_tiny_model
from lfp_mech._io import load_tensors
from lfp_mech.divergence import (
    DivergenceConfig,
    DivergenceResults,
    layer_divergence,
    plot_layer_divergence,
    top_divergent_layers,
    write_divergence,
)
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.models import load_hf_model


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


def test_named_tiny_base_uses_the_seed(tiny_hf):
    """A tiny random base given by name is built with the run's seed (else it is another model)."""
    seed0, _ = tiny_hf
    assert layer_divergence("tiny-llama", seed0, seed=0).max() == 0
    assert layer_divergence("tiny-llama", seed0, seed=1).min() > 0


def _tuned_checkpoint(tiny_hf, path, layer=1):
    base, tok = tiny_hf
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.model.layers[layer].mlp.gate_proj.weight += 0.1
    tuned.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_in_memory_pair_and_checkpoint_folder_are_accepted(tiny_hf, tmp_path):
    checkpoint = _tuned_checkpoint(tiny_hf, tmp_path / "tuned", layer=0)
    tuned, _ = load_hf_model(checkpoint)
    from_folder = layer_divergence(tiny_hf, checkpoint)
    assert from_folder[0] > 0 and from_folder[1] == 0
    assert torch.equal(from_folder, layer_divergence(tiny_hf[0], tuned))


def test_write_divergence_writes_artifacts_the_results_read(tiny_hf, tmp_path):
    checkpoint = _tuned_checkpoint(tiny_hf, tmp_path / "tuned")
    out = tmp_path / "divergence"
    config = DivergenceConfig(top_k=2, select_by="parameter")
    summary = write_divergence(tiny_hf[0], checkpoint, out, config)
    assert summary["top_layers"] == [1, 0] and summary["top_layers_sorted"] == [0, 1]
    saved = load_tensors(out / "divergence.safetensors")["divergence"]
    assert saved[1] > 0 and saved[0] == 0
    assert (out / "divergence.png").stat().st_size > 1000
    assert (out / "divergence.csv").read_text().splitlines()[0] == "layer,divergence,rank,selected"

    results = DivergenceResults(out)
    assert results.top_layers == [1, 0] and results.top_layers_sorted == [0, 1]
    table = results.divergence
    assert table["rank"].tolist() == [2, 1] and table["selected"].tolist() == [True, True]
    assert table["divergence"].tolist() == pytest.approx(saved.tolist(), rel=1e-12)
    assert torch.equal(results.values(), saved) and results.n_layers == 2
    assert len(results.figure().axes) == 1


def test_stage_run_compares_the_run_model_with_the_rlhf_policy(tiny_hf, tmp_path):
    from lfp_mech.divergence.stage import run
    from lfp_mech.runner.config import RunConfig, StagesConfig
    from lfp_mech.stage_api import StageContext

    _tuned_checkpoint(tiny_hf, tmp_path / "rlhf" / "policy", layer=0)
    config = RunConfig(
        model="tiny-llama", stages=StagesConfig(divergence=DivergenceConfig(top_k=1))
    )
    summary = run(StageContext(tmp_path, "divergence", config, manifest={"stages": {}}))
    assert summary["top_layers"] == [0] and summary["n_layers"] == 2
    assert DivergenceResults(tmp_path / "divergence").top_layers_sorted == [0]


def test_stage_run_without_a_policy_names_the_missing_stage(tmp_path):
    from lfp_mech.divergence.stage import run
    from lfp_mech.runner.config import RunConfig
    from lfp_mech.stage_api import StageContext

    ctx = StageContext(tmp_path, "divergence", RunConfig(model="tiny-llama"), {"stages": {}})
    with pytest.raises(LfpMechError, match="'rlhf' stage"):
        run(ctx)


def test_plot_y_axis_starts_at_zero_so_a_flat_signal_looks_flat():
    flat = torch.tensor([5.0, 5.0 + 1e-6, 5.0 - 1e-6, 5.0], dtype=torch.float64)
    ax = plot_layer_divergence(flat, top_layers=[1]).axes[0]
    low, high = ax.get_ylim()
    assert low == 0.0 and 5.0 < high < 6.0  # the values sit near the top of the axis
    zero_ax = plot_layer_divergence([0.0, 0.0]).axes[0]
    assert zero_ax.get_ylim()[0] == 0.0 and zero_ax.get_ylim()[1] > 0
