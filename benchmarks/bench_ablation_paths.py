"""Validation's generation, old path vs new: TransformerLens ``generate`` with SAE hooks vs the HF
twin with torch hooks (``generate_with_ablation``), on SmolLM2 with review prefixes.

For ``--n`` completions (default 256) per path and condition (clean; ``--n-features`` random
features of a random 4x SAE on ``blocks.{--layer}.hook_mlp_out`` ablated): wall time, mean VADER
reward with its 95% t interval, and distinct-2. The paths draw different random numbers (TL
prepends a BOS and batches in prompt order), so completions differ; the check is that reward
and distinct-2 agree within their intervals.

    python benchmarks/bench_ablation_paths.py [--n 256] [--max-new-tokens 20]
"""

import argparse
import math
import statistics
import time

import torch
from _common import machine, report_result

from lfp_mech.data import load_prompts
from lfp_mech.models import generation
from lfp_mech.models.loading import load_model
from lfp_mech.rewards import vader_reward
from lfp_mech.rlhf.evaluation import distinct_n
from lfp_mech.validate.ablated_generation import generate_with_ablation


def interval(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--layer", type=int, default=27)
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from sae_lens import StandardSAE, StandardSAEConfig

    model = load_model("smollm2-135m")
    twin = generation.hf_twin(model)
    torch.manual_seed(0)
    d = model.cfg.d_model
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=4 * d)).eval()
    hook = f"blocks.{args.layer}.hook_mlp_out"
    feats = torch.randperm(4 * d, generator=torch.Generator().manual_seed(0))[: args.n_features]
    prompts = [" ".join(p.split()[:8]) for p in load_prompts("reviews", "test")]
    prompts = (prompts * (args.n // len(prompts) + 1))[: args.n]
    kwargs = dict(max_new_tokens=args.max_new_tokens, seed=0, batch_size=args.batch)
    print(f"machine: {machine()}; {args.n} completions per cell, {args.max_new_tokens} new tokens")
    ratios = {}
    for condition, ablations in (("clean", None), ("ablated", {hook: (sae, feats.tolist())})):
        seconds = {}
        for path in ("TransformerLens", "HF twin"):
            if path == "TransformerLens":
                generation._TWINS.pop(model, None)
            else:
                generation.register_hf_twin(model, *twin)
            start = time.perf_counter()
            texts = generate_with_ablation(model, prompts, ablations, **kwargs)
            seconds[path] = time.perf_counter() - start
            rewards = vader_reward([p + t for p, t in zip(prompts, texts, strict=True)]).tolist()
            mean, half = interval(rewards)
            print(
                f"{condition:8s} {path:16s} {seconds[path]:7.1f} s  reward {mean:+.3f} ± "
                f"{half:.3f}  distinct-2 {distinct_n(texts, 2):.3f}"
            )
        ratios[condition] = seconds["TransformerLens"] / seconds["HF twin"]
    report_result("validate generation speed-up, clean (HF twin / TL)", ratios["clean"], 1.0)
    report_result("validate generation speed-up, ablated (HF twin / TL)", ratios["ablated"], 1.0)


if __name__ == "__main__":
    main()
