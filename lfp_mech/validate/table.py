"""Table 6: mean reward of completions, clean vs task-related features ablated vs as many
frequency-matched random features ablated, for the base and the fine-tuned model.

Intervals are Student t for each cell's mean and for the paired difference to the clean
completions of the same prompts and seeds (common random numbers).
"""

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float
from torch import Tensor, nn

from lfp_mech.errors import ConfigError
from lfp_mech.validate.ablated_generation import generate_with_ablation
from lfp_mech.validate.controls import matched_random_features
from lfp_mech.validate.feature_ids import FeatureIds, as_id_list

logger = logging.getLogger(__name__)

__all__ = ["AblationResult", "ablation_table", "t_interval", "truncate_prompts"]

RewardLike = Callable[[Sequence[str]], Tensor] | str
"""A reward function ``texts -> Float[Tensor, "batch"]`` or its name
([`lfp_mech.rewards.get_reward`][lfp_mech.rewards.get_reward])."""


@dataclass
class AblationResult:
    """Table 6: mean reward per (model, condition), with CIs, and what was ablated."""

    rows: list[dict[str, Any]]
    """One row per (model, condition): model, condition, n_features, n, mean_reward, ci_low,
    ci_high, delta_vs_clean, delta_ci_low, delta_ci_high."""
    features: dict[str, dict[str, list[int]]]
    """condition -> hook -> ablated feature ids."""
    completions: dict[str, dict[str, list[str]]]
    """model -> condition -> completions (in prompt order)."""
    rewards: dict[str, dict[str, list[float]]]
    """model -> condition -> rewards of the completions."""
    prompts: list[str]
    """The prompt of each completion (the same for every cell)."""


def ablation_table(
    models: Mapping[str, nn.Module],
    saes: Mapping[str, nn.Module],
    task_features: Mapping[str, FeatureIds],
    reward: RewardLike,
    prompts: Sequence[str],
    *,
    n_completions: int = 96,
    freqs: Mapping[str, Tensor] | None = None,
    random_features: Mapping[str, FeatureIds] | None = None,
    exclude: Mapping[str, FeatureIds] | None = None,
    mode: str = "zero",
    means: Mapping[str, Tensor] | None = None,
    max_new_tokens: int = 20,
    temperature: float | int = 1.0,
    batch_size: int = 16,
    confidence: float = 0.95,
    seed: int = 0,
) -> AblationResult:
    """Mean reward of completions, clean vs task features ablated vs matched random features.

    Args:
        models: ``{"base": model, "tuned": model}`` (any names); the same SAE features are
            ablated in each (the SAEs were trained on the tuned model, as in the paper).
        saes: ``{hook_name: sae}``.
        task_features: ``{hook_name: feature ids}`` to ablate (the task-related features).
        reward: a reward function ``texts -> Float[Tensor, "batch"]`` or its name. It scores
            the completion text only, so the prompt (identical in every cell) adds nothing.
        prompts: prefixes, cycled (after a seeded shuffle) to make ``n_completions``.
        freqs: ``{hook_name: activation frequency of every feature}`` to draw the matched random
            control with
            [`matched_random_features`][lfp_mech.validate.controls.matched_random_features]; or give
            ``random_features`` directly.
        exclude: ``{hook_name: feature ids}`` never drawn as random controls (the task
            features themselves never are).
        mode: as in [`ablate_features`][lfp_mech.validate.ablation.ablate_features].
        means: as in [`ablate_features`][lfp_mech.validate.ablation.ablate_features].

    Returns:
        [`AblationResult`][lfp_mech.validate.table.AblationResult]; conditions are ``"clean"``,
    ``"task"`` and ``"random"``."""
    _check_table_inputs(models, saes, task_features, prompts)
    reward_fn = _reward_fn(reward)
    if random_features is None:
        random_features = _random_controls(task_features, freqs, exclude, seed)
    conditions: dict[str, dict[str, list[int]]] = {
        "clean": {},
        "task": {h: as_id_list(ids) for h, ids in task_features.items()},
        "random": {h: as_id_list(ids) for h, ids in random_features.items()},
    }
    order = list(prompts)
    random.Random(seed).shuffle(order)
    used = [order[i % len(order)] for i in range(n_completions)]
    result = AblationResult([], conditions, {}, {}, used)
    for model_name, model in models.items():
        result.completions[model_name], result.rewards[model_name] = {}, {}
        for condition, features in conditions.items():
            logger.info(
                "ablation table: %s / %s (%d completions)", model_name, condition, len(used)
            )
            texts = generate_with_ablation(
                model,
                used,
                {h: (saes[h], ids) for h, ids in features.items()},
                mode=mode,
                means=means,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
                batch_size=batch_size,
            )
            scores = reward_fn(texts).detach().double().cpu().numpy()
            result.completions[model_name][condition] = texts
            result.rewards[model_name][condition] = [float(s) for s in scores]
            clean = np.asarray(result.rewards[model_name]["clean"])
            cell = {"model": model_name, "condition": condition}
            cell["n_features"] = sum(len(v) for v in features.values())
            result.rows.append(cell | _cell_statistics(scores, clean, confidence))
    return result


