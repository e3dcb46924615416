"""Generation tokens/s with SAE features ablated (``ablate_features``) vs the clean model.

Same prompts, same number of new tokens (no early stop at EOS), greedy, KV cache on (off with
``--no-kv-cache``). Without ``--sae-dir`` a random SAE-Lens SAE of the right width (d_model ->
2 d_model) is put on each of ``--layers``' MLP outputs; with it, the trained SAEs are used
(hook names from their metadata).

Target (issue 7): ablated >= 0.75x clean.

    python benchmarks/bench_ablation_generate.py [--model smollm2-135m] [--batch 8]
        [--new-tokens 32] [--layers 25,26,27,28,29] [--n-features 20] [--sae-dir DIR ...]
"""

import argparse

import torch
from _common import machine, print_table, report_result, time_interleaved

from lfp_mech import load_model
from lfp_mech.validate import ablate_features

PROMPTS = [
    "The film opens with a long shot of the city",
    "I watched this movie on a rainy afternoon",
    "The director's second feature follows a family",
    "Halfway through the story, the main character",
    "This review contains spoilers about the ending",
    "The cast includes several actors from the stage",
    "Shot on location in a small coastal town,",
    "The soundtrack was written by a composer who",
]


def build_ablations(model, args):
    from sae_lens import SAE, StandardSAE, StandardSAEConfig

    generator = torch.Generator().manual_seed(0)
    ablations = {}
    if args.sae_dir:
        saes = [SAE.load_from_disk(d, device="cpu") for d in args.sae_dir]
    else:
        saes = []
        for layer in (int(x) for x in args.layers.split(",")):
            torch.manual_seed(layer)
            d = model.cfg.d_model
            sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d))
            sae.cfg.metadata.hook_name = f"blocks.{layer}.hook_mlp_out"
            saes.append(sae)
    for sae in saes:
        ids = torch.randperm(int(sae.cfg.d_sae), generator=generator)[: args.n_features]
        ablations[sae.cfg.metadata.hook_name] = (sae.eval(), ids.tolist())
    return ablations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--layers", default="25,26,27,28,29")
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--sae-dir", action="append", default=[])
    parser.add_argument("--no-kv-cache", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    model = load_model(args.model)
    ablations = build_ablations(model, args)
    prompts = (PROMPTS * (args.batch // len(PROMPTS) + 1))[: args.batch]
    kwargs = dict(
        max_new_tokens=args.new_tokens,
        do_sample=False,
        stop_at_eos=False,
        use_past_kv_cache=not args.no_kv_cache,
        verbose=False,
    )

    def clean():
        return model.generate(prompts, **kwargs)

    def ablated():
        with ablate_features(model, ablations):
            return model.generate(prompts, **kwargs)

    differ = sum(a != b for a, b in zip(clean(), ablated(), strict=True))  # also warms up
    seconds = time_interleaved({"ablated": ablated, "clean": clean}, repeats=args.repeats)
    seconds = {"clean": seconds["clean"], "ablated": seconds["ablated"]}
    n_tokens = args.batch * args.new_tokens
    reference = n_tokens / seconds["clean"]
    rows = [(name, n_tokens / s, n_tokens / s / reference) for name, s in seconds.items()]
    hooks = ", ".join(f"{h} ({len(ids)} features)" for h, (_, ids) in ablations.items())
    print(
        f"machine: {machine()}; model {args.model}; batch {args.batch}, "
        f"{args.new_tokens} new tokens, kv cache {not args.no_kv_cache}"
    )
    print(f"ablated: {hooks}; completions changed by the ablation: {differ}/{len(prompts)}")
    print_table("generation tokens/s (ratio to clean)", rows, "tok/s")
    report_result("generation with ablation / without", rows[1][2], 0.75)


if __name__ == "__main__":
    main()
