"""Options of the ``validate`` stage: feature descriptions, activation frequency, ablation."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lfp_mech.config_base import RunDevice, RunDtype, RunSeed, StageConfig

__all__ = ["AblationMode", "AutointerpConfig", "DEFAULT_TASK", "ValidateConfig"]

AblationMode = Literal["zero", "mean"]
DEFAULT_TASK = "training the model to generate completions with positive sentiment (VADER reward)"
"""The fine-tuning task as the feature labeler is told it."""


@dataclass
class AutointerpConfig(StageConfig):
    """Options of the feature descriptions."""

    section = "validate.autointerp"

    k: int = 10
    """Top-activating tokens kept per feature."""
    window: tuple[int, int] = (12, 4)
    """Context window around a top token: tokens before and after it."""
    batch_size: int = 16
    """Corpus texts per forward pass."""
    max_len: int = 64
    """Corpus texts are cut to this many tokens (BOS included)."""
    n_null: int = 1000
    """Random features per SAE whose statistics form the null distribution (at most every other
    feature of the SAE). The smallest p-value is ``1 / (1 + n_null)``: with ~80 described features
    and Benjamini–Hochberg at 0.05, n_null = 200 (p ≥ 0.005) lets no feature pass unless ≥ 8 share
    the smallest p; 1,000 takes every other feature of a 2,304-latent dictionary."""
    alpha: float = 0.05
    """A feature is task-related when its p-value (with ``correction="bh"``: its
    Benjamini–Hochberg adjusted p-value over all described features) is below this."""
    correction: Literal["bh", "none"] = "bh"
    """Multiple-comparison correction of the task-related test over the described features:
    "bh" (Benjamini–Hochberg false discovery rate, ``scipy.stats.false_discovery_control``) or
    "none" (each feature at ``alpha``, the old rule: ~``alpha`` × n false positives expected). The
    permutation p-values are at least ``1 / (1 + n_null)``, so with BH a feature can pass only if
    enough features have small p-values; raise ``n_null`` for a finer p."""
    lexicon: Literal["vader"] = "vader"
    """Word lexicon of the offline labeler ("vader": the VADER valences of the reward)."""
    sentiment_word_threshold: float = 1.0
    """Tokens of words with |valence| >= this count as "strong feedback" tokens (Table 7 without
    probe predictions)."""
    task_description: str = DEFAULT_TASK
    """The fine-tuning task, as the LLM labeler is told."""
    use_llm: Literal["auto", "never", "always"] = "auto"
    """"auto": use the LLM labeler when the LFP_MECH_LLM_* variables are set; "always": require it.
    """
    label_source: Literal["offline", "llm"] = "offline"
    """Which labeler's "task-related" label selects the features to ablate."""
    seed: RunSeed = 0
    """Seed of the null-feature sample."""
    device: RunDevice = "cpu"
    """Where the forward passes run."""

    def __post_init__(self) -> None:
        window = tuple(int(w) for w in self.window)
        self.require(
            len(window) == 2 and min(window) >= 0, "window", "must be two non-negative ints"
        )
        self.window = (window[0], window[1])
        self.require_at_least(1, "k", "batch_size", "max_len")
        self.require_at_least(0, "n_null")
        self.require_between("alpha", 0, 1, low_open=True, high_open=True)
        self.require_choice("lexicon", ("vader",))
        self.require_choice("correction", ("bh", "none"))
        self.require_choice("use_llm", ("auto", "never", "always"))
        self.require_choice("label_source", ("offline", "llm"))


@dataclass
class ValidateConfig(StageConfig):
    """Options of the ``validate`` stage (feature descriptions, Tables 6 and 7).

    Defaults are sized for SmolLM2-135M on a 2-core CPU (the paper used 1000 completions).
    """

    section = "validate"

    n_completions: int = 465
    """Completions per (model, condition) cell of the ablation table (paper: 1000). A 95% CI of
    ±0.1 on a cell's mean VADER reward needs ``n = (1.96 · sd / 0.1)²``: 465 at a reward sd of
    1.1; the ``default`` preset's 256 give ±0.12 on its tuned policy's cells (sd ≈ 0.95) and
    ±0.09 on their paired differences to the clean cell (the table reports each CI)."""
    max_new_tokens: int = 20
    """New tokens per completion (the RLHF stage's completions are 8–20 tokens)."""
    prefix_tokens: int = 30
    """Prompts are cut to their first this many tokens (the paper's 30-token prefixes)."""
    temperature: float = 1.0
    """Sampling temperature of the completions (0 = greedy)."""
    gen_batch_size: int = 64
    """Prompts generated together (each batch draws from its own seed, so it also fixes the
    completions). Large batches pay on a CPU: it decodes a token for 64 rows in far less than 4x
    the time of 16 (the matrix products are more efficient), so the six cells of Table 6 cost
    less."""
    reward: str = "vader"
    """Reward that scores the completions (a name for
    [`lfp_mech.rewards.get_reward`][lfp_mech.rewards.get_reward])."""
    mode: AblationMode = "zero"
    """"zero" (the paper) or "mean" ablation (features set to their corpus mean)."""
    ablate: Literal["task_related", "chosen"] = "task_related"
    """Ablate the chosen features labelled task-related (the paper), or all chosen features.
    If none is labelled task-related, all chosen features are ablated and the summary says so."""
    delta_threshold: float = 3.0
    """Table 7 selects the probe inputs whose predicted delta (normalised to [-4, 4]) exceeds
    this: the paper's "inputs the probe predicts with delta > 3", strong positive feedback."""
    confidence: float = 0.95
    """Confidence level of the intervals."""
    n_examples_saved: int = 8
    """Completions per cell written to completions.json for reading."""
    n_features_per_hook: int = 8
    """Features chosen per hook: this many highest-MMCS features plus this many with the
    largest absolute probe weights (their union; fewer when the two lists overlap)."""
    weight_selection: Literal["standardized", "raw"] = "standardized"
    """How "largest probe weight" is measured: "standardized" — |coefficient × the feature's
    standard deviation over the probe's inputs| (how much the feature moves the prediction; the
    Ridge coefficient on standardised features); "raw" — |coefficient| on raw features (which is
    coefficient / std of the standardised fit, and favours rarely active features)."""
    autointerp: AutointerpConfig = field(default_factory=AutointerpConfig)
    """Options of the feature descriptions."""
    seed: RunSeed = 0
    """Seed of prompt order, sampling and random-feature choice."""
    device: RunDevice = "cpu"
    """Where models and SAEs run."""
    dtype: RunDtype = "float32"
    """The run's dtype: the base and tuned models run in it (descriptions, frequencies and
    generation with ablation hooks); the SAEs stay float32 and the ablation's edit is computed
    in the SAE's dtype, then cast back to the model's."""

    def __post_init__(self) -> None:
        if isinstance(self.autointerp, Mapping):  # a plain dict from Python code
            self.autointerp = AutointerpConfig(**self.autointerp)
        # the descriptions run on the stage's device with its seed
        self.autointerp = dataclasses.replace(self.autointerp, seed=self.seed, device=self.device)
        self.require_at_least(
            1, "n_completions", "max_new_tokens", "prefix_tokens", "gen_batch_size",
            "n_features_per_hook",
        )  # fmt: skip
        self.require_at_least(0, "temperature")
        self.require_choice("mode", ("zero", "mean"))
        self.require_choice("ablate", ("task_related", "chosen"))
        self.require_choice("weight_selection", ("standardized", "raw"))
        self.require_between("confidence", 0, 1, low_open=True, high_open=True)
