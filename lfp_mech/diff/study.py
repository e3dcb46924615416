"""[`run_diff`][lfp_mech.diff.study.run_diff]: the whole diff study on models in memory —
dictionary, ranked latents, dashboards and the causal tests — written to a folder."""

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lfp_mech._io import write_json, write_jsonl, write_table
from lfp_mech.diff.build import DiffFeatures, diff_features
from lfp_mech.diff.causal import Condition, ConditionResult, run_condition
from lfp_mech.diff.config import DiffConfig
from lfp_mech.diff.interventions import (
    ablate_latents,
    add_latents,
    add_vector,
    project_out,
)
from lfp_mech.diff.residual import EditFn, decoder_layers
from lfp_mech.diff.scoring import LatentGroup, matched_random_latents
from lfp_mech.diff.tables import intervention_rows, latent_rows
from lfp_mech.models.coerce import ModelLike, as_hf_model
from lfp_mech.stage_api import SUMMARY_FILE

logger = logging.getLogger(__name__)

__all__ = ["DICTIONARY_FILE", "build_conditions", "run_diff"]

DICTIONARY_FILE = "dictionary.safetensors"
LATENTS_TABLE = "latents"
INTERVENTIONS_TABLE = "interventions"
COMPLETIONS_FILE = "completions.jsonl"
CONTROLS_FILE = "controls.json"


