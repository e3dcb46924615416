"""How texts become model inputs for a capture: ``[BOS] + tokens``, right-padded, with a mask.

TransformerLens prepends BOS to a string; the capture does the same by hand (the tokenizer adds no
special tokens, BOS is prepended explicitly) so that texts can be batched with an explicit attention
mask. Every helper here cuts a text the same way: at most ``context_length - 1`` tokens, leaving
room for BOS. The SAE stage tokenizes its CE-loss texts with
[`tokenize_for_model`][lfp_mech.activations.tokenization.tokenize_for_model], so the CE loss is
measured on exactly what the SAEs were trained on."""

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from lfp_mech.errors import ConfigError, LfpMechError

__all__ = [
    "TOKENIZE_CHUNK",
    "TokenIds",
    "bos_id",
    "pad_batch",
    "pad_id",
    "take_until",
    "token_counts",
    "tokenize_for_model",
    "tokenize_texts",
]

TOKENIZE_CHUNK = 256
"""Texts per tokenizer call when tokenizing a whole corpus: bounds the tokenizer's temporary
objects (lists of Python ints, ~0.2 kB a token) to one chunk."""


def tokenize_texts(tokenizer: Any, texts: Sequence[str], context_length: int) -> list[list[int]]:
    """Token ids of each text without special tokens, truncated to leave room for BOS."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [ids[: context_length - 1] for ids in encoded]


def token_counts(tokenizer: Any, texts: Sequence[str], context_length: int) -> list[int]:
    """Token count of each text as
    [`tokenize_texts`][lfp_mech.activations.tokenization.tokenize_texts] cuts it, tokenizing chunk
    by chunk."""
    return [
        len(ids)
        for start in range(0, len(texts), TOKENIZE_CHUNK)
        for ids in tokenize_texts(tokenizer, texts[start : start + TOKENIZE_CHUNK], context_length)
    ]


class TokenIds:
    """The [`tokenize_texts`][lfp_mech.activations.tokenization.tokenize_texts] ids of many texts,
    held compactly: one flat int32 tensor.

    Lists of Python ints cost ~36 bytes a token (and the tokenizer's temporaries more); this costs
    4, and the texts are tokenized
    [`TOKENIZE_CHUNK`][lfp_mech.activations.tokenization.TOKENIZE_CHUNK] at a time."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], context_length: int) -> None:
        parts, self.lengths = [], []
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            chunk = tokenize_texts(tokenizer, texts[start : start + TOKENIZE_CHUNK], context_length)
            parts.append(torch.tensor([i for ids in chunk for i in ids], dtype=torch.int32))
            self.lengths += [len(ids) for ids in chunk]
        self.flat = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int32)
        self.starts = list(itertools.accumulate(self.lengths, initial=0))

    def __getitem__(self, index: int) -> list[int]:
        start = self.starts[index]
        return self.flat[start : start + self.lengths[index]].tolist()


def take_until(lengths: Sequence[int], limit: int) -> list[int]:
    """Indices of the first texts whose token counts reach ``limit`` (all if ``limit <= 0``).

    Empty texts (count 0) are skipped.
    """
    chosen, total = [], 0
    for index, length in enumerate(lengths):
        if limit > 0 and total >= limit:
            break
        if length:
            chosen.append(index)
            total += length
    return chosen


def bos_id(tokenizer: Any) -> int:
    """The id prepended to every text: BOS, or EOS for tokenizers without a BOS token."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise LfpMechError("the tokenizer has neither a BOS nor an EOS token to prepend")
    return int(bos)


def pad_id(tokenizer: Any) -> int:
    """The padding id: the tokenizer's pad token, else
    [`bos_id`][lfp_mech.activations.tokenization.bos_id]."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos_id(tokenizer)
    return int(pad)


def pad_batch(
    token_ids: Sequence[Sequence[int]], bos: int, pad: int
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """``[BOS] + ids`` right-padded to the longest row, and the mask of real positions."""
    length = 1 + max(len(ids) for ids in token_ids)
    tokens = torch.full((len(token_ids), length), pad, dtype=torch.long)
    mask = torch.zeros((len(token_ids), length), dtype=torch.bool)
    for row, ids in enumerate(token_ids):
        tokens[row, : len(ids) + 1] = torch.tensor([bos, *ids], dtype=torch.long)
        mask[row, : len(ids) + 1] = True
    return tokens, mask


def tokenize_for_model(
    tokenizer: Any, texts: Sequence[str], context_length: int = 128
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """``[BOS] + tokens`` of each text, right-padded, and the mask of real (non-pad) positions.

    The same tokenisation the capture uses; the SAE stage uses it for its held-out CE loss.
    Empty texts are dropped.
    """
    ids = [i for i in tokenize_texts(tokenizer, texts, context_length) if i]
    if not ids:
        raise ConfigError("no non-empty texts to tokenize")
    return pad_batch(ids, bos_id(tokenizer), pad_id(tokenizer))
