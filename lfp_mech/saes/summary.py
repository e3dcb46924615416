"""The saes stage's summary: the quality checks against the targets, the small↔big MMCS tables,
and the summary's fields (written by [`lfp_mech.saes.stage`][lfp_mech.saes.stage])."""

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from torch import Tensor

from lfp_mech._io import write_json, write_table
from lfp_mech.activations.store import ActivationStore
from lfp_mech.plotting import save_figure
from lfp_mech.saes.artifacts import HIGH_MMCS_FILE, MMCS_FIGURE, mmcs_stem, sae_folder, variant_name
from lfp_mech.saes.ce_evaluation import SAEKey
from lfp_mech.saes.config import SIZES, SPARSE, SAEConfig
from lfp_mech.saes.metrics import mmcs_with_index
from lfp_mech.saes.plots import plot_mmcs

__all__ = ["ALPHA_MEANING", "QUALITY_TARGETS", "mmcs_tables", "quality", "stage_summary"]

ALPHA_MEANING = (
    "loss = mean over elements of (x - x_hat)^2 + alpha * sum_i f_i * ||W_dec[i]||, "
    "activations rescaled to mean norm sqrt(d_in) while training; SAE-Lens "
    "l1_coefficient = alpha * d_in"
)

QUALITY_TARGETS = {"l0": 64.0, "fvu": 0.25, "ce_recovered": 0.90, "dead_fraction": 0.10}
"""What a dictionary the later stages use must reach on held-out tokens: L0 <= 64, FVU <= 0.25,
CE loss recovered >= 0.90, dead fraction <= 10% (the ``checks`` of the summary)."""


def mmcs_tables(
    saes: Mapping[SAEKey, SAE], hooks: Mapping[int, str], out_dir: Path, config: SAEConfig
) -> dict[str, Any]:
    """Small↔big MMCS of the main dictionaries of every layer: one table per layer, the figure,
    and ``high_mmcs_features.json`` (returned)."""
    high: dict[str, Any] = {}
    values_by_layer = {}
    for layer, hook in hooks.items():
        if ((layer, "big"), config.tied) not in saes:  # reused SAEs with no wider twin
            continue
        small, big = saes[((layer, "small"), config.tied)], saes[((layer, "big"), config.tied)]
        values, index = mmcs_with_index(small, big)
        values_by_layer[layer] = values
        order = torch.argsort(values, descending=True)
        features = zip(order.tolist(), values[order].tolist(), index[order].tolist(), strict=True)
        write_table(
            out_dir / mmcs_stem(layer),
            [{"small_feature": i, "mmcs": v, "big_feature": b} for i, v, b in features],
        )
        top = order[: config.mmcs_top_k]
        high[str(layer)] = {
            "hook_name": hook,
            "mean_mmcs": float(values.mean()),
            "n_above_threshold": int((values >= config.mmcs_threshold).sum()),
            "threshold": config.mmcs_threshold,
            "top_features": [int(i) for i in top],
            "top_mmcs": [round(float(values[i]), 4) for i in top],
        }
    write_json(out_dir / HIGH_MMCS_FILE, high)
    if values_by_layer:
        figure = plot_mmcs(values_by_layer, threshold=config.mmcs_threshold)
        save_figure(figure, out_dir / MMCS_FIGURE)
    return high


def quality(rows: Sequence[Mapping[str, Any]], config: SAEConfig) -> dict[str, Any]:
    """The worst small main-variant dictionary's L0, FVU, CE recovered and dead fraction, their
    mean L0, and the [`QUALITY_TARGETS`][lfp_mech.saes.summary.QUALITY_TARGETS] they all meet."""
    variant = variant_name(config.tied)
    small = [r for r in rows if r["size"] == "small" and r["variant"] == variant]
    targets = QUALITY_TARGETS
    return {
        "max_small_l0": max(r["l0"] for r in small),
        "max_small_fvu": max(r["fvu"] for r in small),
        "min_small_ce_recovered": min(r["ce_recovered"] for r in small),
        "max_small_delta_lm_loss": max(r["delta_lm_loss"] for r in small),
        "max_small_dead_fraction": max(r["dead_fraction"] for r in small),
        "max_small_dense_fraction": max(r["dense_fraction"] for r in small),
        "mean_small_l0": sum(r["l0"] for r in small) / len(small),
        "checks": {
            f"small_l0_le_{targets['l0']:g}": all(r["l0"] <= targets["l0"] for r in small),
            f"small_fvu_le_{targets['fvu']:g}": all(r["fvu"] <= targets["fvu"] for r in small),
            f"small_ce_recovered_ge_{targets['ce_recovered']:g}": all(
                r["ce_recovered"] >= targets["ce_recovered"] for r in small
            ),
            f"small_dead_fraction_le_{targets['dead_fraction']:g}": all(
                r["dead_fraction"] <= targets["dead_fraction"] for r in small
            ),
        },
    }


def stage_summary(
    train: ActivationStore,
    hooks: Mapping[int, str],
    paths: Mapping[tuple[int, str], Path],
    rows: Sequence[Mapping[str, Any]],
    high: Mapping[str, Any],
    heldout_acts: Mapping[str, Tensor],
    out_dir: Path,
    config: SAEConfig,
) -> dict[str, Any]:
    """The stage summary (besides the sweep, the tied-vs-untied table and the timings)."""
    return {
        "layers": list(hooks),
        "hook_names": list(hooks.values()),
        "n_saes": len(paths),
        "saes": {sae_folder(*key): str(p.relative_to(out_dir)) for key, p in paths.items()},
        "sizes": [size for size in SIZES if any(key[1] == size for key in paths)],
        "variant": variant_name(config.tied),
        "pretrained": config.pretrained,
        "architecture": "pretrained" if config.pretrained else config.architecture,
        "k": config.k if config.architecture in SPARSE and not config.pretrained else None,
        "alpha": None
        if config.pretrained or config.architecture in SPARSE
        else config.l1_coefficient,
        "sae_lens_l1_coefficient": {
            hook: config.l1_coefficient * train.d_in_of(hook)
            for hook in hooks.values()
            if not config.pretrained and config.architecture == "l1"
        },
        "alpha_meaning": ALPHA_MEANING,
        "train_tokens_in_store": train.n_tokens,
        "training_tokens_per_sae": 0
        if config.pretrained
        else (config.training_tokens // config.batch_size) * config.batch_size,
        "heldout_tokens": {hook: int(a.shape[0]) for hook, a in heldout_acts.items()},
        **quality(rows, config),
        "mmcs": {
            layer: {k: v[k] for k in ("mean_mmcs", "n_above_threshold")}
            for layer, v in high.items()
        },
        "config": asdict(config),
    }
