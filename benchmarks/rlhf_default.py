"""The default RLHF run on the real SmolLM2-135M (GRPO, VADER reward) and its must-show checks.

Runs ``lfp_mech.rlhf.train_and_evaluate`` (the rlhf stage outside a run) with the default
``RLHFConfig`` (any field can be overridden with ``--set key=value``), then checks the targets:

* tuned mean VADER reward >= base + 0.5 on >= 256 held-out prompts, 95% CIs not overlapping;
* distinct-2 of the tuned completions >= 0.6;
* training within 15 minutes of wall clock; peak RSS < 6 GB;
* the tuned checkpoint loads into TransformerLens with log-prob parity < 1e-3.

    python benchmarks/rlhf_default.py [--out runs/rlhf_default] [--set max_steps=40 ...]

A rerun with the same --out resumes training from its checkpoints.
"""

import argparse
import logging
from pathlib import Path

from _common import machine

from lfp_mech.models import load_hf_model, load_model, logprob_parity, parity_tokens
from lfp_mech.rlhf import train_and_evaluate
from lfp_mech.runner.config import parse_args, set_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="runs/rlhf_default")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="an rlhf option"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # the run config's parser: the same types, checks and one-line errors as `lfp-mech run`
    config = parse_args(set_args([f"rlhf.{item}" for item in args.set])).stages.rlhf
    print(f"machine: {machine()}\nconfig: {config}")

    summary = train_and_evaluate(args.model, Path(args.out), config)
    hf, tokenizer = load_hf_model(summary["policy_dir"])
    parity = logprob_parity(hf, load_model(summary["policy_dir"]), parity_tokens(tokenizer))

    gain = summary["reward_gain"]
    checks = {
        f"held-out prompts >= 256 ({summary['n_eval_prompts']})": summary["n_eval_prompts"] >= 256,
        f"reward gain >= 0.5 ({gain:+.3f})": gain >= 0.5,
        f"95% CIs do not overlap (base {summary['base_reward_ci95']}, tuned "
        f"{summary['tuned_reward_ci95']})": not summary["ci_overlap"],
        f"tuned distinct-2 >= 0.6 ({summary['tuned_distinct_2']:.3f})": summary["tuned_distinct_2"]
        >= 0.6,
        f"training <= 15 min ({summary['train_seconds'] / 60:.1f} min, {summary['steps']} steps, "
        f"stop: {summary['stop_reason']})": summary["train_seconds"] <= 15 * 60,
        f"peak RSS < 6 GB ({summary['peak_rss_gb']:.2f} GB)": summary["peak_rss_gb"] < 6,
        f"TL log-prob parity < 1e-3 ({parity:.2e})": parity < 1e-3,
    }
    print(
        f"\nbase  reward {summary['base_reward']:+.3f}  distinct-2 {summary['base_distinct_2']:.3f}"
    )
    print(
        f"tuned reward {summary['tuned_reward']:+.3f}  distinct-2 {summary['tuned_distinct_2']:.3f}"
    )
    for name, ok in checks.items():
        print(f"[{'PASS' if ok else 'FAIL'}] {name}")
    print(f"artifacts: {args.out}/ (eval.md, reward_curve.png, train_log.csv, summary.json)")
    raise SystemExit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
