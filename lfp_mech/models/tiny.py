"""Tiny random models for tests: 2 layers, d_model 64, built in memory in milliseconds.

One per architecture family lfp_mech supports (``TINY_ARCHITECTURES``), all with the small
byte-level BPE tokenizer shipped in ``lfp_mech/assets/tiny_tokenizer``.
[`save_tiny_model`][lfp_mech.models.tiny.save_tiny_model] writes one as a local Hugging Face
checkpoint folder, which is how the tests run the whole study on every architecture
(``lfp-mech run --preset smoke --set model=<folder>``).
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import (
    AutoTokenizer,
    Gemma2Config,
    Gemma2ForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lfp_mech.devices import seeded
from lfp_mech.errors import UnknownModelError

__all__ = [
    "TINY_ARCHITECTURES",
    "TINY_TOKENIZER_DIR",
    "build_tiny_model",
    "save_tiny_model",
    "tiny_config",
]

TINY_TOKENIZER_DIR = Path(__file__).parent.parent / "assets" / "tiny_tokenizer"

D_MODEL, N_LAYERS, N_HEADS, N_CTX = 64, 2, 4, 256


def _llama(common: dict[str, Any]) -> PretrainedConfig:
    return LlamaConfig(intermediate_size=128, num_key_value_heads=2, **common)


def _neox(common: dict[str, Any]) -> PretrainedConfig:
    return GPTNeoXConfig(intermediate_size=256, rotary_pct=0.25, **common)


def _neo(common: dict[str, Any]) -> PretrainedConfig:
    # TransformerLens assumes GPT-Neo's MLP is 4 * d_model wide (HF's default, intermediate None)
    return GPTNeoConfig(
        **_renamed(common, num_hidden_layers="num_layers", num_attention_heads="num_heads"),
        attention_types=[[["global", "local"], N_LAYERS // 2]],
        window_size=16,
    )


def _gpt2(common: dict[str, Any]) -> PretrainedConfig:
    names = dict(
        hidden_size="n_embd",
        num_hidden_layers="n_layer",
        num_attention_heads="n_head",
        max_position_embeddings="n_positions",
    )
    return GPT2Config(**_renamed(common, **names))


def _gemma(common: dict[str, Any]) -> PretrainedConfig:
    return GemmaConfig(
        intermediate_size=128, num_key_value_heads=1, head_dim=D_MODEL // N_HEADS, **common
    )


def _gemma2(common: dict[str, Any]) -> PretrainedConfig:
    return Gemma2Config(
        intermediate_size=128,
        num_key_value_heads=2,
        head_dim=D_MODEL // N_HEADS,
        query_pre_attn_scalar=D_MODEL // N_HEADS,
        sliding_window=16,
        **common,
    )


def _qwen2(common: dict[str, Any]) -> PretrainedConfig:
    return Qwen2Config(intermediate_size=128, num_key_value_heads=2, **common)


def _mistral(common: dict[str, Any]) -> PretrainedConfig:
    return MistralConfig(
        intermediate_size=128, num_key_value_heads=2, head_dim=D_MODEL // N_HEADS, **common
    )


_BUILDERS: dict[str, tuple[Callable[[dict[str, Any]], PretrainedConfig], type[PreTrainedModel]]] = {
    "tiny-llama": (_llama, LlamaForCausalLM),
    "tiny-neox": (_neox, GPTNeoXForCausalLM),
    "tiny-neo": (_neo, GPTNeoForCausalLM),
    "tiny-gpt2": (_gpt2, GPT2LMHeadModel),
    "tiny-gemma": (_gemma, GemmaForCausalLM),
    "tiny-gemma2": (_gemma2, Gemma2ForCausalLM),
    "tiny-qwen2": (_qwen2, Qwen2ForCausalLM),
    "tiny-mistral": (_mistral, MistralForCausalLM),
}

TINY_ARCHITECTURES: dict[str, str] = {name: cls.__name__ for name, (_, cls) in _BUILDERS.items()}
"""Tiny model name -> its Hugging Face architecture (``tiny-llama`` -> ``LlamaForCausalLM``)."""


def _renamed(common: dict[str, Any], **names: str) -> dict[str, Any]:
    return {names.get(key, key): value for key, value in common.items()}


def tiny_config(name: str = "tiny-llama") -> PretrainedConfig:
    """The HF config of tiny model ``name`` (2 layers, d_model 64, 4 heads, the tiny tokenizer's
    1024 tokens), without building it."""
    if name not in _BUILDERS:
        raise UnknownModelError(
            f"unknown tiny model {name!r}; tiny models: {', '.join(TINY_ARCHITECTURES)}"
        )
    tokenizer = _tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        max_position_embeddings=N_CTX,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    make_config, model_cls = _BUILDERS[name]
    config = make_config(common)
    config.architectures = [model_cls.__name__]
    return config


def build_tiny_model(
    name: str = "tiny-llama", *, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A 2-layer random model (d_model 64, 4 heads, vocab 1024) and the shipped tiny tokenizer.

    ``name`` is one of ``TINY_ARCHITECTURES`` (``tiny-llama``, ``tiny-neox``, ``tiny-neo``,
    ``tiny-gpt2``, ``tiny-gemma``, ``tiny-gemma2``, ``tiny-qwen2``, ``tiny-mistral``). Deterministic from
    ``seed``; the global torch RNG is left untouched.
    """
    config = tiny_config(name)
    with seeded(seed):
        model = _BUILDERS[name][1](config)
    model.name_or_path = name
    return model.eval(), _tokenizer()


def _tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)


def save_tiny_model(name: str, directory: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write tiny model ``name`` (model + tokenizer, safetensors) as an HF checkpoint folder.

    The folder loads with ``AutoModelForCausalLM.from_pretrained`` and as a model anywhere
    lfp_mech takes one (``--set model=<folder>``). Returns the folder.
    """
    model, tokenizer = build_tiny_model(name, seed=seed)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
