"""Time the IRL stage's pieces on SmolLM2-135M and project the default stage's wall time.

Measures, on a small slice (< 3 min on 2 cores):

1. greedy demonstration generation (left-padded batches, KV cache), per prompt;
2. caching the hidden states of the frozen blocks (``RewardModel.encode``), per text;
3. time per epoch (train on the pairs + score every text for evaluation) for the training
   modes: full fine-tuning (paper), cached with 2 and 1 trainable blocks, head only on the last
   block, and the default (head only, on the readouts after blocks ``IRLConfig().n_layers``
   and ``IRLConfig().context_layer``);
4. cached-vs-full reward parity on the real model (max |Δ reward|).

Then projects the default preset (``IRLConfig()``): 2 models' demonstrations + one encode pass +
n_seeds × n_epochs epochs. Run::

    .venv/bin/python benchmarks/bench_irl_cached.py [--pairs 16]
"""

import argparse
import os
import time

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pairs", type=int, default=16, help="training pairs in the slice")
    parser.add_argument("--gen-prompts", type=int, default=32, help="prompts generated")
    parser.add_argument("--skip-full", action="store_true", help="skip the full fine-tuning mode")
    args = parser.parse_args()

    from lfp_mech.data import load_prompts
    from lfp_mech.irl import IRLConfig, RewardModel, generate_completions, train_epoch
    from lfp_mech.models import load_hf_model

    default = IRLConfig()
    torch.manual_seed(0)
    t = time.perf_counter()
    hf, tok = load_hf_model(args.model)
    print(f"load {args.model}: {time.perf_counter() - t:.1f} s")

    # 1. generation --------------------------------------------------------------------
    prompts = load_prompts("reviews", "train", n=args.gen_prompts, seed=0)
    t = time.perf_counter()
    completions = generate_completions(
        hf, tok, prompts, max_new_tokens=default.max_new_tokens, batch_size=default.gen_batch_size
    )
    gen_s = time.perf_counter() - t
    gen_per_prompt = gen_s / len(prompts)
    print(
        f"generate: {len(prompts)} prompts x {default.max_new_tokens} new tokens, batch "
        f"{default.gen_batch_size}: {gen_s:.1f} s ({gen_per_prompt:.3f} s/prompt)"
    )

    # synthetic pairs (timing only): base completions vs the same with a positive sentence
    n = min(args.pairs, len(prompts))
    non_expert = [p + c for p, c in zip(prompts[:n], completions[:n], strict=True)]
    expert = [t + " I loved it, a wonderful film." for t in non_expert]
    texts = expert + non_expert
    pairs = torch.stack([torch.arange(n), torch.arange(n, 2 * n)], dim=1)
    n_tokens = sum(len(tok(x).input_ids) for x in texts) + len(texts)
    print(f"slice: {n} pairs, {len(texts)} texts, {n_tokens / len(texts):.1f} tokens/text")

    # 2-4. modes -------------------------------------------------------------------------
    readouts = f"blocks {default.n_layers} + {default.context_layer}"
    modes = [
        ("cached, 2 blocks", "cached", 2, None, None),
        ("cached, 1 block", "cached", 1, None, None),
        ("head only", "cached", 0, None, None),
        (f"default: head, {readouts}", "cached", 0, default.n_layers, default.context_layer),
    ]
    if not args.skip_full:
        modes.append(("full fine-tuning", "full", 0, None, None))
    results = {}
    reference = None
    for label, mode, blocks, n_layers, context_layer in modes:
        rm = RewardModel.from_base(
            (hf, tok),
            mode=mode,
            n_trainable_blocks=blocks,
            pooling=default.pooling,
            n_layers=n_layers,
            context_layer=context_layer,
        )
        rm.reset(seed=0)
        t = time.perf_counter()
        inputs = rm.encode(texts, batch_size=default.eval_batch_size)
        encode_s = time.perf_counter() - t
        config = IRLConfig(batch_size=default.batch_size, lr=default.lr, context_layer=None)
        optimizer = torch.optim.Adam([p for p in rm.parameters() if p.requires_grad], lr=config.lr)
        t = time.perf_counter()
        train_epoch(rm, optimizer, inputs, pairs, config, torch.Generator().manual_seed(0))
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        scores = rm.score_inputs(inputs, batch_size=config.eval_batch_size)
        eval_s = time.perf_counter() - t
        if mode == "cached" and blocks == 2 and n_layers is None:
            rm.reset(seed=0)
            before = rm.score_inputs(inputs, batch_size=config.eval_batch_size)
            reference = (before - rm.score(texts)).abs().max().item()
        n_trainable = sum(p.numel() for p in rm.parameters() if p.requires_grad)
        results[label] = dict(
            encode_per_text=encode_s / len(texts),
            train_per_pair=train_s / n,
            eval_per_text=eval_s / len(texts),
            trainable=n_trainable,
        )
        print(
            f"{label:30s} trainable {n_trainable / 1e6:7.2f} M | encode {encode_s:6.1f} s | "
            f"train epoch {train_s:6.1f} s | eval {eval_s:5.1f} s | "
            f"scores std {scores.std():.3f}"
        )
        del rm, optimizer, inputs
    print(
        f"cached(2 blocks) vs full-model reward, same weights ({default.pooling} pooling): "
        f"max |diff| = {reference:.2e}"
    )

    # projection --------------------------------------------------------------------------
    d = default
    n_texts = 2 * d.n_train_prompts + 2 * d.n_test_prompts + d.n_other_texts
    gen_total = 2 * (d.n_train_prompts + d.n_test_prompts) * gen_per_prompt
    print(
        f"\nprojection for IRLConfig() = {d.n_train_prompts}/{d.n_test_prompts} prompts, "
        f"{d.max_new_tokens} new tokens, {d.n_other_texts} other texts, {d.n_seeds} seeds x "
        f"{d.n_epochs} epochs (texts here ~ as long as the default's):"
    )
    print(f"  demonstrations (2 models): {gen_total:6.0f} s")
    print("| mode | s / epoch (train + eval) | encode once | seeds x epochs | stage total |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        epoch = r["train_per_pair"] * d.n_train_prompts + r["eval_per_text"] * n_texts
        encode = r["encode_per_text"] * n_texts
        runs = epoch * d.n_seeds * d.n_epochs
        total = gen_total + encode + runs
        print(f"| {label} | {epoch:.1f} | {encode:.0f} s | {runs:.0f} s | {total / 60:.1f} min |")


if __name__ == "__main__":
    main()
