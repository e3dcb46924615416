"""Shared fixtures: tiny random models (milliseconds) and the real SmolLM2 (once per session)."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def _tiny_llama_session():
    from lfp_mech import build_tiny_model, hooked_from_hf

    hf, tok = build_tiny_model("tiny-llama", seed=0)
    return hf, tok, hooked_from_hf(hf, tok)


@pytest.fixture
def tiny_hf(_tiny_llama_session):
    """(hf_model, tokenizer) of tiny-llama, a fresh copy per test."""
    hf, tok, _ = _tiny_llama_session
    return copy.deepcopy(hf), tok


@pytest.fixture
def tiny_model(_tiny_llama_session):
    """tiny-llama as a HookedTransformer, a fresh copy per test."""
    return copy.deepcopy(_tiny_llama_session[2])


@pytest.fixture(scope="session")
def smollm2_hf():
    """The real SmolLM2-135M-Instruct as (hf_model, tokenizer), loaded once per session."""
    from lfp_mech import load_hf_model

    return load_hf_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2(smollm2_hf):
    """The real SmolLM2-135M-Instruct as a HookedTransformer, loaded once per session."""
    from lfp_mech import hooked_from_hf

    return hooked_from_hf(*smollm2_hf)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished smoke-preset run directory (the CLI end to end, ~40 s), shared by the session."""
    run_dir = tmp_path_factory.mktemp("golden") / "smoke"
    result = subprocess.run(
        [sys.executable, "-m", "lfp_mech.cli", "run", "--preset", "smoke", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
