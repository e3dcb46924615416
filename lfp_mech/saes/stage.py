"""The ``saes`` stage: train, save and evaluate the dictionaries of every captured layer.

Reads the activations stage's stores (through
[`ActivationsResults`][lfp_mech.activations.results.ActivationsResults]) and the tuned policy (for
the CE loss); writes the folder described in [`lfp_mech.saes.artifacts`][lfp_mech.saes.artifacts].
In order: the L1 sweep on one layer, the main dictionaries (small and big per layer), the other
variant of every small one, held-out metrics and CE loss recovered, the tied-vs-untied table,
small↔big MMCS, the summary."""

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor

from lfp_mech._io import json_safe, write_json, write_table
from lfp_mech.activations.results import ActivationsResults
from lfp_mech.activations.store import ActivationStore
from lfp_mech.errors import ConfigError
from lfp_mech.plotting import save_figure
from lfp_mech.rlhf.results import RLHFResults
from lfp_mech.saes.artifacts import (
    KL_FINETUNE,
    L1_SWEEP,
    L1_SWEEP_FIGURE,
    METRICS,
    TIED_VS_UNTIED,
    variant_name,
)
from lfp_mech.saes.ce_evaluation import SAEKey, add_ce_losses, ce_check_detail
from lfp_mech.saes.config import SPARSE, SAEConfig
from lfp_mech.saes.io import load_sae
from lfp_mech.saes.metrics import (
    TIED_VS_UNTIED_METRICS,
    sae_metrics,
    tied_vs_untied_table,
)
from lfp_mech.saes.plots import plot_l1_sweep
from lfp_mech.saes.pretrained import reuse_pretrained
from lfp_mech.saes.summary import QUALITY_TARGETS, mmcs_tables, quality, stage_summary
from lfp_mech.saes.sweep import SWEEP_COLUMNS, l1_sweep
from lfp_mech.saes.training import hooks_for_layers, train_saes
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

__all__ = [
    "BASE_DIR",
    "METRIC_COLUMNS",
    "QUALITY_TARGETS",
    "BaseModelData",
    "run",
    "train_and_evaluate",
]

logger = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "model", "layer", "size", "architecture", "variant", "k", "d_sae", "mse", "nmse", "fvu",
    "l0", "l0_scaled", "dead_fraction", "dense_fraction", "ce_clean", "ce_sae", "ce_zero",
    "ce_recovered", "ce_recovered_ci_low", "ce_recovered_ci_high", "delta_lm_loss",
    "ce_random_error", "ce_recovered_random_error", "delta_lm_loss_random_error",
    "ce_recovered_minus_random_error", "ce_recovered_minus_random_error_ci_low",
    "ce_recovered_minus_random_error_ci_high",
]  # fmt: skip
"""The columns of the ``metrics`` table."""
KL_FINETUNE_COLUMNS = [
    "model", "layer", "size", "hook", "finetune_texts", "val_texts", "ce_val_before",
    "ce_val_after", "kept", "steps", "final_kl", "seconds",
]  # fmt: skip
"""The columns of the ``kl_finetune`` table (with ``saes.kl_finetune_texts``)."""
MANIFEST_KEYS = (
    "layers", "n_saes", "architecture", "k", "alpha", "max_small_fvu", "min_small_ce_recovered",
    "max_small_dead_fraction", "mean_small_l0", "checks", "base",
)  # fmt: skip
"""The summary keys the stage returns for the run manifest (``summary.json`` has them all)."""

BASE_DIR = "base"
"""The base model's dictionaries: ``base/L{layer}_{size}/``."""


def run(ctx: StageContext) -> dict[str, Any]:
    """Train (or reuse) and evaluate SAEs on the activations stage's stores of the tuned
    policy and, with ``base_model``, of the base model on the same tokens."""
    config: SAEConfig = ctx.options
    activations = ActivationsResults(ctx.stage_dir("activations"))
    train, heldout = activations.train_store, activations.heldout_store
    policy = RLHFResults(ctx.stage_dir("rlhf")).policy_dir
    base = None
    if config.base_model and not config.pretrained:
        if not activations.has_base:
            raise ConfigError(
                "saes.base_model = true needs the base model's activations: rerun the "
                "activations stage with activations.base_model = true (--force activations), "
                "or set saes.base_model = false"
            )
        base = BaseModelData(
            activations.store("train", "base"),
            activations.store("heldout", "base"),
            ctx.config.model,
        )
    return train_and_evaluate(train, heldout, policy, ctx.dir, config, base=base)


@dataclass
class BaseModelData:
    """What the base-model dictionaries train and are evaluated on."""

    train: ActivationStore
    """The base model's training activations (the tuned store's tokens)."""
    heldout: ActivationStore
    """The base model's held-out activations."""
    model: Any
    """The base model (a [`ModelLike`][lfp_mech.models.coerce.ModelLike]) for the CE loss."""


