"""The ``probes`` stage: feedback probes on the tuned policy's SAE features, against VADER.

Inputs: the base model (the run's ``model``), the tuned policy and its held-out completions
(``rlhf``), and the small SAEs (``saes``). Writes into the stage folder:

* ``kendall.{csv,md,json}`` — tuned SAE probe + every baseline: τ, p, CI, τ on negative / positive
  words, and the paired difference tuned − baseline;
* ``sign_accuracy.{csv,md,json}`` (paper Table 5), ``per_word.{csv,md,json}`` (paper Table 2 with
  every probe's prediction, the tuned probe's error and the word's frequency);
* ``predicted_vs_true.png``, ``word_frequency.png`` (Figure 4), ``baselines.png``;
* ``probes.safetensors`` (every probe's weights), ``probe_inputs.safetensors`` (the tuned SAE
  probe's inputs per hook with its predictions: paper Table 7's inputs);
* ``summary.json`` (also returned for the manifest).
"""

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lfp_mech._io import json_safe, save_tensors, write_json, write_table
from lfp_mech.errors import ConfigError
from lfp_mech.plotting import save_figure
from lfp_mech.probes import artifacts, plots
from lfp_mech.probes.analysis import ProbeAnalysis, analyse_feedback_probes
from lfp_mech.probes.dataset import triple_texts_spans
from lfp_mech.probes.inputs import ProbeInputs, save_probe_inputs
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

logger = logging.getLogger(__name__)

__all__ = ["probes_summary", "run", "write_probe_artifacts"]


def run(ctx: StageContext) -> dict[str, Any]:
    """Fit and evaluate the feedback probes of the run's tuned policy; write every artifact."""
    from lfp_mech.rlhf.results import RLHFResults
    from lfp_mech.saes.results import SAEsResults

    rlhf = RLHFResults(ctx.stage_dir("rlhf"))
    saes = SAEsResults(ctx.stage_dir("saes"))
    analysis = analyse_feedback_probes(
        ctx.config.model,
        rlhf.policy_dir,
        saes.small_sae_dirs(),
        rlhf.completion_texts("tuned"),
        ctx.options,
        base_sae_dirs=_base_model_saes(saes, ctx.options.device),
    )
    summary = write_probe_artifacts(analysis, ctx.dir)
    from lfp_mech.probes.preference_stage import run_preference_step  # DPO runs: Table 3, Fig. 5

    return summary | run_preference_step(ctx)


def _base_model_saes(saes: Any, device: str) -> dict[str, Any] | None:
    """The SAEs trained on the base model's activations (``SAEsResults.load_saes(model="base")``),
    or None (with a warning) when the saes stage has none: the ``base_sae`` baseline then applies
    the tuned SAEs to the base model, and the summary's ``base_sae_source`` says so."""
    try:
        return saes.load_saes(model="base", device=device)
    except (TypeError, ConfigError, FileNotFoundError) as err:
        logger.warning(
            "probes: no base-model SAEs in the saes stage (%s); the base_sae baseline applies "
            "the tuned SAEs to the base model",
            err,
        )
        return None


