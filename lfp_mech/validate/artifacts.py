"""Names of what the ``validate`` stage writes, shared by ``stage.py`` (writer) and ``results.py``.

A leaf module (no heavy imports). Tables are written by `lfp_mech._io.write_table` as
``<name>.csv``, ``<name>.md`` and ``<name>.json``.
"""

__all__ = [
    "ABLATION_TABLE",
    "COMPLETIONS_FILE",
    "DESCRIPTIONS_TABLE",
    "FEATURES_FILE",
    "FEATURE_CHOICE_FILE",
    "FEATURE_FREQUENCIES_FILE",
    "FIGURES",
    "FREQUENCY_TABLE",
    "TOP_CONTEXTS_FILE",
]

DESCRIPTIONS_TABLE = "descriptions"
"""One row per chosen feature: hook, layer, feature, description, task_related, p_value, ..."""
TOP_CONTEXTS_FILE = "top_contexts.json"
"""``{hook: {feature: [top-activating example, ...]}}`` of the chosen features."""
FREQUENCY_TABLE = "activation_frequency"
"""Paper Table 7: per hook and feature group, the share of strong-feedback inputs where active."""
ABLATION_TABLE = "ablation"
"""Paper Table 6: mean reward per (model, condition) with confidence intervals."""
COMPLETIONS_FILE = "completions.json"
"""The first prompts and completions of every cell, and every completion's reward."""
FEATURES_FILE = "features.json"
"""The chosen features, which set was ablated, and the ablated features per condition."""
FEATURE_CHOICE_FILE = "feature_choice.json"
"""``{hook: feature ids}`` chosen for validation (highest MMCS and largest probe weights)."""
FEATURE_FREQUENCIES_FILE = "feature_frequencies.safetensors"
"""``{hook: share of corpus tokens on which each feature is active}``."""
FIGURES = ("ablation", "activation_frequency")
"""The stage's figures (``<name>.png``)."""
