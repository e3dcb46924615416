"""How good a dictionary is: reconstruction and sparsity, CE loss recovered, small↔big MMCS.

* [`sae_metrics`][lfp_mech.saes.metrics.sae_metrics] — on held-out activations: MSE, normalised
  reconstruction loss ``Σ||x − x̂||² / Σ||x||²``, fraction of variance unexplained
  ``Σ||x − x̂||² / Σ||x − x̄||²``, L0 (active features per token) and the dead-feature fraction
  (never active on those tokens).
* [`spliced_ce_losses`][lfp_mech.saes.metrics.spliced_ce_losses] /
  [`ce_loss_recovered`][lfp_mech.saes.metrics.ce_loss_recovered] — the next-token CE loss when the
  SAE's reconstruction replaces the hook in the model, as the fraction of the zero-ablation gap it
  recovers: ``(CE_zero − CE_sae) / (CE_zero − CE_clean)``. A
  [`SameNormRandomError`][lfp_mech.saes.metrics.SameNormRandomError] spliced the same way is its
  control: the SAE's per-token error norm in a random direction (Gurnee 2024, "SAE
  reconstruction errors are (empirically) pathological").
* [`mmcs`][lfp_mech.saes.metrics.mmcs] — each small-dictionary feature's max cosine similarity with
  any big-dictionary feature (the paper's test that a feature is a real direction of the model)."""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor
from tqdm.auto import tqdm

from lfp_mech.activations.tokenization import tokenize_for_model
from lfp_mech.errors import ConfigError
from lfp_mech.hooks import block_of_hook
from lfp_mech.stats import paired_bootstrap_ci

__all__ = [
    "DENSE_FREQUENCY",
    "SameNormRandomError",
    "Splice",
    "TIED_VS_UNTIED_METRICS",
    "ce_loss_recovered",
    "ce_recovered_ci",
    "ce_recovered_difference_ci",
    "mmcs",
    "mmcs_with_index",
    "sae_metrics",
    "spliced_ce_losses",
    "text_ce_losses",
    "tied_vs_untied_table",
]

DENSE_FREQUENCY = 0.1
"""A latent active on more than this fraction of tokens is "dense" (SAE-Lens and SAEBench flag
latents with firing frequency above 10%)."""
TIED_VS_UNTIED_METRICS = ("nmse", "l0_scaled", "fvu", "dead_fraction", "ce_recovered")
"""The metrics the tied-vs-untied table averages (the paper's: ``nmse`` and ``l0_scaled``)."""


def mmcs(sae_small: SAE, sae_big: SAE) -> Float[Tensor, " d_sae_small"]:
    """Max cosine similarity of each small-dictionary decoder direction with any big one."""
    return mmcs_with_index(sae_small, sae_big)[0]


def mmcs_with_index(
    sae_small: SAE, sae_big: SAE
) -> tuple[Float[Tensor, " d_sae_small"], Int[Tensor, " d_sae_small"]]:
    """MMCS of each small feature and the index of the big feature that attains it."""
    small, big = sae_small.W_dec.detach().float(), sae_big.W_dec.detach().float()
    if small.shape[1] != big.shape[1]:
        raise ConfigError(
            f"the SAEs read different widths (d_in {small.shape[1]} vs {big.shape[1]}): MMCS "
            "compares dictionaries of the same layer"
        )
    small = small / small.norm(dim=1, keepdim=True).clamp_min(1e-12)
    big = big / big.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cosine = einsum(small, big, "small d_in, big d_in -> small big")
    values, index = cosine.max(dim=1)
    return values, index


