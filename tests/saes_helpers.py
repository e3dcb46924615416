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
