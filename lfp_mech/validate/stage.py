"""The ``validate`` stage (paper section 4): describe the features the probe relies on, count how
often they fire on strong-feedback inputs (Table 7), and ablate them while the models write
(Table 6).

Inputs, each read through the earlier stage's results class: the small SAEs and their high-MMCS
features (``saes``), the probe's weights and inputs (``probes``), the held-out texts
(``activations``) and the tuned policy (``rlhf``); the prefixes are the test split of the review
prompts. [`run_validation`][lfp_mech.validate.stage.run_validation] is the same work on models and
SAEs in memory."""

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from lfp_mech._io import save_tensors, write_json, write_table
from lfp_mech.errors import ConfigError
from lfp_mech.models.coerce import ModelLike, as_hooked_model
from lfp_mech.rewards import get_reward
from lfp_mech.saes.io import SAELike, load_saes
from lfp_mech.stage_api import SUMMARY_FILE, StageContext
from lfp_mech.validate.artifacts import (
    ABLATION_TABLE,
    COMPLETIONS_FILE,
    DESCRIPTIONS_TABLE,
    FEATURE_CHOICE_FILE,
    FEATURE_FREQUENCIES_FILE,
    FEATURES_FILE,
    FREQUENCY_TABLE,
    TOP_CONTEXTS_FILE,
)
from lfp_mech.validate.autointerp.describe import Descriptions, describe_features
from lfp_mech.validate.config import ValidateConfig
from lfp_mech.validate.feature_ids import FeatureIds, as_id_list
from lfp_mech.validate.features import choose_features, high_mmcs_by_hook, standardized_weights
from lfp_mech.validate.frequency import frequency_rows
from lfp_mech.validate.table import AblationResult, ablation_table, truncate_prompts

logger = logging.getLogger(__name__)

__all__ = ["run", "run_validation"]

PROMPT_SET = "reviews"
"""The prompt set whose test split gives the ablation table's prefixes."""


def run(ctx: StageContext) -> dict[str, Any]:
    """Choose the features, then [`run_validation`][lfp_mech.validate.stage.run_validation] on the
    base model and the tuned policy."""
    from lfp_mech.activations.results import ActivationsResults
    from lfp_mech.data import load_prompts
    from lfp_mech.probes.results import ProbesResults
    from lfp_mech.rlhf.results import RLHFResults
    from lfp_mech.saes.results import SAEsResults

    config: ValidateConfig = ctx.options
    saes_results = SAEsResults(ctx.stage_dir("saes"))
    probes = ProbesResults(ctx.stage_dir("probes"))
    saes = saes_results.load_saes("small", device=config.device)
    probe_inputs = probes.probe_inputs()
    choice = choose_features(
        high_mmcs_by_hook(saes_results.high_mmcs_features()),
        _selection_weights(probes.probe_weights(), probe_inputs, config),
        {hook: int(sae.cfg.d_sae) for hook, sae in saes.items()},
        config.n_features_per_hook,
    )
    write_json(ctx.dir / FEATURE_CHOICE_FILE, choice)
    if probe_inputs is None:
        logger.warning(
            "the probes stage wrote no probe inputs (a run from an older version): Table 7 uses "
            "corpus tokens of VADER words instead of the probe inputs; rerun with --force probes"
        )
    return run_validation(
        ctx.config.model,
        RLHFResults(ctx.stage_dir("rlhf")).policy_dir,
        saes,
        choice,
        ActivationsResults(ctx.stage_dir("activations")).heldout_texts(),
        load_prompts(PROMPT_SET, "test"),
        ctx.dir,
        config,
        probe_acts=None if probe_inputs is None else probe_inputs.features,
        probe_predictions=None if probe_inputs is None else probe_inputs.predicted_delta,
    )


def _selection_weights(weight: Tensor, probe_inputs: Any, config: ValidateConfig) -> Tensor:
    """The probe weights the features are chosen by (``config.weight_selection``)."""
    if config.weight_selection == "raw":
        return weight
    if probe_inputs is None:
        raise ConfigError(
            "validate.weight_selection='standardized' needs the probe's inputs "
            "(probes/probe_inputs.safetensors, absent in runs from older versions): rerun with "
            "--force probes, or set validate.weight_selection=raw"
        )
    return standardized_weights(weight, probe_inputs.features)


