"""A minimal sampling loop over an HF causal LM: HF ``generate``'s arithmetic, less overhead.

[`sample_batch`][lfp_mech.models.sampling.sample_batch] runs the prefill and one forward per new
token with a ``DynamicCache``, and applies exactly the logits processors HF ``generate`` applies
for lfp_mech's sampling settings, in HF's order (repetition penalty, minimum new tokens,
temperature, top-p), then ``softmax`` + ``torch.multinomial`` (or ``argmax``). With the same
global seed it draws the same tokens as ``model.generate`` (tested), without ``generate``'s
per-step bookkeeping (stopping criteria objects, cache-position and mask preparation, input
validation), which is most of the gap between generation and a forward pass on a CPU at small
models. Finished rows are padded, like ``generate``.
"""

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

__all__ = ["sample_batch"]


def sample_batch(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "batch prompt"],
    attention_mask: Int[Tensor, "batch prompt"],
    *,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> Int[Tensor, "batch new"]:
    """The new tokens of a left-padded batch (``[batch, <= max_new_tokens]``, stopping early when
    every row has produced EOS; rows that finished hold ``pad_token_id``). Call under
    ``torch.inference_mode()``; randomness from the global torch RNG, as ``generate``."""
    pad = pad_token_id if pad_token_id is not None else eos_token_id
    cache = DynamicCache(config=model.config)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    sequences = input_ids
    n_pad = (mask != 0).int().argmax(dim=1)  # left padding of each row
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    new: list[Tensor] = []
    for step in range(max_new_tokens):
        scores = out.logits[:, -1, :].to(dtype=torch.float32)
        scores = _process(
            scores,
            sequences,
            n_pad,
            step,
            min_new_tokens,
            temperature,
            top_p,
            repetition_penalty,
            eos_token_id,
            do_sample,
        )
        if do_sample:
            token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            token = scores.argmax(dim=-1)
        if pad is not None:
            token = torch.where(unfinished, token, torch.full_like(token, pad))
        new.append(token)
        sequences = torch.cat([sequences, token[:, None]], dim=-1)
        if eos_token_id is not None:
            unfinished &= token != eos_token_id
        if step == max_new_tokens - 1 or not bool(unfinished.any()):
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
    return torch.stack(new, dim=1)


def _positions(sequences: Tensor) -> Tensor:
    return torch.arange(sequences.shape[1], device=sequences.device)[None, :]


def _process(
    scores: Tensor,
    sequences: Tensor,
    n_pad: Tensor,
    step: int,
    min_new_tokens: int,
    temperature: float,
    top_p: float,
    repetition_penalty: float,
    eos_token_id: int | None,
    do_sample: bool,
) -> Tensor:
    """HF's ``RepetitionPenalty``, ``MinNewTokensLength``, ``Temperature`` and ``TopP``
    processors, in the order ``generate`` applies them (the last two only when sampling)."""
    if repetition_penalty != 1.0:  # over the prompt and the new tokens, left padding excluded
        vocab = scores.shape[-1]
        ids = sequences.masked_fill(_positions(sequences) < n_pad[:, None], vocab).clamp(max=vocab)
        padded = torch.nn.functional.pad(scores, (0, 1))
        seen = torch.gather(padded, 1, ids)
        seen = torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
        scores = padded.scatter(1, ids, seen)[..., :vocab]
    if eos_token_id is not None and step < min_new_tokens:
        scores = scores.clone()
        scores[:, eos_token_id] = -float("inf")
    if not do_sample:
        return scores
    if temperature != 1.0:
        scores = scores / temperature
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[..., -1:] = 0
        scores = scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    return scores
