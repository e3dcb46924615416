"""Options of the ``activations`` stage: capture hook activations of the tuned policy."""

from dataclasses import dataclass
from typing import Literal

from lfp_mech.config_base import RunDevice, RunDtype, RunSeed, StageConfig

__all__ = ["ActivationConfig", "PAPER_EXAMPLES_PER_LAYER"]

PAPER_EXAMPLES_PER_LAYER = 75_000
"""Training activations per layer in the LFP paper."""


@dataclass
class ActivationConfig(StageConfig):
    """Options of the activation capture."""

    section = "activations"

    hook: Literal["mlp_out", "mlp_post"] = "mlp_out"
    """``"mlp_out"`` → ``blocks.{l}.hook_mlp_out`` (paper); ``"mlp_post"`` →
    ``blocks.{l}.mlp.hook_post``."""
    n_tokens: int = PAPER_EXAMPLES_PER_LAYER
    """Training tokens to capture (per layer; BOS and padding excluded). Paper: 75,000."""
    heldout_tokens: int = 8_192
    """Extra tokens from separate texts, for the SAE metrics (stage only)."""
    batch_size: int = 32
    """Texts per forward pass."""
    context_length: int = 128
    """Texts are truncated to this many tokens including BOS."""
    shard_tokens: int = 8_192
    """Tokens per shard file (memory while capturing or reading is about one shard)."""
    store_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Storage dtype of the activations on disk (readers get float32)."""
    base_model: bool = True
    """Stage only: also capture the run's base model on exactly the same tokens at the same hooks
    (``base_train/``, ``base_heldout/``), for the base-model dictionaries of the saes stage."""
    top_up: bool = True
    """Stage only: if the texts hold too few tokens, sample completions from the tuned policy."""
    max_new_tokens: int = 48
    """Stage only: length of the sampled top-up completions."""
    generation_batch_size: int = 64
    """Stage only: prompts per ``generate`` call when topping up."""
    device: RunDevice = "cpu"
    """Where the model runs."""
    dtype: RunDtype = "float32"
    """The run's dtype: the model runs in it (capture and top-up sampling)."""
    seed: RunSeed = 0
    """Seed of the train/held-out split and of the top-up sampling."""

    def __post_init__(self) -> None:
        self.require_choice("hook", ("mlp_out", "mlp_post"))
        self.require_choice("store_dtype", ("float32", "float16", "bfloat16"))
        self.require_at_least(
            1, "n_tokens", "batch_size", "shard_tokens", "max_new_tokens", "generation_batch_size"
        )
        self.require_at_least(0, "heldout_tokens")
        self.require(self.context_length >= 2, "context_length", "must be >= 2 (BOS + one token)")
