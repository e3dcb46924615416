"""The smoke preset's key results, read from a finished run directory with :func:`lfp_mech.load_run`.

``tests/golden/smoke.json`` pins them (written by ``python tests/golden_numbers.py RUN_DIR``);
``test_golden_smoke.py`` checks a fresh smoke run against it, so a silent change in results fails
a test (as dictionary_learning's ``EXPECTED_RESULTS`` do).
"""

import json
import sys
from pathlib import Path
from typing import Any

from lfp_mech import load_run


def golden_numbers(run_dir: str | Path) -> dict[str, Any]:
    """``{quantity: number or list}`` of the run's headline results, stage by stage."""
    run = load_run(run_dir)
    out: dict[str, Any] = {}
    rlhf = run.rlhf.summary
    for key in ("base_reward", "tuned_reward", "final_train_reward", "tuned_distinct_2"):
        out[f"rlhf.{key}"] = rlhf[key]
    out["divergence.top_layers"] = run.divergence.top_layers
    out["divergence.top_divergence"] = run.divergence.summary["top_divergence"]
    for row in run.saes.metrics.itertuples():
        model = "" if getattr(row, "model", "tuned") == "tuned" else f"{row.model}."
        name = f"saes.{model}L{row.layer}_{row.size}_{row.variant}"
        for key in ("fvu", "l0", "dead_fraction", "delta_lm_loss"):
            out[f"{name}.{key}"] = float(getattr(row, key))
        # not the CE loss recovered: the tiny random model's zero-ablation gap is ~1e-4 nats,
        # so the ratio would pin float32 rounding (it moved 0.1-0.6% between two CPUs)
        out[f"{name}.ce_gap"] = float(row.ce_zero - row.ce_clean)
    sweep = run.saes.l1_sweep
    for row in [] if sweep is None else sweep.itertuples():
        out[f"saes.sweep_{row.alpha:g}.fvu"] = float(row.fvu)
        out[f"saes.sweep_{row.alpha:g}.l0"] = float(row.l0)
    probes = run.probes.summary
    metrics = ("tau", "sign_acc_positive", "sign_acc_negative", "tau_positive", "tau_negative")
    for metric in metrics:
        for probe, value in sorted(probes[metric].items()):
            out[f"probes.{metric}.{probe}"] = value
    out["probes.tau_sign_only"] = probes["tau_sign_only"]
    for row in run.validate.ablation.itertuples():
        out[f"validate.{row.model}_{row.condition}.mean_reward"] = float(row.mean_reward)
        out[f"validate.{row.model}_{row.condition}.n_features"] = int(row.n_features)
    validate = run.validate.summary
    out["validate.n_task_related"] = validate["n_task_related"]
    for key, value in sorted(validate["activation_frequency_ratio"].items()):
        out[f"validate.activation_frequency_ratio.{key}"] = value
    diff = run.diff
    out["diff.layers"] = list(diff.summary["layers"])
    for layer, block in diff.summary["blocks"].items():
        out[f"diff.block{layer}.fvu"] = block["fvu"]
    out["diff.n_features"] = diff.summary["n_features"]
    # the smoke policy's completions are the same in every condition (the tiny model's reward
    # and samples barely move), so the teacher-forced ranking pins the intervention hooks: the
    # latents ranked first and Σ KL(p_base ‖ p_tuned) on the corpus with the top n ablated
    top = diff.summary["top_features"][:5]
    out["diff.top_features"] = [[f["layer"], *f["latents"]] for f in top]
    for n, kl in diff.summary["attribution_kl"].items():
        if int(n) > 0:  # n = 0: the smoke policy is ~the base model (~1e-3 nats), i.e. rounding
            out[f"diff.attribution_kl.top{n}"] = kl
    for row in diff.interventions.itertuples():
        out[f"diff.{row.condition}.reward"] = float(row.reward)
    for task in ("vader", "toxicity"):
        irl = run.irl.task(task)
        final = irl.summary["final_epoch"]
        for key in ("acc", "f1", "spearman"):
            out[f"irl.{task}.{key}_median"] = final[key]["median"]
        out[f"irl.{task}.best_acc"] = irl.summary["best_run"]["acc"]
        ceiling = irl.summary["supervised_ceiling"]["acc"]
        out[f"irl.{task}.supervised_ceiling_acc"] = float("nan") if ceiling is None else ceiling
        for row in irl.runs.itertuples():
            out[f"irl.{task}.seed{row.seed}_epoch{row.epoch}.acc"] = float(row.acc)
    for row in run.irl.irl_rlhf("vader").itertuples():
        out[f"irl.irl_rlhf.{row.policy}.mean_reward"] = float(row.mean_reward)
    return out


if __name__ == "__main__":
    numbers = golden_numbers(sys.argv[1])
    target = Path(__file__).parent / "golden" / "smoke.json"
    target.write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(numbers)} numbers -> {target}")  # noqa: T201 (a script)
