"""Tiny random models for tests: 2 layers, d_model 64, built in memory in milliseconds."""

from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoTokenizer,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lfp_mech.errors import UnknownModelError

TINY_TOKENIZER_DIR = Path(__file__).parent.parent / "assets" / "tiny_tokenizer"


def build_tiny_model(
    name: Literal["tiny-llama", "tiny-neox"] = "tiny-llama", *, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A 2-layer random model (d_model 64, vocab 1024) and the shipped tiny tokenizer.

    Deterministic from ``seed``; the global torch RNG is left untouched.
    """
    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if name == "tiny-llama":
        config = LlamaConfig(intermediate_size=128, num_key_value_heads=2, **common)
        model_cls = LlamaForCausalLM
    elif name == "tiny-neox":
        config = GPTNeoXConfig(intermediate_size=256, rotary_pct=0.25, **common)
        model_cls = GPTNeoXForCausalLM
    else:
        raise UnknownModelError(f"unknown tiny model {name!r}: use 'tiny-llama' or 'tiny-neox'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.name_or_path = name
    return model.eval(), tokenizer
