"""Options of the ``diff`` stage: which internal features carry what RLHF changed?"""

from dataclasses import dataclass
from typing import Literal

from lfp_mech.config_base import RunDevice, RunSeed, StageConfig

__all__ = ["DiffConfig"]


@dataclass
class DiffConfig(StageConfig):
    """Options of the model-diffing stage (dictionary, scoring, causal tests)."""

    section = "diff"

    layers: tuple[int, ...] | None = None
    """Blocks whose residual streams (``blocks.{L}.hook_resid_post``) get a dictionary each; the
    interventions edit all of them at once. None: ``layer_fractions``."""
    layer_fractions: tuple[float, ...] = (0.69, 0.76, 0.83)
    """Relative depths of the default blocks when ``layers`` is None (0 = first block, 1 = last;
    ``round(f * (n_layers - 1))``, duplicates dropped): blocks 20, 22 and 24 of SmolLM2-135M's 30.
    The tuned model's later blocks rebuild a change removed at one block, so one block is not
    enough (see the diff tutorial)."""
    block_training: Literal["independent", "sequential"] = "independent"
    """How the blocks' dictionaries are trained: ``independent``, each on the plain tuned model
    (it learns the whole difference at its block, the earlier blocks' change carried on by the
    residual stream included, so a constant change can be removed twice); ``sequential``, in
    order of depth, each on the tuned model with every latent of the earlier ones ablated (it
    learns the difference that is left)."""
    cross_block_rank: Literal["attribution", "relative", "score", "round_robin"] = "attribution"
    """How the features of all blocks are ranked: ``attribution``, greedily by how much ablating
    a feature is estimated to lower ``KL(p_base ‖ p_tuned)`` of the next-token predictions on the
    corpus (attribution patching; each round given the features already taken, see
    ``attribution_rounds``; uses the base model, not the reward); or by activation on the
    policy's tokens: ``relative``, a feature's score over its block's total score (its share of
    the block's change); ``score``, by score (the length of its contribution to the difference,
    which grows with depth); ``round_robin``, each block's best in turn (first block first)."""
    attribution_rounds: tuple[int, ...] = (5, 5, 5, 5)
    """Features taken per round of the ``attribution`` ranking before the attributions are
    measured again with them ablated (one forward/backward pass over the corpus per round, plus
    one for the rest); () = one measurement."""
    attribution_fluency: float = 0.0
    """Weight λ of a fluency term in the ``attribution`` ranking; 0 = off. With λ > 0 every
    measurement also samples the policy's completions of the corpus prompts with the features
    taken so far ablated (seed ``seed + 1``), and a feature's score adds λ × its attribution of
    the cross-entropy of the policy's predictions under the base model on those texts, so
    features whose ablation makes the policy write what the base model finds unlikely rank
    lower. Costs one sampling pass and one more forward/backward pass per measurement."""
    n_corpus_prompts: int = 160
    """Train-split prompts completed by the tuned policy: the dictionary's texts (never the
    held-out prompts of the causal tests)."""
    corpus_new_tokens: int = 20
    """New tokens per corpus completion."""
    max_len: int = 40
    """Tokens per corpus text (prompt + completion, truncated)."""
    d_dict: int = 1024
    """Latents of the dictionary."""
    top_k: int = 8
    """Active latents per token (TopK)."""
    group_cos: float = 0.9
    """Latents whose decoder rows have a cosine above this are one feature (TopK copies of one
    direction); features, not single latents, are ranked, ablated and added."""
    n_epochs: int = 30
    """Passes over the corpus tokens when training the dictionary."""
    batch_size: int = 128
    """Tokens per training step."""
    learning_rate: float = 2e-3
    """Adam learning rate."""
    weight_decay: float = 1.0
    """AdamW weight decay of the encoder weights (not biases, not the decoder); 0 = off. Makes
    a change present on every token one constant latent (lower values split a planted constant
    difference over several features or leave 7-26% of it after ablation, tiny-model test)."""
    aux_coef: float = 1 / 32
    """Weight of the AuxK loss (Gao et al. 2024): dead latents' top-2k pre-activations
    reconstruct the residual error, so they come back to life; 0 = off."""
    heldout: float = 0.1
    """Share of the corpus tokens (the last texts) held out from training to measure the
    dictionary's FVU."""
    ks: tuple[int, ...] = (1, 5, 10, 20, 50)
    """Dose-response: numbers of top tuned-specific latents ablated (tuned) and added (base)."""
    control_k: int = 20
    """k of the controls (random latents, compared with the top-k)."""
    n_random: int = 3
    """Draws of ``control_k`` frequency-matched random latents."""
    steer_scale: float = 1.0
    """Multiplier of the steering vectors (latents scaled to their mean tuned activation, and the
    difference of means); 1 adds the tuned model's average."""
    dom_add_scales: tuple[float, ...] = (1.0, 3.0)
    """Scales of the difference-of-means direction added to the base model (1: the tuned
    model's average shift; 3: the stronger dose steering studies commonly try)."""
    n_eval_prompts: int = 32
    """Held-out (test-split) prompts of the causal tests."""
    max_new_tokens: int = 20
    """New tokens per completion in the causal tests."""
    temperature: float = 1.0
    """Sampling temperature of the causal tests (same seed for every condition)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples (over prompts) of every gap share's CI."""
    n_permutations: int = 2000
    """Sign flips of the permutation test top-k vs random latents."""
    n_dashboards: int = 10
    """Latents with an HTML dashboard (top contexts, logit effects, histogram)."""
    n_contexts: int = 8
    """Top activating contexts per latent in the table and dashboards."""
    seed: RunSeed = 0
    """Seed of corpus sampling, dictionary training and the causal tests."""
    device: RunDevice = "cpu"
    """Where models and the dictionary run."""

    def __post_init__(self) -> None:
        self.require(
            self.layers is None or (len(self.layers) > 0 and min(self.layers) >= 0),
            "layers",
            "needs blocks >= 0 (or None for layer_fractions)",
        )
        self.require_choice("block_training", ("independent", "sequential"))
        self.require_choice("cross_block_rank", ("attribution", "relative", "score", "round_robin"))
        self.require(
            all(n >= 1 for n in self.attribution_rounds),
            "attribution_rounds",
            "needs values >= 1 (or () for one measurement)",
        )
        self.require(
            len(self.layer_fractions) > 0 and all(0.0 <= f <= 1.0 for f in self.layer_fractions),
            "layer_fractions",
            "needs values in [0, 1]",
        )
        self.require_between("group_cos", 0.0, 1.0)
        self.require_at_least(
            1,
            "n_corpus_prompts",
            "corpus_new_tokens",
            "top_k",
            "n_epochs",
            "batch_size",
            "control_k",
            "n_random",
            "max_new_tokens",
            "n_dashboards",
            "n_contexts",
        )
        self.require_at_least(4, "max_len")
        self.require_at_least(2, "d_dict", "n_eval_prompts")
        self.require_at_least(100, "n_bootstrap", "n_permutations")
        self.require_positive("learning_rate")
        self.require_at_least(
            0.0, "steer_scale", "temperature", "weight_decay", "aux_coef", "attribution_fluency"
        )
        self.require(0.0 <= self.heldout < 0.5, "heldout", "must be in [0, 0.5)")
        self.require(self.top_k <= self.d_dict, "top_k", "must be <= d_dict")
        self.require(len(self.ks) > 0 and min(self.ks) >= 1, "ks", "needs values >= 1")
        self.require(max(self.ks) <= self.d_dict, "ks", "values must be <= d_dict")
        self.require(self.control_k <= self.d_dict // 2, "control_k", "must be <= d_dict / 2")

    def check_depth(self, n_layers: int, model: str) -> None:
        """``layers`` must be blocks of the model."""
        self.require_blocks("layers", n_layers, model)

    def resolved_layers(self, n_layers: int) -> list[int]:
        """The blocks the stage uses for a model with ``n_layers`` blocks, in order."""
        if self.layers is not None:
            return sorted(set(self.layers))
        return sorted({round(f * (n_layers - 1)) for f in self.layer_fractions})
