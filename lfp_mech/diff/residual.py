"""The residual stream of a Hugging Face causal LM: read it, and edit it while the model runs.

``blocks.{i}.hook_resid_post`` (TransformerLens's name) is the output of HF decoder block ``i``.
[`residual_hooks`][lfp_mech.diff.residual.residual_hooks] installs forward hooks that replace it
by ``fn(activation)`` (shape ``[batch, pos, d_model]``), so every forward inside the ``with`` block
is edited: teacher-forced passes and ``generate`` with the KV cache (each new token is edited as it
is computed; cached keys/values of earlier tokens already carry their edit).
[`capture_resid`][lfp_mech.diff.residual.capture_resid] reads one block's output on a batch of
texts, stopping the forward after that block ([`capture_resids`][lfp_mech.diff.residual.capture_resids]:
several blocks' outputs from one pass)."""

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from lfp_mech.errors import ConfigError

__all__ = [
    "EditFn",
    "capture_resid",
    "capture_resids",
    "decoder_layers",
    "hooked_module",
    "replace_output",
    "residual_hooks",
    "tokenize_texts",
]

EditFn = Callable[[Tensor], Tensor]
"""A pure function: residual activation ``[batch, pos, d_model]`` -> its replacement."""

_LAYER_PATHS = ("model.layers", "gpt_neox.layers", "transformer.h", "model.decoder.layers")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of an HF causal LM (Llama/Gemma/Qwen, GPT-NeoX, GPT-2/GPT-Neo)."""
    for path in _LAYER_PATHS:
        module: Any = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise ConfigError(
        f"cannot find the decoder blocks of {type(model).__name__} (looked for "
        f"{', '.join(_LAYER_PATHS)}); the diff stage supports Llama, GPT-NeoX and GPT-2 layouts"
    )


def replace_output(output: Any, fn: EditFn) -> Any:
    """A module's output with its hidden states (the first element of a tuple) replaced by
    ``fn(hidden states)``."""
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    return fn(output)


_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_post|hook_mlp_out)$")


def hooked_module(model: nn.Module, hook: int | str) -> nn.Module:
    """The HF module whose output is TransformerLens hook ``hook``: ``blocks.{i}.hook_resid_post``
    (or just ``i``) is decoder block ``i``, ``blocks.{i}.hook_mlp_out`` its MLP."""
    layers = decoder_layers(model)
    match = _HOOK.match(hook) if isinstance(hook, str) else None
    if isinstance(hook, str) and match is None:
        raise ConfigError(
            f"unsupported hook {hook!r}: use blocks.{{i}}.hook_resid_post or blocks.{{i}}.hook_mlp_out"
        )
    layer = int(match.group(1)) if match else int(hook)
    if not 0 <= layer < len(layers):
        raise ConfigError(f"block {layer} does not exist: the model has {len(layers)} blocks")
    if match and match.group(2) == "hook_mlp_out":
        return layers[layer].mlp
    return layers[layer]


@contextmanager
def residual_hooks(model: nn.Module, edits: Mapping[int | str, EditFn]) -> Iterator[nn.Module]:
    """Replace each hook's activation by ``edits[hook](activation)`` inside the ``with`` block.

    Keys: a block index or ``"blocks.{i}.hook_resid_post"`` (the block's output), or
    ``"blocks.{i}.hook_mlp_out"`` (its MLP's output)."""
    modules = {hook: hooked_module(model, hook) for hook in edits}
    handles = [
        modules[hook].register_forward_hook(lambda _m, _a, out, fn=fn: replace_output(out, fn))
        for hook, fn in edits.items()
    ]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


class _Stop(Exception):
    """Raised by the capture hook to end the forward after the wanted block."""


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str], max_len: int
) -> tuple[Tensor, Bool[Tensor, "n pos"]]:
    """Right-padded token ids ``[n, pos]`` and the mask of real tokens."""
    batch = tokenizer(
        list(texts),
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=max_len,
        padding_side="right",
    )
    return batch["input_ids"], batch["attention_mask"].bool()


def capture_resid(
    model: nn.Module,
    input_ids: Tensor,
    mask: Tensor,
    layer: int,
    *,
    batch_size: int = 16,
) -> Float[Tensor, "n pos d_model"]:
    """Block ``layer``'s output (``blocks.{layer}.hook_resid_post``) on ``input_ids``."""
    return capture_resids(model, input_ids, mask, [layer], batch_size=batch_size)[layer]


def capture_resids(
    model: nn.Module,
    input_ids: Tensor,
    mask: Tensor,
    layers: Sequence[int],
    *,
    batch_size: int = 16,
) -> dict[int, Float[Tensor, "n pos d_model"]]:
    """The outputs of blocks ``layers`` on ``input_ids``, from one forward pass per batch that
    stops after the deepest of them."""
    blocks = decoder_layers(model)
    device = next(model.parameters()).device
    wanted = sorted(set(layers))
    seen: dict[int, list[Tensor]] = {layer: [] for layer in wanted}

    def hook_for(layer: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            seen[layer].append(out.detach().float().cpu())
            if layer == wanted[-1]:
                raise _Stop

        return hook

    handles = [blocks[layer].register_forward_hook(hook_for(layer)) for layer in wanted]
    try:
        with torch.no_grad():
            for start in range(0, input_ids.shape[0], batch_size):
                ids = input_ids[start : start + batch_size].to(device)
                try:
                    model(input_ids=ids, attention_mask=mask[start : start + batch_size].to(device))
                except _Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    return {layer: torch.cat(parts) for layer, parts in seen.items()}
