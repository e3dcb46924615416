"""Run a HookedTransformer on texts and stream the chosen hooks' activations into a store.

[`capture_activations`][lfp_mech.activations.capture.capture_activations] runs
``model.run_with_cache`` on batches of texts with ``names_filter`` restricted to exactly the chosen
hooks and ``stop_at_layer = max(layer) + 1``, so nothing after the last needed block is computed.
BOS and padding positions are dropped."""

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lfp_mech._io import atomic_dir, write_json
from lfp_mech.activations.config import ActivationConfig
from lfp_mech.activations.store import (
    STORE_FILE,
    STORE_VERSION,
    TEXTS_FILE,
    ActivationStore,
    ShardWriter,
)
from lfp_mech.activations.tokenization import TokenIds, bos_id, pad_batch, pad_id, take_until
from lfp_mech.errors import ConfigError
from lfp_mech.hooks import hook_name

__all__ = ["capture_activations", "check_layers"]

logger = logging.getLogger(__name__)


def capture_activations(
    model: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    out_dir: str | os.PathLike[str],
    config: ActivationConfig | None = None,
    *,
    max_tokens: int | None = None,
) -> ActivationStore:
    """Run ``model`` on ``texts`` and stream the chosen layers' activations to ``out_dir``.

    Args:
        model (HookedTransformer): the model (e.g. from
            [`lfp_mech.models.load_model`][lfp_mech.models.loading.load_model]).
        texts: the texts; each becomes ``[BOS] + tokens`` truncated to ``context_length``.
        layers: block indices to capture (all in one pass).
        out_dir: the store directory (replaced atomically when the capture completes).
        config: hook kind, batch size, shard size, storage dtype.
        max_tokens: stop after the text that reaches this many tokens (default
            ``config.n_tokens``); ``0`` or less means no limit.

    Returns:
        The [`ActivationStore`][lfp_mech.activations.store.ActivationStore] of ``out_dir``. Token
        ``i`` of the store is position ``position[i]`` (>= 1) of text ``text_index[i]``, in the
        order of ``texts``.

    Raises:
        ConfigError: no texts, no layers, or a layer out of range.
    """
    config = config or ActivationConfig()
    layers = check_layers(model, layers)
    texts = list(texts)
    if not texts:
        raise ConfigError("no texts to capture activations from: pass at least one text")
    limit = config.n_tokens if max_tokens is None else max_tokens
    names = [hook_name(layer, config.hook) for layer in layers]
    # All token ids stay in memory (the texts are sorted by length), so they are kept compact:
    # one int32 tensor, not lists of Python ints (~9x smaller).
    token_ids = TokenIds(model.tokenizer, texts, config.context_length)
    selected = take_until(token_ids.lengths, limit)
    writer = ShardWriter(names, config.shard_tokens, getattr(torch, config.store_dtype))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        writer.directory = tmp
        _run_batches(model, token_ids, selected, layers, writer, config)
        writer.close()
        with open(tmp / TEXTS_FILE, "w", encoding="utf-8") as f:
            json.dump(texts, f)  # streamed: no second copy of every text in one string
        write_json(tmp / STORE_FILE, _store_meta(model, layers, writer, len(selected), config))
    logger.info("captured %d tokens x %d hooks into %s", writer.n_written, len(names), out_dir)
    return ActivationStore(out_dir)


def _run_batches(
    model: Any,
    token_ids: TokenIds,
    selected: list[int],
    layers: list[int],
    writer: ShardWriter,
    config: ActivationConfig,
) -> None:
    """Run the selected texts batch by batch and hand their non-BOS, non-pad tokens to ``writer``.

    Long texts go first (fewer padded positions per batch); the store order stays recoverable
    from ``text_index``/``position``, and shards are written in capture order.
    """
    order = sorted(selected, key=lambda i: -token_ids.lengths[i])
    bos, pad = bos_id(model.tokenizer), pad_id(model.tokenizer)
    total = sum(token_ids.lengths[i] for i in selected)
    progress = tqdm(total=total, desc="capture", unit="tok", disable=None)
    with torch.inference_mode():
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            tokens, mask = pad_batch([token_ids[i] for i in batch], bos, pad)
            _, cache = model.run_with_cache(
                tokens.to(config.device),
                attention_mask=mask.long().to(config.device),
                names_filter=writer.names,
                stop_at_layer=max(layers) + 1,
            )
            keep = mask.clone()
            keep[:, 0] = False  # BOS
            text_index = torch.tensor(batch).unsqueeze(1).expand_as(tokens)[keep]
            position = torch.arange(tokens.shape[1]).expand_as(tokens)[keep]
            writer.add(
                {name: cache[name][keep.to(config.device)].cpu() for name in writer.names},
                text_index,
                position,
            )
            progress.update(int(keep.sum()))
    progress.close()


def _store_meta(
    model: Any, layers: list[int], writer: ShardWriter, n_texts: int, config: ActivationConfig
) -> dict[str, Any]:
    """The ``store.json`` contents of a finished capture."""
    return {
        "version": STORE_VERSION,
        "hook_names": writer.names,
        "layers": list(layers),
        "hook_kind": config.hook,
        "d_in": {name: writer.widths[name] for name in writer.names},
        "n_tokens": writer.n_written,
        "n_texts": n_texts,
        "shards": writer.shards,
        "dtype": config.store_dtype,
        "model_dtype": str(model.cfg.dtype).removeprefix("torch."),
        "context_length": config.context_length,
        "model": str(getattr(model.cfg, "model_name", "")),
        "bos_excluded": True,
    }


def check_layers(model: Any, layers: Sequence[int]) -> list[int]:
    """``layers`` as ints, checked: at least one, all inside the model, no duplicates."""
    n_layers = model.cfg.n_layers
    layers = [int(layer) for layer in layers]
    if not layers:
        raise ConfigError("no layers to capture: pass at least one block index")
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ConfigError(
            f"layer(s) {bad} out of range: {getattr(model.cfg, 'model_name', 'the model')} has "
            f"layers 0–{n_layers - 1}"
        )
    if len(set(layers)) != len(layers):
        raise ConfigError(f"duplicate layers in {layers}")
    return layers
