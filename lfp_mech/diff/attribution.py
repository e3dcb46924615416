"""Which diff features, ablated, bring the tuned model's predictions back to the base model's?

On the corpus texts, at every position that predicts a token the policy wrote, the divergence
``D = KL(p_base ‖ p_tuned)`` of the two models' next-token distributions measures what tuning
changed in the model's output. Attribution patching (Nanda 2023; Syed et al. 2023, "Attribution
patching outperforms automated circuit discovery") estimates, to first order, how much ablating
latent ``f`` of block ``L`` (``x ↦ x − z_f(x) W_dec[f]``) lowers ``ΣD``::

    a_f = Σ_t z_f(x_t) · (W_dec[f] · ∂ΣD/∂x_t)          (ΣD after the ablation ≈ ΣD − a_f)

One forward pass of each model and one backward pass of the tuned model from the logits down to
the first dictionary block give ``a`` for every latent of every block
([`kl_attribution`][lfp_mech.diff.attribution.kl_attribution]), optionally with some latents
already ablated: the estimate is then conditional on them, which is how the greedy ranking of
[`blocks`][lfp_mech.diff.blocks] avoids choosing one change twice (a change written at block 20
is carried on by the residual stream, and an independent block-22 dictionary learns it again).
Ranking by ``a`` uses the base model's predictions, never the reward.

``measure="base_cross_entropy"`` attributes ``D = −Σ_v p_tuned(v) log p_base(v)`` instead: on texts
the (ablated) policy sampled itself, how unlikely its predictions are for the base model, the
per-token term of the base-model perplexity of its text. The greedy ranking can add it as a
fluency term (``DiffConfig.attribution_fluency``)."""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from lfp_mech.diff.build import CorpusTokens
from lfp_mech.diff.dictionary import DiffDictionary
from lfp_mech.diff.interventions import ablate_latents, on_device
from lfp_mech.diff.residual import decoder_layers, replace_output

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_LOG_PROBS_CACHE_BYTES",
    "KLAttribution",
    "base_log_probs",
    "base_targets",
    "kl_attribution",
]

Measure = Literal["kl", "base_cross_entropy"]
MEASURES: tuple[Measure, ...] = ("kl", "base_cross_entropy")
"""What [`kl_attribution`][lfp_mech.diff.attribution.kl_attribution] attributes (module docstring)."""


@dataclass(frozen=True)
class KLAttribution:
    """What [`kl_attribution`][lfp_mech.diff.attribution.kl_attribution] measured."""

    latents: dict[int, Float[Tensor, " d_dict"]]
    """Per block, each latent's ``a_f``: the first-order decrease of ``ΣD`` when it is ablated."""
    kl: float
    """``ΣD`` itself (with the call's ``ablated`` latents ablated; ``D`` the call's measure)."""


def _predicting(corpus: CorpusTokens) -> Tensor:
    """Positions whose next token is a real token the policy wrote."""
    keep = torch.zeros_like(corpus.mask)
    keep[:, :-1] = (corpus.policy & corpus.mask)[:, 1:]
    return keep


BASE_LOG_PROBS_CACHE_BYTES = 2 * 1024**3
"""Largest size of the base model's log-probabilities
[`base_targets`][lfp_mech.diff.attribution.base_targets] keeps in memory (float32, one row of the
vocabulary per predicting position: ~0.6 GB for SmolLM2's 49k vocabulary on the default corpus,
~3 GB at a 256k vocabulary); above it they are recomputed at each round instead."""


def base_log_probs(
    base: nn.Module, corpus: CorpusTokens, *, batch_size: int = 16
) -> list[Float[Tensor, "n vocab"]]:
    """The base model's next-token log-probabilities at the positions that predict a policy
    token, one tensor per batch of ``batch_size`` texts (on the CPU): computed once, they serve
    every round of the greedy ranking."""
    return _kept(_RecomputedLogProbs(base, corpus, batch_size))


def _kept(batches: "_RecomputedLogProbs") -> list[Float[Tensor, "n vocab"]]:
    """Every batch of ``batches`` computed now."""
    return [
        batches[b]
        for b in tqdm(range(len(batches)), desc="base log-probs", disable=None, leave=False)
    ]


def base_targets(
    base: nn.Module,
    corpus: CorpusTokens,
    *,
    batch_size: int = 16,
    max_bytes: int = BASE_LOG_PROBS_CACHE_BYTES,
) -> Sequence[Float[Tensor, "n vocab"]]:
    """[`base_log_probs`][lfp_mech.diff.attribution.base_log_probs] computed once and kept, when
    they fit in ``max_bytes``; else a sequence that runs the base model for a batch each time it
    is read (one more base forward pass per batch and round, no memory held)."""
    batches = _RecomputedLogProbs(base, corpus, batch_size)
    size = int(batches.predicting.sum()) * batches.vocab_size * 4
    if size <= max_bytes:
        return _kept(batches)
    logger.info(
        "diff attribution: the base model's log-probs would take %.1f GB (> %.1f GB): "
        "recomputed at each round instead of kept",
        size / 1024**3,
        max_bytes / 1024**3,
    )
    return batches


