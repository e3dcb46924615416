"""What a reward model reads from its decoder: tokenization, pooling, readout capture, block
surgery.

Pure functions on any Hugging Face decoder (``model.base_model``; its blocks are found by
structure, see [`decoder_blocks`][lfp_mech.irl.readout.decoder_blocks]), used by
[`lfp_mech.irl.reward_model.RewardModel`][lfp_mech.irl.reward_model.RewardModel] and the log-ratio
control:

* tokenization — [`bos_tokenize`][lfp_mech.irl.readout.bos_tokenize] (BOS-prefixed, right-padded)
  and [`length_sorted_batches`][lfp_mech.irl.readout.length_sorted_batches];
* pooling — [`pool`][lfp_mech.irl.readout.pool] ("last" token, "mean" or "sum" of the text's token
  states, BOS excluded);
* readouts — [`capture_block_outputs`][lfp_mech.irl.readout.capture_block_outputs] (the residual
  stream after chosen blocks);
* block surgery — [`keep_first_blocks`][lfp_mech.irl.readout.keep_first_blocks],
  [`frozen_below`][lfp_mech.irl.readout.frozen_below],
  [`run_top_blocks`][lfp_mech.irl.readout.run_top_blocks] (the blocks above ``K`` from the residual
  stream entering block ``K``)."""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from einops import einsum, rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from lfp_mech.errors import ConfigError
from lfp_mech.irl.config import Pooling
from lfp_mech.models.conversion import model_depth

__all__ = [
    "bos_tokenize",
    "capture_block_outputs",
    "decoder_blocks",
    "frozen_below",
    "keep_first_blocks",
    "last_token",
    "length_sorted_batches",
    "mean_tokens",
    "pool",
    "run_top_blocks",
    "sum_tokens",
]


def bos_tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> tuple[Int[Tensor, "text pos"], Int[Tensor, "text pos"]]:
    """BOS-prefixed (EOS if there is no BOS), right-padded token ids and attention mask,
    truncated to ``max_length`` tokens."""
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [[first, *tokenizer(t, add_special_tokens=False).input_ids][:max_length] for t in texts]
    width = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def length_sorted_batches(
    mask: Int[Tensor, "text pos"], batch_size: int, desc: str | None = None
) -> Iterator[tuple[Int[Tensor, " batch"], int]]:
    """Row indices of ``mask`` in batches of similar length, shortest first, with each batch's
    width (its longest row), so right-padded inputs can be cut to ``[:, :width]``. ``desc``
    shows a progress bar."""
    order = torch.argsort(mask.sum(-1))
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, disable=None if desc else True, leave=False):
        idx = order[start : start + batch_size]
        yield idx, int(mask[idx].sum(-1).max())


