"""Causal tests during generation: each condition samples completions of held-out prompts with
residual edits active, then measures the VADER reward, distinct-2 and the perplexity of the
completions under the base model. Every condition uses the same seed (common random numbers).

Shares of the gap ``G = R_tuned − R_base``: an edit of the tuned policy *removes*
``(R_tuned − R_edit) / G``; an edit of the base model *adds* ``(R_edit − R_base) / G``. CIs are
paired percentile bootstraps over prompts (``scipy.stats.bootstrap``), also for the ratio of a
condition's perplexity to the clean policy's; top-k vs random latents is a one-sided sign-flip
permutation test on the per-prompt reward differences."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lfp_mech.diff.residual import EditFn, residual_hooks
from lfp_mech.models.generation import generate_texts
from lfp_mech.rewards import vader_reward
from lfp_mech.stats import paired_bootstrap_ci

__all__ = [
    "Condition",
    "ConditionResult",
    "base_perplexity",
    "base_token_nll",
    "perplexity_ratio",
    "gap_share",
    "permutation_p",
    "run_condition",
    "steer_features",
]


@dataclass
class Condition:
    """One intervention: which model, which edits."""

    name: str
    policy: str
    """"tuned" or "base"."""
    group: str
    """clean, ablate, random, dom_project, dom_project_dictionary_blocks, lfp_probe, steer,
    steer_random, dom_add."""
    k: int = 0
    edits: Mapping[int | str, EditFn] = field(default_factory=dict, repr=False)


@dataclass
class ConditionResult:
    """Completions of one condition and their measures."""

    condition: Condition
    completions: list[str]
    rewards: np.ndarray
    distinct_2: float
    perplexity: float
    token_nll: list[np.ndarray] = field(default_factory=list, repr=False)
    """Per completion, the base model's NLL of each of its tokens (the perplexity's terms)."""


def steer_features(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    edits: Mapping[int | str, EditFn],
    *,
    max_new_tokens: int = 20,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "cpu",
) -> list[str]:
    """Completions of ``prompts`` (new text only) with the residual ``edits`` active."""
    with residual_hooks(model, edits):
        texts, _ = generate_texts(
            model,
            tokenizer,
            list(prompts),
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            batch_size=batch_size,
            seed=seed,
            device=device,
            desc="diff generate",
        )
    return texts


def base_perplexity(
    base: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    batch_size: int = 16,
) -> float:
    """``exp`` of the mean per-token NLL of the completions given their prompts, under ``base``."""
    return _pooled_perplexity(
        base_token_nll(base, tokenizer, prompts, completions, batch_size=batch_size)
    )


def _pooled_perplexity(nll: Sequence[np.ndarray]) -> float:
    """``exp`` of the mean NLL over every token of every completion (NaN without tokens)."""
    tokens = np.concatenate(nll) if len(nll) else np.zeros(0)
    return math.exp(float(tokens.mean())) if tokens.size else float("nan")


def base_token_nll(
    base: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Per completion, the NLL under ``base`` of each of its tokens given the prompt and the
    tokens before (an empty array for an empty completion)."""
    out: list[np.ndarray] = [np.zeros(0) for _ in prompts]
    device = next(base.parameters()).device
    pairs = [
        (i, p, c) for i, (p, c) in enumerate(zip(prompts, completions, strict=True)) if c.strip()
    ]
    for start in range(0, len(pairs), batch_size):
        chunk = [(p, c) for _, p, c in pairs[start : start + batch_size]]
        full = tokenizer(
            [p + c for p, c in chunk], return_tensors="pt", padding=True, padding_side="right"
        )
        n_prompt = [len(tokenizer(p).input_ids) for p, _ in chunk]
        ids, mask = full["input_ids"].to(device), full["attention_mask"].to(device)
        with torch.no_grad():
            logits = base(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), ids[:, 1:], reduction="none"
        )
        target_pos = torch.arange(1, ids.shape[1], device=device).unsqueeze(0)
        keep = mask[:, 1:].bool() & (target_pos >= torch.tensor(n_prompt, device=device)[:, None])
        for row, (index, _, _) in enumerate(pairs[start : start + batch_size]):
            out[index] = nll[row][keep[row]].cpu().numpy().astype(np.float64)
    return out