def _check_table_inputs(
    models: Mapping[str, nn.Module],
    saes: Mapping[str, nn.Module],
    task_features: Mapping[str, FeatureIds],
    prompts: Sequence[str],
) -> None:
    if not models:
        raise ConfigError("ablation_table: no models given")
    if not prompts:
        raise ConfigError("ablation_table: no prompts given")
    unknown = set(task_features) - set(saes)
    if unknown:
        raise ConfigError(f"task_features names hooks without an SAE: {sorted(unknown)}")


def _random_controls(
    task_features: Mapping[str, FeatureIds],
    freqs: Mapping[str, Tensor] | None,
    exclude: Mapping[str, FeatureIds] | None,
    seed: int,
) -> dict[str, list[int]]:
    """Matched random features per hook (hook ``i`` in ``task_features`` order: seed ``seed+i``)."""
    if freqs is None:
        raise ConfigError(
            "ablation_table needs freqs={hook: per-feature activation frequency} to draw the "
            "matched random control (e.g. from autointerp.scan_features), or random_features="
        )
    return {
        hook: matched_random_features(
            freqs[hook], ids, seed + i, exclude=(exclude or {}).get(hook, ())
        )
        for i, (hook, ids) in enumerate(task_features.items())
    }


def _cell_statistics(
    scores: Float[np.ndarray, " n"], clean: Float[np.ndarray, " n"], confidence: float
) -> dict[str, Any]:
    """n, mean and CI of a cell's rewards, and of their paired difference to the clean cell."""
    mean, lo, hi = t_interval(scores, confidence)
    d_mean, d_lo, d_hi = t_interval(scores - clean, confidence)
    return {
        "n": len(scores),
        "mean_reward": mean,
        "ci_low": lo,
        "ci_high": hi,
        "delta_vs_clean": d_mean,
        "delta_ci_low": d_lo,
        "delta_ci_high": d_hi,
    }


def _reward_fn(reward: RewardLike) -> Callable[[Sequence[str]], Tensor]:
    if isinstance(reward, str):
        from lfp_mech.rewards import get_reward

        return get_reward(reward)
    return reward


def t_interval(
    values: Sequence[float] | np.ndarray, confidence: float
) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval (nan bounds with fewer than 2 values)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(values))
    if sem == 0.0:
        return mean, mean, mean
    lo, hi = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


def truncate_prompts(model: nn.Module, prompts: Sequence[str], n_tokens: int) -> list[str]:
    """``prompts`` cut to their first ``n_tokens`` tokens (the paper's 30-token prefixes)."""
    tokenizer = model.tokenizer
    out = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False).input_ids
        out.append(p if len(ids) <= n_tokens else tokenizer.decode(ids[:n_tokens]))
    return out
