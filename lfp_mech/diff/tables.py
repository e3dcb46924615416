"""The stage's tables: the ranked latents (with contexts, logit effects, VADER overlap and a
description) and the interventions (gap shares with CIs, fluency)."""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from lfp_mech.diff.blocks import BlockDiff
from lfp_mech.diff.causal import ConditionResult, gap_share, permutation_p, perplexity_ratio
from lfp_mech.diff.config import DiffConfig
from lfp_mech.diff.scoring import logit_effects, unembedding

__all__ = ["intervention_rows", "latent_rows"]


def _clean(token: str) -> str:
    return token.strip().lower()


def latent_rows(
    features: BlockDiff, model: nn.Module, tokenizer: Any, n: int, n_contexts: int
) -> list[dict[str, Any]]:
    """One row per top-``n`` feature of the cross-block ranking, most tuned-specific first."""
    from lfp_mech.rewards import vader_lexicon

    lexicon = vader_lexicon()
    w_u, scale = unembedding(model)
    rows = []
    for rank, ranked in enumerate(features.ranking[:n], start=1):
        block = features.blocks[ranked.layer]
        group = block.groups[ranked.index]
        f = group.members[0]
        direction = block.dictionary.W_dec.detach()[f]
        effect = logit_effects(direction[None], w_u, scale)[0]
        acts = block.group_activation(ranked.index)
        promoted = [_clean(tokenizer.decode([i])) for i in effect.topk(20).indices.tolist()]
        contexts = block.top_contexts(ranked.index, tokenizer, n_contexts)
        ctx_tokens = [_clean(c["token"]) for c in contexts]
        valences = [lexicon[t] for t in promoted if t in lexicon]
        dom_unit = block.mean_diff / block.mean_diff.norm().clamp_min(1e-12)
        rows.append(
            {
                "rank": rank,
                "layer": ranked.layer,
                "block_rank": ranked.index + 1,
                "latent": f,
                "members": " ".join(map(str, group.members)),
                "score": group.score,
                "kl_attribution": features.attribution.get(ranked),
                "mean_act": float(acts.mean()),
                "frequency": group.frequency,
                "mean_when_active": float(acts[acts > 0].mean()) if bool((acts > 0).any()) else 0.0,
                "cos_mean_diff": float(direction @ dom_unit),
                "promoted": " ".join(promoted[:8]),
                "suppressed": " ".join(
                    _clean(tokenizer.decode([i])) for i in (-effect).topk(8).indices.tolist()
                ),
                "vader_promoted_share": len(valences) / len(promoted),
                "vader_promoted_valence": float(np.mean(valences)) if valences else 0.0,
                "vader_context_share": (
                    sum(t in lexicon for t in ctx_tokens) / len(ctx_tokens) if ctx_tokens else 0.0
                ),
                "top_contexts": " ‖ ".join(f"{c['before']}[[{c['token']}]]" for c in contexts[:3]),
                "description": _describe(promoted, ctx_tokens, valences, lexicon),
            }
        )
    return rows


def _describe(
    promoted: Sequence[str], ctx: Sequence[str], valences: Sequence[float], lexicon: Mapping
) -> str:
    words = [t for t in promoted if t in lexicon][:4] or list(promoted[:4])
    fires = list(dict.fromkeys(t for t in ctx if t))[:4]
    tone = (
        "positive"
        if valences and np.mean(valences) > 0.5
        else "negative"
        if valences and np.mean(valences) < -0.5
        else "neutral"
    )
    return f"{tone}: promotes {', '.join(words)}; fires on {', '.join(fires) or '-'}"


def intervention_rows(
    results: Mapping[str, ConditionResult], config: DiffConfig
) -> list[dict[str, Any]]:
    """One row per condition: reward, share of the gap (CI), distinct-2, perplexity and its
    ratio to the clean policy's (CI)."""
    tuned, base = results["tuned"].rewards, results["base"].rewards
    tuned_nll = results["tuned"].token_nll
    random_tuned = [r.rewards for r in results.values() if r.condition.group == "random"]
    random_base = [r.rewards for r in results.values() if r.condition.group == "steer_random"]
    rows = []
    for name, res in results.items():
        cond = res.condition
        removes = cond.policy == "tuned"
        share = low = high = None
        if cond.group != "clean":
            share, low, high = gap_share(
                tuned,
                base,
                res.rewards,
                removes=removes,
                n_resamples=config.n_bootstrap,
                seed=config.seed,
            )
        p_value = None
        if cond.group in ("ablate", "steer") and cond.k == config.control_k:
            controls = random_tuned if cond.group == "ablate" else random_base
            if controls:
                p_value = permutation_p(
                    res.rewards,
                    controls,
                    n_permutations=config.n_permutations,
                    seed=config.seed,
                    lower=cond.group == "ablate",
                )
        rows.append(
            {
                "condition": name,
                "policy": cond.policy,
                "group": cond.group,
                "k": cond.k,
                "reward": float(res.rewards.mean()),
                "gap_share": share,
                "share_of": "removed" if removes else "added",
                "ci_low": low,
                "ci_high": high,
                "p_vs_random": p_value,
                "distinct_2": res.distinct_2,
                "perplexity": res.perplexity,
                **_perplexity_columns(res, tuned_nll, config),
            }
        )
    return rows


def _perplexity_columns(
    res: ConditionResult, tuned_nll: Sequence[np.ndarray], config: DiffConfig
) -> dict[str, float | None]:
    """``perplexity_vs_tuned`` (the clean policy's = 1) with its bootstrap CI over prompts."""
    if not (res.token_nll and tuned_nll):
        return {"perplexity_vs_tuned": None, "ppl_ci_low": None, "ppl_ci_high": None}
    ratio, low, high = perplexity_ratio(
        res.token_nll, tuned_nll, n_resamples=config.n_bootstrap, seed=config.seed
    )
    return {"perplexity_vs_tuned": ratio, "ppl_ci_low": low, "ppl_ci_high": high}
