"""The ``divergence`` stage: which blocks of the run's model did RLHF change most?

Compares the run's base model with the RLHF stage's policy
([`lfp_mech.rlhf.results.RLHFResults.policy_dir`][lfp_mech.rlhf.results.RLHFResults.policy_dir]) and
writes into the stage folder: ``divergence.safetensors`` (tensor ``divergence``), the ``divergence``
table (layer, divergence, rank, selected), ``divergence.png`` and ``summary.json`` (the selected
layers, most divergent first and in layer order). Read them back with
[`lfp_mech.divergence.results.DivergenceResults`][lfp_mech.divergence.results.DivergenceResults]."""

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lfp_mech._io import save_tensors, write_json, write_table
from lfp_mech.divergence.config import DivergenceConfig
from lfp_mech.divergence.measure import layer_divergence, top_divergent_layers
from lfp_mech.divergence.plots import plot_layer_divergence
from lfp_mech.divergence.results import DIVERGENCE_TABLE, DIVERGENCE_TENSORS, FIGURE_FILE
from lfp_mech.models.coerce import ModelLike
from lfp_mech.plotting import save_figure
from lfp_mech.rlhf.results import RLHFResults
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

logger = logging.getLogger(__name__)

__all__ = ["run", "write_divergence"]


def run(ctx: StageContext) -> dict[str, Any]:
    """Divergence between the run's base model and its RLHF policy; returns the summary."""
    tuned = RLHFResults(ctx.stage_dir("rlhf")).policy_dir
    return write_divergence(ctx.config.model, tuned, ctx.dir, ctx.options, seed=ctx.config.seed)


def write_divergence(
    base: ModelLike,
    tuned: ModelLike,
    out_dir: str | os.PathLike[str],
    config: DivergenceConfig | None = None,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute the divergence, select the top layers and write the stage's artifacts.

    ``seed`` is the seed of a tiny random base model given by name (the run's seed). Returns
    the summary (also written to ``summary.json``).
    """
    config = config or DivergenceConfig()
    out_dir = Path(out_dir)
    divergence = layer_divergence(base, tuned, config, seed=seed)
    n_layers = int(divergence.shape[0])
    top = top_divergent_layers(divergence, min(config.top_k, n_layers))
    if float(divergence.max()) == 0.0:
        logger.warning("the two models are identical: every layer has divergence 0")
    save_tensors(out_dir / DIVERGENCE_TENSORS, {"divergence": divergence})
    rank = {layer: i + 1 for i, layer in enumerate(top_divergent_layers(divergence, n_layers))}
    rows = [
        {"layer": layer, "divergence": value, "rank": rank[layer], "selected": layer in top}
        for layer, value in enumerate(divergence.tolist())
    ]
    write_table(out_dir / DIVERGENCE_TABLE, rows)
    figure = plot_layer_divergence({"tuned vs base": divergence}, top_layers=top)
    save_figure(figure, out_dir / FIGURE_FILE)
    summary = {
        "top_layers": top,
        "top_layers_sorted": sorted(top),
        "n_layers": n_layers,
        "max_divergence": float(divergence.max()),
        "total_divergence": float(divergence.sum()),
        "top_divergence": [float(divergence[layer]) for layer in top],
        "config": asdict(config),
    }
    write_json(out_dir / SUMMARY_FILE, summary)
    return summary
