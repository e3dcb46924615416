"""The run's device and dtype: checks before any stage runs, TRL mixed precision, models built on
the ``--device`` of the test session (``pytest --device cuda``), and a bf16 run on the CPU."""

import dataclasses
import json

import pytest
import torch
from rlhf_helpers import PROMPTS, e_reward, tiny_rl_config
from safetensors import safe_open

from lfp_mech.devices import check_names, resolve_precision, torch_dtype
from lfp_mech.errors import ConfigError
from lfp_mech.runner.config import RunConfig, parse_args, set_args
from lfp_mech.runner.pipeline import fingerprint, for_this_machine, run_pipeline
from lfp_mech.runner.presets import preset_config
from lfp_mech.runner.registry import get_stage


def _fake_cuda(monkeypatch, *, available=True, bf16=True, count=1):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Old GPU")


def test_cpu_dtypes_resolve_and_float16_is_refused():
    assert resolve_precision("cpu", "auto") == "float32"
    assert resolve_precision("cpu", "bfloat16") == "bfloat16"
    assert resolve_precision("cpu", "float32") == "float32"
    with pytest.raises(ConfigError, match="float16.*needs a GPU"):
        check_names("cpu", "float16")
    with pytest.raises(ConfigError, match="device = 'gpu'"):
        check_names("gpu", "float32")
    assert torch_dtype("bfloat16") is torch.bfloat16 and torch_dtype(None) is None


