"""The IRL reward model on tiny random models: readouts, pooling, cached == full, save / load."""

import copy
import json

import pytest
import torch

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.irl import (
    IRLConfig,
    RewardModel,
    load_reward_model,
    reward_model_fn,
    save_reward_model,
)
from lfp_mech.irl.inputs import RewardInputs, concat_inputs, encode_cached
from lfp_mech.irl.readout import decoder_blocks, mean_tokens, sum_tokens
from lfp_mech.models import build_tiny_model
from lfp_mech.models.tiny import TINY_ARCHITECTURES

ARCHS = list(TINY_ARCHITECTURES)

TEXTS = ["the film was long", "a", "old stone house by the river at night"]


@pytest.mark.parametrize(
    "arch, n_blocks, pooling",
    [(arch, n, "last") for arch in ARCHS for n in (0, 1, 2)]
    + [(arch, n, pooling) for arch in ARCHS[:2] for n in (0, 1, 2) for pooling in ("mean", "sum")],
)
def test_cached_rewards_equal_full_rewards(arch, n_blocks, pooling):
    hf, tok = build_tiny_model(arch, seed=0)
    texts = ["the film was long", "a", "old stone house by the river at night", "blue zebra"]
    cached = RewardModel.from_base(
        (hf, tok), mode="cached", n_trainable_blocks=n_blocks, pooling=pooling
    )
    cached.reset(seed=1)
    full = RewardModel.from_base((hf, tok), mode="full", pooling=pooling)
    full.load_state_dict(cached.state_dict())
    via_cache = cached.score_inputs(cached.encode(texts, batch_size=3), batch_size=2)
    direct = full.score(texts)
    assert via_cache.shape == (4,)
    assert (via_cache - direct).abs().max().item() < 1e-4
    # the reward of a text does not depend on the batch it is scored in (right padding)
    assert torch.allclose(full.score(texts[2:3]), direct[2:3], atol=1e-5)


@pytest.mark.parametrize("mode, n_blocks", [("cached", 0), ("cached", 2), ("full", 0)])
def test_pooled_features_are_what_the_head_reads(mode, n_blocks):
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    rm = RewardModel.from_base((hf, tok), mode=mode, n_trainable_blocks=n_blocks)
    rm.reset(seed=3)
    inputs = rm.encode(TEXTS, batch_size=2)
    features = rm.pooled_features(inputs, batch_size=2)
    assert features.shape == (3, hf.config.hidden_size)
    via_head = rm.reward_from_pooled(features)
    assert torch.allclose(via_head, rm.score_inputs(inputs), atol=1e-5)


def _first_blocks(hf, n_layers):
    """The same model cut to its first ``n_layers`` blocks by HF itself (a smaller config, the
    same weights: the upper blocks' are unused)."""
    config = copy.deepcopy(hf.config)
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:n_layers]
    small = type(hf)(config).eval()
    small.load_state_dict(hf.state_dict(), strict=False)
    return small


@pytest.mark.parametrize("arch", ARCHS)
def test_n_layers_reads_the_residual_stream_after_that_block(arch):
    hf, tok = build_tiny_model(arch, seed=0)
    texts = [TEXTS[0], TEXTS[2]]
    rm = RewardModel.from_base((hf, tok), n_layers=1, n_trainable_blocks=0, pooling="sum")
    rm.reset(seed=2)
    assert rm.n_layers == 1 and hf.config.num_hidden_layers == 2  # the caller's model is intact
    assert len(decoder_blocks(hf.base_model)) == 2 and len(decoder_blocks(rm.backbone)) == 1
    ids, mask = rm.tokenize(texts)
    with torch.no_grad():
        final = _first_blocks(hf, 1).base_model(ids, attention_mask=mask).last_hidden_state
        expected = rm.reward_from_pooled(sum_tokens(final, mask))
    assert torch.allclose(rm.score(texts), expected, atol=1e-5)
    assert torch.allclose(rm.score_inputs(rm.encode(texts)), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="n_layers=3 out of range.*2 decoder blocks"):
        RewardModel.from_base((hf, tok), n_layers=3)
    with pytest.raises(ConfigError, match="n_trainable_blocks=2 out of range"):
        RewardModel.from_base((hf, tok), n_layers=1, n_trainable_blocks=2)


