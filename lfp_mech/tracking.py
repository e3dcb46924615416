"""Opt-in experiment tracking of the training loops: TensorBoard or Weights & Biases.

The run option ``tracking`` (``"none"``, the default, ``"tensorboard"`` or ``"wandb"``) picks the
backend; the pipeline activates it around each stage with [`tracking`][lfp_mech.tracking.tracking].
A training loop asks for one tracker per thing it trains and logs scalars to it, without knowing
the backend::

    tracker = open_tracker("L3_small")  # a no-op unless tracking is active
    tracker.log_scalars(step, {"train/loss": loss, "train/l0": l0})
    tracker.close()

What is logged where (``<run_dir>/tracking/<stage>/<name>/``):

* ``rlhf`` (and the policies the ``irl`` stage trains): every Trainer log row, tags as TRL/
  transformers name them (``train/reward``, ``train/kl``, ``train/loss``, ...), step = optimizer
  step; names ``train``, ``irl_rlhf``, ``toxicity/rlhf``, ...
* ``saes``: per step ``train/loss``, ``train/mse_loss``, ``train/l1_loss``, ``train/l0``,
  ``train/fvu``; one name per dictionary (``L3_small``, ``untied/L3_small``,
  ``l1_sweep/alpha_0.001``).
* ``irl``: per epoch ``train/loss``, ``train/pair_acc`` and the held-out ``heldout/acc``,
  ``heldout/f1``, ``heldout/spearman``; one name per task and seed (``vader/seed_0``).

TensorBoard writes event files there (``tensorboard --logdir runs/<name>/tracking``). W&B starts one
W&B run per tracker, named ``<run>/<stage>/<name>`` and grouped by run, in the project
``$WANDB_PROJECT`` (default ``lfp_mech``), its local files there; ``WANDB_MODE=offline`` logs
without an account (``wandb sync`` uploads later).

Tracking only observes: it draws no random numbers and changes no computation, so results (and the
stages' fingerprints, which it does not enter) are the same with or without it.
"""

import contextlib
import importlib.util
import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lfp_mech.errors import ConfigError

__all__ = [
    "BACKENDS",
    "TRACKING_DIR",
    "Backend",
    "Tracker",
    "check_backend",
    "check_backend_name",
    "open_tracker",
    "tracker_name",
    "tracking",
]

logger = logging.getLogger(__name__)

Backend = Literal["none", "tensorboard", "wandb"]
BACKENDS: tuple[str, ...] = ("none", "tensorboard", "wandb")
"""The tracking backends."""
TRACKING_DIR = "tracking"
"""The folder of a run directory that holds the tracking logs, one subfolder per stage."""
_INSTALL = {"tensorboard": "pip install tensorboard", "wandb": "pip install wandb"}


def check_backend_name(backend: str) -> None:
    """A one-line [`ConfigError`][lfp_mech.errors.ConfigError] if ``backend`` is not one of
    [`BACKENDS`][lfp_mech.tracking.BACKENDS] (config time: no package lookup)."""
    if backend not in BACKENDS:
        raise ConfigError(f"tracking = {backend!r}: must be one of {', '.join(BACKENDS)}")


def check_backend(backend: str) -> None:
    """A one-line [`ConfigError`][lfp_mech.errors.ConfigError] if ``backend`` is unknown or its
    package is not installed (checked before any stage runs)."""
    check_backend_name(backend)
    if backend != "none" and importlib.util.find_spec(backend) is None:
        raise ConfigError(
            f"tracking = {backend!r} needs the {backend} package: {_INSTALL[backend]} "
            "(or pip install 'lfp_mech[tracking]')"
        )
    if backend == "wandb" and os.environ.get("WANDB_MODE") == "disabled":
        logger.warning(
            "tracking = 'wandb' but WANDB_MODE=disabled: W&B logs nothing (unset WANDB_MODE, or "
            "set WANDB_MODE=offline to log locally without an account)"
        )


