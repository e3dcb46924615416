"""Tokens/s of an HF forward, a TransformerLens forward, and TL ``run_with_cache`` restricted to
the MLP outputs of 5 layers (stopping after the last one), on the same batch.

Target (issue 3): run_with_cache (5 MLP hooks) >= 0.9x the HF forward.

    python benchmarks/bench_forward.py [--model smollm2-135m] [--batch 16] [--seq 64]
"""

import argparse

import torch
from _common import machine, print_table, report_result, time_interleaved

from lfp_mech import hooked_from_hf, load_hf_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    hf_model, tokenizer = load_hf_model(args.model)
    hooked = hooked_from_hf(hf_model, tokenizer)
    n_layers = hooked.cfg.n_layers
    tokens = torch.randint(3, hooked.cfg.d_vocab, (args.batch, args.seq))
    n_tokens = tokens.numel()

    def capture(layers):
        names = {f"blocks.{i}.hook_mlp_out" for i in layers}

        def run():
            hooked.run_with_cache(
                tokens, names_filter=lambda n: n in names, stop_at_layer=max(layers) + 1
            )

        return run

    deep = list(range(n_layers - 5, n_layers))
    mid = [n_layers // 2 - 4 + 2 * i for i in range(5)]
    with torch.inference_mode():
        seconds = time_interleaved(
            {
                "HF forward": lambda: hf_model(tokens),
                "TL forward": lambda: hooked(tokens),
                f"TL run_with_cache mlp_out {deep}": capture(deep),
                f"TL run_with_cache mlp_out {mid}": capture(mid),
            },
            repeats=args.repeats,
        )
    reference = n_tokens / seconds["HF forward"]
    rows = [(name, n_tokens / s, n_tokens / s / reference) for name, s in seconds.items()]
    print(f"machine: {machine()}; model {args.model}; batch {args.batch}x{args.seq}")
    print_table("tokens/s (ratio to HF forward)", rows, "tok/s")
    report_result(
        "TL run_with_cache (5 deepest mlp_out) / HF forward",
        rows[2][2], 0.9,
    )  # fmt: skip


if __name__ == "__main__":
    main()
