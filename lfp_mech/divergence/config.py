"""Options of the ``divergence`` stage: which blocks did RLHF change most?"""

import re
from dataclasses import dataclass
from typing import Literal

from lfp_mech.config_base import RunDevice, StageConfig

__all__ = ["DEFAULT_BLOCK_PATTERN", "DivergenceConfig", "Measure"]

Measure = Literal["parameter", "relative", "activation", "patching"]

DEFAULT_BLOCK_PATTERN = r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\."
"""Regex whose first group is the block index in an HF parameter name."""


@dataclass
class DivergenceConfig(StageConfig):
    """Options of the layer-divergence stage."""

    section = "divergence"

    top_k: int = 5
    """How many blocks later stages use (paper: 5), the largest by ``select_by``."""
    select_by: Measure = "patching"
    """The measure that chooses the blocks: "parameter" (paper: Σ_p ||Δθ_p||_F), "relative"
    (that over Σ_p ||θ_base,p||_F), "activation" (mean ||Δ mlp_out|| / mean ||mlp_out|| on
    validation texts) or "patching" (share of the base→tuned log-prob gap of the tuned
    completions that patching the block's tuned MLP output into the base model recovers).
    Default "patching": the one measure that ties a block to the tuned behaviour rather than
    to how far its weights or activations moved (docs/tutorials/layer-choice.md)."""
    behaviour: bool = True
    """Also measure the activation change and the patching effect (needs forward passes on
    validation texts; False: the parameter measures only, as in the paper)."""
    n_validation_prompts: int = 16
    """Validation prompts, drawn with the run's seed from the task's *train* split (never the
    held-out test prompts on which later stages report), completed by the tuned policy."""
    max_new_tokens: int = 20
    """Length of the tuned policy's completions of the validation prompts (tokens)."""
    batch_size: int = 16
    """Sequences per forward pass of the behaviour measures."""
    block_pattern: str = DEFAULT_BLOCK_PATTERN
    """Regex on HF parameter names; group 1 is the block index."""
    param_filter: str | None = None
    """If set, only block parameters whose name matches this regex count (e.g. ``"mlp"`` for an
    MLP-only divergence). None (paper): every parameter of the block."""
    device: RunDevice = "cpu"
    """Where the differences are computed (models are loaded on the CPU)."""

    def __post_init__(self) -> None:
        self.require_at_least(1, "top_k", "n_validation_prompts", "max_new_tokens", "batch_size")
        self.require_choice("select_by", ("parameter", "relative", "activation", "patching"))
        self.require(
            self.behaviour or self.select_by in ("parameter", "relative"),
            "select_by",
            f"{self.select_by!r} needs divergence.behaviour=True (or select_by='parameter')",
        )
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