@torch.no_grad()
def sae_metrics(
    sae: SAE, acts: Float[Tensor, "n d_in"], *, batch_size: int = 4096
) -> dict[str, float]:
    """Reconstruction and sparsity of ``sae`` on (held-out) activations ``acts``.

    Returns ``mse`` (per element), ``nmse`` (``Σ||x−x̂||²/Σ||x||²``, the paper's normalised
    reconstruction loss), ``fvu`` (``Σ||x−x̂||²/Σ||x−x̄||²``), ``l0`` (mean active features per
    token), ``l0_scaled`` (``l0 / d_sae``), ``dead_fraction`` (never active on ``acts``) and
    ``dense_fraction`` (active on more than ``DENSE_FREQUENCY`` of the tokens).
    """
    if acts.shape[0] == 0:
        raise ConfigError("no activations to evaluate the SAE on")
    if acts.shape[1] != sae.cfg.d_in:
        raise ConfigError(
            f"activations have width {acts.shape[1]} but the SAE reads {sae.cfg.d_in}"
        )
    sae.eval()
    acts = acts.to(sae.device, torch.float32)
    mean = reduce(acts, "n d_in -> d_in", "mean")
    sq_err = sq_norm = sq_dev = l0 = 0.0
    counts = torch.zeros(sae.cfg.d_sae, device=sae.device)
    for start in range(0, acts.shape[0], batch_size):
        x = acts[start : start + batch_size]
        features = sae.encode(x)
        x_hat = sae.decode(features)
        sq_err += float(((x - x_hat) ** 2).sum())
        sq_norm += float((x**2).sum())
        sq_dev += float(((x - mean) ** 2).sum())
        active = features > 0
        l0 += float(active.sum())
        counts += active.sum(dim=0)
    n = acts.shape[0]
    return {
        "mse": sq_err / (n * acts.shape[1]),
        "nmse": sq_err / max(sq_norm, 1e-12),
        "fvu": sq_err / max(sq_dev, 1e-12),
        "l0": l0 / n,
        "l0_scaled": l0 / n / sae.cfg.d_sae,
        "dead_fraction": float((counts == 0).float().mean()),
        "dense_fraction": float((counts > DENSE_FREQUENCY * n).float().mean()),
    }


Splice = SAE | Callable[[Tensor], Tensor]
"""What [`spliced_ce_losses`][lfp_mech.saes.metrics.spliced_ce_losses] puts in place of a hook's
activation: an SAE's reconstruction, or a function's output on the activation."""


class SameNormRandomError:
    """The control of a spliced SAE: ``x + ‖x − x̂‖ · u`` with ``u`` a uniformly random unit
    vector per token, i.e. an error of the SAE's size at each token but in no particular
    direction. Splicing it in (it goes wherever an SAE does in
    [`spliced_ce_losses`][lfp_mech.saes.metrics.spliced_ce_losses]) tells whether the SAE's
    error hurts the model more or less than its norm alone would: Gurnee (2024) found the
    errors of GPT-2 SAEs more harmful than random ones of the same norm.

    Directions are drawn from a generator seeded with ``seed`` in call order, so a fixed
    sequence of batches gets the same errors on every run."""

    def __init__(self, sae: SAE, seed: int = 0) -> None:
        self.sae = sae
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, act: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        x = act.float()
        error_norm = (x - self.sae.decode(self.sae.encode(x)).float()).norm(dim=-1, keepdim=True)
        direction = torch.randn(x.shape, generator=self.generator).to(x.device)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        return (x + error_norm * direction).to(act.dtype)