def write_probe_artifacts(
    analysis: ProbeAnalysis, out_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write the tables, figures, probe weights, probe inputs and summary of ``analysis``.

    Returns the summary (strict JSON: NaN as None).
    """
    out_dir = Path(out_dir)
    _write_tables(analysis, out_dir)
    save_tensors(
        out_dir / artifacts.PROBES_FILE,
        {
            f"{name}.{k}": v
            for name, p in analysis.probes.items()
            for k, v in p.state_dict().items()
        },
        {"hooks": ",".join(analysis.hooks)},
    )
    probe_inputs = _save_probe_inputs(analysis, out_dir)
    _write_figures(analysis, out_dir)
    summary = json_safe(probes_summary(analysis, probe_inputs))
    write_json(out_dir / SUMMARY_FILE, summary)
    return summary


def probes_summary(analysis: ProbeAnalysis, probe_inputs: ProbeInputs) -> dict[str, Any]:
    """The stage summary: sizes, τ / p / CIs / sign accuracies per probe, controls, Figure 4's ρ."""
    evals, order = analysis.evals, analysis.order
    primary = evals[artifacts.PRIMARY_PROBE]
    null = analysis.shuffle_null
    predicted = probe_inputs.predicted_delta
    return {
        "n_triples": len(analysis.triples),
        "n_train_samples": 2 * len(analysis.triples),
        "n_eval_words": len(analysis.words),
        "n_eval_positive": primary.n_positive,
        "n_eval_negative": primary.n_negative,
        "base_sae_source": analysis.base_sae_source,
        "n_carrier_templates": analysis.n_templates,
        "hooks": analysis.hooks,
        "alpha_tuned": analysis.probes[artifacts.PRIMARY_PROBE].alpha,
        "tau": {n: evals[n].tau for n in order},
        "p_value": {n: evals[n].p_value for n in order},
        "tau_ci": {n: list(evals[n].tau_ci) for n in order},
        "tau_negative": {n: evals[n].tau_negative for n in order},
        "tau_negative_ci": {n: list(evals[n].tau_negative_ci) for n in order},
        "tau_positive": {n: evals[n].tau_positive for n in order},
        "tau_positive_ci": {n: list(evals[n].tau_positive_ci) for n in order},
        "sign_acc": {n: evals[n].sign_acc for n in order},
        "sign_acc_ci": {n: list(evals[n].sign_acc_ci) for n in order},
        "tau_sign_only": primary.tau_sign_only,
        "tau_sign_only_ci": list(primary.tau_sign_only_ci),
        "headline_tuned_minus_base_sae": (
            asdict(analysis.diffs["base_sae"]) if "base_sae" in analysis.diffs else None
        ),
        "tuned_minus_base_sae_within_sign": {
            sign: asdict(d) for sign, d in analysis.within_sign_diffs.items()
        },
        "sign_acc_positive": {n: evals[n].sign_acc_positive for n in order},
        "sign_acc_negative": {n: evals[n].sign_acc_negative for n in order},
        "tuned_minus": {n: asdict(d) for n, d in analysis.diffs.items()},
        "shuffled_null_tau": null,
        "shuffled_null_abs_tau_max": max((abs(t) for t in null), default=None),
        "frequency_spearman_rho": analysis.rho,
        "frequency_spearman_p": analysis.rho_p,
        "n_completions": analysis.n_completions,
        "n_probe_inputs": probe_inputs.n_inputs,
        "n_probe_inputs_predicted_above_3": int((predicted > 3).sum()),
        "n_probe_inputs_predicted_below_minus_3": int((predicted < -3).sum()),
        "tuned_significant_p01": bool(primary.p_value < 0.01),
        "tuned_above_every_baseline": bool(
            all(primary.tau > evals[n].tau for n in order if n != artifacts.PRIMARY_PROBE)
        ),
    }


def _write_tables(analysis: ProbeAnalysis, out_dir: Path) -> None:
    """``kendall``, ``sign_accuracy`` and ``per_word`` (CSV, Markdown, JSON)."""
    order, evals = analysis.order, analysis.evals
    kendall_rows = []
    for name in order:
        d = analysis.diffs.get(name)
        kendall_rows.append(
            evals[name].kendall_row()
            | {
                "tuned_minus_this": d.diff if d else None,
                "diff_ci_low": d.ci_low if d else None,
                "diff_ci_high": d.ci_high if d else None,
                "diff_p_value": d.p_value if d else None,
            }
        )
    write_table(out_dir / artifacts.KENDALL_TABLE, kendall_rows)
    write_table(out_dir / artifacts.SIGN_ACCURACY_TABLE, [evals[n].sign_row() for n in order])
    abs_err = analysis.abs_error
    per_word = []
    for i, w in enumerate(analysis.words):
        row: dict[str, Any] = {"word": w, "true_valence": float(analysis.true_valence[i])}
        row |= {f"pred_{n}": float(analysis.predictions[n][i]) for n in order}
        row |= {"abs_error_tuned": float(abs_err[i]), "frequency": int(analysis.frequencies[i])}
        per_word.append(row)
    write_table(out_dir / artifacts.PER_WORD_TABLE, per_word)


def _save_probe_inputs(analysis: ProbeAnalysis, out_dir: Path) -> ProbeInputs:
    """The tuned SAE probe's inputs (``A(x⁺)`` of every triple, then ``A(x⁻)``) with its texts."""
    texts, _ = triple_texts_spans(analysis.triples)
    n = len(analysis.triples)
    return save_probe_inputs(
        out_dir / artifacts.PROBE_INPUTS_FILE,
        analysis.dataset,
        analysis.widths,
        analysis.probes[artifacts.PRIMARY_PROBE],
        texts=texts[:n] + texts[2 * n :],
    )


def _write_figures(analysis: ProbeAnalysis, out_dir: Path) -> None:
    evals, order = analysis.evals, analysis.order
    figure = plots.predicted_vs_true_figure(
        analysis.true_valence,
        analysis.predictions[artifacts.PRIMARY_PROBE],
        analysis.words,
        title=f"tuned SAE probe: Kendall τ = {evals[artifacts.PRIMARY_PROBE].tau:.2f}",
    )
    save_figure(figure, out_dir / "predicted_vs_true.png")
    figure = plots.word_frequency_figure(
        analysis.frequencies,
        analysis.abs_error,
        analysis.words,
        rho=analysis.rho,
        p_value=analysis.rho_p,
    )
    save_figure(figure, out_dir / "word_frequency.png")
    figure = plots.baselines_figure(
        order,
        [evals[n].tau for n in order],
        [evals[n].tau_ci for n in order],
        [evals[n].p_value for n in order],
    )
    save_figure(figure, out_dir / "baselines.png")
