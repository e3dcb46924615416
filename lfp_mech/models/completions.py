"""A cache of sampled completions in the run directory, shared by the stages that sample.

[`generate_texts`][lfp_mech.models.generation.generate_texts] looks a request up here before
sampling: the key is a digest of everything that determines the completions — the model's
weights (a digest of every parameter and buffer, so a tuned copy never hits its base), the
prompts in order, the sampling settings (new tokens, temperature, top-p, repetition penalty,
batch size, which fixes the per-batch seeds), the seed and the hooks' identity (a caller-given
``hooks_id``; edited generation without one is never cached). A hit returns the stored
completions; a miss samples and stores them, one JSON file per key written atomically
(temporary file + rename), so concurrent or interrupted writers never leave a partial entry.

The cache is active while a stage of a run executes: the runner sets ``LFP_MECH_COMPLETIONS``
to ``<run_dir>/completions`` (an environment variable, so stage subprocesses see it too), or
use [`completion_cache`][lfp_mech.models.completions.completion_cache] yourself.
"""

import hashlib
import json
import logging
import os
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_ENV",
    "COMPLETIONS_DIR",
    "CompletionCache",
    "active_cache",
    "completion_cache",
    "tensor_digest",
]

CACHE_ENV = "LFP_MECH_COMPLETIONS"
"""Environment variable naming the completion-cache folder (unset: no cache)."""
COMPLETIONS_DIR = "completions"
"""The cache's folder inside a run directory."""
VERSION = 4  # 2: exponential race (models.sampling); 3: the race draws torch.multinomial's
# tokens; 4: the keyed race (clocks hashed from a per-row key and the token id) by default


def tensor_digest(tensors: Iterable[tuple[str, Tensor]]) -> str:
    """A digest of named tensors' names, dtypes, shapes and bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in tensors:
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_WEIGHTS: "weakref.WeakKeyDictionary[nn.Module, tuple[int, str]]" = weakref.WeakKeyDictionary()


def model_digest(model: nn.Module) -> str:
    """Digest of a model's class, parameters and buffers (memoised per object until any parameter
    changes version, i.e. is modified in place)."""
    version = sum(p._version for p in model.parameters())
    known = _WEIGHTS.get(model)
    if known is not None and known[0] == version:
        return known[1]
    named = [*model.named_parameters(), *model.named_buffers()]
    value = type(model).__name__ + ":" + tensor_digest(named)
    _WEIGHTS[model] = (version, value)
    return value


class CompletionCache:
    """Completions stored under ``folder``, one ``<key>.json`` per request."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(model: nn.Module, prompts: list[str], settings: dict[str, Any]) -> str:
        """The digest of a request (``settings``: sampling config, batch size, seed, hooks id)."""
        payload = {
            "version": VERSION,
            "model": model_digest(model),
            "prompts": prompts,
            "settings": settings,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=20).hexdigest()

    def get(self, key: str) -> tuple[list[str], list[int]] | None:
        """The stored ``(completions, n_new_tokens)`` of ``key``, or None."""
        path = self.folder / f"{key}.json"
        if not path.is_file():
            return None
        entry = json.loads(path.read_text())
        return list(entry["texts"]), [int(n) for n in entry["n_new"]]

    def put(self, key: str, texts: list[str], n_new: list[int], settings: dict[str, Any]) -> None:
        """Store ``key``'s completions atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = {"texts": texts, "n_new": n_new, "settings": settings}
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(entry, handle, default=str)
            os.replace(tmp, self.folder / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def active_cache() -> CompletionCache | None:
    """The cache named by ``LFP_MECH_COMPLETIONS``, if set."""
    folder = os.environ.get(CACHE_ENV)
    return CompletionCache(folder) if folder else None


@contextmanager
def completion_cache(folder: str | os.PathLike[str] | None) -> Iterator[None]:
    """While open, [`generate_texts`][lfp_mech.models.generation.generate_texts] uses the cache
    in ``folder`` (None: no cache); the previous setting is restored on exit."""
    previous = os.environ.get(CACHE_ENV)
    if folder is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = previous
