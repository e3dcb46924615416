"""SAE training tokens/s: lfp_mech.saes.train_sae (SAE-Lens SAETrainer) vs a bare PyTorch loop.

Both train the same SAE (SAE-Lens ``StandardTrainingSAE`` or our tied subclass, same init) on
the same in-memory batches with the same loss (summed MSE + decoder-norm-weighted L1), Adam,
and gradient clipping at 1. The library side also estimates the activation norm (20 batches),
keeps SAE-Lens's feature-firing statistics and folds the normalisation in at the end. Activations
are Gaussian with SmolLM2's width (d_in 576): speed does not depend on their content.

Target (issue 5): >= 0.8x the bare loop.

    python benchmarks/bench_sae_training.py [--d-in 576] [--batch 512] [--steps 200] [--repeats 3]
"""

import argparse

import torch
from _common import machine, print_table, report_result, time_interleaved

from lfp_mech.saes import SAEConfig, build_training_sae, train_sae


def bare_loop(sae, batches, lr: float, l1: float) -> None:
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    sae.train()
    for x in batches:
        features = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
        x_hat = features @ sae.W_dec + sae.b_dec
        mse = (x_hat - x).pow(2).sum(-1).mean()
        sparsity = (features * sae.W_dec.norm(dim=1)).sum(-1).mean()
        loss = mse + l1 * sparsity
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(args.batch, args.d_in, generator=generator) for _ in range(args.steps)]
    n_samples = args.batch * args.steps
    config = SAEConfig(batch_size=args.batch, training_tokens=n_samples, l1_coefficient=6e-4)
    alpha = config.l1_coefficient

    def ours(tied: bool, factor: int):
        return lambda: train_sae(
            lambda epoch: iter(batches), args.d_in, factor * args.d_in, config, tied=tied
        )

    def bare(tied: bool, factor: int):
        def run():
            sae = build_training_sae(
                args.d_in, factor * args.d_in, tied=tied, alpha=alpha, config=config,
                n_steps=args.steps,
            )  # fmt: skip
            bare_loop(sae, batches, config.lr, alpha * args.d_in)

        return run

    print(f"machine: {machine()}; batch {args.batch}, {args.steps} steps")
    worst = float("inf")
    for tied in (True, False):
        for factor in (1, 2):
            fns = {
                "bare PyTorch loop": bare(tied, factor),
                "train_sae (SAETrainer)": ours(tied, factor),
            }
            seconds = time_interleaved(fns, repeats=args.repeats)
            reference = n_samples / seconds["bare PyTorch loop"]
            rows = [(n, n_samples / s, n_samples / s / reference) for n, s in seconds.items()]
            worst = min(worst, rows[1][2])
            variant = "tied" if tied else "untied"
            print_table(
                f"{variant} {args.d_in}->{factor * args.d_in}: samples/s", rows, "samples/s"
            )
    report_result("SAE training (lfp_mech) / bare PyTorch loop, worst", worst, 0.8)
    print(
        f"\nworst train_sae / bare loop = {worst:.2f}x (target >= 0.8x): {'OK' if worst >= 0.8 else 'BELOW'}"
    )


if __name__ == "__main__":
    main()
