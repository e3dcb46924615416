"""The KL fine-tune of several dictionaries of one model: together, sharing each batch's clean
pass, against one dictionary at a time.

[`kl_finetune_decoders`][lfp_mech.saes.finetune.kl_finetune_decoders] fine-tunes the decoders of
dictionaries on different hooks of one model in one loop: each batch's clean forward pass (the
next-token distribution every dictionary's KL is measured against, and the residual stream each
one's spliced run starts from) is computed once, not once per dictionary. Each dictionary's
steps are those it takes alone, so the two paths end at the same decoders (checked here).

Random SAE-Lens TopK SAEs (``k`` = 64, ``--sae-width`` x d_model latents) on ``--layers``'
``hook_mlp_out``; ``--texts`` texts of ~40 tokens (review prefixes joined), batches of 16, one
epoch, lr 1e-4 — the saes stage's settings. Timed side by side, interleaved (``--repeats``
rounds): ``one at a time`` calls
[`kl_finetune_decoder`][lfp_mech.saes.finetune.kl_finetune_decoder] per dictionary,
``together`` one call for all. Target: together / one at a time < 0.8 of the time.

    python benchmarks/bench_kl_finetune.py [--model smollm2-135m] [--layers 21,22,23]
"""

import argparse
import copy
import statistics

import torch
from _common import machine, print_table, report_result, time_rounds

from lfp_mech import load_model
from lfp_mech.data import load_prompts
from lfp_mech.saes.finetune import kl_finetune_decoder, kl_finetune_decoders


def random_saes(d_model: int, layers: list[int], width: int) -> dict[str, object]:
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    return {
        f"blocks.{layer}.hook_mlp_out": TopKSAE(
            TopKSAEConfig(d_in=d_model, d_sae=width * d_model, k=64)
        ).eval()
        for layer in layers
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="21,22,23")
    parser.add_argument("--sae-width", type=int, default=4)
    parser.add_argument("--texts", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model = load_model(args.model)
    layers = [int(layer) for layer in args.layers.split(",")]
    prompts = load_prompts("reviews", "train")
    texts = [". ".join(prompts[i : i + 5]) for i in range(0, 5 * args.texts, 5)]
    saes = random_saes(model.cfg.d_model, layers, args.sae_width)
    options = dict(lr=1e-4, batch_size=16, epochs=1, context_length=128, seed=0)
    results: dict[str, dict[str, object]] = {}

    def one_at_a_time() -> None:
        copies = copy.deepcopy(saes)
        for hook, sae in copies.items():
            kl_finetune_decoder(model, hook, sae, texts, **options)
        results["one at a time"] = copies

    def together() -> None:
        copies = copy.deepcopy(saes)
        kl_finetune_decoders(model, copies, texts, **options)
        results["together"] = copies

    print(f"machine: {machine()}; model {args.model}; {len(layers)} dictionaries; ")
    print(f"{len(texts)} texts, batches of 16, one epoch; {args.repeats} rounds")
    rounds = time_rounds({"one at a time": one_at_a_time, "together": together}, args.repeats)
    seconds = {name: statistics.median(values) for name, values in rounds.items()}
    reference = seconds["one at a time"]
    rows = [(name, value, value / reference) for name, value in seconds.items()]
    print_table("seconds per fine-tune of all dictionaries (ratio to one at a time)", rows, "s")
    print("rounds:", {name: [round(v, 1) for v in values] for name, values in rounds.items()})
    same = all(
        torch.allclose(results["together"][hook].W_dec, results["one at a time"][hook].W_dec,
                       atol=1e-5)
        for hook in saes
    )  # fmt: skip
    print(f"same decoders (allclose, atol 1e-5): {same}")
    report_result("KL fine-tune: same decoders together and one at a time", float(same), 1.0)
    report_result(
        "KL fine-tune: together / one at a time (seconds)",
        seconds["together"] / reference,
        0.8,
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