def run_validation(
    base_model: ModelLike,
    tuned_model: ModelLike,
    saes: Mapping[str, SAELike] | Sequence[SAELike],
    feature_choice: Mapping[str, FeatureIds],
    corpus_texts: Sequence[str],
    prompts: Sequence[str],
    out_dir: str | os.PathLike[str],
    config: ValidateConfig,
    *,
    probe_acts: Mapping[str, Tensor] | None = None,
    probe_predictions: Float[Tensor, " n_inputs"] | None = None,
) -> dict[str, Any]:
    """Feature descriptions, Table 7 and Table 6, written to ``out_dir``; returns the summary.

    Args:
        base_model: the base model (a name, a checkpoint folder, an ``(hf_model, tokenizer)``
            pair or a ``HookedTransformer``).
        tuned_model: the tuned model (the same kinds).
        saes: ``{hook_name: SAE or folder}``, or a list (hooks from ``cfg.metadata.hook_name``).
        feature_choice: ``{hook_name: feature ids}`` to describe and validate.
        corpus_texts: texts for top-activating contexts and activation frequencies.
        prompts: prefixes for the ablation table (cut to ``config.prefix_tokens`` tokens).
        probe_acts: the probe's inputs ``{hook: Float[n_inputs, d_sae]}`` (one entry per SAE
            hook). With ``probe_predictions`` (the probe's predicted delta of each input,
            normalised to [-4, 4]) Table 7 uses the inputs with predicted ``delta >
            config.delta_threshold`` (the paper); if none passes, Table 7 says so (0 selected
            inputs, NaN shares, a warning). Without them it uses corpus tokens of VADER words
            with ``|valence| >= config.autointerp.sentiment_word_threshold``.

    Writes the tables ``descriptions``, ``activation_frequency`` and ``ablation`` (CSV, Markdown,
    JSON), ``ablation.png``, ``activation_frequency.png``, ``top_contexts.json``,
    ``completions.json``, ``features.json``, ``feature_frequencies.safetensors`` and
    ``summary.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (probe_acts is None) != (probe_predictions is None):
        raise ConfigError("pass probe_acts and probe_predictions together (or neither)")
    precision = {"device": config.device, "seed": config.seed, "dtype": config.dtype}
    tuned = as_hooked_model(tuned_model, **precision)
    base = as_hooked_model(base_model, **precision)
    loaded = load_saes(saes, device=config.device)
    missing = set(feature_choice) - set(loaded)
    if missing:
        raise ConfigError(
            f"feature_choice names hooks without an SAE: {sorted(missing)}; "
            f"SAEs are at {sorted(loaded)}"
        )
    choice = {h: as_id_list(ids) for h, ids in feature_choice.items()}
    # the descriptions run on the tuned model, whose activations the SAEs were trained on
    described = describe_features(tuned, loaded, choice, corpus_texts, config.autointerp)
    _write_descriptions(out, described)
    task_related = {h: ids for h, ids in described.task_related().items() if ids}
    ablated, ablated_set = _ablated_features(choice, task_related, config)
    freq_rows = frequency_rows(
        described.scans, choice, task_related, config, probe_acts, probe_predictions
    )
    _write_frequency(out, freq_rows)
    result = _table6(
        {"base": base, "tuned": tuned}, loaded, described, choice, ablated, prompts, config
    )
    _write_ablation(out, result, described, choice, ablated_set, config)
    summary = _summary(described, result, freq_rows, ablated_set, config)
    write_json(out / SUMMARY_FILE, summary)
    return summary


def _ablated_features(
    choice: dict[str, list[int]], task_related: dict[str, list[int]], config: ValidateConfig
) -> tuple[dict[str, list[int]], str]:
    """The features to ablate and the name of their set (``"task_related"`` or ``"chosen"``)."""
    if config.ablate == "chosen" or not task_related:
        if config.ablate == "task_related":
            logger.warning("no chosen feature is labelled task-related; ablating all chosen ones")
        return choice, "chosen"
    return task_related, "task_related"


def _table6(
    models: Mapping[str, Any],
    saes: Mapping[str, Any],
    described: Descriptions,
    choice: dict[str, list[int]],
    ablated: dict[str, list[int]],
    prompts: Sequence[str],
    config: ValidateConfig,
) -> AblationResult:
    """Table 6 on the prefixes of ``prompts``; random controls matched on corpus frequencies,
    never drawn from the chosen features; mean ablation uses the features' corpus means."""
    means = None
    if config.mode == "mean":
        means = {h: described.scans[h].mean_activation for h in ablated}
    return ablation_table(
        models,
        saes,
        ablated,
        get_reward(config.reward, device=config.device),
        truncate_prompts(models["tuned"], prompts, config.prefix_tokens),
        n_completions=config.n_completions,
        freqs={h: described.scans[h].frequency for h in ablated},
        exclude=choice,
        mode=config.mode,
        means=means,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        batch_size=config.gen_batch_size,
        confidence=config.confidence,
        seed=config.seed,
    )


