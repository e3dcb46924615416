"""Shared statistics: the paired percentile bootstrap the stages put their CIs on."""

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["paired_bootstrap_ci"]


def paired_bootstrap_ci(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., Any],
    *,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(*samples, axis=-1)`` (vectorised over ``axis``) from
    ``scipy.stats.bootstrap`` with the samples resampled together (``paired``: the i-th entries
    of every sample belong to one unit, e.g. one prompt or one text), seeded."""
    from scipy.stats import bootstrap

    result = bootstrap(
        tuple(samples),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        method="percentile",
        confidence_level=confidence,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
