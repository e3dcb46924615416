"""Several processes of one run (``accelerate launch --num_processes N -m lfp_mech run ...``).

Under a launcher (``accelerate launch``, ``torchrun``: ``WORLD_SIZE`` > 1) the runner runs the
data-parallel stages (RLHF: TRL's trainers shard each batch over the processes) on every process
and every other stage on the main process only (process index 0), in one run directory. The other
processes wait at a barrier while the main process works, never write the manifest or an
artifact, and leave once the last data-parallel stage is done: the runner then
[`detach`][lfp_mech.distributed.Processes.detach]es, so that the main process continues as a
plain single process (a later stage that trains with TRL, such as IRL's policy re-training, must
not wait for processes that have nothing to do).

Process index, barrier and main-process test come from accelerate's ``PartialState``, which TRL's
trainers share. Without a launcher nothing here imports accelerate or torch.
"""

import logging
import os
from typing import Any

__all__ = ["Processes", "is_main_process", "launched", "wait_for_everyone"]

logger = logging.getLogger(__name__)

_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")
_detached_index: list[int] = []  # set once this process has left the process group


def launched() -> bool:
    """Whether this process is one of several started by a launcher (``WORLD_SIZE`` > 1)."""
    return not _detached_index and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _state(device: str | None = None) -> Any:
    """accelerate's shared ``PartialState`` (set up on first use: gloo when on a CPU)."""
    from accelerate import PartialState

    if PartialState._shared_state:  # already set up, by the runner or a TRL trainer
        return PartialState()
    if device is None:
        import torch

        forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        device = "cuda" if torch.cuda.is_available() and not forced_cpu else "cpu"
    return PartialState(cpu=device.split(":")[0] == "cpu")


def is_main_process() -> bool:
    """True in a single-process run and on process 0 of a launched one."""
    if _detached_index:
        return _detached_index[0] == 0
    return _state().is_main_process if launched() else True


def wait_for_everyone() -> None:
    """A barrier across the launched processes (nothing in a single-process run)."""
    if launched():
        _state().wait_for_everyone()


class Processes:
    """The processes of this run, as the runner sees them.

    ``device`` is the run's device: on a CPU the processes talk over gloo (accelerate's
    ``cpu=True``), on GPUs over NCCL, one GPU per process.
    """

    def __init__(self, device: str) -> None:
        self.state = None
        if launched():
            self.state = _state(device)
            logger.info(
                "process %d of %d (%s)",
                self.state.process_index,
                self.state.num_processes,
                self.state.distributed_type,
            )

    @property
    def count(self) -> int:
        """How many processes share the run (1 once detached)."""
        return 1 if self.state is None else self.state.num_processes

    @property
    def index(self) -> int:
        """This process's index (0: the main process)."""
        if self.state is not None:
            return self.state.process_index
        return _detached_index[0] if _detached_index else 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes the manifest and runs the main-process stages."""
        return self.index == 0

    def wait(self) -> None:
        """Barrier: every process waits here until all have arrived."""
        if self.state is not None:
            self.state.wait_for_everyone()

    def detach(self) -> bool:
        """Leave the process group after a last barrier; True on the main process, which goes on
        alone (accelerate's state and the launcher's variables are reset, so a later TRL trainer
        sees one process)."""
        if self.state is None:
            return self.is_main
        import torch.distributed as dist
        from accelerate.state import AcceleratorState, GradientState

        index = self.state.process_index
        self.state.wait_for_everyone()
        if dist.is_initialized():
            dist.destroy_process_group()
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        for name in _LAUNCHER_VARIABLES:
            os.environ.pop(name, None)
        _detached_index.append(index)
        self.state = None
        if index == 0:
            logger.info("data-parallel stages done: the main process runs the rest alone")
        else:
            logger.info("process %d: data-parallel stages done, leaving", index)
        return index == 0
