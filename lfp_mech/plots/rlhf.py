"""Figures of the RLHF stage, drawn from its ``train_log.csv``.

* :func:`reward_curve_figure` — GRPO/RLOO: mean reward ± one std of each step's completions,
  with distinct-2 (the collapse monitor) on a twin axis and its warning threshold dashed.
* :func:`dpo_curve_figure` — DPO: loss, and the implicit-reward margin and accuracy.
"""

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

LogLike = str | os.PathLike | Sequence[Mapping[str, float | int]]


def reward_curve_figure(log: LogLike, *, distinct2_threshold: float | None = None) -> Figure:
    """Reward mean ± std vs step (left axis) and distinct-2 vs step (right axis)."""
    rows = _rows(log)
    steps = _column(rows, "step")
    mean, std = _column(rows, "reward_mean"), _column(rows, "reward_std")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(steps, mean, color="tab:blue", marker="o", markersize=3, label="reward (mean)")
    ax.fill_between(
        steps,
        [m - (s if not math.isnan(s) else 0.0) for m, s in zip(mean, std, strict=True)],
        [m + (s if not math.isnan(s) else 0.0) for m, s in zip(mean, std, strict=True)],
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
    fig.tight_layout()
    return fig


def dpo_curve_figure(log: LogLike) -> Figure:
    """DPO loss (left) and implicit-reward margin / accuracy (right) vs step."""
    rows = _rows(log)
    steps = _column(rows, "step")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4))
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
    fig.tight_layout()
    return fig


def _rows(log: LogLike) -> list[dict[str, float]]:
    if isinstance(log, (str, os.PathLike)):
        path = Path(log)
        if not path.exists():
            raise FileNotFoundError(f"training log {path} does not exist: train a policy first")
        with path.open(newline="", encoding="utf-8") as f:
            return [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return [{k: float(v) for k, v in r.items()} for r in log]


def _column(rows: Sequence[Mapping[str, float | int]], name: str) -> list[float]:
    return [float(r.get(name, math.nan)) for r in rows]


def _float(value: str | None) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
