"""Named runs: each preset is a set of run-config values over the stages' defaults.

The stage defaults are sized for the offline SmolLM2 study on a 2-core CPU; a preset changes only
what differs. The paper presets (``pythia-70m``, ``pythia-160m``, ``pythia-410m``, ``gpt-neo-125m``,
``gemma-2b-it``) carry the papers' settings for every stage; docs/paper-presets.md tabulates each
setting, its paper value and where a preset departs from it. ``lfp-mech config --preset NAME``
prints a preset fully resolved.
"""

from typing import Any

from lfp_mech.errors import ConfigError
from lfp_mech.runner.config import RunConfig, config_from_dict

__all__ = ["DEFAULT_STAGES", "IRL_PAPER", "PRESETS", "PRESET_SUMMARIES", "SMOKE", "preset_config"]

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
    "grid_pooling": [],
    "grid_context_layer": [],
    "grid_lr": [],
}
"""The IRL paper's sizes (Joselowitz et al. 2024): 500/500 prompts, 100-token greedy
completions, the whole LM fine-tuned with a last-token head, batch 2, lr 1e-5, 13 seeds × 6
epochs (78 runs); no readout / lr grid (the paper's setting; validation still chooses each seed's
epoch and threshold)."""

LFP_PAPER_RLHF: dict[str, Any] = {
    "method": "grpo",
    "prompts": "imdb",
    "learning_rate": 1e-6,
    "beta": 0.5,
    "batch_size": 64,
    "mini_batch_size": 16,
    "num_generations": 8,
    "min_new_tokens": 8,
    "max_new_tokens": 20,
    "repetition_penalty": 1.0,
    "max_steps": 1_560,
    "budget_minutes": None,
    "save_steps": 100,
}
"""The LFP paper's PPO settings (TRL 0.7: batch 64, mini-batch 16, KL 0.5, lr 1e-6, max grad
norm 1 = TRL's default; IMDB review prefixes) on TRL 1.x's GRPO, the online RL with a KL penalty
that replaced PPO. Steps: the paper does not state them; 1,560 updates = ~390 batches of 64 (one
pass over IMDB's ~25k training reviews, as TRL 0.7's sentiment example) × 4 mini-batches."""


PAPER_SWEEP_ALPHAS = [1e-4, 3e-4, 6e-4, 1e-3, 3e-3, 1e-2]
"""The α grid of the paper presets' L1 sweep (the appendix figure)."""


def lfp_paper_saes(l1_coefficient: float) -> dict[str, Any]:
    """The LFP paper's dictionaries: L1 ReLU SAEs with n and 2n features, tied (plus the
    untied twins and the L1 sweep of its appendix), α on unnormalised activations, Adam lr
    1e-3, batch 32, one pass over 75,000 activations per layer."""
    return {
        "architecture": "l1",
        "expansion_factors": [1, 2],
        "tied": True,
        "compare_untied": True,
        "sweep_alphas": PAPER_SWEEP_ALPHAS,
        "l1_coefficient": l1_coefficient,
        "normalize_activations": False,
        "l1_warm_up_fraction": 0.0,
        "lr": 1e-3,
        "batch_size": 32,
        "training_tokens": 75_000,
    }


LFP_PAPER_VALIDATE: dict[str, Any] = {"n_completions": 1_000, "prefix_tokens": 30}
"""Table 6: the mean reward of 1000 completions to 30-token prefixes per cell."""


def lfp_paper_stages(l1_coefficient: float = 1e-3) -> dict[str, Any]:
    """Every stage with the LFP paper's settings (VADER task) and the IRL paper's sizes."""
    return {
        "rlhf": LFP_PAPER_RLHF,
        "divergence": {"top_k": 5, "select_by": "parameter"},
        "activations": {"n_tokens": 75_000},
        "saes": lfp_paper_saes(l1_coefficient),
        "validate": LFP_PAPER_VALIDATE,
        "irl": IRL_PAPER,
    }


