"""Options of the ``probes`` stage: feedback probes on SAE features against VADER."""

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lfp_mech.config_base import RunDevice, RunDtype, RunSeed, StageConfig

__all__ = ["BASELINES", "ProbesConfig", "SIGN_ONLY", "VADER_RANGE"]

VADER_RANGE = 4.0
"""VADER valences lie in [-4, 4]; probe predictions are normalised to this range."""

BASELINES = (
    "xavier",
    "base_sae",
    "tuned_mlp",
    "tuned_embed",
    "base_mlp",
    "base_embed",
    "shuffled",
)
"""Baselines of the probes stage, all evaluated on the same held-out words:

* ``xavier`` — untrained linear probe, ``xavier_uniform_`` weights, zero bias (paper baseline),
  on the tuned model's SAE features;
* ``base_sae`` — the whole pipeline (triples → deltas → Ridge) on the base model's SAE features;
* ``tuned_mlp`` / ``base_mlp`` — the pipeline on raw hook activations (no SAE) at the same hooks;
* ``tuned_embed`` / ``base_embed`` — the pipeline on token embeddings alone (``hook_embed``);
* ``shuffled`` — tuned SAE features with the training labels permuted (seeded).

Each pipeline baseline computes its deltas (labels) in its own feature space, as the pipeline
would if it were run on that representation.
"""

SIGN_ONLY = "sign_only"
"""The reference row of every probe table: a predictor that knows each word's sign and nothing
about its magnitude (``sign(valence)``, words of one sign in seeded random order:
[`sign_only_predictor`][lfp_mech.probes.evaluation.sign_only_predictor]); always computed, it is
not a probe."""


@dataclass
class ProbesConfig(StageConfig):
    """Options of the feedback-probe stage (defaults sized for SmolLM2-135M on 2 CPU cores)."""

    section = "probes"

    n_triples: int = 800
    """Contrastive triples for probe training (each gives 2 probe samples)."""
    heldout_fraction: float = 0.25
    """Fraction of the positive/negative word pools held out of training (the evaluation words
    with ``eval_set="curated"``; with "lexicon" the evaluation also draws on every other word)."""
    eval_set: Literal["lexicon", "curated"] = "lexicon"
    """Words the probes are evaluated on. "lexicon": held-out words of the whole VADER lexicon
    (every alphabetic single-word entry that is not a training word, mild words included; see
    ``n_eval_words``); "curated": the held-out share of the shipped adjective pools (|valence| >= 1,
    about 105 words: then about half of all word pairs cross sign and τ is mostly sign)."""
    n_eval_words: int = 1000
    """With ``eval_set="lexicon"``: held-out lexicon words drawn (seeded) for the evaluation
    (0 = all ~6,900). 1,000 words (x 2 carrier sentences) keep the probes stage near its CPU
    budget."""
    n_carrier_templates: int = 2
    """Carrier sentences per evaluation word (its features are averaged over them)."""
    min_abs_valence: float = 0.0
    """Evaluate only on words with |VADER valence| >= this (0 = all held-out words)."""
    batch_size: int = 64
    """Sequences per forward pass."""
    alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 5, 15))
    """Ridge penalties tried by the cross-validation."""
    standardize: bool = True
    """Standardise features (``StandardScaler``) before the Ridge fit."""
    cv_folds: int = 5
    """Folds of the word-grouped cross-validation that picks the Ridge penalty."""
    n_shuffles: int = 10
    """Label permutations for the shuffled-label null distribution of τ (0 = only the one
    ``shuffled`` baseline). They reuse the tuned probe's α, so each costs one Ridge fit."""
    n_bootstrap: int = 1000
    """Bootstrap resamples (over words, ``scipy.stats.bootstrap``) for CIs and paired differences,
    and permutations of the paired permutation tests."""
    baselines: tuple[str, ...] = BASELINES
    """Which baselines to compute (subset of [`BASELINES`][lfp_mech.probes.config.BASELINES])."""
    seed: RunSeed = 0
    """Seeds triples, template choice, Xavier init, label shuffling and bootstraps."""
    device: RunDevice = "cpu"
    """Torch device for the models and SAEs."""
    dtype: RunDtype = "float32"
    """The run's dtype: the policy's forward passes run in it. SAE features and raw activations
    are cast to float32 and the probes are fitted in float64 whatever it is."""

    def __post_init__(self) -> None:
        self.alphas = tuple(float(a) for a in self.alphas)
        self.baselines = tuple(self.baselines)
        self.require_at_least(2, "n_triples", "cv_folds")
        self.require_between("heldout_fraction", 0, 1, low_open=True, high_open=True)
        self.require_at_least(1, "n_carrier_templates", "batch_size")
        self.require_between("min_abs_valence", 0, VADER_RANGE, high_open=True)
        self.require(
            bool(self.alphas) and all(a > 0 for a in self.alphas),
            "alphas",
            "must be a non-empty list of positive floats",
        )
        self.require_at_least(0, "n_shuffles", "n_eval_words")
        self.require_choice("eval_set", ("lexicon", "curated"))
        self.require_at_least(10, "n_bootstrap")
        unknown = sorted(set(self.baselines) - set(BASELINES))
        self.require(not unknown, "baselines", f"unknown {unknown}; valid: {', '.join(BASELINES)}")
