"""The run's device and precision: names, checks against this machine, torch dtypes.

A run has one ``device`` ("cpu", "cuda", "cuda:1", "mps") and one ``dtype``:

* ``"float32"`` (the default): every model in full precision, today's CPU behaviour exactly;
* ``"bfloat16"`` / ``"float16"``: models loaded in that precision for inference (generation,
  activation capture, probes, ablations), and TRL training with mixed precision (``bf16=True`` /
  ``fp16=True``: fp32 master weights, low-precision matmuls);
* ``"auto"``: ``"bfloat16"`` on a CUDA device that supports it, ``"float32"`` otherwise (CPU,
  older GPUs: bf16 is ~6x slower than fp32 on a CPU and fp16 training needs loss scaling).

Some computations stay in float32 whatever the run's dtype, because low precision would change
their results: SAE training, probe fitting, parameter divergence and the IRL reward model's
training (see those stages). Their inputs are cast to float32 where they are read.

[`check_names`][lfp_mech.devices.check_names] validates the names without importing torch (config
time); [`resolve_precision`][lfp_mech.devices.resolve_precision] checks them against this machine
(CUDA present, bf16 supported) and resolves ``"auto"``: the runner calls it before any stage runs.
"""

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lfp_mech.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPES", "check_names", "resolve_precision", "seeded", "torch_dtype"]

DTYPES = ("float32", "bfloat16", "float16", "auto")
"""The run-level ``dtype`` values."""

_DEVICE = re.compile(r"(cpu|mps|cuda|xpu|meta)(:\d+)?")


def check_names(device: str, dtype: str) -> None:
    """Config-time checks of the run's ``device`` and ``dtype`` (no torch import): a valid device
    string, a known dtype, and no float16 on a CPU (TRL/accelerate refuse fp16 training there)."""
    if not _DEVICE.fullmatch(device):
        raise ConfigError(
            f"device = {device!r}: must be 'cpu', 'cuda', 'cuda:<index>', 'mps' or 'xpu'"
        )
    if dtype not in DTYPES:
        raise ConfigError(f"dtype = {dtype!r}: must be one of {', '.join(map(repr, DTYPES))}")
    if dtype == "float16" and device == "cpu":
        raise ConfigError(
            "dtype = 'float16' needs a GPU (fp16 training is not supported on a CPU): "
            "use --set dtype=float32 or --set dtype=bfloat16 on a CPU"
        )


def resolve_precision(device: str, dtype: str) -> str:
    """The dtype a run uses on this machine (``"auto"`` resolved), after checking that the device
    exists and supports it. One-line [`ConfigError`][lfp_mech.errors.ConfigError] otherwise."""
    check_names(device, dtype)
    kind = device.split(":")[0]
    if kind == "cpu":
        return "float32" if dtype == "auto" else dtype
    import torch

    if kind == "cuda":
        _check_cuda(device, torch)
        bf16 = torch.cuda.is_bf16_supported()
        if dtype == "auto":
            return "bfloat16" if bf16 else "float32"
        if dtype == "bfloat16" and not bf16:
            raise ConfigError(
                f"dtype = 'bfloat16' but {device} ({torch.cuda.get_device_name(device)}) does "
                "not support bfloat16: use --set dtype=float16 or --set dtype=float32"
            )
        return dtype
    backend = getattr(torch.backends, kind, None) if kind == "mps" else getattr(torch, kind, None)
    if backend is None or not backend.is_available():
        raise ConfigError(f"device = {device!r}, but torch sees no {kind} device on this machine")
    return "float32" if dtype == "auto" else dtype


def _check_cuda(device: str, torch: Any) -> None:
    if not torch.cuda.is_available():
        cpu_build = torch.version.cuda is None
        why = "this torch is a CPU-only build" if cpu_build else "torch sees no CUDA GPU"
        fix = " (install a CUDA torch: make TORCH_SPEC=torch install)" if cpu_build else ""
        raise ConfigError(f"device = {device!r}, but {why}{fix}; use --set device=cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device = {device!r}, but this machine has {torch.cuda.device_count()} CUDA "
            f"device(s) (cuda:0 … cuda:{torch.cuda.device_count() - 1})"
        )


def torch_dtype(name: "str | torch.dtype | None") -> "torch.dtype | None":
    """``"bfloat16"`` → ``torch.bfloat16`` (a torch dtype or None passes through; ``"auto"`` must
    be resolved first)."""
    if name is None or not isinstance(name, str):
        return name
    if name not in DTYPES or name == "auto":
        raise ConfigError(f"dtype {name!r}: expected 'float32', 'bfloat16' or 'float16'")
    import torch

    return getattr(torch, name)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside: torch's RNGs seeded with ``seed`` (``torch.manual_seed``: the CPU's and every
    GPU's). After: all of them as they were, the GPUs' included (``fork_rng(devices=[])`` would
    restore the CPU's only and leave the caller's GPU RNG reseeded)."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