class Tracker:
    """Where a training loop logs scalars. This base class is the no-op tracker (tracking
    ``"none"``); [`open_tracker`][lfp_mech.tracking.open_tracker] returns the active backend's."""

    backend: str = "none"
    """The backend name."""
    log_dir: Path | None = None
    """Where the backend writes (None for the no-op tracker)."""

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded (loops skip computing metrics only a tracker needs)."""
        return self.backend != "none"

    def log_scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Record ``values`` (tag -> number) at ``step``; non-numbers and NaNs are skipped."""

    def close(self) -> None:
        """Flush and release the backend (the tracker logs nothing afterwards)."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class TensorBoardTracker(Tracker):
    """Scalars as TensorBoard event files in ``log_dir`` (``torch.utils.tensorboard``)."""

    backend = "tensorboard"

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self._writer: Any = SummaryWriter(log_dir=str(log_dir))

    def log_scalars(self, step: int, values: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        for tag, value in _numbers(values).items():
            self._writer.add_scalar(tag, value, global_step=int(step))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbTracker(Tracker):
    """Scalars as one W&B run (``wandb.init(..., reinit="create_new")``), files in ``log_dir``."""

    backend = "wandb"

    def __init__(
        self, log_dir: Path, name: str, group: str, config: Mapping[str, Any] | None
    ) -> None:
        import wandb

        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._run: Any = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "lfp_mech"),
            name=name,
            group=group,
            dir=str(log_dir),
            config=dict(config or {}),
            reinit="create_new",
        )

    def log_scalars(self, step: int, values: Mapping[str, Any]) -> None:
        if self._run is not None:
            self._run.log(_numbers(values), step=int(step))

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for tag, value in values.items():
        if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
            value = value.item()
        if isinstance(value, bool | int | float) and not math.isnan(float(value)):
            out[str(tag)] = float(value)
    return out


@dataclass(frozen=True)
class _Active:
    backend: str
    root: Path
    base: Path | None
    group: str
    prefix: str


_ACTIVE: ContextVar[_Active | None] = ContextVar("lfp_mech_tracking", default=None)


@contextlib.contextmanager
def tracking(
    backend: str,
    root: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    group: str = "lfp_mech",
    prefix: str = "",
) -> Iterator[None]:
    """Make ``backend`` the active tracking backend inside the block, logging under ``root``.

    Args:
        backend: ``"none"`` (trackers are no-ops), ``"tensorboard"`` or ``"wandb"``.
        root: the folder trackers write into (one subfolder per tracker name); a run uses
            ``<run_dir>/tracking/<stage>``.
        base: the folder the trained things are written into (a run uses ``<run_dir>/<stage>``):
            [`tracker_name`][lfp_mech.tracking.tracker_name] names a tracker by its path there.
        group: the W&B group (a run uses the run's name).
        prefix: put before tracker names in W&B run names (a run uses the stage name).
    """
    check_backend(backend)
    where = None if base is None else Path(base)
    active = None if backend == "none" else _Active(backend, Path(root), where, group, prefix)
    token = _ACTIVE.set(active)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def open_tracker(name: str, config: Mapping[str, Any] | None = None) -> Tracker:
    """A tracker for one training loop (its subfolder ``name`` under the active root), or the
    no-op [`Tracker`][lfp_mech.tracking.Tracker] when no tracking is active.

    ``config`` (plain data) is recorded with the W&B run."""
    active = _ACTIVE.get()
    if active is None:
        return Tracker()
    log_dir = active.root / name
    if active.backend == "tensorboard":
        return TensorBoardTracker(log_dir)
    full_name = "/".join(part for part in (active.group, active.prefix, name) if part)
    return WandbTracker(log_dir, full_name, active.group, config)


def tracker_name(folder: str | os.PathLike[str], default: str = "train") -> str:
    """A tracker name for what is trained into ``folder``: its path relative to the active
    ``base`` folder (a run's stage folder), ``default`` for that folder itself, else the
    folder's name."""
    folder = Path(folder).resolve()
    active = _ACTIVE.get()
    if active is not None and active.base is not None:
        base = active.base.resolve()
        if folder == base:
            return default
        if folder.is_relative_to(base):
            return folder.relative_to(base).as_posix()
    return folder.name or default
