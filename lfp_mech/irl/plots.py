"""Figures of the IRL stage. Every function returns a matplotlib ``Figure`` (no pyplot).

* [`plot_seed_heatmaps`][lfp_mech.irl.plots.plot_seed_heatmaps] — held-out accuracy and correlation
  per seed × epoch: the IRL paper's non-identifiability figure (many runs, similar accuracy,
  different rewards).
* [`plot_seed_agreement`][lfp_mech.irl.plots.plot_seed_agreement] — how much the reward models of
  different seeds agree with each other (Pearson correlation of their held-out rewards).
* [`plot_three_way`][lfp_mech.irl.plots.plot_three_way] — the IRL reward, the probe's estimate and
  the true reward on the same texts, pairwise scatter plots with their correlations (a figure
  neither paper has).

Tables come as rows (dicts) or DataFrames, e.g. ``IRLResults(path).task("vader").runs``.
"""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from lfp_mech.plotting import new_figure

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["plot_seed_agreement", "plot_seed_heatmaps", "plot_three_way"]

_METRIC_LABELS = {
    "acc": "accuracy (fitted threshold)",
    "f1": "F1 (fitted threshold)",
    "acc_zero": "accuracy (threshold 0)",
    "f1_zero": "F1 (threshold 0)",
    "pearson": "Pearson r",
    "spearman": "Spearman ρ",
    "kendall": "Kendall τ",
    "pair_acc": "expert > non-expert (test pairs)",
}
_CORRELATIONS = ("pearson", "spearman", "kendall")


def _records(rows: "Sequence[Mapping[str, Any]] | pd.DataFrame") -> list[Mapping[str, Any]]:
    return rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)


def plot_seed_heatmaps(
    rows: "Sequence[Mapping[str, Any]] | pd.DataFrame",
    metrics: Sequence[str] = ("acc", "spearman"),
    *,
    title: str | None = None,
) -> Figure:
    """One heatmap per metric: rows = seeds, columns = epochs, cells annotated.

    ``rows`` are [`lfp_mech.irl.run_seeds`][lfp_mech.irl.training.run_seeds] rows (dicts with
    ``seed``, ``epoch`` and the metrics) or the runs table. Accuracy-like metrics share a 0.5–1
    colour scale; correlations use −1–1."""
    rows = _records(rows)
    if not rows:
        raise ValueError("plot_seed_heatmaps needs at least one row")
    seeds = sorted({int(r["seed"]) for r in rows})
    epochs = sorted({int(r["epoch"]) for r in rows})
    width = 1.2 + 0.9 * len(epochs) * len(metrics) + 1.2 * len(metrics)
    fig, axes = new_figure(1, len(metrics), figsize=(width, 0.8 + 0.42 * len(seeds)), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        grid = np.full((len(seeds), len(epochs)), np.nan)
        for r in rows:
            grid[seeds.index(int(r["seed"])), epochs.index(int(r["epoch"]))] = float(r[metric])
        _heatmap(fig, ax, grid, metric)
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
        ax.set_yticks(range(len(seeds)), [str(s) for s in seeds])
        ax.set_xlabel("epoch")
        ax.set_ylabel("seed")
        finite = grid[:, -1][~np.isnan(grid[:, -1])]
        median = f"median (last epoch) {np.median(finite):.2f}" if len(finite) else ""
        ax.set_title(f"{_METRIC_LABELS.get(metric, metric)}\n{median}", fontsize=9)
    title = title or "IRL reward models: seeds × epochs (non-identifiability)"
    if "positive_rate" in rows[0]:
        rate = float(rows[0]["positive_rate"])
        title += f"\nmajority-class accuracy {max(rate, 1 - rate):.2f}"
    fig.suptitle(title, fontsize=10)
    return fig


def _heatmap(fig: Figure, ax: Any, grid: np.ndarray, metric: str) -> None:
    """Draw ``grid`` with its values written in the cells and a colour bar."""
    is_corr = metric in _CORRELATIONS
    vmin, vmax = (-1.0, 1.0) if is_corr else (0.5, 1.0)
    image = ax.imshow(
        grid, cmap="RdBu" if is_corr else "viridis", vmin=vmin, vmax=vmax, aspect="auto"
    )
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            color = "black" if is_corr or value > 0.75 else "white"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)


