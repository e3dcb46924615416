"""What the trainable part of a reward model reads, and its on-disk cache.

[`RewardInputs`][lfp_mech.irl.inputs.RewardInputs] holds, for a list of texts, the token ids (full
mode), the residual stream entering the first trainable block (cached mode) or the pooled readouts
the head reads (head-only). [`encode_cached`][lfp_mech.irl.inputs.encode_cached] runs the frozen
part once and caches the result as safetensors (``reward_inputs.safetensors`` in a run), reused
while texts and base weights match."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from lfp_mech._io import load_tensors, save_tensors, sha256_json

if TYPE_CHECKING:
    from lfp_mech.irl.reward_model import RewardModel

__all__ = ["RewardInputs", "concat_inputs", "encode_cached"]

logger = logging.getLogger(__name__)


@dataclass
class RewardInputs:
    """What the trainable part of a [`RewardModel`][lfp_mech.irl.reward_model.RewardModel] reads.

    ``kind``: "tokens" (``values``: input ids ``[text pos]``, full mode), "hidden" (residual
    stream entering the first trainable block, ``[text pos d_model]``) or "pooled" (the pooled
    readouts the head reads, ``[text readout*d_model]``, head-only). Rows are
    right-padded; ``attention_mask`` is ``[text pos]`` (all ones ``[text 1]`` for "pooled").
    """

    kind: Literal["tokens", "hidden", "pooled"]
    values: Tensor
    attention_mask: Tensor

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def select(self, index: Int[Tensor, " sel"]) -> "RewardInputs":
        """Rows ``index``, cut to the longest selected row."""
        mask = self.attention_mask[index]
        if self.kind == "pooled":
            return RewardInputs(self.kind, self.values[index], mask)
        width = max(int(mask.sum(-1).max()), 1)
        return RewardInputs(self.kind, self.values[index, :width], mask[:, :width])

    def to(self, device: str | torch.device) -> "RewardInputs":
        """The same inputs on ``device``."""
        return RewardInputs(self.kind, self.values.to(device), self.attention_mask.to(device))

    def save(self, path: str | os.PathLike[str], key: str) -> Path:
        """Write the inputs as safetensors, with ``key`` (what they were computed from)."""
        return save_tensors(
            path,
            {"values": self.values, "attention_mask": self.attention_mask},
            metadata={"kind": self.kind, "key": key},
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], key: str) -> "RewardInputs | None":
        """The cache at ``path`` if it was written with ``key``, else None."""
        from safetensors import safe_open

        if not Path(path).exists():
            return None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("key") != key:
            return None
        tensors = load_tensors(path)
        return cls(meta["kind"], tensors["values"], tensors["attention_mask"])  # type: ignore[arg-type]


def concat_inputs(a: RewardInputs, b: RewardInputs) -> RewardInputs:
    """The rows of ``a`` then those of ``b`` (right-padded with zeros to the wider one)."""
    if a.kind == "pooled":
        return RewardInputs(
            a.kind, torch.cat([a.values, b.values]), torch.cat([a.attention_mask, b.attention_mask])
        )
    width = max(a.values.shape[1], b.values.shape[1])

    def pad(t: Tensor) -> Tensor:
        extra = width - t.shape[1]
        if extra == 0:
            return t
        shape = (t.shape[0], extra, *t.shape[2:])
        return torch.cat([t, torch.zeros(shape, dtype=t.dtype, device=t.device)], dim=1)

    return RewardInputs(
        a.kind,
        torch.cat([pad(a.values), pad(b.values)]),
        torch.cat([pad(a.attention_mask), pad(b.attention_mask)]),
    )


def encode_cached(
    rm: "RewardModel",
    texts: list[str],
    batch_size: int,
    cache_path: str | os.PathLike[str] | None,
) -> RewardInputs:
    """``rm.encode(texts)``, read from / written to ``cache_path`` when given (cached mode).

    The cache key covers the texts, the base model's name and frozen weights, the first
    trainable block, the readouts and the truncation length.
    """
    if cache_path is None or rm.mode == "full":
        return rm.encode(texts, batch_size=batch_size)
    key = sha256_json(
        {
            "texts": texts,
            "base": rm.base_model,
            "frozen": rm.frozen_fingerprint(),
            "k": rm.first_trainable_layer,
            "pooling": rm.pooling,
            "readouts": rm.readouts,
            "max_length": rm.max_length,
        }
    )
    cached = RewardInputs.load(cache_path, key)
    if cached is not None and len(cached) == len(texts):
        logger.info("reusing cached hidden states from %s", cache_path)
        return cached
    inputs = rm.encode(texts, batch_size=batch_size)
    inputs.save(cache_path, key)
    return inputs
