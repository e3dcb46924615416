"""Options of the ``divergence`` stage: which blocks did RLHF change most?"""

import re
from dataclasses import dataclass

from lfp_mech.config_base import RunDevice, StageConfig

__all__ = ["DEFAULT_BLOCK_PATTERN", "DivergenceConfig"]

DEFAULT_BLOCK_PATTERN = r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\."
"""Regex whose first group is the block index in an HF parameter name."""


@dataclass
class DivergenceConfig(StageConfig):
    """Options of the layer-divergence stage."""

    section = "divergence"

    top_k: int = 5
    """How many of the most divergent blocks to select (paper: 5)."""
    block_pattern: str = DEFAULT_BLOCK_PATTERN
    """Regex on HF parameter names; group 1 is the block index."""
    param_filter: str | None = None
    """If set, only block parameters whose name matches this regex count (e.g. ``"mlp"`` for an
    MLP-only divergence). None (paper): every parameter of the block."""
    device: RunDevice = "cpu"
    """Where the differences are computed (models are loaded on the CPU)."""

    def __post_init__(self) -> None:
        self.require_at_least(1, "top_k")
        for option in ("block_pattern", "param_filter"):
            pattern = getattr(self, option)
            if pattern is None:
                continue
            try:
                compiled = re.compile(pattern)
            except re.error as err:
                raise self.invalid(option, f"not a valid regex ({err})") from err
            if option == "block_pattern":
                self.require(
                    compiled.groups >= 1,
                    option,
                    r"needs a capture group for the block index, e.g. 'layers\.(\d+)\.'",
                )
