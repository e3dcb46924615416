"""Shared helpers for the benchmark scripts: timing and a printed table of ratios."""

import os
import platform
import statistics
import time
from collections.abc import Callable


def time_rounds(fns: dict[str, Callable[[], object]], repeats: int = 5) -> dict[str, list[float]]:
    """Seconds of each call, per round: every round calls each function once, in turn, so load
    drifts hit all alike and the calls of one round can be compared with each other."""
    for fn in fns.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int = 5) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved (``time_rounds``)."""
    return {name: statistics.median(t) for name, t in time_rounds(fns, repeats).items()}


def machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def print_table(title: str, rows: list[tuple[str, float, float]], unit: str) -> None:
    """rows: (name, value, ratio to the reference)."""
    print(f"\n{title}\n" + "-" * len(title))
    width = max(len(r[0]) for r in rows)
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:10.1f} {unit}   {ratio:5.2f}x")


def report_result(name: str, value: float, target: float, *, higher_is_better: bool = True) -> None:
    """One machine-readable line that run_all.py collects: RESULT, name, value, target, verdict."""
    ok = value >= target if higher_is_better else value < target
    sign = ">=" if higher_is_better else "<"
    print(f"RESULT\t{name}\t{value:.3f}\t{sign} {target:g}\t{'PASS' if ok else 'FAIL'}")
