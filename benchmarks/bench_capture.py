"""Activation capture throughput vs a bare TransformerLens forward over the same tokens.

Both sides run the same batches (texts batched and right-padded as the capture does them) up
to the same last layer (``stop_at_layer = max(layers) + 1``); the capture additionally caches
the hooks, drops BOS/padding positions and streams shards to disk. A full forward (all layers
and the unembedding) is shown for reference.

Target (issue 5): capture >= 0.9x the bare forward.

    python benchmarks/bench_capture.py [--model smollm2-135m] [--layers 25,26,27,28,29]
        [--n-texts 64] [--batch 32] [--repeats 2]
"""

import argparse
import random
import tempfile
from pathlib import Path

import torch
from _common import machine, print_table, report_result, time_interleaved

from lfp_mech.activations import ActivationConfig, capture_activations
from lfp_mech.activations.tokenization import pad_batch, tokenize_texts
from lfp_mech.data import load_prompts
from lfp_mech.models import load_model


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Texts of ~40-60 tokens: five review openings joined (like prompt + completion)."""
    prompts = load_prompts("reviews", "train")
    rng = random.Random(seed)
    return [". ".join(rng.sample(prompts, 5)) + "." for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default=None, help="comma-separated (default: last 5)")
    parser.add_argument("--n-texts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = load_model(args.model)
    n_layers = model.cfg.n_layers
    layers = (
        [int(x) for x in args.layers.split(",")]
        if args.layers
        else list(range(max(0, n_layers - 5), n_layers))
    )
    texts = make_texts(args.n_texts)
    config = ActivationConfig(batch_size=args.batch, n_tokens=10**9, shard_tokens=4096)
    ids = tokenize_texts(model.tokenizer, texts, config.context_length)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    bos = model.tokenizer.bos_token_id
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else bos
    batches = [
        pad_batch([ids[i] for i in order[s : s + args.batch]], bos, pad)
        for s in range(0, len(order), args.batch)
    ]
    n_tokens = sum(len(i) for i in ids)  # non-BOS, non-pad tokens: what the capture stores

    def bare(stop_at_layer):
        def run():
            with torch.inference_mode():
                for tokens, mask in batches:
                    model(tokens, attention_mask=mask.long(), stop_at_layer=stop_at_layer)

        return run

    tmp_dir = tempfile.TemporaryDirectory(prefix="bench_capture_")
    tmp = Path(tmp_dir.name)

    def capture():
        store = capture_activations(model, texts, layers, tmp / "store", config)
        assert store.n_tokens == n_tokens

    fns = {
        f"bare TL forward, stop_at_layer={max(layers) + 1}": bare(max(layers) + 1),
        f"capture_activations {layers} (to disk)": capture,
        "bare TL forward, full model": bare(None),
    }
    seconds = time_interleaved(fns, repeats=args.repeats)
    tmp_dir.cleanup()
    reference = n_tokens / seconds[next(iter(fns))]
    rows = [(name, n_tokens / s, n_tokens / s / reference) for name, s in seconds.items()]
    print(f"machine: {machine()}; model {args.model}; {len(texts)} texts, {n_tokens} tokens")
    print_table("tokens/s (ratio to the bare forward with the same stop_at_layer)", rows, "tok/s")
    ratio = rows[1][2]
    report_result("activation capture / bare TL forward", ratio, 0.9)
    print(
        f"\ncapture / bare forward = {ratio:.2f}x (target >= 0.9x): {'OK' if ratio >= 0.9 else 'BELOW'}"
    )


if __name__ == "__main__":
    main()