def train_and_evaluate(
    train: ActivationStore,
    heldout: ActivationStore,
    model: Any,
    out_dir: str | os.PathLike[str],
    config: SAEConfig,
    *,
    base: "BaseModelData | None" = None,
) -> dict[str, Any]:
    """Train (or, with ``config.pretrained``, reuse: [`lfp_mech.saes.pretrained`][lfp_mech.saes.pretrained]),
    save and evaluate the SAEs of every layer in ``train``; write the stage's folder. With
    ``config.kl_finetune_texts``, each trained dictionary's decoder is KL-fine-tuned on its
    model before the evaluation ([`lfp_mech.saes.finetune`][lfp_mech.saes.finetune]).

    Args:
        train: the training activation store.
        heldout: the held-out activation store (metrics, CE-loss texts).
        model: the model the activations came from (a
            [`ModelLike`][lfp_mech.models.coerce.ModelLike], e.g. the tuned policy's folder) for the
            CE-loss evaluation; ``None`` skips it.
        out_dir: the stage's folder.
        base: the base model's stores and model: its dictionaries are trained exactly like the
            tuned ones into ``base/`` (no sweep, no other variant) and evaluated beside them.

    Returns the manifest summary ([`MANIFEST_KEYS`][lfp_mech.saes.stage.MANIFEST_KEYS]);
    ``summary.json`` has more."""
    out_dir = Path(out_dir)
    if config.kl_finetune_texts and not config.pretrained:
        from lfp_mech.saes.finetune import split_finetune_texts

        split_finetune_texts(  # enough training texts for the fine-tune? (before training)
            train.texts(), config.kl_finetune_texts, config.kl_finetune_val_texts
        )
    hooks = hooks_for_layers(train, train.layers)
    heldout_acts = {hook: heldout.load_all(hook, config.eval_tokens) for hook in hooks.values()}
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {}
    if config.pretrained:
        with _timed(timings, "load_pretrained"):
            paths, tied = reuse_pretrained(train, hooks, out_dir, config)
        # a reused tied SAE is an L1 one (only those are tied): keep the config consistent
        config = replace(config, tied=tied, architecture="l1" if tied else config.architecture)
        other = {}
    else:
        paths, other = _train_all(train, hooks, heldout_acts, out_dir, config, timings, summary)
    finetuned = _kl_finetune(paths, model, train, hooks, config, timings)
    with _timed(timings, "evaluation"):
        loaded = _load(paths, other, config)
        rows = _metric_rows(loaded, hooks, heldout_acts, out_dir, config)
        saes = {key: sae for key, (sae, _) in loaded.items()}
        add_ce_losses(rows, model, heldout, hooks, saes, config)
    base_rows = _base_dictionaries(base, hooks, out_dir, config, timings, finetuned) if base else []
    write_table(out_dir / METRICS, rows + base_rows, METRIC_COLUMNS)
    if finetuned:
        write_table(out_dir / KL_FINETUNE, finetuned, KL_FINETUNE_COLUMNS)
        summary["kl_finetune"] = finetuned
    if other:
        comparison = tied_vs_untied_table(rows)
        columns = ["variant", "n_layers", *TIED_VS_UNTIED_METRICS]
        write_table(out_dir / TIED_VS_UNTIED, comparison, columns)
        summary["tied_vs_untied"] = comparison
    high = mmcs_tables(saes, hooks, out_dir, config)
    summary |= stage_summary(train, hooks, paths, rows, high, heldout_acts, out_dir, config)
    summary["base"] = quality(base_rows, config) if base_rows else None
    summary["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    for name, ok in summary["checks"].items():
        if not ok:
            detail = (
                ce_check_detail(rows, config, QUALITY_TARGETS["ce_recovered"])
                if name.startswith("small_ce_recovered")
                else ""
            )
            logger.warning("SAE check failed: %s%s", name, detail)
    write_json(out_dir / SUMMARY_FILE, json_safe(summary))
    return json_safe({k: summary[k] for k in MANIFEST_KEYS})


def _train_all(
    train: ActivationStore,
    hooks: Mapping[int, str],
    heldout_acts: Mapping[str, Float[Tensor, "n d_in"]],
    out_dir: Path,
    config: SAEConfig,
    timings: dict[str, float],
    summary: dict[str, Any],
) -> tuple[dict[tuple[int, str], Path], dict[tuple[int, str], Path]]:
    """The L1 sweep (into ``summary``), the main dictionaries and the other variant's small
    ones: ``(main, other)``, each ``{(layer, size): folder}``."""
    model_name = str(train.meta.get("model", ""))
    if config.sweep_alphas:
        summary["l1_sweep"] = _sweep(train, hooks, heldout_acts, out_dir, config, timings)
    with _timed(timings, "train_main"):
        paths = train_saes(train, list(hooks), out_dir, config, model_name=model_name)
    other: dict[tuple[int, str], Path] = {}
    if config.compare_untied:
        other_cfg = replace(config, tied=not config.tied)
        with _timed(timings, "train_comparison"):
            other = train_saes(
                train,
                list(hooks),
                out_dir / variant_name(other_cfg.tied),
                other_cfg,
                sizes=("small",),
                model_name=model_name,
            )
    return paths, other


def _sweep(
    train: ActivationStore,
    hooks: Mapping[int, str],
    heldout_acts: Mapping[str, Float[Tensor, "n d_in"]],
    out_dir: Path,
    config: SAEConfig,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The L1 sweep on ``sweep_layer``: table, figure, and its summary entry."""
    layer = next(iter(hooks)) if config.sweep_layer is None else config.sweep_layer
    if layer not in hooks:
        raise ConfigError(
            f"saes.sweep_layer = {layer}: that layer was not captured; captured: {list(hooks)}"
        )
    with _timed(timings, "l1_sweep"):
        rows = l1_sweep(
            train, heldout_acts[hooks[layer]], config.sweep_alphas, config, hook=hooks[layer]
        )
    write_table(out_dir / L1_SWEEP, rows, SWEEP_COLUMNS)
    figure = plot_l1_sweep(rows, chosen=config.l1_coefficient, layer=layer)
    save_figure(figure, out_dir / L1_SWEEP_FIGURE)
    return {"layer": layer, "rows": [{c: row[c] for c in SWEEP_COLUMNS} for row in rows]}


def _load(
    paths: Mapping[tuple[int, str], Path],
    other: Mapping[tuple[int, str], Path],
    config: SAEConfig,
) -> dict[SAEKey, tuple[SAE, Path]]:
    """Every trained SAE loaded back from its folder (main variant first), with the folder."""
    entries = [(key, path, config.tied) for key, path in paths.items()]
    entries += [(key, path, not config.tied) for key, path in other.items()]
    return {(key, tied): (load_sae(path, config.device), path) for key, path, tied in entries}


def _metric_rows(
    saes: Mapping[SAEKey, tuple[SAE, Path]],
    hooks: Mapping[int, str],
    heldout_acts: Mapping[str, Float[Tensor, "n d_in"]],
    out_dir: Path,
    config: SAEConfig,
    model: str = "tuned",
) -> list[dict[str, Any]]:
    """One row per SAE: model, layer, size, architecture, variant, k, widths, α and
    [`sae_metrics`][lfp_mech.saes.metrics.sae_metrics] (held out)."""
    rows = []
    sparse = config.architecture in SPARSE and not config.pretrained
    for ((layer, size), tied), (sae, path) in saes.items():
        rows.append(
            {
                "model": model,
                "layer": layer,
                "size": size,
                "architecture": "pretrained" if config.pretrained else config.architecture,
                "variant": variant_name(tied),
                "k": config.k if sparse else math.nan,
                "d_in": sae.cfg.d_in,
                "d_sae": sae.cfg.d_sae,
                "alpha": math.nan if sparse else config.l1_coefficient,
                **sae_metrics(sae, heldout_acts[hooks[layer]]),
                "path": str(path.relative_to(out_dir)),
            }
        )
    return rows


def _kl_finetune(
    paths: Mapping[tuple[int, str], Path],
    model: Any,
    train: ActivationStore,
    hooks: Mapping[int, str],
    config: SAEConfig,
    timings: dict[str, float],
    label: str = "tuned",
) -> list[dict[str, Any]]:
    """With ``kl_finetune_texts``, the KL fine-tune of every main dictionary on its model
    ([`finetune_dictionaries`][lfp_mech.saes.finetune.finetune_dictionaries]): its table rows."""
    if not config.kl_finetune_texts or model is None or config.pretrained:
        return []
    from lfp_mech.saes.finetune import finetune_dictionaries

    with _timed(timings, f"kl_finetune_{label}"):
        return finetune_dictionaries(paths, model, train, hooks, config, model_label=label)


def _base_dictionaries(
    base: "BaseModelData",
    hooks: Mapping[int, str],
    out_dir: Path,
    config: SAEConfig,
    timings: dict[str, float],
    finetuned: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Train the base model's dictionaries exactly like the tuned ones (same options, same
    tokens; the same KL fine-tune, on the base model, its rows appended to ``finetuned``) into
    ``base/``, and their metric rows (``model = "base"``, CE loss on the base model)."""
    heldout_acts = {
        hook: base.heldout.load_all(hook, config.eval_tokens) for hook in hooks.values()
    }
    model_name = str(base.train.meta.get("model", ""))
    with _timed(timings, "train_base"):
        paths = train_saes(
            base.train, list(hooks), out_dir / BASE_DIR, config, model_name=model_name
        )
    finetuned += _kl_finetune(paths, base.model, base.train, hooks, config, timings, "base")
    with _timed(timings, "evaluation_base"):
        loaded = _load(paths, {}, config)
        rows = _metric_rows(loaded, hooks, heldout_acts, out_dir, config, model="base")
        saes = {key: sae for key, (sae, _) in loaded.items()}
        add_ce_losses(rows, base.model, base.heldout, hooks, saes, config)
    return rows


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Record the seconds the block takes as ``timings[key]``."""
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start
