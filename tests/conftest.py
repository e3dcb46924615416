"""Shared fixtures: tiny random models (milliseconds) and the real SmolLM2 (once per session)."""

import copy
import os
import signal
import subprocess
import time

import pytest
import torch
from smoke_helpers import SmokeRun, read_manifest_stages, smoke_command

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each (subprocesses too), or they
    # oversubscribe the cores and both slow down
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device of the device-aware tests (those taking the `device` fixture): "
        "cpu (default), cuda, cuda:1, ...",
    )


def pytest_configure(config):
    """A ``--device`` this machine lacks stops the session with one line, before any test."""
    from lfp_mech.devices import resolve_precision
    from lfp_mech.errors import ConfigError

    name = config.getoption("--device")
    try:
        resolve_precision(name, "float32")
    except ConfigError as error:
        raise pytest.UsageError(f"--device {name}: {error}") from error


@pytest.fixture(scope="session")
def device(request) -> str:
    """The torch device of the device-aware tests: pytest's ``--device`` option."""
    return request.config.getoption("--device")


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
def smoke_run(tmp_path_factory) -> SmokeRun:
    """The CLI end to end on the smoke preset, killed mid-run and resumed (shared by the session:
    the resume tests check how it resumed, the golden-number test what it computed)."""
    run_dir = tmp_path_factory.mktemp("smoke") / "smoke"
    process = subprocess.Popen(
        smoke_command(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while read_manifest_stages(run_dir).get("saes", {}).get("status") != "running":
        if process.poll() is not None:
            pytest.fail("the smoke run finished before it could be killed in the saes stage")
        if time.monotonic() > deadline:
            pytest.fail("the saes stage never started")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # like kill -9 / a lost machine
    process.wait()
    killed = read_manifest_stages(run_dir)
    resumed = subprocess.run(
        smoke_command(run_dir), capture_output=True, text=True, timeout=900, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return SmokeRun(run_dir, killed, resumed)


@pytest.fixture(scope="session")
def tracked_smoke_run(tmp_path_factory):
    """The smoke preset with ``--set tracking=tensorboard`` (tracking, push and SAE-reuse tests)."""
    run_dir = tmp_path_factory.mktemp("tracked") / "smoke"
    command = [*smoke_command(run_dir), "--set", "tracking=tensorboard"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