class _RecomputedLogProbs(Sequence[Tensor]):
    """Batch ``b`` of [`base_log_probs`][lfp_mech.diff.attribution.base_log_probs], computed
    when read."""

    def __init__(self, base: nn.Module, corpus: CorpusTokens, batch_size: int) -> None:
        self.base, self.corpus, self.batch_size = base, corpus, batch_size
        self.predicting = _predicting(corpus)
        self.vocab_size = int(base.get_output_embeddings().weight.shape[0])

    def __len__(self) -> int:
        return -(-self.corpus.ids.shape[0] // self.batch_size)

    def __getitem__(self, batch: int) -> Float[Tensor, "n vocab"]:  # type: ignore[override]
        if not 0 <= batch < len(self):
            raise IndexError(batch)
        device = next(self.base.parameters()).device
        rows = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
        ids, mask = self.corpus.ids[rows].to(device), self.corpus.mask[rows].to(device)
        with torch.no_grad():
            logits = self.base(input_ids=ids, attention_mask=mask).logits
        return logits.float().log_softmax(-1)[self.predicting[rows].to(device)].cpu()


def kl_attribution(
    base: nn.Module,
    tuned: nn.Module,
    corpus: CorpusTokens,
    dictionaries: Mapping[int, DiffDictionary],
    *,
    ablated: Mapping[int, Sequence[int]] | None = None,
    batch_size: int = 16,
    base_targets: Sequence[Tensor] | None = None,
    measure: Measure = "kl",
) -> KLAttribution:
    """``a_f`` for every latent of every block of ``dictionaries`` (see the module docstring),
    with the ``ablated`` latents (by block) ablated in the tuned model throughout.
    ``base_targets``: [`base_targets`][lfp_mech.diff.attribution.base_targets] (or
    [`base_log_probs`][lfp_mech.diff.attribution.base_log_probs]) of the same corpus and
    ``batch_size``, if already computed.
    ``measure``: ``"kl"`` (``KL(p_base ‖ p_tuned)``) or ``"base_cross_entropy"`` (module docstring)."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    layers = sorted(dictionaries)
    device = next(tuned.parameters()).device
    # the dictionaries on the model's device once, for the ablation hooks and the readout
    placed = {layer: on_device(dictionaries[layer], device) for layer in layers}
    edits = {layer: ablate_latents(placed[layer], ids) for layer, ids in (ablated or {}).items()}
    totals = {layer: torch.zeros(dictionaries[layer].d_dict) for layer in layers}
    predicting = _predicting(corpus)
    targets = (
        base_targets
        if base_targets is not None
        else base_log_probs(base, corpus, batch_size=batch_size)
    )
    kl_sum = 0.0
    grad_flags = [p.requires_grad for p in tuned.parameters()]
    tuned.requires_grad_(False)  # gradients only w.r.t. the hooked blocks' outputs
    try:
        starts = range(0, corpus.ids.shape[0], batch_size)
        for batch, start in enumerate(
            tqdm(starts, desc="KL attribution", disable=None, leave=False)
        ):
            rows = slice(start, start + batch_size)
            ids, mask = corpus.ids[rows].to(device), corpus.mask[rows].to(device)
            keep = predicting[rows].to(device)
            if not bool(keep.any()):
                continue
            log_base = targets[batch].to(device)
            read, handles = _attach(tuned, layers, edits)
            try:
                with torch.enable_grad():
                    logits = tuned(input_ids=ids, attention_mask=mask).logits
                    log_tuned = logits.float()[keep].log_softmax(-1)
                    kl = _divergence(log_base, log_tuned, measure)
                    grads = torch.autograd.grad(kl, [read["post"][layer] for layer in layers])
            finally:
                for handle in handles:
                    handle.remove()
            kl_sum += float(kl.detach())
            for layer, grad in zip(layers, grads, strict=True):
                dictionary = placed[layer]
                with torch.no_grad():
                    w_dec = dictionary.W_dec.detach()
                    z = dictionary.encode(read["pre"][layer][mask].to(w_dec.dtype))
                    along = grad[mask].to(w_dec.dtype) @ w_dec.T
                    totals[layer] += (z * along).sum(0).cpu()
    finally:
        for param, flag in zip(tuned.parameters(), grad_flags, strict=True):
            param.requires_grad_(flag)
    return KLAttribution(latents=totals, kl=kl_sum)


def _divergence(
    log_base: Float[Tensor, "n vocab"], log_tuned: Float[Tensor, "n vocab"], measure: Measure
) -> Float[Tensor, ""]:
    if measure == "kl":
        return (log_base.exp() * (log_base - log_tuned)).sum()
    return -(log_tuned.exp() * log_base).sum()


def _attach(
    model: nn.Module, layers: Sequence[int], edits: Mapping[int, Any]
) -> tuple[dict[str, dict[int, Tensor]], list[Any]]:
    """Hooks that record each block's output before (``pre``) and after (``post``) its edit; the
    first block's edited output becomes a leaf that requires grad, so the graph starts there."""
    read: dict[str, dict[int, Tensor]] = {"pre": {}, "post": {}}
    first = layers[0]

    def hook_for(layer: int) -> Any:
        def record_and_edit(out: Tensor) -> Tensor:
            read["pre"][layer] = out.detach()
            edited = edits[layer](out) if layer in edits else out
            if layer == first:
                edited = edited.detach().requires_grad_(True)
            read["post"][layer] = edited
            return edited

        return lambda _module, _args, output: replace_output(output, record_and_edit)

    blocks = decoder_layers(model)
    return read, [blocks[layer].register_forward_hook(hook_for(layer)) for layer in layers]
