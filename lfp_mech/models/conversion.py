"""Which architectures lfp_mech runs, and the TransformerLens 3.9 config shims they need.

TransformerLens turns a Hugging Face model into a ``HookedTransformer`` from a
``HookedTransformerConfig`` that it derives from the HF config. Two of the supported families need
help with transformers 5:

* GPT-2: TransformerLens reads ``config.n_ctx``, which transformers 5 no longer defines (it is
  ``n_positions``); [`compat_hf_config`][lfp_mech.models.conversion.compat_hf_config] adds it back.
* Gemma and Gemma 2: TransformerLens only knows Google's released sizes *by hub name*
  (``google/gemma-2b``, ...), hard-coded; a local or fine-tuned Gemma folder, or any other size,
  fails with "GemmaForCausalLM is not currently supported".
  [`gemma_config_dict`][lfp_mech.models.conversion.gemma_config_dict] derives the same fields
  from the HF config (the weights are then converted by TransformerLens's own Gemma converter).

Everything else (Llama, GPT-NeoX, GPT-Neo, Qwen2, Mistral) converts through TransformerLens
unchanged. The architecture is checked
([`check_architecture`][lfp_mech.models.conversion.check_architecture]) from the HF config alone,
before any stage of a run runs and before any weights load.
"""

import logging
from typing import Any

from transformers import PretrainedConfig

from lfp_mech.errors import UnsupportedModelError

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "architecture_of",
    "is_gemma",
    "UNTESTED_ARCHITECTURES",
    "check_architecture",
    "compat_hf_config",
    "gemma_config_dict",
    "model_depth",
]

SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "Llama, SmolLM/SmolLM2",
    "GPTNeoXForCausalLM": "GPT-NeoX, Pythia",
    "GPTNeoForCausalLM": "GPT-Neo",
    "GPT2LMHeadModel": "GPT-2",
    "GemmaForCausalLM": "Gemma",
    "Gemma2ForCausalLM": "Gemma 2",
    "Qwen2ForCausalLM": "Qwen2, Qwen2.5",
    "MistralForCausalLM": "Mistral",
}
"""HF architecture -> model families lfp_mech supports. Each has a tiny random checkpoint
(``tiny-*``) in the tests: Llama, GPT-NeoX, GPT-Neo, GPT-2, Gemma and Qwen2 run the whole smoke
study from a local folder; Gemma 2 and Mistral are tested for conversion parity and through the
IRL reward model."""

UNTESTED_ARCHITECTURES: tuple[str, ...] = (
    "GPTJForCausalLM",
    "OPTForCausalLM",
    "PhiForCausalLM",
    "Phi3ForCausalLM",
    "Qwen3ForCausalLM",
    "OlmoForCausalLM",
    "Olmo2ForCausalLM",
)
"""Causal LMs TransformerLens 3.9 converts but lfp_mech does not test: allowed, with a warning."""

_GEMMA = ("GemmaForCausalLM", "Gemma2ForCausalLM")


def architecture_of(config: PretrainedConfig) -> str:
    """The HF causal-LM class of a config (``LlamaForCausalLM``): its ``architectures``, else
    the class ``AutoModelForCausalLM`` would build for its ``model_type``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = getattr(config, "architectures", None) or []
    if names:
        return str(names[0])
    model_type = str(getattr(config, "model_type", "unknown"))
    return str(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, model_type))


def check_architecture(architecture: str, model: str) -> None:
    """Raise [`UnsupportedModelError`][lfp_mech.errors.UnsupportedModelError] (one line naming
    the supported architectures) unless TransformerLens can convert ``architecture``."""
    if architecture in SUPPORTED_ARCHITECTURES:
        return
    if architecture in UNTESTED_ARCHITECTURES:
        logger.warning(
            "%s (%s) converts with TransformerLens but is not tested with lfp_mech",
            model,
            architecture,
        )
        return
    supported = ", ".join(f"{arch} ({fam})" for arch, fam in SUPPORTED_ARCHITECTURES.items())
    raise UnsupportedModelError(
        f"{model} is a {architecture}, which TransformerLens cannot hook; supported "
        f"architectures: {supported}"
    )


def model_depth(config: PretrainedConfig) -> int:
    """Number of decoder blocks, from the HF config (``num_hidden_layers`` under any of its
    aliases: ``n_layer``, ``num_layers``), through ``get_text_config()`` for multimodal
    configs."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(text, name, None)
        if isinstance(value, int):
            return value
    raise UnsupportedModelError(
        f"cannot tell the number of decoder blocks of a {architecture_of(config)} from its "
        "config (no num_hidden_layers)"
    )


def compat_hf_config(config: PretrainedConfig) -> PretrainedConfig:
    """``config`` with the attributes TransformerLens 3.9 reads but transformers 5 dropped
    (GPT-2's ``n_ctx``, the same as ``n_positions``). Changes ``config`` in place."""
    if config.model_type == "gpt2" and not hasattr(config, "n_ctx"):
        config.n_ctx = config.n_positions
    return config


def gemma_config_dict(config: PretrainedConfig, architecture: str) -> dict[str, Any]:
    """TransformerLens config fields of a Gemma / Gemma 2 model, read from its HF config.

    The same fields TransformerLens hard-codes for ``google/gemma-2b`` and ``google/gemma-2-2b``
    (RMS norms, gated MLP, rotary on the whole head, an attention scale of
    ``query_pre_attn_scalar`` for Gemma 2 with its soft caps and alternating sliding-window
    layers), so any size and any local folder converts.
    """
    head = int(config.head_dim or config.hidden_size // config.num_attention_heads)
    rope = getattr(config, "rope_parameters", None) or {}
    cfg: dict[str, Any] = {
        "d_model": config.hidden_size,
        "d_head": head,
        "n_heads": config.num_attention_heads,
        "d_mlp": config.intermediate_size,
        "n_layers": config.num_hidden_layers,
        "n_ctx": config.max_position_embeddings,
        "eps": config.rms_norm_eps,
        "d_vocab": config.vocab_size,
        "act_fn": getattr(config, "hidden_activation", None) or config.hidden_act,
        "initializer_range": config.initializer_range,
        "normalization_type": "RMS",
        "rotary_base": float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
        "rotary_dim": head,
        "positional_embedding_type": "rotary",
        "use_attn_scale": True,
        "n_key_value_heads": config.num_key_value_heads,
        "gated_mlp": True,
        "final_rms": True,
        "original_architecture": architecture,
    }
    if architecture == "Gemma2ForCausalLM":
        kinds = list(getattr(config, "layer_types", None) or [])
        cfg |= {
            "attn_scale": float(config.query_pre_attn_scalar) ** 0.5,
            "window_size": config.sliding_window,
            "use_local_attn": True,
            "attn_types": ["local" if k == "sliding_attention" else "global" for k in kinds],
            "attn_scores_soft_cap": config.attn_logit_softcapping,
            "output_logits_soft_cap": config.final_logit_softcapping,
            "use_normalization_before_and_after": True,
        }
    return cfg


def is_gemma(architecture: str) -> bool:
    """Whether ``architecture`` needs [`gemma_config_dict`][lfp_mech.models.conversion.gemma_config_dict]."""
    return architecture in _GEMMA
