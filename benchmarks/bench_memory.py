"""Peak RSS of activation capture + SAE training when the number of activations grows 10x.

Each size runs in its own subprocess (fresh interpreter): load the model, capture ``n`` tokens
of one layer to a sharded store, train a small SAE for one epoch over the store, and report the
process's peak RSS during capture + training (``VmHWM``, reset after the model is loaded so the
transient peak of converting the model to TransformerLens does not hide anything; falls back to
``ru_maxrss`` where /proc is missing). Capture streams shards and training streams batches, so
the peak should not follow ``n``. The RSS after loading the model is printed too (the growth
above it is what capture + training add).

Target (issue 5): peak RSS grows < 20% from n to 10n.

    python benchmarks/bench_memory.py [--model smollm2-135m] [--layer 2] [--tokens 4000]
        [--factor 10] [--shard-tokens 2048]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import report_result


def child(args: argparse.Namespace) -> None:
    import random

    import psutil

    from lfp_mech.activations import ActivationConfig, capture_activations
    from lfp_mech.data import load_prompts
    from lfp_mech.models import load_model
    from lfp_mech.saes import SAEConfig, train_saes

    model = load_model(args.model)
    after_load = psutil.Process().memory_info().rss
    peak_reset = _reset_peak_rss()  # measure the peak of capture + training, not of loading
    prompts = load_prompts("reviews", "train")
    rng = random.Random(0)
    texts = [". ".join(rng.sample(prompts, 5)) for _ in range(args.n // 40 + 50)]
    config = ActivationConfig(n_tokens=args.n, shard_tokens=args.shard_tokens, batch_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        store = capture_activations(model, texts, [args.layer], Path(tmp) / "store", config)
        sae_config = SAEConfig(
            batch_size=512, training_tokens=max(512, store.n_tokens), sweep_alphas=()
        )
        train_saes(store, [args.layer], Path(tmp) / "saes", sae_config)
        n_tokens = store.n_tokens
    print(
        json.dumps(
            {
                "n_tokens": n_tokens,
                "peak_mb": _peak_rss_mb(),
                "after_load_mb": after_load / 2**20,
                "peak_reset": peak_reset,
            }
        )
    )


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so loading the model does not count."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    """VmHWM from /proc (resettable), else ru_maxrss (peak since process start)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--shard-tokens", type=int, default=2048)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    results = []
    for n in (args.tokens, args.tokens * args.factor):
        cmd = [sys.executable, __file__, "--child", "--n", str(n), "--model", args.model,
               "--layer", str(args.layer), "--shard-tokens", str(args.shard_tokens)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    small, big = results
    growth = big["peak_mb"] / small["peak_mb"] - 1
    extra_small = small["peak_mb"] - small["after_load_mb"]
    extra_big = big["peak_mb"] - big["after_load_mb"]
    print(f"model {args.model}, layer {args.layer}, shards of {args.shard_tokens} tokens")
    if not all(r["peak_reset"] for r in results):
        print("  (could not reset the peak counter: peaks include model loading)")
    for r in results:
        print(
            f"  {r['n_tokens']:>8} activations: peak RSS {r['peak_mb']:8.1f} MB "
            f"(after model load {r['after_load_mb']:.1f} MB)"
        )
    report_result(
        f"peak RSS growth, capture + training, {args.factor}x activations",
        growth, 0.2, higher_is_better=False,
    )  # fmt: skip
    print(f"peak RSS growth for {args.factor}x activations: {100 * growth:+.1f}% (target < 20%): "
          f"{'OK' if growth < 0.2 else 'ABOVE'}")  # fmt: skip
    print(
        f"capture + training on top of the loaded model: {extra_small:.0f} MB -> {extra_big:.0f} MB"
    )


if __name__ == "__main__":
    main()
