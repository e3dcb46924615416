"""What the saes-stage tests share: a run directory holding what the stage reads."""

from pathlib import Path

from lfp_mech.activations import ActivationConfig, capture_activations
from lfp_mech.data import load_prompts


def saes_stage_inputs(tiny_hf, tiny_model, run_dir: Path) -> Path:
    """``run_dir`` with the tuned policy (tiny-llama) and train / held-out activation stores of
    its blocks 0 and 1: what the saes stage reads."""
    hf, tok = tiny_hf
    hf.save_pretrained(run_dir / "rlhf" / "policy")
    tok.save_pretrained(run_dir / "rlhf" / "policy")
    prompts = load_prompts("reviews", "train")
    acts, config = run_dir / "activations", ActivationConfig(shard_tokens=1024)
    capture_activations(tiny_model, prompts[:400], [0, 1], acts / "train", config)
    capture_activations(tiny_model, prompts[400:520], [0, 1], acts / "heldout", config)
    return run_dir


def saes_stage_inputs_with_base(tiny_hf, tiny_model, run_dir: Path) -> Path:
    """``run_dir`` with a "tuned" policy (tiny-llama with perturbed weights) and its stores, and
    the base model's (tiny-llama, seed 0: the run's ``model``) stores on the same texts:
    ``base_train/`` and ``base_heldout/``."""
    import torch

    from lfp_mech.models.loading import hooked_from_hf

    hf, tok = tiny_hf
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for param in hf.parameters():
            param.add_(0.2 * param.std() * torch.randn(param.shape, generator=generator))
    hf.save_pretrained(run_dir / "rlhf" / "policy")
    tok.save_pretrained(run_dir / "rlhf" / "policy")
    tuned = hooked_from_hf(hf, tok)
    prompts = load_prompts("reviews", "train")
    acts, config = run_dir / "activations", ActivationConfig(shard_tokens=1024)
    for model, prefix in ((tuned, ""), (tiny_model, "base_")):
        capture_activations(model, prompts[:400], [0, 1], acts / f"{prefix}train", config)
        capture_activations(model, prompts[400:520], [0, 1], acts / f"{prefix}heldout", config)
    return run_dir
