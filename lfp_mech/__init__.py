"""lfp_mech: what did a language model learn from its reward, and how far is that from the reward?"""

from lfp_mech.models import (
    DEFAULT_MODEL,
    MODEL_REGISTRY,
    available_models,
    build_tiny_model,
    hooked_from_hf,
    load_hf_model,
    load_model,
    logprob_parity,
    parity_tokens,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_REGISTRY",
    "available_models",
    "build_tiny_model",
    "hooked_from_hf",
    "load_hf_model",
    "load_model",
    "logprob_parity",
    "parity_tokens",
]