def _write_descriptions(out: Path, described: Descriptions) -> None:
    write_table(out / DESCRIPTIONS_TABLE, described.rows)
    write_json(out / TOP_CONTEXTS_FILE, described.contexts_json())


def _write_frequency(out: Path, rows: list[dict[str, Any]]) -> None:
    from lfp_mech.plotting import save_figure
    from lfp_mech.validate.plots import activation_frequency_figure

    write_table(out / FREQUENCY_TABLE, rows)
    save_figure(activation_frequency_figure(rows), out / f"{FREQUENCY_TABLE}.png")


def _write_ablation(
    out: Path,
    result: AblationResult,
    described: Descriptions,
    choice: dict[str, list[int]],
    ablated_set: str,
    config: ValidateConfig,
) -> None:
    from lfp_mech.plotting import save_figure
    from lfp_mech.validate.plots import ablation_figure

    write_table(out / ABLATION_TABLE, result.rows)
    figure = ablation_figure(result.rows, confidence=config.confidence)
    save_figure(figure, out / f"{ABLATION_TABLE}.png")
    n_keep = config.n_examples_saved
    completions = {
        m: {c: texts[:n_keep] for c, texts in cells.items()}
        for m, cells in result.completions.items()
    }
    write_json(
        out / COMPLETIONS_FILE,
        {"prompts": result.prompts[:n_keep], "completions": completions, "rewards": result.rewards},
    )
    write_json(
        out / FEATURES_FILE,
        {"chosen": choice, "ablated_set": ablated_set, "ablated": result.features},
    )
    save_tensors(
        out / FEATURE_FREQUENCIES_FILE,
        {h: s.frequency for h, s in described.scans.items()},
        {"what": "share of corpus tokens (BOS excluded) on which each feature is active"},
    )


def _summary(
    described: Descriptions,
    result: AblationResult,
    freq_rows: list[dict[str, Any]],
    ablated_set: str,
    config: ValidateConfig,
) -> dict[str, Any]:
    """The manifest summary: Table 6's cells and paired-difference CIs, Table 7's ratios."""
    cells = {f"{r['model']}/{r['condition']}": round(r["mean_reward"], 4) for r in result.rows}
    deltas = {
        f"{r['model']}/{r['condition']}": [
            round(r["delta_ci_low"], 4),
            round(r["delta_ci_high"], 4),
        ]
        for r in result.rows
        if r["condition"] != "clean"
    }
    ratios = {
        f"{r['hook']}/{r['group']}": round(r["ratio_to_average"], 3)
        for r in freq_rows
        if r["group"] != "all features"
    }
    first = freq_rows[0] if freq_rows else {}
    return {
        "n_features_described": len(described.rows),
        "n_task_related": sum(bool(r["task_related"]) for r in described.rows),
        "n_task_related_uncorrected": sum(
            bool(r.get("task_related_uncorrected")) for r in described.rows
        ),
        "task_related_correction": config.autointerp.correction,
        "weight_selection": config.weight_selection,
        "llm_descriptions": described.used_llm,
        "ablated_set": ablated_set,
        "n_ablated": sum(len(v) for v in result.features["task"].values()),
        "mode": config.mode,
        "reward": config.reward,
        "n_completions": config.n_completions,
        "mean_reward": cells,
        "delta_vs_clean_ci": deltas,
        "activation_frequency_ratio": ratios,
        "activation_frequency_inputs": {
            "source": first.get("source"),
            "inputs": first.get("inputs"),
            "n_selected": first.get("n_inputs"),
            "n_total": first.get("n_inputs_total"),
        },
        "config": dataclasses.asdict(config),
    }
