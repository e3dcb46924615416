"""Held-out evaluation of policies: reward with a 95% CI, distinct-2, length; base vs tuned.

[`evaluate_policy`][lfp_mech.rlhf.evaluation.evaluate_policy] samples one completion per held-out
prompt with HF ``generate`` (left-padded batches, KV cache, a fixed seed) and scores
``prompt + completion``; [`compare_policies`][lfp_mech.rlhf.evaluation.compare_policies] tabulates
several policies against the first (the base). [`distinct_n`][lfp_mech.rlhf.evaluation.distinct_n]
is the collapse measure training also logs at every step."""

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from lfp_mech._io import write_table
from lfp_mech.errors import ConfigError
from lfp_mech.models.coerce import ModelLike, as_hf_model
from lfp_mech.rlhf.sampling import RewardLike, check_prompts, sample_completions, score_texts

__all__ = ["PolicyEval", "compare_policies", "distinct_n", "evaluate_policy"]


@dataclass(frozen=True)
class PolicyEval:
    """A policy's completions to held-out prompts and their reward statistics."""

    name: str
    """Label of the policy ("base", "tuned", ...)."""
    mean_reward: float
    """Mean reward of ``prompt + completion`` over the prompts."""
    ci_low: float
    """Lower end of the 95% t-interval of the mean reward."""
    ci_high: float
    """Upper end of the 95% t-interval of the mean reward."""
    std_reward: float
    """Sample standard deviation of the rewards."""
    distinct_2: float
    """Distinct word bigrams / all word bigrams over all completions (corpus-level)."""
    mean_length: float
    """Mean completion length in new tokens (up to the first EOS)."""
    n: int
    """Number of prompts (one completion each)."""
    prompts: list[str] = field(repr=False)
    completions: list[str] = field(repr=False)
    rewards: list[float] = field(repr=False)
    lengths: list[int] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """The statistics without the per-sample lists (JSON-able)."""
        skip = {"prompts", "completions", "rewards", "lengths"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def samples(self) -> list[dict[str, Any]]:
        """One dict per prompt: prompt, completion, reward, length, policy name."""
        return [
            {"policy": self.name, "prompt": p, "completion": c, "reward": r, "length": n}
            for p, c, r, n in zip(
                self.prompts, self.completions, self.rewards, self.lengths, strict=True
            )
        ]


def evaluate_policy(
    model_or_path: ModelLike,
    prompts: Sequence[str],
    reward: RewardLike,
    *,
    name: str = "policy",
    n_new_tokens: int = 20,
    min_new_tokens: int = 8,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "cpu",
    dtype: str | None = None,
) -> PolicyEval:
    """Sample one completion per held-out prompt and summarise the reward.

    Completions are sampled (temperature ``temperature``, no top-k/top-p) with HF ``generate``
    in left-padded batches with the KV cache, under a fixed seed: the same inputs give the
    same result. The reward scores ``prompt + completion``. The 95% CI is the t-interval
    ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` (``scipy.stats.t``). ``dtype``: generate with the
    model in that precision ("bfloat16", ...; None: float32 or as given).
    """
    prompts = check_prompts(prompts, need=2)
    model, tokenizer = as_hf_model(model_or_path, device=device, seed=seed, dtype=dtype)
    completions, lengths = sample_completions(
        model, tokenizer, prompts,
        n_new_tokens=n_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
        repetition_penalty=repetition_penalty, batch_size=batch_size, seed=seed, device=device,
        desc=f"evaluate {name}",
    )  # fmt: skip
    rewards = score_texts(reward, [p + c for p, c in zip(prompts, completions, strict=True)])
    mean, low, high, std = _mean_ci(rewards)
    return PolicyEval(
        name=name,
        mean_reward=mean,
        ci_low=low,
        ci_high=high,
        std_reward=std,
        distinct_2=distinct_n(completions, 2),
        mean_length=sum(lengths) / len(lengths),
        n=len(prompts),
        prompts=list(prompts),
        completions=completions,
        rewards=rewards,
        lengths=lengths,
    )


def compare_policies(
    evals: Sequence[PolicyEval], out_dir: str | os.PathLike[str], *, stem: str = "eval"
) -> list[dict[str, Any]]:
    """Tabulate policies against the first one (the base) as ``<stem>.csv`` / ``.md`` / ``.json``.

    Columns: policy, n, mean reward with its 95% CI, std, distinct-2, mean length, the
    difference to the first policy, whether the two CIs overlap, and Welch's t-test p-value.
    """
    if not evals:
        raise ConfigError("compare_policies needs at least one PolicyEval")
    from scipy import stats

    ref = evals[0]
    rows = []
    for ev in evals:
        p_value = (
            float(stats.ttest_ind(ev.rewards, ref.rewards, equal_var=False).pvalue)
            if ev is not ref
            else math.nan
        )
        rows.append(
            {
                "policy": ev.name,
                "n": ev.n,
                "mean_reward": ev.mean_reward,
                "ci95_low": ev.ci_low,
                "ci95_high": ev.ci_high,
                "std_reward": ev.std_reward,
                "distinct_2": ev.distinct_2,
                "mean_length": ev.mean_length,
                f"delta_vs_{ref.name}": ev.mean_reward - ref.mean_reward,
                "ci_overlap": bool(ev.ci_low <= ref.ci_high and ref.ci_low <= ev.ci_high),
                "welch_p": p_value,
            }
        )
    write_table(Path(out_dir) / stem, rows)
    return rows


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Corpus-level distinct-n: distinct word n-grams / all word n-grams over ``texts``.

    Words are lower-cased ``\\w+`` runs (with an inner apostrophe) and single punctuation marks,
    so "great great great!!!" has 2-grams (great, great) x2, (great, !), (!, !) x2. N-grams never
    span two texts. 1.0 means no n-gram repeats; a policy repeating one phrase tends to 0.
    Returns 0.0 when the texts have no n-gram at all (empty completions are degenerate too).
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = _WORD.findall(text.lower())
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def _mean_ci(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, 95% t-interval (low, high) and sample std of ``values`` (n >= 2)."""
    from scipy import stats

    x = torch.tensor(values, dtype=torch.float64)
    mean, std = x.mean().item(), x.std(unbiased=True).item()
    if std == 0.0:
        return mean, mean, mean, 0.0
    half = float(stats.t.ppf(0.975, len(values) - 1)) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half, std