def perplexity_ratio(
    edited: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(ratio, ci_low, ci_high)``: perplexity of the ``edited`` completions over the
    ``reference`` ones (per-token NLLs of the same prompts, as from
    [`base_token_nll`][lfp_mech.diff.causal.base_token_nll]), with a percentile bootstrap over
    prompts (``scipy.stats.bootstrap``, paired: a resample draws the same prompts for both)."""
    from scipy.stats import bootstrap

    def ratio(index: np.ndarray) -> float:
        e = np.concatenate([edited[i] for i in index])
        r = np.concatenate([reference[i] for i in index])
        if not (e.size and r.size):
            return float("nan")
        return float(np.exp(e.mean() - r.mean()))

    prompts = np.arange(len(edited))
    point = ratio(prompts)
    if not np.isfinite(point):
        return point, float("nan"), float("nan")
    res = bootstrap(
        (prompts,),
        ratio,
        vectorized=False,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def run_condition(
    condition: Condition,
    models: Mapping[str, nn.Module],
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    device: str = "cpu",
) -> ConditionResult:
    """Generate under the condition's edits and measure reward, distinct-2 and perplexity."""
    from lfp_mech.rlhf.evaluation import distinct_n

    completions = steer_features(
        models[condition.policy],
        tokenizer,
        prompts,
        condition.edits,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        device=device,
    )
    rewards = vader_reward([p + c for p, c in zip(prompts, completions, strict=True)])
    nll = base_token_nll(models["base"], tokenizer, prompts, completions)
    return ConditionResult(
        condition=condition,
        completions=completions,
        rewards=np.asarray(rewards, dtype=np.float64),
        distinct_2=distinct_n(completions, 2),
        perplexity=_pooled_perplexity(nll),
        token_nll=nll,
    )


def gap_share(
    tuned: np.ndarray,
    base: np.ndarray,
    edited: np.ndarray,
    *,
    removes: bool,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(share, ci_low, ci_high)`` of the gap removed (tuned edits) or added (base edits)."""

    def share(t: np.ndarray, b: np.ndarray, e: np.ndarray, axis: int = -1) -> Any:
        gap = t.mean(axis) - b.mean(axis)
        moved = t.mean(axis) - e.mean(axis) if removes else e.mean(axis) - b.mean(axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return moved / gap

    point = float(share(tuned, base, edited))
    if not np.isfinite(point) or abs(float(tuned.mean() - base.mean())) < 1e-9:
        return float("nan"), float("nan"), float("nan")  # no gap to share
    low, high = paired_bootstrap_ci(
        (tuned, base, edited), share, n_resamples=n_resamples, seed=seed
    )
    return point, low, high


def permutation_p(
    top: np.ndarray,
    random: Sequence[np.ndarray],
    *,
    n_permutations: int = 2000,
    seed: int = 0,
    lower: bool = True,
) -> float:
    """One-sided sign-flip p-value that the top latents' per-prompt rewards are lower
    (``lower``; higher otherwise) than the random latents' (averaged over draws):
    ``scipy.stats.permutation_test`` on the per-prompt differences (one sample, so
    ``permutation_type="samples"`` flips their signs)."""
    from scipy import stats

    diff = np.mean(np.stack(list(random)), axis=0) - top
    if not lower:
        diff = -diff
    result = stats.permutation_test(
        (diff,), _mean_last_axis, permutation_type="samples", n_resamples=n_permutations,
        alternative="greater", vectorized=True, rng=np.random.default_rng(seed),
    )  # fmt: skip
    return float(result.pvalue)


def _mean_last_axis(x: np.ndarray, axis: int = -1) -> Any:
    return x.mean(axis=axis)
