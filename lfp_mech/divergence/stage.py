"""The ``divergence`` stage: which blocks of the run's model did RLHF change, and which to study?

Compares the run's base model with the RLHF stage's policy
([`lfp_mech.rlhf.results.RLHFResults.policy_dir`][lfp_mech.rlhf.results.RLHFResults.policy_dir]) by
four per-block measures ([`MEASURES`][lfp_mech.divergence.choice.MEASURES]), chooses the layers
later stages use by ``divergence.select_by`` and writes into the stage folder:
``divergence.safetensors`` (one tensor per measure; ``divergence`` is the paper's), the
``divergence`` table (layer, divergence, rank, selected), the ``layer_choice`` table (every measure
per block), the ``concentration`` table (top-k share, Gini, max/median per measure),
``divergence.png``, ``layer_choice.png`` and ``summary.json`` (the selected layers, first by the
rule's measure and in layer order). Read them back with
[`lfp_mech.divergence.results.DivergenceResults`][lfp_mech.divergence.results.DivergenceResults]."""

import dataclasses
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import Tensor

from lfp_mech._io import json_safe, save_tensors, write_json, write_table
from lfp_mech.divergence.behaviour import BehaviourMeasures, behaviour_measures
from lfp_mech.divergence.choice import (
    MEASURES,
    concentration,
    select_layers,
    selection_frequency,
    top_layers,
)
from lfp_mech.divergence.config import DivergenceConfig
from lfp_mech.divergence.measure import parameter_measures
from lfp_mech.divergence.plots import plot_layer_choice, plot_layer_divergence
from lfp_mech.divergence.results import (
    CONCENTRATION_TABLE,
    DIVERGENCE_TABLE,
    DIVERGENCE_TENSORS,
    FIGURE_FILE,
    LAYER_CHOICE_FIGURE,
    LAYER_CHOICE_TABLE,
)
from lfp_mech.errors import ConfigError
from lfp_mech.models.coerce import ModelLike, as_hf_model
from lfp_mech.plotting import save_figure
from lfp_mech.rlhf.config import RLHFConfig
from lfp_mech.rlhf.results import RLHFResults
from lfp_mech.rlhf.tasks import task_prompts
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

logger = logging.getLogger(__name__)

N_RESAMPLES = 200
"""Bootstrap resamples of the validation sequences for the patching selection frequency."""

__all__ = ["run", "validation_prompts", "write_divergence"]


def run(ctx: StageContext) -> dict[str, Any]:
    """Layer choice between the run's base model and its RLHF policy; returns the summary."""
    tuned = RLHFResults(ctx.stage_dir("rlhf")).policy_dir
    config: DivergenceConfig = ctx.options
    prompts = None
    if config.behaviour:
        prompts = validation_prompts(
            ctx.config.stages.rlhf, config.n_validation_prompts, ctx.config.seed
        )
    return write_divergence(
        ctx.config.model, tuned, ctx.dir, config, seed=ctx.config.seed, prompts=prompts
    )


def validation_prompts(rlhf: RLHFConfig, n: int, seed: int) -> list[str]:
    """``n`` prompts of the RLHF task's *train* split, drawn with ``seed`` (all if fewer): the
    layer choice never sees the held-out test prompts later stages report on."""
    prompts = task_prompts(dataclasses.replace(rlhf, n_train_prompts=None), "train")
    return random.Random(seed).sample(prompts, min(n, len(prompts)))


