"""The ``validate`` stage: are the probe's features really the learned feedback pattern?

The LFP paper's last checks (section 4):

* **feature descriptions** (Tables 1, 8–10) with a "related to the fine-tuning task" label:
  top-activating contexts on held-out texts, an offline lexicon labeler and an optional LLM
  labeler ([`lfp_mech.validate.autointerp`][lfp_mech.validate.autointerp]);
* **Table 7** — [`activation_frequency`][lfp_mech.validate.frequency.activation_frequency]: how
  often the task-related features are active on the probe's inputs that it predicts with
  ``delta > 3`` (strong positive feedback), against the average feature;
* **Table 6** — [`ablation_table`][lfp_mech.validate.table.ablation_table]: mean reward of
  completions to (≤ 30-token) prefixes, for the base and the fine-tuned model, clean / task-related
  features ablated / as many random features with matched activation frequency
  ([`matched_random_features`][lfp_mech.validate.controls.matched_random_features]) ablated, with
  Student-t confidence intervals and the paired difference to the clean run. The ablation
  ([`ablate_features`][lfp_mech.validate.ablation.ablate_features]) removes exactly the features'
  decoder contributions and keeps the SAE's error term.

Modules:

* [`ablation`][lfp_mech.validate.ablation] —
  [`ablate_features`][lfp_mech.validate.ablation.ablate_features] (the hook),
  [`feature_means`][lfp_mech.validate.ablation.feature_means];
* [`ablated_generation`][lfp_mech.validate.ablated_generation] —
  [`generate_with_ablation`][lfp_mech.validate.ablated_generation.generate_with_ablation];
* [`controls`][lfp_mech.validate.controls] —
  [`matched_random_features`][lfp_mech.validate.controls.matched_random_features];
* [`frequency`][lfp_mech.validate.frequency] — Table 7:
  [`activation_frequency`][lfp_mech.validate.frequency.activation_frequency],
  [`frequency_rows`][lfp_mech.validate.frequency.frequency_rows];
* [`table`][lfp_mech.validate.table] — Table 6:
  [`ablation_table`][lfp_mech.validate.table.ablation_table],
  [`AblationResult`][lfp_mech.validate.table.AblationResult], t intervals;
* [`features`][lfp_mech.validate.features] — which features to validate
  ([`choose_features`][lfp_mech.validate.features.choose_features]: highest MMCS and largest standardised probe
  weights per hook);
* [`autointerp`][lfp_mech.validate.autointerp] — corpus, scan, offline and LLM labelers,
  [`describe_features`][lfp_mech.validate.autointerp.describe.describe_features];
* [`feature_ids`][lfp_mech.validate.feature_ids] — the accepted forms of feature ids;
* ``config.py`` ([`ValidateConfig`][lfp_mech.validate.config.ValidateConfig],
  [`AutointerpConfig`][lfp_mech.validate.config.AutointerpConfig]), ``stage.py`` (``run(ctx)`` and
  [`run_validation`][lfp_mech.validate.stage.run_validation] on models in memory), ``results.py``
  ([`ValidateResults`][lfp_mech.validate.results.ValidateResults]), ``plots.py``, ``artifacts.py``
  (file names)."""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        # config
        "AblationMode": "config",
        "AutointerpConfig": "config",
        "ValidateConfig": "config",
        # ablation, controls, Tables 6 and 7
        "AblationResult": "table",
        "AblationSpec": "ablation",
        "ActivationFrequency": "frequency",
        "FeatureIds": "feature_ids",
        "ablate_features": "ablation",
        "ablation_table": "table",
        "activation_frequency": "frequency",
        "choose_features": "features",
        "standardized_weights": "features",
        "feature_means": "ablation",
        "frequency_rows": "frequency",
        "generate_with_ablation": "ablated_generation",
        "matched_random_features": "controls",
        # feature descriptions
        "ActivatingExample": "autointerp.scan",
        "Corpus": "autointerp.corpus",
        "Descriptions": "autointerp.describe",
        "FeatureScan": "autointerp.scan",
        "LLMClient": "autointerp.llm",
        "LLMDescription": "autointerp.llm",
        "OfflineLabel": "autointerp.label",
        "corpus_batches": "autointerp.corpus",
        "describe_features": "autointerp.describe",
        "describe_with_llm": "autointerp.llm",
        "discretize": "autointerp.llm",
        "label_feature": "autointerp.label",
        "adjusted_p_values": "autointerp.label",
        "layer_of_hook": "lfp_mech.hooks",
        "load_lexicon": "autointerp.label",
        "scan_features": "autointerp.scan",
        "tokenize_corpus": "autointerp.corpus",
        "top_activating_contexts": "autointerp.scan",
        "valence_statistics": "autointerp.label",
        # the stage
        "ValidateResults": "results",
        "ablation_figure": "plots",
        "activation_frequency_figure": "plots",
        "predicted_delta_figure": "plots",
        "run_validation": "stage",
    },
)

__all__ = [
    "AblationMode",
    "AblationResult",
    "AblationSpec",
    "ActivatingExample",
    "ActivationFrequency",
    "AutointerpConfig",
    "Corpus",
    "Descriptions",
    "FeatureIds",
    "FeatureScan",
    "LLMClient",
    "LLMDescription",
    "OfflineLabel",
    "ValidateConfig",
    "ValidateResults",
    "ablate_features",
    "ablation_figure",
    "ablation_table",
    "activation_frequency",
    "activation_frequency_figure",
    "predicted_delta_figure",
    "adjusted_p_values",
    "choose_features",
    "corpus_batches",
    "describe_features",
    "describe_with_llm",
    "discretize",
    "feature_means",
    "frequency_rows",
    "generate_with_ablation",
    "label_feature",
    "standardized_weights",
    "layer_of_hook",
    "load_lexicon",
    "matched_random_features",
    "run_validation",
    "scan_features",
    "tokenize_corpus",
    "top_activating_contexts",
    "valence_statistics",
]