@torch.no_grad()
def spliced_ce_losses(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    saes: Mapping[str, Sequence[Splice]],
    *,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Next-token CE loss of ``model`` clean, with each hook zero-ablated, and with each SAE
    replacing its hook (the SAE's reconstruction, no error term).

    ``saes`` maps a hook name (``blocks.{l}.hook_mlp_out``) to what to splice there: SAEs (their
    reconstruction replaces the activation) or any function of the activation, such as an SAE's
    [`SameNormRandomError`][lfp_mech.saes.metrics.SameNormRandomError] control. The
    model runs once in full per batch (caching each hook's block input); the ablated and
    spliced runs restart from that block with ``start_at_layer``, which gives the same logits
    as a full run with the hook replaced and skips the unchanged early blocks.

    Returns ``{"clean": float, "zero": {hook: float}, "sae": {hook: [float, ...]}}`` (mean CE
    over the real next-token predictions; padding is ignored) and ``"per_text"``: the same
    structure of float64 tensors holding each text's summed CE, for a CI over texts
    ([`ce_recovered_ci`][lfp_mech.saes.metrics.ce_recovered_ci]).
    """
    layer_of = {hook: block_of_hook(hook) for hook in saes}
    resid_names = {f"blocks.{layer}.hook_resid_pre" for layer in layer_of.values()}
    sums: dict[str, Any] = {
        "clean": 0.0,
        "zero": dict.fromkeys(saes, 0.0),
        "sae": {hook: [0.0] * len(s) for hook, s in saes.items()},
    }
    per_text: dict[str, Any] = {  # each batch's per-text summed CE, concatenated at the end
        "clean": [],
        "zero": {hook: [] for hook in saes},
        "sae": {hook: [[] for _ in s] for hook, s in saes.items()},
    }
    count = 0
    starts = range(0, tokens.shape[0], batch_size)
    for start in tqdm(starts, desc="CE loss (clean, zero, spliced)", disable=None, leave=False):
        toks = tokens[start : start + batch_size].to(model.cfg.device)
        attn = mask[start : start + batch_size].to(model.cfg.device)
        targets = attn[:, 1:] & attn[:, :-1]
        count += int(targets.sum())
        logits, cache = model.run_with_cache(
            toks, attention_mask=attn.long(), names_filter=lambda name: name in resid_names
        )
        total, texts = _ce_sums(logits, toks, targets)
        sums["clean"] += total
        per_text["clean"].append(texts)
        for hook, hook_saes in saes.items():
            layer = layer_of[hook]
            resid = cache[f"blocks.{layer}.hook_resid_pre"]

            zero = _run_from_block(model, resid, layer, hook, attn, torch.zeros_like)
            total, texts = _ce_sums(zero, toks, targets)
            sums["zero"][hook] += total
            per_text["zero"][hook].append(texts)
            for i, sae in enumerate(hook_saes):
                replace = _reconstruct_with(sae) if isinstance(sae, SAE) else sae
                spliced = _run_from_block(model, resid, layer, hook, attn, replace)
                total, texts = _ce_sums(spliced, toks, targets)
                sums["sae"][hook][i] += total
                per_text["sae"][hook][i].append(texts)
    count = max(count, 1)
    return {
        "clean": sums["clean"] / count,
        "zero": {hook: value / count for hook, value in sums["zero"].items()},
        "sae": {hook: [value / count for value in values] for hook, values in sums["sae"].items()},
        "per_text": {
            "clean": torch.cat(per_text["clean"]),
            "zero": {hook: torch.cat(parts) for hook, parts in per_text["zero"].items()},
            "sae": {
                hook: [torch.cat(parts) for parts in per_sae]
                for hook, per_sae in per_text["sae"].items()
            },
        },
    }


def text_ce_losses(
    model: Any,
    texts: Sequence[str],
    saes: Mapping[str, Sequence[Splice]],
    *,
    context_length: int = 128,
    batch_size: int = 16,
) -> dict[str, Any]:
    """[`spliced_ce_losses`][lfp_mech.saes.metrics.spliced_ce_losses] on ``texts``, tokenised as the
    capture does ([`tokenize_for_model`][lfp_mech.activations.tokenization.tokenize_for_model]:
    ``[BOS] + tokens``, right-padded)."""
    tokens, mask = tokenize_for_model(model.tokenizer, texts, context_length)
    return spliced_ce_losses(model, tokens, mask, saes, batch_size=batch_size)


def ce_loss_recovered(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """``(CE_zero − CE_sae) / (CE_zero − CE_clean)``: 1 = as good as the model, 0 = as bad as
    zero-ablating the hook (NaN if ablation does not hurt)."""
    gap = ce_zero - ce_clean
    return (ce_zero - ce_sae) / gap if abs(gap) > 1e-9 else math.nan


def ce_recovered_ci(
    clean: Float[Tensor, " text"],
    sae: Float[Tensor, " text"],
    zero: Float[Tensor, " text"],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI (``scipy.stats.bootstrap``, texts resampled with their tokens,
    paired across the three conditions) of the CE loss recovered,
    ``(Σ zero − Σ sae) / (Σ zero − Σ clean)`` over the resampled texts' summed CE — the
    token-weighted ratio the point estimate is. ``(nan, nan)`` with fewer than two texts or no
    ablation gap."""
    # the zero-ablated model recovers 0 of the gap, so this is the difference against it
    return ce_recovered_difference_ci(
        clean, sae, zero, zero, confidence=confidence, n_resamples=n_resamples, seed=seed
    )


def ce_recovered_difference_ci(
    clean: Float[Tensor, " text"],
    sae: Float[Tensor, " text"],
    reference: Float[Tensor, " text"],
    zero: Float[Tensor, " text"],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the CE loss recovered with ``sae`` spliced in minus that with
    ``reference`` (another dictionary, or the SAE's
    [`SameNormRandomError`][lfp_mech.saes.metrics.SameNormRandomError] control),
    ``(Σ reference − Σ sae) / (Σ zero − Σ clean)``, texts resampled with their tokens and paired
    across the four conditions (each a tensor of per-text summed CE). ``(nan, nan)`` with fewer
    than two texts or no ablation gap."""
    arrays = [t.double().cpu().numpy() for t in (clean, sae, reference, zero)]
    if len(arrays[0]) < 2 or abs(float(arrays[3].sum() - arrays[0].sum())) < 1e-9:
        return math.nan, math.nan

    def difference(c: Any, s: Any, r: Any, z: Any, axis: int = -1) -> Any:
        return (r - s).sum(axis=axis) / (z - c).sum(axis=axis)

    return paired_bootstrap_ci(
        arrays, difference, n_resamples=n_resamples, seed=seed, confidence=confidence
    )


def tied_vs_untied_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The paper's appendix table: each variant's small-SAE metrics averaged over the layers.

    ``rows``: one per SAE with ``size``, ``variant`` and the
    [`TIED_VS_UNTIED_METRICS`][lfp_mech.saes.metrics.TIED_VS_UNTIED_METRICS]. Returns one row per
    variant present (tied first): ``variant``, ``n_layers``, the means."""
    table = []
    for variant in ("tied", "untied"):
        chosen = [r for r in rows if r["size"] == "small" and r["variant"] == variant]
        if not chosen:
            continue
        entry: dict[str, Any] = {"variant": variant, "n_layers": len(chosen)}
        for key in TIED_VS_UNTIED_METRICS:
            entry[key] = sum(float(r[key]) for r in chosen) / len(chosen)
        table.append(entry)
    return table


def _reconstruct_with(sae: SAE) -> Callable[[Tensor], Tensor]:
    return lambda act: sae.decode(sae.encode(act)).to(act.dtype)


def _run_from_block(
    model: Any,
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    hook: str,
    attention_mask: Bool[Tensor, "batch pos"],
    replace_fn: Callable[[Tensor], Tensor],
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of ``model`` run from block ``layer`` on ``resid`` with ``hook`` replaced."""
    with model.hooks(fwd_hooks=[(hook, lambda act, hook: replace_fn(act))]):
        return model(resid, start_at_layer=layer, attention_mask=attention_mask.long())


def _ce_sums(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    targets: Bool[Tensor, "batch pos_minus_1"],
) -> tuple[float, Float[Tensor, " batch"]]:
    """The batch's summed next-token CE over ``targets``, and each text's (float64, CPU)."""
    log_probs = logits[:, :-1].float().log_softmax(dim=-1)
    next_tokens = rearrange(tokens[:, 1:], "batch pos -> batch pos 1")
    nll = -log_probs.gather(-1, next_tokens)[..., 0]
    per_text = nll.double().masked_fill(~targets, 0.0).sum(dim=-1).cpu()
    return float(nll[targets].sum()), per_text