def plot_seed_agreement(scores: Any, *, seeds: Sequence[int] | None = None) -> Figure:
    """Pearson correlation between the held-out rewards of every pair of seeds.

    ``scores``: ``[seed, text]`` array (e.g. ``IRLRuns.final_scores``). Off-diagonal values well
    below 1 at similar accuracy are the non-identifiability of the reward.
    """
    values = np.asarray(scores, dtype=float)
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"scores must be [seed, text], got shape {values.shape}")
    n = values.shape[0]
    labels = [str(s) for s in (seeds if seeds is not None else range(n))]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} seed labels for {n} rows of scores")
    std = values.std(axis=1, keepdims=True)
    z = (values - values.mean(axis=1, keepdims=True)) / np.where(std > 0, std, np.nan)
    corr = (z @ z.T) / values.shape[1]
    fig, ax = new_figure(figsize=(1.5 + 0.45 * n, 1.2 + 0.42 * n))
    image = ax.imshow(corr, cmap="RdBu", vmin=-1, vmax=1)
    for (i, j), value in np.ndenumerate(corr):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("seed")
    ax.set_ylabel("seed")
    off = corr[~np.eye(n, dtype=bool)]
    off = off[~np.isnan(off)]
    mean_off = f" (mean off-diagonal {off.mean():.2f})" if len(off) else ""
    ax.set_title(f"agreement of IRL rewards between seeds{mean_off}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def plot_three_way(
    true: Any,
    irl: Any,
    probe: Any | None = None,
    *,
    labels: tuple[str, str, str] = ("true reward", "IRL reward", "probe estimate"),
    title: str | None = None,
) -> Figure:
    """Scatter plots of the IRL reward (and the probe's estimate, if given) against the true
    reward on the same texts, each titled with Pearson r, Spearman ρ and Kendall τ.

    Panels: IRL vs true; with ``probe``: also probe vs true and IRL vs probe.
    """
    series = {labels[0]: _vector(true, "true"), labels[1]: _vector(irl, "irl")}
    pairs = [(labels[1], labels[0])]
    if probe is not None:
        series[labels[2]] = _vector(probe, "probe")
        pairs += [(labels[2], labels[0]), (labels[1], labels[2])]
    lengths = {len(v) for v in series.values()}
    if len(lengths) != 1:
        raise ValueError(f"true, irl and probe need the same length, got {sorted(lengths)}")
    fig, axes = new_figure(1, len(pairs), figsize=(4.2 * len(pairs), 4.0), squeeze=False)
    for ax, (y_name, x_name) in zip(axes[0], pairs, strict=True):
        x, y = series[x_name], series[y_name]
        ax.scatter(x, y, s=10, alpha=0.6, edgecolors="none")
        ax.set_xlabel(x_name)
        ax.set_ylabel(y_name)
        ax.set_title(correlation_text(x, y), fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(
        title or "IRL reward vs true reward" + (" vs probe" if probe is not None else ""),
        fontsize=10,
    )
    return fig


def _vector(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=float).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    return array


def correlation_text(x: np.ndarray, y: np.ndarray) -> str:
    """ "r = …, ρ = …, τ = … (n = …)" for two series, or why it is undefined."""
    from scipy import stats

    if np.ptp(x) == 0 or np.ptp(y) == 0 or len(x) < 3:
        return "correlation undefined (constant input)"
    r = stats.pearsonr(x, y)[0]
    rho = stats.spearmanr(x, y)[0]
    tau = stats.kendalltau(x, y)[0]
    return f"r = {r:.2f}, ρ = {rho:.2f}, τ = {tau:.2f} (n = {len(x)})"
