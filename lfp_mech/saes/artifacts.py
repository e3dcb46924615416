"""File names inside the ``saes`` stage folder, shared by the trainer, the stage and the results.

::

    L{layer}_{small|big}/        the dictionaries (SAE-Lens folders: cfg.json,
                                 sae_weights.safetensors, training.json); "big" only with
                                 two expansion_factors
    base/L{layer}_{size}/        the base model's dictionaries (saes.base_model)
    untied/L{layer}_small/       the other variant of every small SAE (tied/ when untied is main)
    metrics.{csv,md,json}        held-out metrics of every SAE (column model: tuned / base)
    kl_finetune.{csv,md,json}    the decoders' KL fine-tune: validation CE before/after, kept
                                 (with saes.kl_finetune_texts)
    l1_sweep.{csv,md,json,png}   the L1-coefficient sweep (if any)
    tied_vs_untied.{csv,md,json} the paper's appendix table (if compare_untied)
    mmcs_L{layer}.{csv,md,json}  each small feature's MMCS with the big dictionary
    mmcs.png                     their distribution
    high_mmcs_features.json      per layer: the highest-MMCS features
    summary.json
"""

__all__ = [
    "HIGH_MMCS_FILE",
    "KL_FINETUNE",
    "L1_SWEEP",
    "L1_SWEEP_FIGURE",
    "METRICS",
    "MMCS_FIGURE",
    "TIED_VS_UNTIED",
    "TRAINING_FILE",
    "mmcs_stem",
    "sae_folder",
    "variant_name",
]

METRICS = "metrics"
"""Stem of the metrics table."""
KL_FINETUNE = "kl_finetune"
"""Stem of the KL fine-tune table (``saes.kl_finetune_texts``)."""
L1_SWEEP = "l1_sweep"
"""Stem of the L1-sweep table."""
L1_SWEEP_FIGURE = "l1_sweep.png"
TIED_VS_UNTIED = "tied_vs_untied"
"""Stem of the tied-vs-untied table."""
MMCS_FIGURE = "mmcs.png"
HIGH_MMCS_FILE = "high_mmcs_features.json"
TRAINING_FILE = "training.json"
"""Training statistics saved beside each SAE (steps, seconds, α, layer, size, hook)."""


def sae_folder(layer: int, size: str) -> str:
    """The folder name of the ``size`` SAE of ``layer`` (``L27_small``)."""
    return f"L{layer}_{size}"


def mmcs_stem(layer: int) -> str:
    """Stem of the MMCS table of ``layer`` (``mmcs_L27``)."""
    return f"mmcs_L{layer}"


def variant_name(tied: bool) -> str:
    """``"tied"`` or ``"untied"``: the ``variant`` column, and the other variant's subfolder."""
    return "tied" if tied else "untied"
