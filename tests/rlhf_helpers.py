"""What the RLHF tests share: prompts, a tiny local reward, a smoke-size config, a parity check."""

import torch

from lfp_mech.models import load_hf_model, load_model, logprob_parity, parity_tokens
from lfp_mech.rlhf import RLHFConfig

PROMPTS = ["The film", "A movie about", "I saw it on", "Once upon a", "The plot of", "Our hero"]


def e_reward(texts):
    """A tiny local reward: how many letters 'e' the text has (varies on random-model output)."""
    return torch.tensor([t.count("e") / 5.0 for t in texts], dtype=torch.float32)


def tiny_rl_config(**overrides) -> RLHFConfig:
    base = dict(
        batch_size=4, num_generations=2, min_new_tokens=2, max_new_tokens=8, max_steps=2,
        save_steps=1, budget_minutes=None, n_eval_prompts=4, eval_batch_size=4,
    )  # fmt: skip
    return RLHFConfig(**base | overrides)


def assert_loads_with_parity(policy_dir) -> None:
    hf, tokenizer = load_hf_model(policy_dir)
    hooked = load_model(policy_dir)
    assert logprob_parity(hf, hooked, parity_tokens(tokenizer)) < 1e-3
