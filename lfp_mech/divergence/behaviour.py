"""Where did the behaviour change? Two per-block measures on the same tokens, base vs tuned.

Both run on validation texts: prompts (never the held-out test prompts) completed by the
*tuned* policy, teacher-forced through both models.

* **activation change** of block ``l``: ``mean_t ||mlp_out_tuned(l)[t] − mlp_out_base(l)[t]||``
  over ``mean_t ||mlp_out_base(l)[t]||`` — how much the block's MLP output moved, relative to its
  size, on the same tokens. Position 0 is left out (its MLP outputs are often outliers of
  another scale, "attention sink" tokens). This change accumulates: block ``l``'s MLP reads a
  residual stream that every earlier block already changed.
* **patching** of block ``l``: run the *base* model with block ``l``'s MLP output replaced by the
  tuned model's (captured on the same sequence) and measure the mean log-probability per
  completion token of the tuned policy's completions. The score is the share of the base→tuned
  log-prob gap this one patch recovers: ``(lp_patched − lp_base) / (lp_tuned − lp_base)``
  (1 = the patch alone makes the base model as likely to write the tuned completions as the
  tuned model; 0 = no effect; it can be negative). Teacher-forced log-probs are cheap (one
  forward per block) and sensitive, where a reward of patched generation needs sampling and
  a reward model and is noisy at the sizes a CPU affords.

Both use forward hooks on the Hugging Face model's ``<block>.mlp`` modules, whose output is
TransformerLens's ``blocks.{l}.hook_mlp_out``.
"""

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lfp_mech.divergence.config import DEFAULT_BLOCK_PATTERN
from lfp_mech.errors import LfpMechError
from lfp_mech.models.generation import generate_texts

logger = logging.getLogger(__name__)

__all__ = ["BehaviourMeasures", "behaviour_measures", "mlp_modules", "teacher_forced_batches"]


@dataclass
class BehaviourMeasures:
    """The activation and patching measures per block, and what they were computed on."""

    activation: Float[Tensor, " n_layers"]
    """Mean ||Δ mlp_out|| / mean ||mlp_out_base|| per block (float64)."""
    patching: Float[Tensor, " n_layers"]
    """Share of the base→tuned log-prob gap recovered by patching the block's MLP output."""
    patching_logprob: Float[Tensor, " n_layers"]
    """Mean log-prob gain per completion token from the patch (nats)."""
    logprob_gap: float
    """Mean log-prob per completion token, tuned minus base model (nats)."""
    n_sequences: int
    """Validation sequences (prompt + tuned completion)."""
    n_tokens: int
    """Tokens the activation change averages over (all but position 0 and padding)."""
    n_completion_tokens: int
    """Completion tokens the log-probs average over."""
    sequence_logprobs: Float[Tensor, "sequence column"] | None = None
    """Per sequence: summed completion log-probs of the base model, the tuned model and the base
    model patched at each block, then the sequence's completion-token count (columns
    ``base, tuned, patched_0 .. patched_{n-1}, tokens``), for resampling."""

    def patching_resampled(
        self, n_resamples: int = 200, seed: int = 0
    ) -> Float[Tensor, "resample n_layers"]:
        """The patching share recomputed on bootstrap resamples of the sequences (with
        replacement, seeded): how stable the measure, and so the layer choice, is."""
        if self.sequence_logprobs is None:
            raise LfpMechError("no per-sequence log-probs were kept: rerun behaviour_measures")
        table = self.sequence_logprobs
        generator = torch.Generator().manual_seed(seed)
        index = torch.randint(0, table.shape[0], (n_resamples, table.shape[0]), generator=generator)
        sums = table[index].sum(dim=1)  # [resample, column]
        base, tuned, patched = sums[:, :1], sums[:, 1:2], sums[:, 2:-1]
        gap = tuned - base
        safe = torch.where(gap.abs() < 1e-12, torch.ones_like(gap), gap)
        return torch.where(gap.abs() < 1e-12, torch.zeros_like(patched), (patched - base) / safe)


@dataclass
class _Batch:
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    completion_mask: Int[Tensor, "batch pos"]
    """1 where the token is part of the completion (its log-prob is scored)."""


def mlp_modules(
    model: PreTrainedModel, block_pattern: str = DEFAULT_BLOCK_PATTERN
) -> list[torch.nn.Module]:
    """The MLP module of every block, in layer order (``model.layers.3.mlp`` and the like)."""
    pattern = re.compile(block_pattern.rstrip(".").rstrip("\\") + r"\.mlp$")
    found = {}
    for name, module in model.named_modules():
        match = pattern.search(name)
        if match:
            found[int(match.group(1))] = module
    if not found or sorted(found) != list(range(len(found))):
        raise LfpMechError(
            f"could not find one '<block>.mlp' module per block with {block_pattern!r} (found "
            f"blocks {sorted(found)}): set divergence.block_pattern to match the model's blocks"
        )
    return [found[layer] for layer in range(len(found))]


