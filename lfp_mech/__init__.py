"""lfp_mech: what did a language model learn from its reward, and how far is that from the reward?

Every stage of the study is a package (``lfp_mech/<stage>/``: ``config.py``, core modules,
``stage.py``, ``results.py``); ``lfp_mech.runner`` wires them into a resumable run. The public API
below is re-exported lazily, so ``import lfp_mech`` is fast and imports torch, TransformerLens,
SAE-Lens or TRL only when a name that needs them is used.

Read a finished run with [`load_run`][lfp_mech.runner.results.load_run]; run one with
[`run_pipeline`][lfp_mech.runner.pipeline.run_pipeline] or ``lfp-mech run``."""

from lfp_mech._lazy import lazy_exports
from lfp_mech.errors import (
    ConfigError,
    HubUnavailableError,
    LfpMechError,
    MissingPackageError,
    UnknownModelError,
    UnsupportedModelError,
)

_EXPORTS: dict[str, str] = {
    # the run
    **dict.fromkeys(
        ["PRESETS", "RunConfig", "StagesConfig", "preset_config", "load_run", "Run",
         "run_pipeline", "run_for_notebooks", "read_manifest", "write_report", "load_config", "small_sae_dirs",
         "STAGES"],
        "lfp_mech.runner",
    ),
    # data and rewards
    **dict.fromkeys(
        ["ContrastiveTriple", "char_span_to_token_span", "heldout_words", "load_prompts",
         "make_triples", "triple_templates"],
        "lfp_mech.data",
    ),
    **dict.fromkeys(
        ["RewardFn", "get_reward", "toxicity_reward", "vader_compound", "vader_lexicon",
         "vader_reward"],
        "lfp_mech.rewards",
    ),
    "hook_name": "lfp_mech.hooks",
    # stages
    **dict.fromkeys(
        ["DEFAULT_MODEL", "MODEL_REGISTRY", "ModelConfig", "ModelLike", "as_hf_model",
         "as_hooked_model", "available_models", "build_tiny_model", "generate_texts",
         "hooked_from_hf", "load_hf_model", "load_model", "logprob_parity", "parity_tokens",
         "save_tiny_model", "SUPPORTED_ARCHITECTURES"],
        "lfp_mech.models",
    ),
    **dict.fromkeys(
        ["RLHFConfig", "DPOConfigLite", "train_policy", "train_dpo", "make_preference_pairs",
         "load_preference_pairs", "evaluate_policy", "compare_policies", "distinct_n",
         "PolicyEval"],
        "lfp_mech.rlhf",
    ),
    **dict.fromkeys(
        ["DivergenceConfig", "layer_divergence", "top_divergent_layers"], "lfp_mech.divergence"
    ),
    **dict.fromkeys(
        ["ActivationConfig", "ActivationStore", "capture_activations", "activation_corpus"],
        "lfp_mech.activations",
    ),
    **dict.fromkeys(
        ["SAEConfig", "TiedStandardTrainingSAE", "train_sae", "train_saes", "load_sae",
         "save_sae", "sae_metrics", "mmcs", "ce_loss_recovered", "l1_sweep",
         "spliced_ce_losses", "SameNormRandomError"],
        "lfp_mech.saes",
    ),
    **dict.fromkeys(
        ["ProbesConfig", "run_preference_probe", "ordered_hooks", "LinearProbe", "probe_reward",
         "load_probe", "collect_feature_sets", "concat_features", "concat_activations",
         "mean_pooled_features", "activation_deltas", "fit_feedback_probe", "evaluate_probe",
         "xavier_probe", "paired_bootstrap_diff", "fit_logistic_probe", "pca_explained",
         "word_frequencies", "frequency_error_correlation", "carrier_sentences", "load_saes"],
        "lfp_mech.probes",
    ),
    **dict.fromkeys(
        ["ValidateConfig", "AutointerpConfig", "ablate_features", "generate_with_ablation",
         "feature_means", "matched_random_features", "activation_frequency", "ablation_table",
         "top_activating_contexts", "label_feature", "describe_features", "describe_with_llm"],
        "lfp_mech.validate",
    ),
    **dict.fromkeys(
        ["DiffConfig", "diff_features", "diff_features_by_block", "kl_attribution",
         "steer_features", "run_diff", "DiffResults"],
        "lfp_mech.diff",
    ),
    **dict.fromkeys(
        ["IRLConfig", "RewardModel", "task_texts", "generate_demonstrations", "max_margin_loss",
         "evaluate_reward_model", "run_seeds", "summarize_runs", "supervised_ceiling",
         "log_ratio_reward", "expressed_lexicon_bound", "save_reward_model",
         "load_reward_model", "reward_model_fn", "irl_rlhf"],
        "lfp_mech.irl",
    ),
}  # fmt: skip

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "HubUnavailableError",
    "LfpMechError",
    "MissingPackageError",
    "UnknownModelError",
    "UnsupportedModelError",
    *sorted(_EXPORTS),
]