def test_cuda_requests_fail_with_one_line_before_anything_runs(monkeypatch, tmp_path):
    _fake_cuda(monkeypatch, available=False)
    with pytest.raises(ConfigError, match="device = 'cuda', but") as info:
        resolve_precision("cuda", "auto")
    assert "\n" not in str(info.value) and "device=cpu" in str(info.value)
    config = RunConfig(model="tiny-llama", device="cuda")  # parsing needs no GPU
    with pytest.raises(ConfigError, match="device = 'cuda'"):
        run_pipeline(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # no manifest, no stage folder

    _fake_cuda(monkeypatch, bf16=False)
    with pytest.raises(ConfigError, match="does not support bfloat16"):
        resolve_precision("cuda", "bfloat16")
    assert resolve_precision("cuda", "auto") == "float32"  # no fp16 training unasked
    assert resolve_precision("cuda", "float16") == "float16"
    with pytest.raises(ConfigError, match="1 CUDA device"):
        resolve_precision("cuda:1", "float32")
    _fake_cuda(monkeypatch, bf16=True)
    assert resolve_precision("cuda:0", "auto") == "bfloat16"


def test_auto_is_resolved_into_every_stage_and_the_fingerprint(monkeypatch):
    config = parse_args(set_args(["model=tiny-llama", "dtype=auto"]))
    resolved = for_this_machine(config)
    assert resolved.dtype == "float32" and config.dtype == "auto"  # the input is not changed
    assert resolved.stages.activations.dtype == resolved.stages.irl.dtype == "float32"
    _fake_cuda(monkeypatch)
    on_gpu = for_this_machine(parse_args(set_args(["device=cuda", "dtype=auto"])))
    assert on_gpu.dtype == on_gpu.stages.rlhf.dtype == "bfloat16"
    spec = get_stage("model")
    bf16 = dataclasses.replace(resolved, dtype="bfloat16")
    assert fingerprint(spec, resolved, {}) != fingerprint(spec, bf16, {})


@pytest.mark.parametrize(("dtype", "bf16", "fp16"), [("float32", False, False),
                                                     ("bfloat16", True, False),
                                                     ("float16", False, True)])  # fmt: skip
def test_trl_gets_the_run_precision_as_mixed_precision(tmp_path, dtype, bf16, fp16):
    from lfp_mech.rlhf.grpo import rl_trainer_and_args
    from lfp_mech.rlhf.session import trainer_kwargs

    device = "cpu" if dtype != "float16" else "cuda"
    config = tiny_rl_config(dtype=dtype, device=device)
    kwargs = trainer_kwargs(config, tmp_path)
    assert (kwargs["bf16"], kwargs["fp16"], kwargs["use_cpu"]) == (bf16, fp16, device == "cpu")
    assert config.to_dpo_config().dtype == dtype
    if device == "cpu":
        _, args = rl_trainer_and_args(config, tmp_path)
        assert (args.bf16, args.fp16, args.use_cpu) == (bf16, fp16, True)


def test_models_build_and_agree_on_the_session_device(device):
    from lfp_mech.models import load_hf_model, load_model, logprob_parity, parity_tokens

    hf_model, tokenizer = load_hf_model("tiny-llama", device=device)
    hooked = load_model("tiny-llama", device=device)
    assert next(hf_model.parameters()).device.type == torch.device(device).type
    assert next(hooked.parameters()).device.type == torch.device(device).type
    assert logprob_parity(hf_model, hooked, parity_tokens(tokenizer)) < 1e-3


def test_capture_on_the_session_device_equals_run_with_cache(device, tmp_path):
    from lfp_mech.activations import ActivationConfig, capture_activations
    from lfp_mech.models import load_model

    model = load_model("tiny-llama", device=device)
    texts = ["The film opens at night.", "I loved it.", "A slow, quiet drama."]
    config = ActivationConfig(batch_size=2, device=device)
    store = capture_activations(model, texts, [1], tmp_path / "store", config)
    text_index, position = store.token_index()
    stored = store.load_all("blocks.1.hook_mlp_out")
    _, cache = model.run_with_cache(
        model.to_tokens(texts[0]), names_filter=["blocks.1.hook_mlp_out"]
    )
    rows = text_index == 0
    got = stored[rows][position[rows].argsort()]
    torch.testing.assert_close(
        got, cache["blocks.1.hook_mlp_out"][0, 1:].cpu(), atol=1e-5, rtol=1e-4
    )


def test_grpo_trains_on_the_session_device(device, tmp_path):
    from lfp_mech.models import load_hf_model
    from lfp_mech.rlhf import train_policy

    tiny = load_hf_model("tiny-llama")
    policy = train_policy(
        tiny, e_reward, PROMPTS, tiny_rl_config(max_steps=1, device=device), tmp_path
    )
    meta = json.loads((policy / "lfp_mech_training.json").read_text())
    assert meta["steps"] == 1 and meta["config"]["device"] == device


def test_sae_trains_on_the_session_device(device):
    from lfp_mech.saes.config import SAEConfig
    from lfp_mech.saes.training import tensor_batches, train_sae

    config = SAEConfig(batch_size=64, training_tokens=640, k=8, device=device)
    acts = torch.randn(640, 16, generator=torch.Generator().manual_seed(0)).bfloat16()
    sae, stats = train_sae(tensor_batches(acts, config), 16, 32, config, tied=False)
    assert stats["steps"] == 10
    assert sae.W_dec.device.type == torch.device(device).type
    assert sae.W_dec.dtype == torch.float32  # SAEs train in float32 whatever the input


def test_a_bfloat16_run_on_cpu_runs_its_models_in_bfloat16(tmp_path):
    """model → rlhf → divergence → activations of the smoke preset with ``dtype=bfloat16``."""
    from lfp_mech import load_run

    config = dataclasses.replace(preset_config("smoke"), dtype="bfloat16")
    stages = ["model", "rlhf", "divergence", "activations"]
    run_dir = run_pipeline(config, tmp_path / "bf16", stages=stages, report=False)
    run = load_run(run_dir)
    assert run.manifest["run"]["dtype"] == "bfloat16"
    card = run.model.card
    assert (card["dtype"], card["hooked_dtype"]) == ("bfloat16", "bfloat16")
    assert card["parity_max_abs_logprob_diff"] < 1e-3  # the float32 conversion gate
    assert card["parity_in_dtype"] > card["parity_max_abs_logprob_diff"]  # bf16 rounding shows
    assert card["parity_in_dtype"] < 0.5
    # TRL trained with bf16 mixed precision: fp32 master weights, exported as float32
    training = json.loads((run.rlhf.policy_dir / "lfp_mech_training.json").read_text())
    assert training["config"]["dtype"] == "bfloat16"
    with safe_open(run.rlhf.policy_dir / "model.safetensors", framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    store = run.activations.train_store
    assert (store.meta["model_dtype"], store.meta["dtype"]) == ("bfloat16", "float32")
    acts = store.load_all(store.hook_names[0])
    # captured from a bf16 model: every stored float32 value is exactly a bfloat16 number
    assert torch.equal(acts, acts.bfloat16().float()) and torch.isfinite(acts).all()
    assert acts.abs().sum() > 0


def test_seeded_draws_the_same_numbers_and_restores_the_rng():
    from lfp_mech.devices import seeded

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(2)
    with seeded(7):
        second = torch.rand(2)
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream is untouched
