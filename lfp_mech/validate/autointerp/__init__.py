"""Describe SAE features and decide whether they are related to the fine-tuning task.

The LFP paper (section 4, Tables 1 and 8–10) had GPT-4 describe the features its probes rely on
and label each one "related to the fine-tuning task" or not, in the style of Bills et al. (2023).
This subpackage does that with two labelers built on the same corpus scan:

1. **Top-activating contexts** ([`scan_features`][lfp_mech.validate.autointerp.scan.scan_features],
   [`top_activating_contexts`][lfp_mech.validate.autointerp.scan.top_activating_contexts]): one
   batched TransformerLens forward per batch of corpus texts, stopped after the deepest SAE layer;
   every SAE encodes its hook's activations; per feature we keep the top-``k`` tokens (text,
   position, activation) and the feature's activations in a window around each, plus every feature's
   activation frequency (share of tokens where it is > 0) and mean activation. BOS and padding
   positions are excluded.
2. **Offline labeler** ([`label_feature`][lfp_mech.validate.autointerp.label.label_feature],
   default): a lexicon statistic of the words a feature fires on, tested against random features of
   the same SAE.
3. **LLM labeler** ([`describe_with_llm`][lfp_mech.validate.autointerp.llm.describe_with_llm], when
   an OpenAI-compatible chat endpoint is configured): Bills et al.'s explain–simulate–score loop.

[`describe_features`][lfp_mech.validate.autointerp.describe.describe_features] runs it all for
``{hook: feature ids}`` and returns rows in the paper's table format (layer, feature index,
description, task-related, p-value).

Modules: [`corpus`][lfp_mech.validate.autointerp.corpus] (tokenization with each token's word,
batched activations), [`scan`][lfp_mech.validate.autointerp.scan] (the corpus pass),
[`label`][lfp_mech.validate.autointerp.label] (offline labeler),
[`llm`][lfp_mech.validate.autointerp.llm] (LLM client and labeler),
[`describe`][lfp_mech.validate.autointerp.describe] (everything together)."""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ActivatingExample": "scan",
        "AutointerpConfig": "lfp_mech.validate.config",
        "Corpus": "corpus",
        "Descriptions": "describe",
        "FeatureScan": "scan",
        "LLMClient": "llm",
        "LLMDescription": "llm",
        "OfflineLabel": "label",
        "corpus_batches": "corpus",
        "describe_features": "describe",
        "describe_with_llm": "llm",
        "discretize": "llm",
        "label_feature": "label",
        "layer_of_hook": "lfp_mech.hooks",
        "load_lexicon": "label",
        "scan_features": "scan",
        "tokenize_corpus": "corpus",
        "top_activating_contexts": "scan",
        "valence_statistics": "label",
    },
)

__all__ = [
    "ActivatingExample",
    "AutointerpConfig",
    "Corpus",
    "Descriptions",
    "FeatureScan",
    "LLMClient",
    "LLMDescription",
    "OfflineLabel",
    "corpus_batches",
    "describe_features",
    "describe_with_llm",
    "discretize",
    "label_feature",
    "layer_of_hook",
    "load_lexicon",
    "scan_features",
    "tokenize_corpus",
    "top_activating_contexts",
    "valence_statistics",
]