GEMMA_PAPER_STAGES: dict[str, Any] = lfp_paper_stages() | {
    "rlhf": {
        "task": "hh",
        "method": "dpo",
        "dpo_learning_rate": 5e-5,
        "dpo_batch_size": 8,
        "max_steps": 5_000,
        "budget_minutes": None,
        "save_steps": 500,
    },
    "validate": LFP_PAPER_VALIDATE | {"reward": "toxicity"},
}
"""Gemma-2b-it in the LFP paper: the DPO tasks only (HH-RLHF via the hub; TRL DPOTrainer, 5000
steps, batch 8, lr 5e-5, AdamW eps 1e-8). The ablation table scores harmlessness with the
toxicity reward, the proxy the HH task's evaluation uses."""

SMOKE: dict[str, Any] = {
    "rlhf": {
        "batch_size": 4,
        "num_generations": 2,
        "min_new_tokens": 2,
        "max_new_tokens": 8,
        "max_steps": 4,  # the first updates of the tiny model can have zero advantages
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
    "probes": {
        "n_triples": 60,
        "n_carrier_templates": 2,
        "n_bootstrap": 200,
        "n_shuffles": 2,
        "n_eval_words": 120,
    },
    "validate": {"n_completions": 8, "max_new_tokens": 6, "autointerp": {"n_null": 20, "k": 4}},
    "diff": {
        "layers": [0, 1],  # both blocks of the tiny model: the multi-block path
        "n_corpus_prompts": 16,
        "corpus_new_tokens": 6,
        "d_dict": 64,
        "top_k": 4,
        "n_epochs": 5,
        "ks": [1, 2, 4],
        "control_k": 2,
        "n_random": 2,
        "dom_add_scales": [1.0],
        "n_eval_prompts": 6,
        "max_new_tokens": 6,
        "n_bootstrap": 100,
        "n_permutations": 100,
        "n_dashboards": 2,
        "n_contexts": 4,
    },
    "irl": {
        "n_train_prompts": 12,
        "n_test_prompts": 8,
        "n_other_texts": 8,
        "n_val_prompts": 4,
        "n_val_texts": 6,
        "toxicity_samples": 2,
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

SMOKE_L1: dict[str, Any] = SMOKE | {
    "saes": SMOKE["saes"]
    | {"architecture": "l1", "expansion_factors": [1, 2], "tied": True, "compare_untied": True}
}
"""The smoke preset with the paper's L1 dictionaries (small and big, tied, untied twins, L1
sweep): what notebooks 02 (L1 sweep) and 03 (tied vs untied) read."""

DEFAULT_STAGES: dict[str, Any] = {
    "rlhf": {"max_steps": 20, "learning_rate": 1.5e-4, "eval_batch_size": 128},
    "divergence": {"top_k": 3},
    "activations": {"n_tokens": 48_000, "heldout_tokens": 6_144, "generation_batch_size": 128},
    "saes": {
        "architecture": "matching_pursuit",
        "expansion_factors": [4],
        "training_tokens": 400_000,
        "ce_texts": 64,
    },
    "probes": {"n_triples": 400},
    "validate": {"n_completions": 256, "gen_batch_size": 128},
    "irl": {
        "n_train_prompts": 96,
        "n_test_prompts": 96,
        "n_val_prompts": 48,
        "gen_batch_size": 128,
        "eval_batch_size": 64,
    },
}
"""The default study's sizes: every stage within one 45-minute run on a 2-core CPU (the
measured minutes per stage, and what the larger ``full`` preset buys, are in docs/budget.md).

A GRPO step costs 11-15 s here, and the study trains two policies of equal length (the RLHF
stage's and IRL-RLHF's), so the policy trains 20 steps at lr 1.5e-4 instead of 70 at 5e-5: a
clearly positive policy, though a weaker and more draw-dependent one (docs/tutorials/rlhf.md).
A decoding step costs ~0.4 s at batch 64 and ~0.7 s at 128 (fp32), so the stages that sample use
large batches. The rest: three SAE layers (the top 3 by patching), 48k activation tokens per
layer, matching-pursuit dictionaries of 4 x d_model latents (at most k = 64 greedy steps a
token) trained on 400k activations each (chosen on validation texts, where they recover
0.92-0.94 of the tuned policy's loss against TopK's 0.88-0.89 at the same width and data, at
~97 s a dictionary against TopK's 60-80: docs/tutorials/saes.md; 64 texts for the CE loss),
400 probe triples, 256 completions per Table-6 cell (a 95% CI of about ±0.1
on a mean reward), 96/96/48 IRL prompts, and the toxicity task at the stage's settings (a 30-step
expert, 24 sampled completions per prompt for the toxic texts: ~11 of the study's minutes;
``--set irl.toxicity_rlhf_steps=0`` skips it)."""

PRESETS: dict[str, dict[str, Any]] = {
    "default": {"name": "default", "model": "smollm2-135m", "stages": DEFAULT_STAGES},
    # The larger study of 2026-12-01/02 (~105 min on 2 cores then): the stage defaults (70 GRPO
    # steps at 5e-5, five SAE layers, 465 completions per cell, 128/128/64 IRL prompts, the
    # toxicity task) with the default study's activation tokens and dictionaries (since 1e854ef;
    # measured before with 40k tokens and BatchTopK 2 x d_model on 200k: docs/budget.md).
    "full": {
        "name": "full",
        "model": "smollm2-135m",
        "stages": {
            "activations": {"n_tokens": DEFAULT_STAGES["activations"]["n_tokens"]},
            "saes": {
                key: DEFAULT_STAGES["saes"][key]
                for key in ("architecture", "expansion_factors", "training_tokens")
            },
        },
    },
    "smoke": {"name": "smoke", "model": "tiny-llama", "stages": SMOKE},
    "smoke-l1": {"name": "smoke-l1", "model": "tiny-llama", "stages": SMOKE_L1},
    "pythia-70m": {"name": "pythia-70m", "model": "pythia-70m", "stages": lfp_paper_stages()},
    "pythia-160m": {"name": "pythia-160m", "model": "pythia-160m", "stages": lfp_paper_stages()},
    "pythia-410m": {"name": "pythia-410m", "model": "pythia-410m", "stages": lfp_paper_stages()},
    "gpt-neo-125m": {
        "name": "gpt-neo-125m",
        "model": "gpt-neo-125M",
        "stages": lfp_paper_stages(l1_coefficient=1.5e-3),
    },
    "gemma-2b-it": {"name": "gemma-2b-it", "model": "gemma-2b-it", "stages": GEMMA_PAPER_STAGES},
}
"""Preset name -> run-config values (the keys of
[`RunConfig.to_dict`][lfp_mech.runner.config.RunConfig.to_dict])."""

_PAPER = (
    "the LFP paper's settings (weights from the Hugging Face hub or its cache; sized for a GPU)"
)
PRESET_SUMMARIES: dict[str, str] = {
    "default": "the study on the offline SmolLM2-135M, every stage in ~37 min on 2 CPU cores",
    "full": "the stages' own larger sizes on SmolLM2-135M (70 GRPO steps, five SAE layers, "
    "465 completions per Table-6 cell; ~105 min on 2 CPU cores)",
    "smoke": "a tiny random 2-layer model, every stage in under two minutes (tests, notebooks)",
    "smoke-l1": "smoke with the paper's L1 dictionaries (small and big, tied and untied, L1 sweep)",
    "pythia-70m": _PAPER,
    "pythia-160m": _PAPER,
    "pythia-410m": _PAPER,
    "gpt-neo-125m": _PAPER,
    "gemma-2b-it": _PAPER,
}
"""One line per preset for ``lfp-mech presets`` (measured times: docs/budget.md)."""


def preset_config(name: str) -> RunConfig:
    """The resolved [`RunConfig`][lfp_mech.runner.config.RunConfig] of preset ``name``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return config_from_dict(PRESETS[name])
