"""Peak RSS of activation capture + SAE training when the number of activations grows 10x.

Each size runs in its own subprocess (fresh interpreter): load the model, capture ``n`` tokens
of one layer to a sharded store, train a small SAE for one epoch over the store. Capture streams
shards and training streams batches, so the peak should not follow ``n``.

Making the two processes comparable: loading converts the HF model to TransformerLens, and the
freed HF weights stay in the malloc heap or not depending on whether glibc happened to trim it
(the baseline used to differ by ~450 MB between two runs of the same script). So after loading,
the child runs ``gc.collect()`` and ``malloc_trim(0)``, takes that as the baseline, and resets
the kernel's peak-RSS counter (``VmHWM``) there. It then reports:

* **total peak RSS** of capture + training: ``VmHWM`` (exact, kernel-kept; anonymous + file
  pages). Target (issue 5): it grows < 20% from n to 10n.
* **anonymous peak above the baseline**: ``RssAnon`` (heap, tensors) sampled every 2 ms by a
  background thread, per phase, minus ``RssAnon`` at the baseline. It includes free memory
  that malloc keeps for reuse, so the **live malloc heap** (glibc ``mallinfo2``: bytes handed
  out and not freed) is sampled too: what capture + training really hold. File-backed pages
  (``RssFile``: shared libraries, mmap'd safetensors shards) are reported apart; they are
  reclaimable page cache, not a leak.

    python benchmarks/bench_memory.py [--model smollm2-135m] [--layer 2] [--tokens 4000]
        [--factor 10] [--shard-tokens 2048]
"""

import argparse
import ctypes
import ctypes.util
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import report_result

STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


LIBC = _libc()


def child(args: argparse.Namespace) -> None:
    import random

    from lfp_mech.activations import ActivationConfig, capture_activations
    from lfp_mech.data import load_prompts
    from lfp_mech.models import load_model
    from lfp_mech.saes import SAEConfig, train_saes

    model = load_model(args.model)
    loaded = _status()
    trimmed = _release_freed_memory()
    baseline = _status()
    peak_reset = _reset_peak_rss()  # measure the peak of capture + training, not of loading
    sampler = _Sampler()
    sampler.start()
    prompts = load_prompts("reviews", "train")
    rng = random.Random(0)
    texts = [". ".join(rng.sample(prompts, 5)) for _ in range(args.n // 40 + 50)]
    config = ActivationConfig(n_tokens=args.n, shard_tokens=args.shard_tokens, batch_size=32)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        sampler.phase, start = "capture", time.perf_counter()
        store = capture_activations(model, texts, [args.layer], Path(tmp) / "store", config)
        sampler.phase, seconds["capture"] = "training", time.perf_counter() - start
        sae_config = SAEConfig(
            batch_size=512, training_tokens=max(512, store.n_tokens), sweep_alphas=()
        )
        start = time.perf_counter()
        train_saes(store, [args.layer], Path(tmp) / "saes", sae_config)
        seconds["training"] = time.perf_counter() - start
        n_tokens, d_in = store.n_tokens, store.d_in
    sampler.stop()
    end = _status()
    print(
        json.dumps(
            {
                "n_tokens": n_tokens,
                "d_in": d_in,
                "loaded_mb": loaded.get("VmRSS"),
                "trimmed": trimmed,
                "baseline": baseline,
                "peak_reset": peak_reset,
                "peak_total_mb": end["VmHWM"],
                "peaks": sampler.peaks,
                "seconds": seconds,
            }
        )
    )


class _Sampler(threading.Thread):
    """Peak of each /proc/self/status field, per phase, sampled every 2 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.phase = "capture"
        self.peaks: dict[str, dict[str, float]] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self._sample()
            time.sleep(0.002)

    def _sample(self) -> None:
        peaks = self.peaks.setdefault(self.phase, {})
        for key, value in _status().items():
            peaks[key] = max(peaks.get(key, 0.0), value)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self._sample()


def _status() -> dict[str, float]:
    """The memory fields of /proc/self/status in MB (Linux only: RssAnon/RssFile need /proc),
    plus ``HeapLive``: bytes malloc has handed out and not got back (glibc ``mallinfo2``,
    all arenas, mmap'd blocks included), i.e. the live heap without the free memory malloc
    keeps."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_FIELDS:
            fields[key] = int(value.split()[0]) / 1024
    if LIBC is not None:
        info = LIBC.mallinfo2()
        fields["HeapLive"] = (info.uordblks + info.hblkhd) / 2**20
    return fields


def _release_freed_memory() -> bool:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    if LIBC is None:
        return False
    LIBC.malloc_trim(0)
    return True


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so loading the model does not count."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


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
    print(f"model {args.model}, layer {args.layer}, shards of {args.shard_tokens} tokens")
    if not all(r["peak_reset"] for r in results):
        print("  (could not reset the peak counter: total peaks include model loading)")
    if not all(r["trimmed"] for r in results):
        print("  (no malloc_trim: the baselines may include the freed HF model)")
    baselines = [r["baseline"]["VmRSS"] for r in results]
    if max(baselines) > 1.02 * min(baselines):
        print(f"  (baselines differ by more than 2%: {baselines}; totals are not comparable)")
    above: dict[str, list[float]] = {}
    for r in results:
        base = r["baseline"]
        timing = ", ".join(f"{phase} {t:.0f} s" for phase, t in r["seconds"].items())
        print(f"  {r['n_tokens']} activations ({timing}):")
        print(
            f"    total peak RSS {r['peak_total_mb']:.1f} MB (baseline after loading "
            f"{base['VmRSS']:.1f}; before gc + malloc_trim {r['loaded_mb']:.1f})"
        )
        for key, label in (
            ("RssAnon", "anonymous RSS"),
            ("HeapLive", "live malloc heap"),
            ("RssFile", "file-backed RSS"),
        ):
            if key not in base:
                continue
            phases = {phase: p[key] - base[key] for phase, p in r["peaks"].items()}
            peak = max(phases.values())
            above.setdefault(key, []).append(peak)
            detail = ", ".join(f"{phase} {mb:.1f}" for phase, mb in phases.items())
            print(f"    {label} above baseline: peak {peak:.1f} MB ({detail})")
    small, big = results
    growth = big["peak_total_mb"] / small["peak_total_mb"] - 1
    report_result(
        f"peak RSS growth, capture + training, {args.factor}x activations",
        growth, 0.2, higher_is_better=False,
    )  # fmt: skip
    print(
        f"total peak RSS {small['peak_total_mb']:.0f} -> {big['peak_total_mb']:.0f} MB for "
        f"{args.factor}x activations: {100 * growth:+.1f}% (target < 20%): "
        f"{'OK' if growth < 0.2 else 'ABOVE'}"
    )
    added = big["n_tokens"] - small["n_tokens"]
    for key, label in (("RssAnon", "anonymous RSS"), ("HeapLive", "live malloc heap")):
        if len(above.get(key, [])) == 2:
            small_mb, big_mb = above[key]
            print(
                f"{label} above the post-load baseline: {small_mb:.1f} -> {big_mb:.1f} MB "
                f"({big_mb - small_mb:+.1f} MB)"
            )
    print(
        f"(the {added} extra activations alone would be {added * big['d_in'] * 4 / 2**20:.0f} MB: "
        f"float32, width {big['d_in']})"
    )


if __name__ == "__main__":
    main()
