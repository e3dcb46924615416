"""One way to accept "a model" everywhere: a name, a checkpoint folder, or a model in memory.

Every public function that takes a model takes a [`ModelLike`][lfp_mech.models.coerce.ModelLike] and
turns it into what it needs with [`as_hf_model`][lfp_mech.models.coerce.as_hf_model] (a Hugging Face
model and its tokenizer) or [`as_hooked_model`][lfp_mech.models.coerce.as_hooked_model] (a
TransformerLens ``HookedTransformer``)."""

import copy
import os
from typing import TYPE_CHECKING, Any, TypeAlias

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lfp_mech.devices import torch_dtype
from lfp_mech.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer

__all__ = ["ModelLike", "as_hf_model", "as_hooked_model"]

ModelLike: TypeAlias = (
    "str | os.PathLike[str] | PreTrainedModel | tuple[PreTrainedModel, PreTrainedTokenizerBase]"
    " | HookedTransformer"
)
"""A model: a registered name (``lfp-mech models``), a local HF checkpoint folder, an in-memory
``(hf_model, tokenizer)`` pair, or (where a hooked model is wanted) a ``HookedTransformer``."""


def as_hf_model(
    model: Any,
    *,
    device: str | None = "cpu",
    seed: int = 0,
    copy_model: bool = False,
    need_tokenizer: bool = True,
    dtype: "str | torch.dtype | None" = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """``(hf_model, tokenizer)`` of a [`ModelLike`][lfp_mech.models.coerce.ModelLike] (loaded with
    ``load_hf_model`` if named).

    Args:
        device: where the model goes (an in-memory model is moved in place); None: an
            in-memory model stays where it is, a named one loads on the CPU.
        seed: seed of the tiny random test models (ignored otherwise).
        copy_model: deep-copy an in-memory model, so training leaves the caller's intact.
        need_tokenizer: accept a bare ``PreTrainedModel`` (tokenizer ``None``) when False.
        dtype: parameter dtype ("float32", "bfloat16", a torch dtype; an in-memory model of
            another dtype is cast on a copy, so the caller's keeps its precision); None: as
            loaded (float32) or as given.
    """
    dtype = torch_dtype(dtype)
    if isinstance(model, tuple):
        if len(model) != 2 or not isinstance(model[0], PreTrainedModel):
            raise ConfigError(
                "pass a model as a name, a checkpoint folder, or an (hf_model, tokenizer) pair"
            )
        hf_model, tokenizer = model
        if copy_model:
            hf_model, tokenizer = copy.deepcopy(hf_model), copy.deepcopy(tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return _moved(hf_model, device, dtype), tokenizer
    if isinstance(model, PreTrainedModel):
        if need_tokenizer:
            raise ConfigError(
                "pass an in-memory model as an (hf_model, tokenizer) pair: this function "
                "tokenizes text"
            )
        model = copy.deepcopy(model) if copy_model else model
        return _moved(model, device, dtype), None
    if _is_hooked(model):
        raise ConfigError(
            "this function needs a Hugging Face model: pass a name, a checkpoint folder or an "
            "(hf_model, tokenizer) pair, not a HookedTransformer"
        )
    from lfp_mech.models.loading import load_hf_model

    precision = {} if dtype is None else {"dtype": dtype}
    return load_hf_model(_as_name(model), device=device or "cpu", seed=seed, **precision)


def as_hooked_model(
    model: Any, *, device: str = "cpu", seed: int = 0, dtype: "str | torch.dtype | None" = None
) -> "HookedTransformer":
    """A ``HookedTransformer`` of a [`ModelLike`][lfp_mech.models.coerce.ModelLike] (converted from
    HF if needed) on ``device``, in ``dtype`` if given (a name or a torch dtype; default
    float32; a ``HookedTransformer`` passed in keeps its dtype)."""
    if _is_hooked(model):
        return model.to(device)
    from lfp_mech.models.loading import hooked_from_hf, load_model

    precision = {} if dtype is None else {"dtype": torch_dtype(dtype)}
    if isinstance(model, tuple | PreTrainedModel):
        hf_model, tokenizer = as_hf_model(model, device="cpu")
        return hooked_from_hf(hf_model, tokenizer, device=device, **precision)
    return load_model(_as_name(model), device=device, seed=seed, **precision)


def _moved(model: PreTrainedModel, device: str | None, dtype: "torch.dtype | None") -> Any:
    """An in-memory model moved to ``device`` (in place) and cast to ``dtype`` (on a copy), each
    if given."""
    if dtype is not None and dtype != model.dtype:
        model = copy.deepcopy(model).to(dtype=dtype)
    return model if device is None else model.to(device)


def _as_name(model: Any) -> str | os.PathLike[str]:
    if not isinstance(model, str | os.PathLike):
        raise ConfigError(
            f"cannot use a {type(model).__name__} as a model: pass a name, a checkpoint folder, "
            "an (hf_model, tokenizer) pair or a HookedTransformer"
        )
    return model


def _is_hooked(model: Any) -> bool:
    # by class name, so that this module does not import TransformerLens (slow) to check
    return any(cls.__name__ == "HookedTransformer" for cls in type(model).__mro__)
