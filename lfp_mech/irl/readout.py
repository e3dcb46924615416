"""What a reward model reads from its decoder: tokenization, pooling, readout capture, block
surgery.

Pure functions on a Hugging Face decoder (Llama-style or GPT-NeoX: ``backbone.layers``, a final
norm, ``backbone.rotary_emb``), used by
[`lfp_mech.irl.reward_model.RewardModel`][lfp_mech.irl.reward_model.RewardModel] and the log-ratio
control:

* tokenization — [`bos_tokenize`][lfp_mech.irl.readout.bos_tokenize] (BOS-prefixed, right-padded)
  and [`length_sorted_batches`][lfp_mech.irl.readout.length_sorted_batches];
* pooling — [`pool`][lfp_mech.irl.readout.pool] ("last" token, "mean" or "sum" of the text's token
  states, BOS excluded);
* readouts — [`capture_block_outputs`][lfp_mech.irl.readout.capture_block_outputs] (the residual
  stream after chosen blocks);
* block surgery — [`keep_first_blocks`][lfp_mech.irl.readout.keep_first_blocks],
  [`decoder_parts`][lfp_mech.irl.readout.decoder_parts],
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

__all__ = [
    "bos_tokenize",
    "capture_block_outputs",
    "decoder_layers",
    "decoder_parts",
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


def decoder_layers(backbone: nn.Module, name: str, arg: str) -> nn.ModuleList:
    """``backbone.layers``, or a [`ConfigError`][lfp_mech.errors.ConfigError] saying ``arg`` needs
    them."""
    layers = getattr(backbone, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"{arg} needs a decoder with a .layers list; {name} ({type(backbone).__name__}) has "
            f"none (use {arg}=None)"
        )
    return layers


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
    """Drop every decoder block of ``backbone`` above the first ``n_layers`` (in place)."""
    layers = decoder_layers(backbone, name, "n_layers")
    if not 1 <= n_layers <= len(layers):
        raise ConfigError(
            f"n_layers={n_layers} out of range: {name} has {len(layers)} decoder blocks "
            f"(use 1..{len(layers)}, or None for all)"
        )
    backbone.layers = nn.ModuleList(list(layers)[:n_layers])
    backbone.config.num_hidden_layers = n_layers
    if getattr(backbone.config, "layer_types", None):  # per-block attention kinds, if any
        backbone.config.layer_types = backbone.config.layer_types[:n_layers]


def decoder_parts(backbone: nn.Module) -> tuple[nn.ModuleList, nn.Module, nn.Module]:
    """(decoder blocks, final norm, rotary embedding) of a Llama-style or GPT-NeoX decoder."""
    layers = getattr(backbone, "layers", None)
    norm = getattr(backbone, "norm", None) or getattr(backbone, "final_layer_norm", None)
    rotary = getattr(backbone, "rotary_emb", None)
    if not isinstance(layers, nn.ModuleList) or norm is None or rotary is None:
        raise ConfigError(
            f"cached mode supports Llama-style and GPT-NeoX decoders (with .layers, a final norm "
            f"and .rotary_emb); {type(backbone).__name__} has not got them. Use "
            "IRLConfig(mode='full') or n_trainable_blocks=0 (head only)."
        )
    return layers, norm, rotary


def run_top_blocks(
    backbone: nn.Module,
    first_layer: int,
    hidden: Float[Tensor, "batch pos d_model"],
    attention_mask: Int[Tensor, "batch pos"],
) -> Float[Tensor, "batch pos d_model"]:
    """Final normalised hidden states computed from the residual stream entering block
    ``first_layer``.

    Rebuilds what the HF decoder does around its layers: causal + padding mask
    (``create_causal_mask``), positions ``0..pos-1`` (right padding) and the rotary
    embeddings of ``backbone.rotary_emb``.
    """
    from transformers.masking_utils import create_causal_mask

    layers, norm, rotary = decoder_parts(backbone)
    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    causal = create_causal_mask(
        config=backbone.config,
        inputs_embeds=hidden,
        attention_mask=attention_mask,
        past_key_values=None,
        position_ids=position_ids,
    )
    position_embeddings = rotary(hidden, position_ids=position_ids)
    for layer in layers[first_layer:]:
        out = layer(
            hidden,
            attention_mask=causal,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
        )
        hidden = out[0] if isinstance(out, tuple) else out
    return norm(hidden)
