"""Named runs: each preset is a set of run-config values over the stages' defaults.

The stage defaults are sized for the offline SmolLM2 study on a 2-core CPU; a preset changes only
what differs. ``lfp-mech config --preset NAME`` prints a preset fully resolved.
"""

from typing import Any

from lfp_mech.errors import ConfigError
from lfp_mech.runner.config import RunConfig, config_from_dict

__all__ = ["PRESETS", "preset_config"]

IRL_PAPER: dict[str, Any] = {
    "n_train_prompts": 500,
    "n_test_prompts": 500,
    "n_other_texts": 1000,
    "max_new_tokens": 100,
    "mode": "full",
    "n_layers": None,
    "context_layer": None,
    "n_seeds": 13,
    "n_epochs": 6,
    "lr": 1e-5,
    "batch_size": 2,
    "gen_batch_size": 16,
    "eval_batch_size": 16,
    "pooling": "last",
    "max_length": 256,
}
"""The IRL paper's sizes (Joselowitz et al. 2024): 500/500 prompts, 100-token greedy
completions, the whole LM fine-tuned with a last-token head, batch 2, lr 1e-5, 13 seeds × 6
epochs (78 runs)."""

SMOKE: dict[str, Any] = {
    "rlhf": {
        "batch_size": 4,
        "num_generations": 2,
        "min_new_tokens": 2,
        "max_new_tokens": 8,
        "max_steps": 2,
        "n_train_prompts": 8,
        "n_eval_prompts": 8,
        "eval_batch_size": 8,
    },
    "divergence": {"top_k": 2},
    "activations": {
        "n_tokens": 3_000,
        "heldout_tokens": 600,
        "max_new_tokens": 16,
        "context_length": 48,
        "shard_tokens": 1_000,
    },
    "saes": {
        "training_tokens": 6_000,
        "batch_size": 256,
        "sweep_alphas": [1e-3, 1e-2],
        "sweep_tokens": 3_000,
        "eval_tokens": 500,
        "ce_texts": 8,
    },
    "probes": {"n_triples": 60, "n_carrier_templates": 2, "n_bootstrap": 200, "n_shuffles": 2},
    "validate": {"n_completions": 8, "max_new_tokens": 6, "autointerp": {"n_null": 20, "k": 4}},
    "irl": {
        "n_train_prompts": 12,
        "n_test_prompts": 8,
        "n_other_texts": 8,
        "max_new_tokens": 8,
        "rlhf_steps": 2,
        "rlhf_eval_prompts": 4,
        "toxicity_rlhf_steps": 2,
        "toxicity_irl_rlhf_steps": 1,
        "n_seeds": 2,
        "n_epochs": 2,
        "max_length": 48,
        "context_layer": 1,
    },
}
"""Every stage on the tiny random 2-layer model in well under two minutes (tests, notebooks)."""

PRESETS: dict[str, dict[str, Any]] = {
    # Sized to finish within 45 min on 2 cores: 40k activation tokens per layer (the paper used
    # 75k) and 300k training activations per SAE leave room for the IRL stage's toxicity task.
    "default": {
        "name": "default",
        "model": "smollm2-135m",
        "stages": {
            "activations": {"n_tokens": 40_000},
            "saes": {"training_tokens": 300_000, "sweep_tokens": 150_000},
        },
    },
    "smoke": {"name": "smoke", "model": "tiny-llama", "stages": SMOKE},
    "pythia-70m": {"name": "pythia-70m", "model": "pythia-70m", "stages": {"irl": IRL_PAPER}},
    "pythia-160m": {"name": "pythia-160m", "model": "pythia-160m", "stages": {"irl": IRL_PAPER}},
    "gpt-neo-125m": {
        "name": "gpt-neo-125m",
        "model": "gpt-neo-125M",
        "stages": {"irl": IRL_PAPER},
    },
}
"""Preset name -> run-config values (the keys of
[`RunConfig.to_dict`][lfp_mech.runner.config.RunConfig.to_dict])."""


def preset_config(name: str) -> RunConfig:
    """The resolved [`RunConfig`][lfp_mech.runner.config.RunConfig] of preset ``name``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return config_from_dict(PRESETS[name])
