"""Which latents did the tuning add? Scores, frequency-matched controls, contexts, logit effects.

A latent's score is its mean activation on the tuned policy's own tokens (the completions it
wrote): with unit-norm decoder rows this is the average length of that latent's contribution to
``δ = x_tuned − x_base`` where the policy acts. Latents are ranked by it (most tuned-specific
first). Logit effects push the decoder row through the final norm's scale and the unembedding
(what the direction says about the next token, as in SAE dashboards); VADER overlap is the share
of the top promoted tokens and of the top-context tokens that are VADER lexicon words."""

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from lfp_mech.diff.dictionary import DiffDictionary

__all__ = [
    "LatentGroup",
    "encode_all",
    "group_latents",
    "latent_stats",
    "logit_effects",
    "matched_random_latents",
    "top_contexts",
    "unembedding",
]


def encode_all(
    dictionary: DiffDictionary, x: Float[Tensor, "n d_model"], chunk: int = 4096
) -> Float[Tensor, "n d_dict"]:
    """Latent activations of every row of ``x``."""
    with torch.no_grad():
        return torch.cat([dictionary.encode(x[s : s + chunk]) for s in range(0, len(x), chunk)])


def latent_stats(
    z: Float[Tensor, "n d_dict"], policy_tokens: Bool[Tensor, " n"]
) -> dict[str, Tensor]:
    """Per latent: ``score`` (mean activation on policy tokens), ``mean_act`` (all tokens),
    ``frequency`` (share of tokens where it fires), ``mean_when_active``; and ``ranking`` (latent
    ids by descending score)."""
    active = (z > 0).float()
    frequency = active.mean(0)
    score = z[policy_tokens].mean(0) if bool(policy_tokens.any()) else z.mean(0)
    mean_when_active = z.sum(0) / active.sum(0).clamp_min(1)
    ranking = torch.argsort(score, descending=True, stable=True)
    return {
        "score": score,
        "mean_act": z.mean(0),
        "frequency": frequency,
        "mean_when_active": mean_when_active,
        "ranking": ranking,
    }


@dataclass(frozen=True)
class LatentGroup:
    """Latents whose decoder rows point the same way (cos above the threshold), one feature.

    A TopK dictionary must keep ``k`` latents active per token, so a change present on every
    token (e.g. a constant shift) is learnt by several latents with the same decoder direction,
    each carrying part of it; nothing in the loss prefers one copy. Grouping them makes the
    unit of ranking, ablation and steering the *direction*, not the copy."""

    members: tuple[int, ...]
    """Latent ids, highest score first (the first is the representative)."""
    score: float
    """Sum of the members' scores (their contributions add along the shared direction)."""
    frequency: float
    """Share of tokens where any member fires."""


def group_latents(
    w_dec: Float[Tensor, "d_dict d_model"],
    z: Float[Tensor, "n d_dict"],
    score: Float[Tensor, " d_dict"],
    threshold: float = 0.9,
) -> list[LatentGroup]:
    """Greedy grouping in descending score: a latent joins the first representative whose decoder
    row has cosine > ``threshold`` with its own; groups come back by descending summed score.
    Latents that never fire form no group."""
    order = torch.argsort(score, descending=True, stable=True).tolist()
    alive = (z > 0).any(0)
    w = w_dec.detach() / w_dec.detach().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    reps: list[int] = []
    members: dict[int, list[int]] = {}
    for f in order:
        if not bool(alive[f]):
            continue
        if reps:
            cos = w[reps] @ w[f]
            best = int(cos.argmax())
            if float(cos[best]) > threshold:
                members[reps[best]].append(f)
                continue
        reps.append(f)
        members[f] = [f]
    groups = [
        LatentGroup(
            members=tuple(ids),
            score=float(score[ids].sum()),
            frequency=float((z[:, ids] > 0).any(1).float().mean()),
        )
        for ids in members.values()
    ]
    return sorted(groups, key=lambda g: (-g.score, g.members[0]))


def matched_random_latents(
    frequency: Float[Tensor, " d_dict"],
    chosen: Sequence[int],
    *,
    seed: int = 0,
    pool: int = 5,
) -> list[int]:
    """For each chosen latent, a random other latent among the ``pool`` closest in frequency
    (never a chosen one, never twice)."""
    rng = random.Random(seed)
    taken = set(int(f) for f in chosen)
    freq = frequency.tolist()
    out: list[int] = []
    for f in chosen:
        candidates = sorted(
            (g for g in range(len(freq)) if g not in taken),
            key=lambda g, f=f: (abs(freq[g] - freq[int(f)]), g),
        )[:pool]
        pick = rng.choice(candidates)
        taken.add(pick)
        out.append(pick)
    return out


def unembedding(model: nn.Module) -> tuple[Tensor, Tensor | None]:
    """``(W_U [vocab, d_model], final-norm scale [d_model] or None)`` of an HF causal LM."""
    w_u = model.get_output_embeddings().weight.detach().float()
    for path in ("model.norm", "gpt_neox.final_layer_norm", "transformer.ln_f"):
        module: Any = model
        for part in path.split("."):
            module = getattr(module, part, None)
        if module is not None and getattr(module, "weight", None) is not None:
            return w_u, module.weight.detach().float()
    return w_u, None


def logit_effects(
    directions: Float[Tensor, "n d_model"], w_u: Tensor, norm_scale: Tensor | None
) -> Float[Tensor, "n vocab"]:
    """Direct effect of each direction on the logits: ``W_U (g ⊙ d)``, centred per direction."""
    d = directions.float() * (norm_scale if norm_scale is not None else 1.0)
    logits = d @ w_u.T
    return logits - logits.mean(-1, keepdim=True)


def top_contexts(
    z_f: Float[Tensor, " n"],
    token_ids: Int[Tensor, " n"],
    text_index: Int[Tensor, " n"],
    position: Int[Tensor, " n"],
    all_ids: Int[Tensor, "texts pos"],
    tokenizer: Any,
    n: int = 8,
    window: int = 8,
) -> list[dict[str, Any]]:
    """The ``n`` tokens where the latent fires most, each with ``window`` tokens before it."""
    order = torch.argsort(z_f, descending=True)[:n]
    rows = []
    for i in order.tolist():
        if float(z_f[i]) <= 0:
            break
        t, p = int(text_index[i]), int(position[i])
        before = all_ids[t, max(0, p - window) : p].tolist()
        rows.append(
            {
                "activation": float(z_f[i]),
                "token": tokenizer.decode([int(token_ids[i])]),
                "before": tokenizer.decode(before, skip_special_tokens=True),
            }
        )
    return rows
