"""Figures of the RLHF stage, drawn from its training log (``RLHFResults(...).train_log``).

* [`reward_curve_figure`][lfp_mech.rlhf.plots.reward_curve_figure] — GRPO/RLOO: mean reward ± one
  std of each step's completions, with distinct-2 (the collapse monitor) on a twin axis and its
  warning threshold dashed.
* [`dpo_curve_figure`][lfp_mech.rlhf.plots.dpo_curve_figure] — DPO: loss, and the implicit-reward
  margin and accuracy.

Both take the log as a DataFrame or as rows (``read_train_log``).
"""

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lfp_mech.plotting import new_figure

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["dpo_curve_figure", "reward_curve_figure"]

TrainLog: TypeAlias = "pd.DataFrame | Sequence[Mapping[str, float]]"
"""A training log: a DataFrame with one row per step, or the rows as mappings."""


def reward_curve_figure(log: TrainLog, *, distinct2_threshold: float | None = None) -> Figure:
    """Reward mean ± std vs step (left axis) and distinct-2 vs step (right axis).

    Args:
        log: the GRPO/RLOO training log ([`TrainLog`][lfp_mech.rlhf.plots.TrainLog]).
        distinct2_threshold: the collapse-warning threshold, drawn dashed (None: not drawn).
    """
    rows = _rows(log)
    steps = _column(rows, "step")
    mean, std = _column(rows, "reward_mean"), _column(rows, "reward_std")
    spread = [0.0 if math.isnan(s) else s for s in std]
    fig, ax = new_figure(figsize=(6.4, 3.8))
    ax.plot(steps, mean, color="tab:blue", marker="o", markersize=3, label="reward (mean)")
    ax.fill_between(
        steps,
        [m - s for m, s in zip(mean, spread, strict=True)],
        [m + s for m, s in zip(mean, spread, strict=True)],
        color="tab:blue",
        alpha=0.2,
        label="± 1 std",
    )
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("reward of prompt + completion", color="tab:blue")
    twin = ax.twinx()
    twin.plot(
        steps, _column(rows, "distinct_2"), color="tab:orange", marker=".", label="distinct-2"
    )
    if distinct2_threshold is not None:
        twin.axhline(
            distinct2_threshold,
            color="tab:orange",
            linestyle="--",
            linewidth=0.8,
            label=f"collapse warning ({distinct2_threshold:g})",
        )
    twin.set_ylim(0.0, 1.05)
    twin.set_ylabel("distinct-2 of completions", color="tab:orange")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title("RLHF training: reward and completion diversity per step")
    ax.grid(alpha=0.3)
    return fig


def dpo_curve_figure(log: TrainLog) -> Figure:
    """DPO loss (left) and implicit-reward margin / accuracy (right) vs step
    ([`TrainLog`][lfp_mech.rlhf.plots.TrainLog])."""
    rows = _rows(log)
    steps = _column(rows, "step")
    fig, (left, right) = new_figure(1, 2, figsize=(9.0, 3.4))
    left.plot(steps, _column(rows, "loss"), marker="o", markersize=3)
    left.set_xlabel("optimizer step")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("DPO loss")
    left.grid(alpha=0.3)
    right.plot(steps, _column(rows, "reward_margin"), label="reward margin", color="tab:green")
    right.plot(steps, _column(rows, "reward_accuracy"), label="reward accuracy", color="tab:red")
    right.set_xlabel("optimizer step")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle("DPO training: chosen vs rejected (implicit rewards)")
    return fig


def _rows(log: TrainLog) -> list[Mapping[str, Any]]:
    if hasattr(log, "to_dict"):  # a DataFrame
        return log.to_dict("records")
    return list(log)


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> list[float]:
    return [float(r.get(name, math.nan)) for r in rows]
