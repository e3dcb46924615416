"""The offline DPO path on the real SmolLM2-135M: no hub, a few dozen steps on CPU.

1. Sample ``--samples`` completions (8–20 tokens) per training prompt from the base model and
   rank them by the VADER reward: best vs worst form a preference pair.
2. Train with TRL's DPOTrainer for ``--steps`` steps (batch 8, lr 3e-5, beta 0.1: the paper's
   DPO settings apart from the step count).
3. Evaluate base and tuned on ``--eval`` held-out prompts (mean VADER reward with 95% CI,
   distinct-2) and print times.

    python benchmarks/bench_dpo_smollm2.py [--steps 40] [--pair-prompts 64] [--samples 4] \
        [--eval 128] [--out runs/bench_dpo]

Reruns with the same --out reuse the sampled pairs and resume training from its checkpoints.
"""

import argparse
import json
import logging
import resource
import time
from pathlib import Path

from _common import machine

from lfp_mech.data import load_prompts
from lfp_mech.rewards import vader_reward
from lfp_mech.rlhf import (
    DPOConfigLite,
    compare_policies,
    evaluate_policy,
    make_preference_pairs,
    train_dpo,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--pair-prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--eval", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_dpo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")

    train = load_prompts("reviews", "train", n=args.pair_prompts, seed=args.seed)
    held_out = load_prompts("reviews", "test")[: args.eval]

    t0 = time.perf_counter()
    pairs_path = out / "pairs.json"
    if pairs_path.exists():
        pairs = json.loads(pairs_path.read_text())
    else:
        pairs = make_preference_pairs(args.model, train, vader_reward, args.samples, seed=args.seed)
        pairs_path.write_text(json.dumps(pairs, indent=1))
    t_pairs = time.perf_counter() - t0
    margin = sum(p["chosen_reward"] - p["rejected_reward"] for p in pairs) / len(pairs)

    t0 = time.perf_counter()
    config = DPOConfigLite(
        learning_rate=args.lr, beta=args.beta, max_steps=args.steps, seed=args.seed,
        save_steps=max(args.steps // 2, 1),
    )  # fmt: skip
    policy = train_dpo(args.model, pairs, config, out)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    kwargs = dict(n_new_tokens=20, min_new_tokens=8, seed=args.seed)
    base = evaluate_policy(args.model, held_out, vader_reward, name="base", **kwargs)
    tuned = evaluate_policy(policy, held_out, vader_reward, name="dpo", **kwargs)
    compare_policies([base, tuned], out)
    t_eval = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    print(f"\npairs: {len(pairs)} from {len(train)} prompts x {args.samples} samples, "
          f"mean reward margin {margin:.2f}  ({t_pairs:.0f} s)")  # fmt: skip
    print(f"DPO: {args.steps} steps in {t_train:.0f} s ({t_train / args.steps:.1f} s/step)")
    print(f"eval ({len(held_out)} held-out prompts, {t_eval:.0f} s):")
    for ev in (base, tuned):
        print(f"  {ev.name:<5} VADER reward {ev.mean_reward:+.3f}  95% CI "
              f"[{ev.ci_low:+.3f}, {ev.ci_high:+.3f}]  distinct-2 {ev.distinct_2:.3f}  "
              f"length {ev.mean_length:.1f}")  # fmt: skip
    print(f"  gain {tuned.mean_reward - base.mean_reward:+.3f}; peak RSS {peak_gb:.2f} GB")
    print(f"table: {out / 'eval.md'}")


if __name__ == "__main__":
    main()
