"""TransformerLens hook names applied to a Hugging Face model: edit activations while it runs.

[`hf_hooks`][lfp_mech.models.hf_hooks.hf_hooks] maps ``blocks.{i}.hook_resid_pre``,
``blocks.{i}.hook_mlp_out`` and ``blocks.{i}.hook_resid_post`` onto torch forward hooks (a
pre-hook for ``hook_resid_pre``) of the matching modules of any supported HF decoder, so an edit
written for TransformerLens (``fn(activation) -> replacement``, ``[batch, pos, d_model]``) runs on
the fast HF path — also inside ``generate`` with the KV cache, where each forward sees only the
new positions, exactly like TransformerLens's cached generation.

**Exactness.** TransformerLens loads LayerNorm models (GPT-2, GPT-Neo, GPT-NeoX) with
``center_writing_weights``: every write into the residual stream has its mean over ``d_model``
removed, so its ``hook_mlp_out`` / ``hook_resid_*`` activations are the HF ones minus their
mean. For those models the hook function is given the *centred* activation (what
TransformerLens would show it) and the mean is added back to its result; since every later
LayerNorm removes the mean anyway, the edited HF model then computes the same logits as
``HookedTransformer.run_with_hooks`` with the same edit (up to a constant per position). RMSNorm
models (Llama, Gemma, Qwen2, Mistral) are not centred and the activation is passed through as is.

The decoder blocks are found by structure (the one ``nn.ModuleList`` as long as the model is
deep), the MLP as the block's ``mlp`` child (Gemma 2: its ``post_feedforward_layernorm``,
which TransformerLens's ``hook_mlp_out`` follows).
"""

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from lfp_mech.errors import ConfigError
from lfp_mech.models.conversion import model_depth

__all__ = ["HookFn", "HookSpec", "decoder_layers", "hf_hooks", "is_mean_centred"]

HookFn = Callable[[Tensor], Tensor]
"""An edit: the activation ``[batch, pos, d_model]`` -> its replacement (same shape)."""
HookSpec = Sequence[tuple[str, HookFn]]
"""``[(TransformerLens hook name, edit), ...]``; several edits of one hook run in order."""

_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_mlp_out|hook_resid_post)$")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of an HF causal LM (or its base model), in order, found by structure:
    the one ``nn.ModuleList`` of the decoder as long as the config has blocks (``layers`` for
    Llama/GPT-NeoX/Gemma/Qwen2/Mistral, ``h`` for GPT-2/GPT-Neo)."""
    depth = model_depth(model.config)
    base = getattr(model, "base_model", model)
    found = [
        child
        for child in base.children()
        if isinstance(child, nn.ModuleList) and len(child) == depth
    ]
    if len(found) != 1:
        raise ConfigError(
            f"cannot find the {depth} decoder blocks of {type(model).__name__}: "
            f"{len(found)} module lists of that length; hooks need a standard HF decoder"
        )
    return found[0]


def is_mean_centred(model: nn.Module) -> bool:
    """Whether TransformerLens centres this model's residual writes (LayerNorm, not RMSNorm)."""
    return any(isinstance(m, nn.LayerNorm) for m in decoder_layers(model)[0].modules())


@contextmanager
def hf_hooks(model: nn.Module, hooks: HookSpec) -> Iterator[None]:
    """While open, every forward of ``model`` applies ``hooks`` (TransformerLens names, see the
    module docstring); all handles are removed on exit, also when the block raises."""
    if not hooks:
        yield
        return
    layers = decoder_layers(model)
    centred = is_mean_centred(model)
    handles: list[Any] = []
    try:
        for name, fn in hooks:
            layer, site = _parse(name, len(layers))
            block = layers[layer]
            edit = _centred(fn) if centred else fn
            if site == "hook_resid_pre":
                handles.append(block.register_forward_pre_hook(_pre_hook(edit), with_kwargs=True))
            elif site == "hook_resid_post":
                handles.append(block.register_forward_hook(_post_hook(edit)))
            else:
                handles.append(_mlp_out_module(block, name).register_forward_hook(_post_hook(edit)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _parse(name: str, n_layers: int) -> tuple[int, str]:
    match = _HOOK.match(name)
    if match is None:
        raise ConfigError(
            f"hook {name!r} cannot run on the HF model: use blocks.{{i}}.hook_resid_pre, "
            "blocks.{i}.hook_mlp_out or blocks.{i}.hook_resid_post"
        )
    layer = int(match.group(1))
    if not 0 <= layer < n_layers:
        raise ConfigError(f"hook {name!r}: the model has blocks 0–{n_layers - 1}")
    return layer, match.group(2)


def _mlp_out_module(block: nn.Module, name: str) -> nn.Module:
    """The module whose output is TransformerLens's ``hook_mlp_out`` in ``block``."""
    post_norm = getattr(block, "post_feedforward_layernorm", None)  # Gemma 2: norm after the MLP
    if isinstance(post_norm, nn.Module):
        return post_norm
    mlp = getattr(block, "mlp", None)
    if not isinstance(mlp, nn.Module):
        raise ConfigError(f"hook {name!r}: block {type(block).__name__} has no .mlp module")
    return mlp


def _centred(fn: HookFn) -> HookFn:
    def edit(x: Tensor) -> Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        return fn(x - mean) + mean

    return edit


def _pre_hook(fn: HookFn) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

    return hook


def _post_hook(fn: HookFn) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return hook
