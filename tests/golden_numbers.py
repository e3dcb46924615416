"""The smoke preset's key results, read from a finished run directory.

``tests/golden/smoke.json`` pins them (written by ``python tests/golden_numbers.py RUN_DIR``);
``test_golden_smoke.py`` checks a fresh smoke run against it, so a silent change in results fails
a test (as dictionary_learning's ``EXPECTED_RESULTS`` do).
"""

import csv
import json
import sys
from pathlib import Path
from typing import Any


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def golden_numbers(run_dir: str | Path) -> dict[str, Any]:
    """``{quantity: number or list}`` of the run's headline results, stage by stage."""
    run = Path(run_dir)
    out: dict[str, Any] = {}
    rlhf = _json(run / "rlhf" / "summary.json")
    for key in ("base_reward", "tuned_reward", "final_train_reward", "tuned_distinct_2"):
        out[f"rlhf.{key}"] = rlhf[key]
    divergence = _json(run / "divergence" / "summary.json")
    out["divergence.top_layers"] = divergence["top_layers"]
    out["divergence.top_divergence"] = divergence["top_divergence"]
    for row in _csv(run / "saes" / "metrics.csv"):
        name = f"saes.L{row['layer']}_{row['size']}_{row['variant']}"
        for key in ("fvu", "l0", "dead_fraction", "ce_recovered"):
            out[f"{name}.{key}"] = float(row[key])
    for row in _csv(run / "saes" / "l1_sweep.csv"):
        out[f"saes.sweep_{row['alpha']}.fvu"] = float(row["fvu"])
        out[f"saes.sweep_{row['alpha']}.l0"] = float(row["l0"])
    probes = _json(run / "probes" / "summary.json")
    for metric in ("tau", "sign_acc_positive", "sign_acc_negative"):
        for probe, value in sorted(probes[metric].items()):
            out[f"probes.{metric}.{probe}"] = value
    for row in _csv(run / "validate" / "ablation.csv"):
        out[f"validate.{row['model']}_{row['condition']}.mean_reward"] = float(row["mean_reward"])
        out[f"validate.{row['model']}_{row['condition']}.n_features"] = int(row["n_features"])
    validate = _json(run / "validate" / "summary.json")
    out["validate.n_task_related"] = validate["n_task_related"]
    for key, value in sorted(validate["activation_frequency_ratio"].items()):
        out[f"validate.activation_frequency_ratio.{key}"] = value
    for task in ("vader", "toxicity"):
        irl = _json(run / "irl" / task / "summary.json")
        for key in ("acc", "f1", "spearman"):
            out[f"irl.{task}.{key}_median"] = irl["final_epoch"][key]["median"]
        out[f"irl.{task}.best_acc"] = irl["best_run"]["acc"]
        out[f"irl.{task}.supervised_ceiling_acc"] = irl["supervised_ceiling"]["acc"]
        for row in _csv(run / "irl" / task / "irl_runs.csv"):
            out[f"irl.{task}.seed{row['seed']}_epoch{row['epoch']}.acc"] = float(row["acc"])
    for row in _csv(run / "irl" / "irl_rlhf" / "irl_rlhf.csv"):
        out[f"irl.irl_rlhf.{row['policy']}.mean_reward"] = float(row["mean_reward"])
    return out


if __name__ == "__main__":
    numbers = golden_numbers(sys.argv[1])
    target = Path(__file__).parent / "golden" / "smoke.json"
    target.write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(numbers)} numbers -> {target}")  # noqa: T201 (a script)
