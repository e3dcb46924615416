"""Run every ratio benchmark (one subprocess each, sequentially) and print the measured ratios.

    python benchmarks/run_all.py [--write benchmarks/RESULTS.md]

Each script measures its variants side by side in one run and prints a ``RESULT`` line; this
collects them into one table. Long end-to-end runs (RLHF, DPO) are separate scripts:
``rlhf_default.py`` and ``bench_dpo_smollm2.py``.
"""

import argparse
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import machine

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_forward.py",
    "bench_capture.py",
    "bench_sae_training.py",
    "bench_memory.py",
    "bench_ablation_generate.py",
    "bench_irl_cached.py",
    "bench_generation.py",
    "bench_ablation_paths.py",
    "bench_kl_finetune.py",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="also write the table and outputs here")
    args = parser.parse_args()
    results, outputs = [], []
    for script in SCRIPTS:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / script)], cwd=HERE, capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        outputs.append((script, seconds, proc.stdout, proc.returncode))
        lines = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith("RESULT")]
        results += [(script, *line[1:]) for line in lines]
        if proc.returncode != 0:
            results.append((script, "script failed", "", "", f"exit {proc.returncode}"))
            print(proc.stderr[-3000:], file=sys.stderr)
        print(f"{script}: {seconds:.0f} s", file=sys.stderr)
    table = ["| script | measured | ratio | target | verdict |", "|---|---|---|---|---|"]
    table += [
        f"| {s} | {name} | {value} | {target} | {verdict} |"
        for s, name, value, target, verdict in results
    ]
    print("\n".join(table))
    if args.write:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        parts = [
            "# Benchmark results",
            "",
            f"Measured {stamp} on {machine()} (no GPU). Each ratio compares variants timed "
            "side by side, interleaved, in one run of one script.",
            "",
            *table,
            "",
        ]
        for script, seconds, stdout, code in outputs:
            parts += [
                f"## {script} ({seconds:.0f} s, exit {code})",
                "",
                "```",
                stdout.strip(),
                "```",
                "",
            ]
        args.write.write_text("\n".join(parts) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