def last_token(
    hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch d_model"]:
    """The hidden state of each row's last non-padding token (rows are right-padded)."""
    last = attention_mask.sum(-1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _text_token_weights(
    attention_mask: Int[Tensor, "batch pos"], dtype: torch.dtype
) -> Float[Tensor, "batch pos"]:
    """1 on each row's text tokens, 0 on padding and on the BOS position (unless it is alone)."""
    weights = attention_mask.to(dtype).clone()
    weights[:, 0] = torch.where(attention_mask.sum(-1) > 1, 0.0, weights[:, 0])
    return weights


def sum_tokens(
    hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch d_model"]:
    """Sum of the hidden states over each row's tokens, the BOS position excluded (unless alone)."""
    weights = _text_token_weights(attention_mask, hidden.dtype)
    return einsum(hidden, weights, "batch pos d_model, batch pos -> batch d_model")


def mean_tokens(
    hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch d_model"]:
    """Mean hidden state over each row's tokens, the BOS position excluded (unless alone)."""
    weights = _text_token_weights(attention_mask, hidden.dtype)
    total = einsum(hidden, weights, "batch pos d_model, batch pos -> batch d_model")
    return total / rearrange(weights.sum(-1), "batch -> batch 1")


def pool(
    hidden: Float[Tensor, "batch pos d_model"],
    attention_mask: Int[Tensor, "batch pos"],
    pooling: Pooling,
) -> Float[Tensor, "batch d_model"]:
    """One vector per text: its "last" token's state, or the "sum" / "mean" of its tokens'."""
    if pooling == "last":
        return last_token(hidden, attention_mask)
    if pooling == "sum":
        return sum_tokens(hidden, attention_mask)
    return mean_tokens(hidden, attention_mask)


def decoder_blocks(backbone: nn.Module, name: str = "the model") -> nn.ModuleList:
    """The decoder blocks of any Hugging Face decoder (``model.base_model``), in order.

    Found by structure, not by attribute name: the one ``nn.ModuleList`` child of the decoder
    holding as many modules as the config has blocks (``num_hidden_layers``, whatever the
    architecture calls it: ``layers`` for Llama/GPT-NeoX/Gemma/Qwen2/Mistral, ``h`` for GPT-2 and
    GPT-Neo).
    """
    return backbone.get_submodule(_blocks_attribute(backbone, name))


def _blocks_attribute(backbone: nn.Module, name: str) -> str:
    depth = model_depth(backbone.config)
    found = [
        child_name
        for child_name, child in backbone.named_children()
        if isinstance(child, nn.ModuleList) and len(child) == depth
    ]
    if len(found) != 1:
        raise ConfigError(
            f"cannot find the {depth} decoder blocks of {name} ({type(backbone).__name__}): "
            f"{len(found)} module lists of that length; use irl.context_layer=None, "
            "irl.n_layers=None and irl.n_trainable_blocks=0 (or irl.mode='full')"
        )
    return found[0]


@contextlib.contextmanager
def capture_block_outputs(
    blocks: nn.ModuleList, layers: Sequence[int]
) -> Iterator[dict[int, Tensor]]:
    """While open, ``captured[k]`` receives the residual stream after block ``k`` (the output of
    ``blocks[k - 1]``, TransformerLens's ``blocks.{k-1}.hook_resid_post``) on each forward."""
    captured: dict[int, Tensor] = {}

    def saver(layer: int) -> Callable[..., None]:
        def save(module: nn.Module, args: Any, output: Any) -> None:
            captured[layer] = output[0] if isinstance(output, tuple) else output

        return save

    handles = [blocks[layer - 1].register_forward_hook(saver(layer)) for layer in set(layers)]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def keep_first_blocks(backbone: nn.Module, n_layers: int, name: str) -> None:
    """Drop every decoder block of ``backbone`` above the first ``n_layers`` (in place; the
    config's depth and per-block ``layer_types`` follow)."""
    attribute = _blocks_attribute(backbone, name)
    layers = backbone.get_submodule(attribute)
    if not 1 <= n_layers <= len(layers):
        raise ConfigError(
            f"n_layers={n_layers} out of range: {name} has {len(layers)} decoder blocks "
            f"(use 1..{len(layers)}, or None for all)"
        )
    setattr(backbone, attribute, nn.ModuleList(list(layers)[:n_layers]))
    backbone.config.num_hidden_layers = n_layers  # every config maps it to its own name
    if getattr(backbone.config, "layer_types", None):  # per-block attention kinds, if any
        backbone.config.layer_types = backbone.config.layer_types[:n_layers]


def frozen_below(backbone: nn.Module, first_layer: int) -> set[int]:
    """``id``s of the parameters that stay frozen when blocks ``first_layer..`` train on cached
    inputs: the embedding tables (token and, where there are any, learned positions) and
    blocks ``0..first_layer-1``. Everything else (the top blocks, the final norm) trains."""
    blocks = decoder_blocks(backbone)
    frozen = [m for m in backbone.modules() if isinstance(m, nn.Embedding)]
    frozen += list(blocks[:first_layer])
    return {id(p) for module in frozen for p in module.parameters()}


def run_top_blocks(
    backbone: nn.Module,
    first_layer: int,
    hidden: Float[Tensor, "batch pos d_model"],
    attention_mask: Int[Tensor, "batch pos"],
) -> Float[Tensor, "batch pos d_model"]:
    """Final normalised hidden states computed from the residual stream entering block
    ``first_layer``, for any HF decoder.

    The decoder's own forward does the work, so masks, positions and rotary or learned position
    embeddings are made exactly as in a normal forward (right padding: positions
    ``0..pos-1``): blocks ``0..first_layer-1`` are swapped for pass-throughs while it runs, and
    the input of block ``first_layer`` is replaced by ``hidden``. ``RewardModel.encode`` checks
    this path against the full model on its first batch.
    """
    blocks = decoder_blocks(backbone)
    originals = list(blocks[:first_layer])
    as_tuple = first_layer > 0 and _blocks_return_tuples(backbone, blocks)

    def inject(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = blocks[first_layer].register_forward_pre_hook(inject, with_kwargs=True)
    try:
        for i in range(first_layer):
            blocks[i] = _PassThrough(as_tuple)
        out = backbone(
            inputs_embeds=torch.zeros_like(hidden), attention_mask=attention_mask, use_cache=False
        )
    finally:
        handle.remove()
        for i, block in enumerate(originals):
            blocks[i] = block
    return out.last_hidden_state


class _PassThrough(nn.Module):
    """A decoder block that returns its input hidden states (as a 1-tuple if blocks do)."""

    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        return (hidden_states,) if self.as_tuple else hidden_states


def _blocks_return_tuples(backbone: nn.Module, blocks: nn.ModuleList) -> bool:
    """Whether this decoder's blocks return tuples (GPT-Neo) or tensors (most, transformers 5):
    seen on a one-token forward, remembered on the decoder."""
    known = getattr(backbone, "_lfp_blocks_return_tuples", None)
    if known is None:
        seen: list[bool] = []
        handle = blocks[0].register_forward_hook(
            lambda module, args, output: seen.append(isinstance(output, tuple))
        )
        try:
            with torch.no_grad():
                device = next(backbone.parameters()).device
                backbone(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
        finally:
            handle.remove()
        known = seen[0]
        backbone._lfp_blocks_return_tuples = known
    return bool(known)
