"""How concentrated is a per-block measure, and which blocks does the layer-choice rule pick?

A measure that every block shares about equally (the paper's parameter divergence: every block
moves about as far as Adam's step size allows) cannot say where the behaviour changed; one whose
mass sits in a few blocks can. [`concentration`][lfp_mech.divergence.choice.concentration] reports,
on the measure's non-negative part:

* ``top_k_share`` — the share of the total in the ``k`` largest blocks (``uniform_share = k / n``
  is what a flat measure gives);
* ``gini`` — the Gini coefficient over blocks (0 = all equal, → 1 = all in one block);
* ``max_over_median`` — the largest block over the median block.

The rule ([`select_layers`][lfp_mech.divergence.choice.select_layers]): the ``k`` blocks with the
largest value of the measure ``divergence.select_by`` names, largest first (ties: lower layer).
"""

from collections.abc import Mapping

import torch
from jaxtyping import Float
from torch import Tensor

from lfp_mech.errors import ConfigError

__all__ = ["MEASURES", "concentration", "select_layers", "selection_frequency", "top_layers"]

MEASURES: dict[str, str] = {
    "parameter": "Σ_p ‖θ_base − θ_tuned‖_F (paper)",
    "relative": "Σ_p ‖θ_base − θ_tuned‖_F / Σ_p ‖θ_base‖_F",
    "activation": "mean ‖Δ mlp_out‖ / mean ‖mlp_out_base‖ on validation texts",
    "patching": "share of the base→tuned log-prob gap recovered by patching the block's MLP out",
}
"""Layer-choice measures: name -> what it is per block."""


def top_layers(values: Float[Tensor, " n_layers"], k: int) -> list[int]:
    """The ``k`` blocks with the largest values, largest first (ties: lower layer first)."""
    n_layers = values.shape[0]
    if not 1 <= k <= n_layers:
        raise ConfigError(
            f"k={k} out of range: the model has {n_layers} layers (k in 1–{n_layers})"
        )
    listed = values.tolist()
    return sorted(range(n_layers), key=lambda layer: (-listed[layer], layer))[:k]


def concentration(values: Float[Tensor, " n_layers"], k: int) -> dict[str, float]:
    """Top-k share, Gini and max/median of a per-block measure (module docstring)."""
    x = values.double().clamp_min(0.0)
    n = x.shape[0]
    k = min(k, n)
    total = float(x.sum())
    if total <= 0:
        nan = float("nan")
        return {"top_k_share": nan, "uniform_share": k / n, "gini": nan, "max_over_median": nan}
    ordered = torch.sort(x, descending=True).values
    pairwise = (x[:, None] - x[None, :]).abs().sum()
    median = float(x.median())
    return {
        "top_k_share": float(ordered[:k].sum()) / total,
        "uniform_share": k / n,
        "gini": float(pairwise / (2 * n * total)),
        "max_over_median": float(ordered[0]) / median if median > 0 else float("inf"),
    }


def select_layers(
    measures: Mapping[str, Float[Tensor, " n_layers"]], select_by: str, k: int
) -> list[int]:
    """The layer-choice rule: the ``k`` largest blocks of ``measures[select_by]``."""
    if select_by not in measures:
        raise ConfigError(
            f"divergence.select_by={select_by!r} was not measured (measured: "
            f"{sorted(measures)}); the activation and patching measures need "
            "divergence.behaviour=True"
        )
    return top_layers(measures[select_by], k)


def selection_frequency(
    resampled: Float[Tensor, "resample n_layers"], k: int
) -> Float[Tensor, " n_layers"]:
    """Per block: the share of resamples (rows) in which it is among the ``k`` largest — how
    often the rule would pick it again on other validation texts like these."""
    counts = torch.zeros(resampled.shape[1], dtype=torch.float64)
    for row in resampled:
        counts[top_layers(row, k)] += 1
    return counts / max(resampled.shape[0], 1)
