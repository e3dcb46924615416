"""Choosing the reward model's readout and learning rate on the validation split.

[`select_on_validation`][lfp_mech.irl.selection.select_on_validation] trains every candidate of
the grid ([`candidates`][lfp_mech.irl.selection.candidates]: ``pooling`` and ``grid_pooling`` ×
``context_layer`` and ``grid_context_layer`` × ``lr`` and ``grid_lr``) over all seeds with
[`run_seeds`][lfp_mech.irl.training.run_seeds] on the training and validation texts only
(``score_heldout=False``: no held-out text is encoded), and keeps the candidate with the highest
median validation accuracy over seeds (ties: median validation AUROC). The held-out texts are
scored afterwards, once, by the chosen candidate (see
[`run_task`][lfp_mech.irl.experiment.run_task])."""

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from lfp_mech.irl import artifacts as files
from lfp_mech.irl.config import IRLConfig
from lfp_mech.irl.demonstrations import Demonstrations
from lfp_mech.irl.reward_model import RewardModel
from lfp_mech.irl.training import run_seeds
from lfp_mech.models.coerce import ModelLike

__all__ = ["build_reward_model", "candidates", "inputs_cache", "select_on_validation"]

logger = logging.getLogger(__name__)


def _unique(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def candidates(config: IRLConfig) -> list[IRLConfig]:
    """The grid: ``config`` with every (pooling, context layer, lr) of its ``grid_*`` options,
    ``config``'s own values first. Context layers other than None only in head-only mode."""
    head_only = config.mode == "cached" and config.n_trainable_blocks == 0
    contexts = _unique([config.context_layer, *config.grid_context_layer])
    if not head_only:
        contexts = [c for c in contexts if c is None] or [None]
    return [
        dataclasses.replace(config, pooling=pooling, context_layer=context, lr=lr)
        for pooling in _unique([config.pooling, *config.grid_pooling])
        for context in contexts
        for lr in _unique([config.lr, *config.grid_lr])
    ]


def build_reward_model(base: ModelLike, config: IRLConfig) -> RewardModel:
    """The (untrained) reward model ``config`` describes, on ``base``; float32 whatever the
    run's dtype (plain Adam on max-margin differences, which bf16 would round away)."""
    return RewardModel.from_base(
        base,
        mode=config.mode,
        n_trainable_blocks=config.n_trainable_blocks,
        max_length=config.max_length,
        pooling=config.pooling,
        n_layers=config.n_layers,
        context_layer=config.context_layer,
        device=config.device,
    )


def inputs_cache(out_dir: str | os.PathLike[str], config: IRLConfig) -> Path:
    """Where the encoded inputs of ``config``'s readout are cached (one file per readout)."""
    stem = Path(files.REWARD_INPUTS_FILE).stem
    return Path(out_dir) / f"{stem}_{config.pooling}_{config.context_layer}.safetensors"


def select_on_validation(
    base: ModelLike,
    demos: Demonstrations,
    true_reward: Callable[[Sequence[str]], Tensor],
    config: IRLConfig,
    out_dir: str | os.PathLike[str],
    *,
    val_texts: Sequence[str] = (),
) -> tuple[IRLConfig, list[dict[str, Any]]]:
    """The grid candidate with the best median validation accuracy over seeds (then AUROC), and
    one row per candidate (its readout, lr, the median / min / max over seeds of the validation
    metrics at each seed's chosen epoch, the median chosen epoch). A single candidate is
    returned without training."""
    grid = candidates(config)
    if len(grid) == 1:
        return grid[0], []
    rows: list[dict[str, Any]] = []
    models: dict[tuple[str, Any], RewardModel] = {}
    for candidate in grid:
        readout = (candidate.pooling, candidate.context_layer)
        if readout not in models:
            models.clear()  # one reward model in memory at a time (grid order keeps lr inner)
            models[readout] = build_reward_model(base, candidate)
        runs = run_seeds(
            models[readout], demos, true_reward, candidate, val_texts=val_texts,
            cache_path=inputs_cache(out_dir, candidate), score_heldout=False,
        )  # fmt: skip
        row: dict[str, Any] = {
            "pooling": candidate.pooling,
            "context_layer": str(candidate.context_layer),
            "lr": candidate.lr,
        }
        for metric in ("val_acc", "val_balanced_acc", "val_auroc", "val_spearman"):
            values = np.asarray([r[metric] for r in runs.rows], dtype=float)
            row |= {
                f"{metric}_median": float(np.nanmedian(values)),
                f"{metric}_min": float(np.nanmin(values)),
                f"{metric}_max": float(np.nanmax(values)),
            }
        row["epoch_median"] = float(np.median([r["epoch"] for r in runs.rows]))
        rows.append(row)
        logger.info(
            "validation grid: pooling %s, context %s, lr %g: median acc %.3f, auroc %.3f",
            row["pooling"], row["context_layer"], row["lr"], row["val_acc_median"],
            row["val_auroc_median"],
        )  # fmt: skip
    scores = [
        (r["val_acc_median"], -np.inf if np.isnan(r["val_auroc_median"]) else r["val_auroc_median"])
        for r in rows
    ]
    chosen = max(range(len(rows)), key=lambda i: scores[i])
    for i, row in enumerate(rows):
        row["selected"] = i == chosen
    return grid[chosen], rows