def random_draws(groups: Sequence[LatentGroup], config: DiffConfig) -> dict[str, list[int]]:
    """``n_random`` draws of frequency-matched random features (their latents), each feature
    matched to one of the top ``control_k`` among the live features outside them (the 5 closest
    in firing frequency); repeats use different seeds and an identical repeat is redrawn. With
    fewer than ``2 control_k`` live features, ``control_k`` is capped at half of them (logged)."""
    n_groups = len(groups)
    chosen = list(range(min(config.control_k, n_groups // 2)))
    if len(chosen) < config.control_k:
        logger.warning(
            "diff: only %d live features: the random control draws %d (not diff.control_k = %d)"
            " matched to the top %d; a larger, healthier dictionary gives the full control",
            n_groups,
            len(chosen),
            config.control_k,
            len(chosen),
        )
    group_freq = torch.tensor([g.frequency for g in groups])
    draws: dict[str, list[int]] = {}
    seen: set[tuple[int, ...]] = set()
    for i in range(config.n_random):
        for attempt in range(20):
            seed = config.seed + i + 1000 * attempt
            picked = matched_random_latents(group_freq, chosen, seed=seed)
            if tuple(sorted(picked)) not in seen:
                break
        seen.add(tuple(sorted(picked)))
        draws[f"random{i}"] = [f for g in picked for f in groups[g].members]
    logger.info("diff: random controls: %d distinct draws of %d features", len(seen), len(chosen))
    return draws


def build_conditions(
    features: DiffFeatures,
    n_layers: int,
    config: DiffConfig,
    probe_edits: Mapping[int | str, EditFn] | None = None,
) -> tuple[list[Condition], dict[str, list[int]]]:
    """Every condition of the causal tests, and the random latent draws used."""
    d, layer = features.dictionary, features.layer
    score = features.stats["score"]
    conditions = [Condition("tuned", "tuned", "clean"), Condition("base", "base", "clean")]
    n_groups = len(features.groups)
    for k in sorted(set(config.ks) | {config.control_k}):
        if k > n_groups:
            logger.warning("diff: only %d features; k=%d skipped", n_groups, k)
            continue
        ids = features.top(k)
        conditions.append(
            Condition(f"ablate_top{k}", "tuned", "ablate", k, {layer: ablate_latents(d, ids)})
        )
        conditions.append(
            Condition(
                f"steer_top{k}",
                "base",
                "steer",
                k,
                {layer: add_latents(d, ids, score, config.steer_scale)},
            )
        )
    draws = random_draws(features.groups, config)
    for i, (name, ids) in enumerate(draws.items()):
        k = config.control_k
        conditions.append(
            Condition(f"ablate_{name}_k{k}", "tuned", "random", k, {layer: ablate_latents(d, ids)})
        )
        if i == 0:
            conditions.append(
                Condition(
                    f"steer_{name}_k{k}",
                    "base",
                    "steer_random",
                    k,
                    {layer: add_latents(d, ids, score, config.steer_scale)},
                )
            )
    if float(features.mean_diff.norm()) > 0:
        conditions += _mean_difference_conditions(features.mean_diff, layer, n_layers, config)
    else:  # e.g. a policy whose updates were all zero
        logger.warning(
            "diff: tuned and base activations have the same mean at block %d: no "
            "difference-of-means controls (did the rlhf stage change the model?)", layer
        )  # fmt: skip
    if probe_edits:
        conditions.append(Condition("lfp_probe", "tuned", "lfp_probe", 0, dict(probe_edits)))
    return conditions, draws


def _mean_difference_conditions(
    mean_diff: torch.Tensor, layer: int, n_layers: int, config: DiffConfig
) -> list[Condition]:
    """The difference-of-means baseline: projected out of the tuned policy at ``layer`` and every
    later block (the issue's baseline), at ``layer`` alone (the same single edit the latent
    ablations make, so the like-for-like comparison), and added to the base model at each of
    ``config.dom_add_scales``."""
    project = project_out(mean_diff)
    out = [
        Condition(
            "dom_project", "tuned", "dom_project", 1, dict.fromkeys(range(layer, n_layers), project)
        ),
        Condition("dom_project_one_block", "tuned", "dom_project_one_block", 1, {layer: project}),
    ]
    for scale in config.dom_add_scales:
        out.append(
            Condition(
                f"dom_add_x{scale:g}",
                "base",
                "dom_add",
                1,
                {layer: add_vector(mean_diff, scale * config.steer_scale)},
            )
        )
    return out


def run_diff(
    base: ModelLike,
    tuned: ModelLike,
    train_prompts: Sequence[str],
    eval_prompts: Sequence[str],
    out_dir: str | os.PathLike[str],
    config: DiffConfig | None = None,
    *,
    probe_edits: Mapping[int | str, EditFn] | None = None,
) -> dict[str, Any]:
    """Train and score the diff dictionary on ``train_prompts``, run every causal test on
    ``eval_prompts`` (held out), write tables, dashboards, figures; return the summary."""
    from lfp_mech.diff.dashboards import write_dashboards
    from lfp_mech.diff.plots import plot_dose_response
    from lfp_mech.plotting import save_figure

    config = config or DiffConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base_hf, tokenizer = as_hf_model(base, device=config.device)
    tuned_hf, _ = as_hf_model(tuned, device=config.device)
    features = diff_features((base_hf, tokenizer), (tuned_hf, tokenizer), train_prompts, config)
    features.dictionary.save(str(out / DICTIONARY_FILE))
    trained = time.perf_counter()
    n_rows = max(config.n_dashboards, max(config.ks))
    rows = latent_rows(features, tuned_hf, tokenizer, n_rows, config.n_contexts)
    write_table(out / LATENTS_TABLE, rows)
    write_dashboards(out / "dashboards", features, rows[: config.n_dashboards], tuned_hf, tokenizer)
    conditions, draws = build_conditions(
        features, len(decoder_layers(tuned_hf)), config, probe_edits
    )
    models = {"base": base_hf, "tuned": tuned_hf}
    results: dict[str, ConditionResult] = {}
    for condition in conditions:
        results[condition.name] = run_condition(
            condition,
            models,
            tokenizer,
            eval_prompts,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=config.seed,
            device=config.device,
        )
        logger.info("diff %s: reward %.3f", condition.name, results[condition.name].rewards.mean())
    table = intervention_rows(results, config)
    write_table(out / INTERVENTIONS_TABLE, table)
    write_jsonl(
        out / COMPLETIONS_FILE,
        [
            {"condition": name, "prompt": p, "completion": c, "reward": float(r)}
            for name, res in results.items()
            for p, c, r in zip(eval_prompts, res.completions, res.rewards, strict=True)
        ],
    )
    write_json(
        out / CONTROLS_FILE,
        {"random_latents": draws, "top_features": [list(g.members) for g in features.groups[:50]]},
    )
    save_figure(plot_dose_response(table), out / "dose_response.png")
    summary = _summary(
        features, table, config, trained - start, time.perf_counter() - trained, probe_edits
    )
    write_json(out / SUMMARY_FILE, summary)
    return summary


def _summary(
    features: DiffFeatures,
    table: list[dict[str, Any]],
    config: DiffConfig,
    train_seconds: float,
    test_seconds: float,
    probe_edits: Any,
) -> dict[str, Any]:
    by_name = {row["condition"]: row for row in table}
    k = config.control_k

    def share(name: str) -> list[float] | None:
        row = by_name.get(name)
        return None if row is None else [row["gap_share"], row["ci_low"], row["ci_high"]]

    return {
        "layer": features.layer,
        "hook": f"blocks.{features.layer}.hook_resid_post",
        "n_tokens": int(features.z.shape[0]),
        "fvu": features.train.fvu,
        "train_fvu": features.train.train_fvu,
        "dead_fraction": features.train.dead_fraction,
        "l0": features.train.l0,
        "mean_diff_norm": features.train.mean_diff_norm,
        "n_features": len(features.groups),
        "top_features": [list(g.members) for g in features.groups[:10]],
        "reward_tuned": by_name["tuned"]["reward"],
        "reward_base": by_name["base"]["reward"],
        f"ablate_top{k}_share": share(f"ablate_top{k}"),
        f"ablate_top{k}_p_vs_random": by_name.get(f"ablate_top{k}", {}).get("p_vs_random"),
        f"random{k}_share": share(f"ablate_random0_k{k}"),
        f"steer_top{k}_share": share(f"steer_top{k}"),
        "dom_project_share": share("dom_project"),
        "dom_project_one_block_share": share("dom_project_one_block"),
        "lfp_probe_share": share("lfp_probe") if probe_edits else None,
        "train_seconds": round(train_seconds, 1),
        "test_seconds": round(test_seconds, 1),
        "config": {f: getattr(config, f) for f in config.__dataclass_fields__},
    }
