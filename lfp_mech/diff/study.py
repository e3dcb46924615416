"""[`run_diff`][lfp_mech.diff.study.run_diff]: the whole diff study on models in memory —
a dictionary per block, ranked features, dashboards and the causal tests — written to a folder."""

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lfp_mech._io import write_json, write_jsonl, write_table
from lfp_mech.diff.blocks import BlockDiff, diff_features_by_block
from lfp_mech.diff.causal import Condition, ConditionResult, run_condition
from lfp_mech.diff.config import DiffConfig
from lfp_mech.diff.interventions import add_vector, project_out
from lfp_mech.diff.residual import EditFn, decoder_layers
from lfp_mech.diff.scoring import LatentGroup, matched_random_latents
from lfp_mech.diff.tables import intervention_rows, latent_rows
from lfp_mech.models.coerce import ModelLike, as_hf_model
from lfp_mech.stage_api import SUMMARY_FILE

logger = logging.getLogger(__name__)

__all__ = ["build_conditions", "dictionary_file", "run_diff"]

LATENTS_TABLE = "latents"
INTERVENTIONS_TABLE = "interventions"
COMPLETIONS_FILE = "completions.jsonl"
CONTROLS_FILE = "controls.json"


def random_draws(
    groups: Mapping[int, Sequence[LatentGroup]],
    chosen: Mapping[int, Sequence[int]],
    config: DiffConfig,
) -> dict[str, dict[int, list[int]]]:
    """``n_random`` draws of frequency-matched random features (their latents, by block): each
    chosen feature (``chosen``: its index in its block's ``groups``) is matched to a feature of
    its own block among the 5 closest in firing frequency, never a chosen one; repeats use
    different seeds and an identical repeat is redrawn. A block with fewer than twice as many
    live features as chosen ones has its chosen features capped at half of them (logged)."""
    capped: dict[int, list[int]] = {}
    for layer, ids in chosen.items():
        n_groups = len(groups[layer])
        capped[layer] = list(ids)[: n_groups // 2]
        if len(capped[layer]) < len(ids):
            logger.warning(
                "diff: block %d has only %d live features: the random control matches %d of its"
                " %d chosen ones; a larger, healthier dictionary gives the full control",
                layer,
                n_groups,
                len(capped[layer]),
                len(ids),
            )
    frequency = {layer: torch.tensor([g.frequency for g in groups[layer]]) for layer in capped}
    draws: dict[str, dict[int, list[int]]] = {}
    seen: set[tuple[tuple[int, ...], ...]] = set()
    for i in range(config.n_random):
        for attempt in range(20):
            seed = config.seed + i + 1000 * attempt
            picked = {
                layer: matched_random_latents(frequency[layer], ids, seed=seed + layer)
                for layer, ids in capped.items()
            }
            key = tuple(tuple(sorted(picked[layer])) for layer in sorted(picked))
            if key not in seen:
                break
        seen.add(key)
        draws[f"random{i}"] = {
            layer: [f for g in ids for f in groups[layer][g].members]
            for layer, ids in picked.items()
        }
    logger.info(
        "diff: random controls: %d distinct draws of %d features",
        len(seen),
        sum(map(len, capped.values())),
    )
    return draws


def build_conditions(
    features: BlockDiff,
    n_layers: int,
    config: DiffConfig,
    probe_edits: Mapping[int | str, EditFn] | None = None,
) -> tuple[list[Condition], dict[str, dict[int, list[int]]]]:
    """Every condition of the causal tests, and the random latent draws used (by block)."""
    conditions = [Condition("tuned", "tuned", "clean"), Condition("base", "base", "clean")]
    n_features = len(features.ranking)
    for k in sorted(set(config.ks) | {config.control_k}):
        if k > n_features:
            logger.warning("diff: only %d features; k=%d skipped", n_features, k)
            continue
        top = features.top(k)
        conditions.append(Condition(f"ablate_top{k}", "tuned", "ablate", k, features.ablation(top)))
        conditions.append(
            Condition(
                f"steer_top{k}", "base", "steer", k, features.steering(top, config.steer_scale)
            )
        )
    chosen: dict[int, list[int]] = {}
    for feature in features.ranking[: config.control_k]:
        chosen.setdefault(feature.layer, []).append(feature.index)
    groups = {layer: block.groups for layer, block in features.blocks.items()}
    draws = random_draws(groups, chosen, config)
    for i, (name, latents) in enumerate(draws.items()):
        k = config.control_k
        conditions.append(
            Condition(f"ablate_{name}_k{k}", "tuned", "random", k, features.ablation(latents))
        )
        if i == 0:
            conditions.append(
                Condition(
                    f"steer_{name}_k{k}",
                    "base",
                    "steer_random",
                    k,
                    features.steering(latents, config.steer_scale),
                )
            )
    mean_diffs = {layer: block.mean_diff for layer, block in features.blocks.items()}
    if all(float(v.norm()) > 0 for v in mean_diffs.values()):
        conditions += _mean_difference_conditions(mean_diffs, n_layers, config)
    else:  # e.g. a policy whose updates were all zero
        logger.warning(
            "diff: tuned and base activations have the same mean at a block of %s: no "
            "difference-of-means controls (did the rlhf stage change the model?)", features.layers
        )  # fmt: skip
    if probe_edits:
        conditions.append(Condition("lfp_probe", "tuned", "lfp_probe", 0, dict(probe_edits)))
    return conditions, draws


def _mean_difference_conditions(
    mean_diffs: Mapping[int, torch.Tensor], n_layers: int, config: DiffConfig
) -> list[Condition]:
    """The difference-of-means baseline: the first block's difference projected out of the tuned
    policy at that block and every later block (the issue's baseline); each dictionary block's
    own difference projected out at that block (the same blocks the latent ablations edit, so
    the like-for-like comparison); the first block's difference added to the base model at that
    block at each of ``config.dom_add_scales``."""
    first = min(mean_diffs)
    project = project_out(mean_diffs[first])
    out = [
        Condition(
            "dom_project", "tuned", "dom_project", 1, dict.fromkeys(range(first, n_layers), project)
        ),
        Condition(
            "dom_project_dictionary_blocks",
            "tuned",
            "dom_project_dictionary_blocks",
            len(mean_diffs),
            {layer: project_out(v) for layer, v in mean_diffs.items()},
        ),
    ]
    for scale in config.dom_add_scales:
        out.append(
            Condition(
                f"dom_add_x{scale:g}",
                "base",
                "dom_add",
                1,
                {first: add_vector(mean_diffs[first], scale * config.steer_scale)},
            )
        )
    return out


def dictionary_file(layer: int) -> str:
    """File name of block ``layer``'s dictionary in the stage folder."""
    return f"dictionary_block{layer}.safetensors"


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
    """Train and score a diff dictionary per block on ``train_prompts``, run every causal test
    on ``eval_prompts`` (held out), write tables, dashboards, figures; return the summary."""
    from lfp_mech.diff.dashboards import write_dashboards
    from lfp_mech.diff.plots import plot_dose_response
    from lfp_mech.plotting import save_figure

    config = config or DiffConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base_hf, tokenizer = as_hf_model(base, device=config.device)
    tuned_hf, _ = as_hf_model(tuned, device=config.device)
    features = diff_features_by_block(
        (base_hf, tokenizer), (tuned_hf, tokenizer), train_prompts, config
    )
    for layer, block in features.blocks.items():
        block.dictionary.save(str(out / dictionary_file(layer)))
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
    _write_completions_and_controls(out, features, results, eval_prompts, draws)
    save_figure(plot_dose_response(table), out / "dose_response.png")
    summary = _summary(
        features, table, config, trained - start, time.perf_counter() - trained, probe_edits
    )
    write_json(out / SUMMARY_FILE, summary)
    return summary


def _write_completions_and_controls(
    out: Path,
    features: BlockDiff,
    results: Mapping[str, ConditionResult],
    prompts: Sequence[str],
    draws: Mapping[str, Mapping[int, list[int]]],
) -> None:
    """``completions.jsonl`` (every condition's completions with rewards) and ``controls.json``
    (the random draws and the top 50 features, by block)."""
    write_jsonl(
        out / COMPLETIONS_FILE,
        [
            {"condition": name, "prompt": p, "completion": c, "reward": float(r)}
            for name, res in results.items()
            for p, c, r in zip(prompts, res.completions, res.rewards, strict=True)
        ],
    )
    write_json(
        out / CONTROLS_FILE,
        {
            "random_latents": {
                name: {str(layer): ids for layer, ids in by_block.items()}
                for name, by_block in draws.items()
            },
            "top_features": [
                {"layer": f.layer, "latents": list(features.group(f).members)}
                for f in features.ranking[:50]
            ],
        },
    )


def _summary(
    features: BlockDiff,
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
        "layers": features.layers,
        "hooks": [f"blocks.{layer}.hook_resid_post" for layer in features.layers],
        "cross_block_rank": config.cross_block_rank,
        "attribution_kl": {str(n): kl for n, kl in features.attribution_kl.items()},
        "blocks": {
            str(layer): {
                "n_tokens": int(block.z.shape[0]),
                "fvu": block.train.fvu,
                "train_fvu": block.train.train_fvu,
                "dead_fraction": block.train.dead_fraction,
                "l0": block.train.l0,
                "mean_diff_norm": block.train.mean_diff_norm,
                "n_features": len(block.groups),
                f"top{k}_features": sum(f.layer == layer for f in features.ranking[:k]),
            }
            for layer, block in features.blocks.items()
        },
        "n_features": len(features.ranking),
        "top_features": [
            {"layer": f.layer, "latents": list(features.group(f).members)}
            for f in features.ranking[:10]
        ],
        "reward_tuned": by_name["tuned"]["reward"],
        "reward_base": by_name["base"]["reward"],
        f"ablate_top{k}_share": share(f"ablate_top{k}"),
        f"ablate_top{k}_p_vs_random": by_name.get(f"ablate_top{k}", {}).get("p_vs_random"),
        f"random{k}_share": share(f"ablate_random0_k{k}"),
        f"steer_top{k}_share": share(f"steer_top{k}"),
        "dom_project_share": share("dom_project"),
        "dom_project_dictionary_blocks_share": share("dom_project_dictionary_blocks"),
        "lfp_probe_share": share("lfp_probe") if probe_edits else None,
        "train_seconds": round(train_seconds, 1),
        "test_seconds": round(test_seconds, 1),
        "config": {f: getattr(config, f) for f in config.__dataclass_fields__},
    }