def teacher_forced_batches(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int,
    device: str = "cpu",
) -> list[_Batch]:
    """Prompt + completion token ids, right-padded, with a mask of the completion tokens."""
    rows = []
    for prompt, completion in zip(prompts, completions, strict=True):
        head = tokenizer(prompt).input_ids
        tail = tokenizer(completion, add_special_tokens=False).input_ids
        if tail:
            rows.append((head + tail, len(head)))
    if not rows:
        raise LfpMechError(
            "the tuned policy wrote only empty completions on the validation prompts: nothing "
            "to score; raise divergence.max_new_tokens or check the policy"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        completion = torch.zeros_like(ids)
        for i, (row, n_prompt) in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
            attention[i, : len(row)] = 1
            completion[i, n_prompt : len(row)] = 1
        batches.append(_Batch(ids.to(device), attention.to(device), completion.to(device)))
    return batches


def behaviour_measures(
    base: tuple[PreTrainedModel, PreTrainedTokenizerBase],
    tuned: PreTrainedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 20,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
    block_pattern: str = DEFAULT_BLOCK_PATTERN,
) -> BehaviourMeasures:
    """Activation change and patching effect per block (module docstring), on ``prompts``
    completed by ``tuned`` (sampled at temperature 1 with ``seed``)."""
    base_model, tokenizer = base
    completions, _ = generate_texts(
        tuned, tokenizer, prompts, max_new_tokens=max_new_tokens, min_new_tokens=1,
        batch_size=batch_size, seed=seed, device=device, desc="validation completions",
    )  # fmt: skip
    batches = teacher_forced_batches(tokenizer, prompts, completions, batch_size, device)
    base_mlps, tuned_mlps = (
        mlp_modules(base_model, block_pattern),
        mlp_modules(tuned, block_pattern),
    )
    if len(base_mlps) != len(tuned_mlps):
        raise LfpMechError("base and tuned models have different numbers of blocks")
    n_layers = len(base_mlps)
    delta_norm = torch.zeros(n_layers, dtype=torch.float64)
    base_norm = torch.zeros(n_layers, dtype=torch.float64)
    rows: list[Tensor] = []
    n_tokens = 0
    was_training = base_model.training, tuned.training
    base_model.eval(), tuned.eval()
    try:
        for batch in tqdm(batches, desc="patching blocks", disable=None, leave=False):
            base_out, base_logits = _forward(base_model, base_mlps, batch)
            tuned_out, tuned_logits = _forward(tuned, tuned_mlps, batch)
            valid = batch.attention_mask.bool().clone()
            valid[:, 0] = False
            columns = [_completion_logprob(base_logits, batch)]
            columns.append(_completion_logprob(tuned_logits, batch))
            for layer in range(n_layers):
                diff = (tuned_out[layer] - base_out[layer]).double().norm(dim=-1)
                delta_norm[layer] += diff[valid].sum().cpu()  # the totals live on the CPU
                base_norm[layer] += base_out[layer].double().norm(dim=-1)[valid].sum().cpu()
                logits = _forward(base_model, base_mlps, batch, patch=(layer, tuned_out[layer]))
                columns.append(_completion_logprob(logits, batch))
            columns.append(batch.completion_mask[:, 1:].sum(dim=1).double())
            rows.append(torch.stack(columns, dim=1))
            n_tokens += int(valid.sum())
    finally:
        base_model.train(was_training[0]), tuned.train(was_training[1])
    table = torch.cat(rows).cpu()  # per-sequence log-probs, for the CIs: on the CPU
    totals = table.sum(dim=0)
    n_completion = int(totals[-1])
    lp_base, lp_tuned, patched = float(totals[0]), float(totals[1]), totals[2:-1]
    gap = (lp_tuned - lp_base) / n_completion
    gain = (patched - lp_base) / n_completion
    if abs(gap) < 1e-9:
        logger.warning("base and tuned models give the tuned completions the same log-prob")
    return BehaviourMeasures(
        activation=delta_norm / base_norm.clamp_min(1e-12),
        patching=gain / gap if abs(gap) >= 1e-9 else torch.zeros_like(gain),
        patching_logprob=gain,
        logprob_gap=float(gap),
        n_sequences=sum(int(b.input_ids.shape[0]) for b in batches),
        n_tokens=n_tokens,
        n_completion_tokens=n_completion,
        sequence_logprobs=table,
    )


def _forward(
    model: PreTrainedModel,
    mlps: Sequence[torch.nn.Module],
    batch: _Batch,
    patch: tuple[int, Tensor] | None = None,
) -> "tuple[list[Tensor], Tensor] | Tensor":
    """Logits and every block's MLP output; with ``patch=(layer, output)``, only the logits of
    a forward whose block ``layer`` MLP output is replaced by ``output``."""
    captured: list[Tensor] = []
    if patch is None:
        handles = [m.register_forward_hook(_capture(captured)) for m in mlps]
    else:
        handles = [mlps[patch[0]].register_forward_hook(_replace(patch[1]))]
    try:
        with torch.no_grad():
            logits = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).logits.float()
    finally:
        for handle in handles:
            handle.remove()
    return logits if patch is not None else (captured, logits)


def _capture(store: list[Tensor]):
    def hook(module, inputs, output):
        store.append(output.detach())

    return hook


def _replace(value: Tensor):
    def hook(module, inputs, output):
        return value.to(output.dtype)

    return hook


def _completion_logprob(
    logits: Float[Tensor, "batch pos vocab"], batch: _Batch
) -> Float[Tensor, " batch"]:
    """Per sequence: the sum over its completion tokens of their log-probability (teacher-forced,
    float64)."""
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    targets = batch.input_ids[:, 1:]
    token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_lp.double() * batch.completion_mask[:, 1:]).sum(dim=1)