@pytest.mark.parametrize("arch", ARCHS)
def test_context_readout_reads_the_raw_residual_stream_of_both_blocks(arch):
    """Two readouts: the sum after block ``n_layers`` and the mean after ``context_layer``, raw
    (HF's ``hidden_states[k]`` below the last block), each scaled; cached == full path."""
    hf, tok = build_tiny_model(arch, seed=0)
    rm = RewardModel.from_base(
        (hf, tok), n_layers=1, context_layer=1, n_trainable_blocks=0, pooling="sum"
    )
    assert rm.readouts == [(1, "sum"), (1, "mean")] and rm.n_layers == 1
    assert rm.head.weight.shape == (1, 2 * hf.config.hidden_size)
    rm.reset(seed=2)
    ids, mask = rm.tokenize(TEXTS)
    with torch.no_grad():
        hidden = hf.base_model(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    raw = torch.cat([sum_tokens(hidden[1], mask), mean_tokens(hidden[1], mask)], -1)
    inputs = rm.encode(TEXTS, batch_size=2)
    assert torch.allclose(rm.pooled_features(inputs), raw, atol=1e-5)
    rm.fit_readout_scale(raw)
    d = hf.config.hidden_size
    for i, part in enumerate((raw[:, :d], raw[:, d:])):  # each readout: unit RMS once scaled
        assert float((part * rm.readout_scale[i]).pow(2).mean().sqrt()) == pytest.approx(1.0, 1e-4)
    expected = rm.head(
        torch.cat([raw[:, :d] * rm.readout_scale[0], raw[:, d:] * rm.readout_scale[1]], -1)
    )[:, 0]
    assert torch.allclose(rm.score(TEXTS), expected, atol=1e-5)
    assert torch.allclose(rm.score_inputs(inputs), expected, atol=1e-5)
    # blocks above both readouts are dropped; a deeper context readout keeps the blocks it needs
    deep = RewardModel.from_base((hf, tok), n_layers=1, context_layer=2, n_trainable_blocks=0)
    assert deep.n_layers == 2 and deep.readouts == [(1, "last"), (2, "mean")]


def test_one_readout_keeps_unit_scale_and_bad_context_layers_are_refused():
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    rm = RewardModel.from_base((hf, tok), n_trainable_blocks=0, pooling="sum")
    rm.fit_readout_scale(100 * torch.randn(5, hf.config.hidden_size))
    assert torch.equal(rm.readout_scale, torch.ones(1))
    with pytest.raises(ConfigError, match="context_layer=3 out of range.*2 decoder blocks"):
        RewardModel.from_base((hf, tok), context_layer=3, n_trainable_blocks=0)
    with pytest.raises(ConfigError, match="head-only cached mode"):
        RewardModel.from_base((hf, tok), context_layer=1, n_trainable_blocks=1)
    with pytest.raises(ConfigError, match="head-only cached mode"):
        RewardModel.from_base((hf, tok), context_layer=1, mode="full")
    with pytest.raises(ConfigError, match="context_layer = 0: must be >= 1"):
        IRLConfig(context_layer=0)
    with pytest.raises(ConfigError, match="set context_layer=None"):
        IRLConfig(n_trainable_blocks=2)
    assert IRLConfig(n_trainable_blocks=2, context_layer=None).context_layer is None


def test_sum_pooling_is_the_mean_times_the_text_length():
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    n_text = torch.tensor([2.0, 4.0, 1.0])  # BOS excluded unless it is alone
    summed, mean = sum_tokens(hidden, mask), mean_tokens(hidden, mask)
    assert torch.allclose(summed, mean * n_text[:, None], atol=1e-6)
    assert torch.allclose(summed[0], hidden[0, 1] + hidden[0, 2], atol=1e-6)


def test_cached_mode_freezes_lower_blocks(tiny_hf):
    rm = RewardModel.from_base(tiny_hf, mode="cached", n_trainable_blocks=1)
    trainable = {n for n, p in rm.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable and "backbone.norm.weight" in trainable
    assert any(n.startswith("backbone.layers.1.") for n in trainable)
    assert not any(n.startswith("backbone.layers.0.") for n in trainable)
    assert "backbone.embed_tokens.weight" not in trainable
    with pytest.raises(ConfigError, match="0..2"):
        RewardModel.from_base(tiny_hf, mode="cached", n_trainable_blocks=3)


def test_reward_inputs_select_concat_and_cache(tmp_path, tiny_hf):
    rm = RewardModel.from_base(tiny_hf, n_trainable_blocks=1)
    inputs = rm.encode(TEXTS)
    assert inputs.kind == "hidden" and len(inputs) == 3
    short = inputs.select(torch.tensor([1]))  # "a": BOS + one token, cut to its width
    assert short.values.shape[1] == int(inputs.attention_mask[1].sum())
    both = concat_inputs(short, inputs.select(torch.tensor([2])))
    assert both.values.shape[1] == inputs.values.shape[1] and len(both) == 2
    assert torch.equal(both.attention_mask[0].sum(), short.attention_mask[0].sum())
    path = tmp_path / "inputs.safetensors"
    first = encode_cached(rm, TEXTS, 8, path)
    assert RewardInputs.load(path, "another key") is None

    def boom(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    rm.encode = boom
    again = encode_cached(rm, TEXTS, 8, path)
    assert torch.equal(again.values, first.values) and again.kind == first.kind


@pytest.mark.parametrize("mode, n_layers", [("cached", None), ("cached", 1), ("full", None)])
def test_save_load_roundtrip_gives_identical_rewards(tmp_path, mode, n_layers):
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    rm = RewardModel.from_base(
        (hf, tok), mode=mode, n_trainable_blocks=1, pooling="mean", n_layers=n_layers
    )
    rm.reset(seed=5)
    with torch.no_grad():
        for p in rm.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))  # move away from the base weights
    rm.calibration = {"threshold": 0.25, "scale": 2.0}
    texts = ["the film was long", "zebra", "old stone house by the river"]
    save_reward_model(rm, tmp_path / "rm", extra={"task": "test"})
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["base_model"] == "tiny-llama" and config["task"] == "test"
    assert config["pooling"] == "mean" and config["n_layers"] == (n_layers or 2)
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.n_layers == rm.n_layers
    assert torch.equal(loaded.score(texts), rm.score(texts))
    assert loaded.calibration == {"threshold": 0.25, "scale": 2.0}
    fn = reward_model_fn(loaded)
    out = fn(texts)
    assert out.dtype == torch.float32 and out.shape == (3,)
    assert torch.allclose(out, (rm.score(texts) - 0.25) / 2.0)


def test_save_load_roundtrip_keeps_the_context_readout_and_its_scale(tmp_path):
    hf, tok = build_tiny_model("tiny-llama", seed=0)
    rm = RewardModel.from_base((hf, tok), n_layers=1, context_layer=2, n_trainable_blocks=0)
    rm.reset(seed=5)
    texts = ["the film was long", "zebra", "old stone house by the river"]
    rm.fit_readout_scale(rm.pooled_features(rm.encode(texts)))
    assert not torch.equal(rm.readout_scale, torch.ones(2))
    save_reward_model(rm, tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert (config["n_layers"], config["context_layer"]) == (1, 2)
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.readouts == rm.readouts
    assert torch.equal(loaded.readout_scale, rm.readout_scale)
    assert torch.equal(loaded.score(texts), rm.score(texts))


def test_load_refuses_a_different_base(tmp_path):
    rm = RewardModel.from_base(build_tiny_model("tiny-llama", seed=0), n_trainable_blocks=1)
    save_reward_model(rm, tmp_path / "rm")
    with pytest.raises(LfpMechError, match="frozen weights"):
        load_reward_model(tmp_path / "rm", base=build_tiny_model("tiny-llama", seed=1))
    with pytest.raises(LfpMechError, match="not a saved reward model"):
        load_reward_model(tmp_path)
