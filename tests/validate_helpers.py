"""Shared by the validate stage's tests: random SAEs, a tiny corpus, small configs."""

import torch
from sae_lens import StandardSAE, StandardSAEConfig

from lfp_mech.validate import AutointerpConfig, ValidateConfig

HOOK = "blocks.1.hook_mlp_out"
TEXTS = [
    "A great movie, I loved it!",
    "The film was long and the ending was bad.",
    "I watched it on a train with a friend.",
    "What a wonderful, good story.",
]


def make_sae(d_in: int = 64, d_sae: int = 128, hook: str = HOOK, seed: int = 0, gain: float = 1.0):
    """A random SAE-Lens StandardSAE; ``gain`` scales the encoder so features fire strongly."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
        with torch.no_grad():
            sae.W_enc.mul_(gain)
            sae.b_enc.normal_(0.0, 0.05)
    sae.cfg.metadata.hook_name = hook
    return sae


def small_validate_config(n_completions: int, max_new_tokens: int) -> ValidateConfig:
    """A validate stage small enough for a tiny model (offline labeler, 30 null contexts)."""
    return ValidateConfig(
        n_completions=n_completions,
        max_new_tokens=max_new_tokens,
        gen_batch_size=n_completions,
        autointerp=AutointerpConfig(k=4, n_null=30, use_llm="never", batch_size=8),
    )


def length_reward(texts):
    """A reward for tests: the number of words of each completion."""
    return torch.tensor([float(len(t.split())) for t in texts])
