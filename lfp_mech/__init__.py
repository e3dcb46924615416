"""lfp_mech: what did a language model learn from its reward, and how far is that from the reward?

Every stage of the study is one module; its public functions are re-exported here.
"""

from lfp_mech.data import (
    ContrastiveTriple,
    char_span_to_token_span,
    heldout_words,
    load_prompts,
    make_triples,
    triple_templates,
)
from lfp_mech.errors import (
    ConfigError,
    HubUnavailableError,
    LfpMechError,
    MissingPackageError,
    UnknownModelError,
)
from lfp_mech.models import (
    DEFAULT_MODEL,
    MODEL_REGISTRY,
    available_models,
    build_tiny_model,
    generate_texts,
    hooked_from_hf,
    load_hf_model,
    load_model,
    logprob_parity,
    parity_tokens,
)
from lfp_mech.pipeline import (
    PRESETS,
    RunConfig,
    load_config,
    preset_config,
    read_manifest,
    run_pipeline,
)
from lfp_mech.rewards import (
    RewardFn,
    get_reward,
    toxicity_reward,
    vader_compound,
    vader_lexicon,
    vader_reward,
)

# Stage modules import TRL / SAE-Lens / TransformerLens (seconds each): loaded on first use.
_LAZY: dict[str, str] = {
    "small_sae_dirs": "lfp_mech.stages",
    "run_preference_probe": "lfp_mech.probes",
    "ordered_hooks": "lfp_mech.probes",
    "LinearProbe": "lfp_mech.probes",
    "probe_reward": "lfp_mech.probes",
    "load_probe": "lfp_mech.probes",
    "collect_feature_sets": "lfp_mech.probes",
    "spliced_ce_losses": "lfp_mech.saes",
    "task_texts": "lfp_mech.irl",
    "RLHFConfig": "lfp_mech.rlhf",
    "DPOConfigLite": "lfp_mech.rlhf",
    "train_policy": "lfp_mech.rlhf",
    "train_dpo": "lfp_mech.rlhf",
    "make_preference_pairs": "lfp_mech.rlhf",
    "load_preference_pairs": "lfp_mech.rlhf",
    "evaluate_policy": "lfp_mech.rlhf",
    "compare_policies": "lfp_mech.rlhf",
    "distinct_n": "lfp_mech.rlhf",
    "PolicyEval": "lfp_mech.rlhf",
    "DivergenceConfig": "lfp_mech.divergence",
    "layer_divergence": "lfp_mech.divergence",
    "top_divergent_layers": "lfp_mech.divergence",
    "ActivationConfig": "lfp_mech.activations",
    "ActivationStore": "lfp_mech.activations",
    "capture_activations": "lfp_mech.activations",
    "activation_corpus": "lfp_mech.activations",
    "hook_name": "lfp_mech.activations",
    "SAEConfig": "lfp_mech.saes",
    "TiedStandardTrainingSAE": "lfp_mech.saes",
    "train_sae": "lfp_mech.saes",
    "train_saes": "lfp_mech.saes",
    "load_sae": "lfp_mech.saes",
    "save_sae": "lfp_mech.saes",
    "sae_metrics": "lfp_mech.saes",
    "mmcs": "lfp_mech.saes",
    "ce_loss_recovered": "lfp_mech.saes",
    "l1_sweep": "lfp_mech.saes",
    "ProbesConfig": "lfp_mech.probes",
    "concat_features": "lfp_mech.probes",
    "concat_activations": "lfp_mech.probes",
    "mean_pooled_features": "lfp_mech.probes",
    "activation_deltas": "lfp_mech.probes",
    "fit_feedback_probe": "lfp_mech.probes",
    "evaluate_probe": "lfp_mech.probes",
    "xavier_probe": "lfp_mech.probes",
    "paired_bootstrap_diff": "lfp_mech.probes",
    "fit_logistic_probe": "lfp_mech.probes",
    "pca_explained": "lfp_mech.probes",
    "word_frequencies": "lfp_mech.probes",
    "frequency_error_correlation": "lfp_mech.probes",
    "carrier_sentences": "lfp_mech.probes",
    "load_saes": "lfp_mech.probes",
    "ValidateConfig": "lfp_mech.validate.ablation",
    "ablate_features": "lfp_mech.validate.ablation",
    "generate_with_ablation": "lfp_mech.validate.ablation",
    "feature_means": "lfp_mech.validate.ablation",
    "matched_random_features": "lfp_mech.validate.ablation",
    "activation_frequency": "lfp_mech.validate.ablation",
    "ablation_table": "lfp_mech.validate.ablation",
    "AutointerpConfig": "lfp_mech.validate.autointerp",
    "top_activating_contexts": "lfp_mech.validate.autointerp",
    "label_feature": "lfp_mech.validate.autointerp",
    "describe_features": "lfp_mech.validate.autointerp",
    "describe_with_llm": "lfp_mech.validate.autointerp",
    "IRLConfig": "lfp_mech.irl",
    "RewardModel": "lfp_mech.irl",
    "generate_demonstrations": "lfp_mech.irl",
    "max_margin_loss": "lfp_mech.irl",
    "evaluate_reward_model": "lfp_mech.irl",
    "run_seeds": "lfp_mech.irl",
    "summarize_runs": "lfp_mech.irl",
    "supervised_ceiling": "lfp_mech.irl",
    "log_ratio_reward": "lfp_mech.irl",
    "expressed_lexicon_bound": "lfp_mech.irl",
    "save_reward_model": "lfp_mech.irl",
    "load_reward_model": "lfp_mech.irl",
    "reward_model_fn": "lfp_mech.irl",
    "irl_rlhf": "lfp_mech.irl",
    "write_report": "lfp_mech.report",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lfp_mech' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    *_LAZY,
    "DEFAULT_MODEL",
    "MODEL_REGISTRY",
    "PRESETS",
    "ConfigError",
    "ContrastiveTriple",
    "HubUnavailableError",
    "LfpMechError",
    "MissingPackageError",
    "RewardFn",
    "RunConfig",
    "UnknownModelError",
    "available_models",
    "build_tiny_model",
    "char_span_to_token_span",
    "get_reward",
    "heldout_words",
    "hooked_from_hf",
    "load_config",
    "load_hf_model",
    "load_model",
    "load_prompts",
    "logprob_parity",
    "make_triples",
    "triple_templates",
    "generate_texts",
    "parity_tokens",
    "preset_config",
    "read_manifest",
    "run_pipeline",
    "toxicity_reward",
    "vader_compound",
    "vader_lexicon",
    "vader_reward",
]