def write_divergence(
    base: ModelLike,
    tuned: ModelLike,
    out_dir: str | os.PathLike[str],
    config: DivergenceConfig | None = None,
    *,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure every block, choose the layers by ``config.select_by`` and write the artifacts.

    ``seed`` is the seed of a tiny random base model given by name (the run's seed) and of the
    tuned policy's sampling. ``prompts``: validation prompts for the activation and patching
    measures (measured when given and ``config.behaviour``; ``base`` then needs a tokenizer).
    Returns the summary (also written to ``summary.json``).
    """
    config = config or DivergenceConfig()
    out_dir = Path(out_dir)
    behaviour = config.behaviour and prompts is not None
    base_pair = as_hf_model(base, device=config.device, seed=seed, need_tokenizer=behaviour)
    tuned_model, _ = as_hf_model(tuned, device=config.device, seed=seed, need_tokenizer=False)
    measures = parameter_measures(base_pair[0], tuned_model, config)
    details = None
    if behaviour:
        details = behaviour_measures(
            base_pair, tuned_model, list(prompts or ()), max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size, seed=seed, device=config.device,
            block_pattern=config.block_pattern,
        )  # fmt: skip
        measures |= {"activation": details.activation, "patching": details.patching}
    elif config.select_by not in measures:
        raise ConfigError(
            f"divergence.select_by={config.select_by!r} needs validation prompts: pass "
            "prompts=..., or select_by='parameter'"
        )
    divergence = measures["parameter"]
    n_layers = int(divergence.shape[0])
    k = min(config.top_k, n_layers)
    top = select_layers(measures, config.select_by, k)
    if float(divergence.max()) == 0.0:
        logger.warning("the two models are identical: every layer has divergence 0")
    extra = {}
    if details is not None:
        resampled = details.patching_resampled(N_RESAMPLES, seed)
        extra = {
            "patching_logprob": details.patching_logprob,
            "patching_top_k_frequency": selection_frequency(resampled, k),
        }
    _write_artifacts(out_dir, measures, extra, top, config)
    summary = {
        "top_layers": top,
        "top_layers_sorted": sorted(top),
        "select_by": config.select_by,
        "n_layers": n_layers,
        "max_divergence": float(divergence.max()),
        "total_divergence": float(divergence.sum()),
        "top_divergence": [float(divergence[layer]) for layer in top],
        "top_layers_by": {name: top_layers(v, k) for name, v in measures.items()},
        "concentration": {name: concentration(v, k) for name, v in measures.items()},
        "behaviour": None if details is None else _behaviour_summary(details, prompts or ()),
        "patching_top_k_frequency": (
            {layer: float(extra["patching_top_k_frequency"][layer]) for layer in top}
            if extra
            else None
        ),
        "config": asdict(config),
    }
    summary = json_safe(summary)
    write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def _write_artifacts(
    out_dir: Path,
    measures: Mapping[str, Tensor],
    extra: Mapping[str, Tensor],
    top: list[int],
    config: DivergenceConfig,
) -> None:
    """Tensors, the divergence / layer-choice / concentration tables and both figures."""
    divergence = measures["parameter"]
    n_layers = int(divergence.shape[0])
    tensors = {"divergence": divergence} | {k: v for k, v in measures.items() if k != "parameter"}
    save_tensors(out_dir / DIVERGENCE_TENSORS, tensors | extra)
    rank = {layer: i + 1 for i, layer in enumerate(top_layers(divergence, n_layers))}
    rows = [
        {"layer": layer, "divergence": value, "rank": rank[layer], "selected": layer in top}
        for layer, value in enumerate(divergence.tolist())
    ]
    write_table(out_dir / DIVERGENCE_TABLE, rows)
    columns = {**measures, **extra}
    choice = [
        {"layer": layer, **{name: float(v[layer]) for name, v in columns.items()}}
        | {"selected": layer in top}
        for layer in range(n_layers)
    ]
    write_table(out_dir / LAYER_CHOICE_TABLE, choice)
    k = len(top)
    spread = [
        {"measure": name, "definition": MEASURES[name], **concentration(values, k)}
        | {
            "top_layers": " ".join(str(layer) for layer in top_layers(values, k)),
            "chosen_by_rule": name == config.select_by,
        }
        for name, values in measures.items()
    ]
    write_table(out_dir / CONCENTRATION_TABLE, spread)
    save_figure(
        plot_layer_divergence({"tuned vs base": divergence}, top_layers=top), out_dir / FIGURE_FILE
    )
    figure = plot_layer_choice(measures, selected=top, select_by=config.select_by)
    save_figure(figure, out_dir / LAYER_CHOICE_FIGURE)


def _behaviour_summary(details: BehaviourMeasures, prompts: Sequence[str]) -> dict[str, Any]:
    return {
        "n_validation_prompts": len(prompts),
        "n_sequences": details.n_sequences,
        "n_tokens": details.n_tokens,
        "n_completion_tokens": details.n_completion_tokens,
        "logprob_gap_per_token": details.logprob_gap,
        "validation_split": "train (never the held-out test prompts)",
    }
