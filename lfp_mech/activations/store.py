"""The on-disk activation store: sharded safetensors written while capturing, streamed when read.

Layout of a store directory::

    shard_00000.safetensors   one tensor per hook ([n, d_in]) + text_index, position ([n])
    shard_00001.safetensors   ...
    texts.json                the captured texts (text_index indexes them)
    store.json                what the store holds (written last: a store without it is partial)

Every hook's activations of a token live in the same shard, so one shard bounds the memory of both
the writer ([`ShardWriter`][lfp_mech.activations.store.ShardWriter]) and the reader
([`ActivationStore`][lfp_mech.activations.store.ActivationStore])."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from torch import Tensor

from lfp_mech._io import read_json, save_tensors
from lfp_mech.errors import ConfigError, LfpMechError

__all__ = ["STORE_FILE", "STORE_VERSION", "TEXTS_FILE", "ActivationStore", "ShardWriter"]

STORE_FILE = "store.json"
"""The store's description: hooks, layers, widths, token and text counts, shards, dtype, model."""
TEXTS_FILE = "texts.json"
"""The captured texts, in the order ``text_index`` refers to."""
STORE_VERSION = 1


class ActivationStore:
    """Read a capture directory: hook names, sizes, and streamed batches of one hook.

    Example::

        store = ActivationStore("runs/default/activations/train")
        for batch in store.iter_batches("blocks.27.hook_mlp_out", 512, seed=0):
            ...  # batch: Float[Tensor, "batch d_in"]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        meta_path = self.path / STORE_FILE
        if not meta_path.exists():
            raise LfpMechError(
                f"{self.path} is not an activation store (no {STORE_FILE}); capture one with "
                "capture_activations(...) or the `activations` stage"
            )
        self.meta: dict[str, Any] = read_json(meta_path)

    @property
    def hook_names(self) -> list[str]:
        """The captured hooks, in the order of
        [`layers`][lfp_mech.activations.store.ActivationStore.layers]."""
        return list(self.meta["hook_names"])

    @property
    def layers(self) -> list[int]:
        """The captured block indices."""
        return list(self.meta["layers"])

    @property
    def n_tokens(self) -> int:
        """Stored tokens (activation vectors per hook)."""
        return int(self.meta["n_tokens"])

    @property
    def d_in(self) -> int:
        """The activation width (the same for every hook of one kind)."""
        widths = set(self.meta["d_in"].values())
        if len(widths) != 1:
            raise LfpMechError(f"hooks have different widths {self.meta['d_in']}: use d_in_of()")
        return widths.pop()

    def d_in_of(self, hook: str) -> int:
        """The activation width of ``hook``."""
        self._check_hook(hook)
        return int(self.meta["d_in"][hook])

    def texts(self) -> list[str]:
        """The texts the activations were captured from (indexed by ``text_index``)."""
        return json.loads((self.path / TEXTS_FILE).read_text(encoding="utf-8"))

    def iter_batches(
        self,
        hook: str,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Float[Tensor, "batch d_in"]]:
        """One epoch of ``[batch_size, d_in]`` float32 batches of ``hook``.

        Every token appears exactly once (the last batch is smaller unless ``drop_last``).
        With ``shuffle``, shards are visited in a random order and tokens are permuted within
        each shard (remainders carry over to the next shard); memory is about one shard.
        """
        self._check_hook(hook)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        n_shards = len(self.meta["shards"])
        order = torch.randperm(n_shards, generator=generator) if shuffle else range(n_shards)
        carry: Tensor | None = None
        for shard in order:
            acts = self._read(int(shard), hook)
            if shuffle:
                acts = acts[torch.randperm(acts.shape[0], generator=generator)]
            if carry is not None and carry.shape[0]:
                acts = torch.cat([carry, acts])
            n_full = acts.shape[0] - acts.shape[0] % batch_size
            for start in range(0, n_full, batch_size):
                yield acts[start : start + batch_size]
            carry = acts[n_full:]
        if carry is not None and carry.shape[0] and not drop_last:
            yield carry

    def load_all(self, hook: str, max_tokens: int | None = None) -> Float[Tensor, "n d_in"]:
        """The first ``max_tokens`` activations of ``hook`` in store order (all by default)."""
        self._check_hook(hook)
        parts, n = [], 0
        for shard in range(len(self.meta["shards"])):
            if max_tokens is not None and n >= max_tokens:
                break
            part = self._read(shard, hook)
            if max_tokens is not None:
                part = part[: max_tokens - n]
            parts.append(part)
            n += part.shape[0]
        return torch.cat(parts) if parts else torch.empty(0, self.d_in_of(hook))

    def token_index(self) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"]]:
        """``(text_index, position)`` of every stored token, in store order."""
        text, position = [], []
        for shard in self.meta["shards"]:
            with safe_open(self.path / shard["file"], framework="pt") as f:
                text.append(f.get_tensor("text_index"))
                position.append(f.get_tensor("position"))
        return torch.cat(text), torch.cat(position)

    def _read(self, shard: int, hook: str) -> Float[Tensor, "n d_in"]:
        with safe_open(self.path / self.meta["shards"][shard]["file"], framework="pt") as f:
            return f.get_tensor(hook).float()

    def _check_hook(self, hook: str) -> None:
        if hook not in self.meta["hook_names"]:
            raise ConfigError(f"hook {hook!r} is not in {self.path}; stored: {self.hook_names}")

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, hooks={self.hook_names}, n={self.n_tokens})"


class ShardWriter:
    """Buffers captured activations and writes a shard every ``shard_tokens`` tokens.

    Set `directory` before the first [`add`][lfp_mech.activations.store.ShardWriter.add]; call
    [`close`][lfp_mech.activations.store.ShardWriter.close] to write the rest. `shards`, `widths`
    and `n_written` describe what was written."""

    def __init__(self, names: list[str], shard_tokens: int, dtype: torch.dtype) -> None:
        self.names = names
        self.shard_tokens = shard_tokens
        self.dtype = dtype
        self.directory: Path | None = None
        self.buffer: dict[str, list[Tensor]] = {name: [] for name in [*names, "_text", "_pos"]}
        self.buffered = 0
        self.n_written = 0
        self.shards: list[dict[str, Any]] = []
        self.widths: dict[str, int] = {}

    def add(
        self,
        acts: dict[str, Float[Tensor, "n d_in"]],
        text_index: Int[Tensor, " n"],
        position: Int[Tensor, " n"],
    ) -> None:
        """Buffer one batch of tokens (every hook's activations, text index and position)."""
        for name in self.names:
            self.buffer[name].append(acts[name].to(self.dtype))
            self.widths[name] = acts[name].shape[-1]
        self.buffer["_text"].append(text_index.to(torch.int64))
        self.buffer["_pos"].append(position.to(torch.int64))
        self.buffered += text_index.shape[0]
        while self.buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def close(self) -> None:
        """Write the buffered remainder as the last (smaller) shard."""
        if self.buffered:
            self._flush(self.buffered)

    def _flush(self, n: int) -> None:
        if self.directory is None:
            raise LfpMechError("ShardWriter.directory must be set before adding activations")
        tensors, rest = {}, {}
        for key, parts in self.buffer.items():
            full = torch.cat(parts)
            tensors[key], rest[key] = full[:n], full[n:]
        self.buffer = {key: [value] for key, value in rest.items()}
        self.buffered -= n
        name = f"shard_{len(self.shards):05d}.safetensors"
        tensors["text_index"] = tensors.pop("_text")
        tensors["position"] = tensors.pop("_pos")
        save_tensors(self.directory / name, tensors)
        self.shards.append({"file": name, "n_tokens": n})
        self.n_written += n
