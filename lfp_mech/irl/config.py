"""Options of the ``irl`` stage: recover the reward from behaviour, compare, re-train on it.

Defaults are sized for SmolLM2-135M on 2 CPU cores: 128 train / 128 test prompts (+ 96 other
held-out texts), 24 new tokens, greedy; the reward model is SmolLM2's first 16 blocks with a
linear head on two readouts of the residual stream (the sum of the token states after block 2 and
their mean after block 16 — ``context_layer="auto"``, the block just past the middle of any
model), the head alone trained on cached features; 10 seeds × 6 epochs. The
IRL paper's sizes (500 / 500 prompts, 100 new tokens, full fine-tuning, last-token head, batch 2,
lr 1e-5, 13 seeds × 6 epochs) are the ``irl`` section of the paper-model presets
(``lfp-mech config --preset pythia-70m``).
"""

from dataclasses import dataclass
from typing import Any, Literal

from lfp_mech.config_base import RunDevice, RunDtype, RunSeed, StageConfig

__all__ = ["IRLConfig", "Mode", "POOLINGS", "Pooling", "auto_context_layer"]

Mode = Literal["cached", "full"]
Pooling = Literal["last", "mean", "sum"]
POOLINGS: tuple[str, ...] = ("last", "mean", "sum")


@dataclass
class IRLConfig(StageConfig):
    """Settings of the IRL stage: demonstrations, reward model, training, IRL-RLHF, toxicity."""

    section = "irl"

    n_train_prompts: int = 128
    """Prompts whose completions (by both models) train the reward model (paper: 500)."""
    n_test_prompts: int = 128
    """Prompts whose completions are held out for evaluation (paper: 500)."""
    n_other_texts: int = 96
    """Extra held-out texts of the task (VADER: contrastive review sentences; toxicity: unused
    prompts), so evaluation is not only on the two models' own outputs. 0 disables."""
    n_val_prompts: int = 64
    """Validation prompts (unused train-split prompts, never a held-out prompt) whose
    completions by both models, with ``n_val_texts`` extra texts, form the validation split on
    which every choice is made (readout, epoch, learning rate, threshold, selected run); the
    held-out texts are scored once at the end. 0 and ``n_val_texts=0``: choices fall back to
    the training texts."""
    n_val_texts: int = 48
    """Extra validation texts (VADER: contrastive sentences built from training lexicon words,
    validation templates and validation neutral words, disjoint from the held-out ones;
    toxicity: unused train-split prompts)."""
    max_new_tokens: int = 24
    """Completion length of the demonstrations (paper: 100)."""
    do_sample: bool = False
    """False: greedy decoding (paper). True: sampling with ``temperature`` / ``top_p``."""
    temperature: float = 1.0
    """Sampling temperature (only with ``do_sample``)."""
    top_p: float = 1.0
    """Nucleus sampling mass (only with ``do_sample``)."""
    gen_batch_size: int = 32
    """Prompts per ``generate`` call (left-padded, KV cache)."""
    mode: Mode = "cached"
    """"cached": train the top ``n_trainable_blocks`` on cached hidden states (CPU default);
    "full": fine-tune the whole LM (paper)."""
    n_layers: int | None = 2
    """The head reads the residual stream after this decoder block, pooled by ``pooling``
    (blocks above it and ``context_layer`` are dropped); None: after the last block (the
    paper). VADER is a word-level reward, and words are still linearly readable early."""
    context_layer: int | Literal["auto"] | None = "auto"
    """A second readout: the head also reads the mean of the residual stream after this block,
    a sentence-level view next to the word-level sum after block ``n_layers``. Both are read
    raw (before the final norm) and scaled to unit RMS over the training texts. "auto": the
    block just past the middle of the model, ``depth // 2 + 1`` (16 for SmolLM2's 30 blocks,
    the value this default had as a fixed index, so SmolLM2 results are unchanged; 2 for a
    2-block model, 7 for Pythia-160m's 12). None: the one readout, final-normed. Needs the
    head-only cached mode."""
    n_trainable_blocks: int = 0
    """Top blocks (of the ``n_layers`` kept) trained in "cached" mode; 0 = the head alone, on
    the cached pooled features. Blocks > 0 need ``context_layer=None``."""
    pooling: Pooling = "sum"
    """What the linear head reads: the "last" non-padding token (paper), the "mean" or the
    "sum" of the text's token states (BOS excluded; a per-token reward, averaged or added up).
    "sum" has the shape of a lexicon reward like VADER (a sum over words); it grows with length,
    so compare texts of similar length. Applies to the ``n_layers`` readout (the
    ``context_layer`` one is a mean)."""
    grid_pooling: tuple[Pooling, ...] = ("mean",)
    """Other poolings tried on the validation split besides ``pooling`` (empty: none)."""
    grid_context_layer: tuple[int | Literal["auto"] | None, ...] = (None,)
    """Other ``context_layer`` values tried on the validation split (head-only mode)."""
    grid_lr: tuple[float, ...] = (3e-3,)
    """Other learning rates tried on the validation split besides ``lr``."""
    n_seeds: int = 10
    """Independent runs (head initialisation and data order) — the non-identifiability study."""
    n_epochs: int = 6
    """Passes over the training pairs per seed; every epoch is evaluated."""
    lr: float = 1e-3
    """Adam learning rate (paper: 1e-5..1e-4, for full fine-tuning; a head alone needs more)."""
    batch_size: int = 8
    """Demonstration pairs per optimizer step (paper: 2)."""
    grad_clip: float = 1.0
    """Max global gradient norm (``clip_grad_norm_``)."""
    max_length: int = 192
    """Reward-model inputs are truncated to this many tokens (BOS included)."""
    eval_batch_size: int = 32
    """Texts per forward pass when scoring."""
    log_ratio_control: bool = True
    """Also score the held-out texts of the VADER task with the policy's implicit reward (its
    log-probability ratio to the base model, no training) and report it next to the IRL reward."""
    threshold_method: Literal["accuracy", "median"] = "accuracy"
    """How the IRL threshold is fitted on the validation texts: "accuracy" = the cut that
    maximises agreement with the binarized true reward; "median" = the median IRL reward."""
    rlhf_steps: int | None = None
    """IRL-RLHF on the VADER task: GRPO steps of a policy trained on the recovered reward, with
    the rlhf stage's trainer settings (0 skips IRL-RLHF). The true-reward policy it is compared
    with gets the same steps: the rlhf stage's own GRPO/RLOO policy when the steps equal those
    it trained (None, the default: exactly those, the full-length comparison, one extra GRPO
    run), else a matched re-run on the true reward (two runs; always after a DPO rlhf stage).
    A short run (e.g. 10 steps at the default learning rate) leaves both policies near the base
    model: the measured true-reward gain of 10 steps was within noise of zero, so its ratio
    says nothing."""
    rlhf_eval_prompts: int = 128
    """Held-out prompts on which the IRL-RLHF policies (and the toxicity task's) are compared."""
    toxicity_rlhf_steps: int = 30
    """The toxicity task: GRPO steps of the detoxified expert on the offline toxicity reward
    (0 skips the task). The expert must behave differently enough from the base model for its
    demonstrations to carry the reward; docs/tutorials/irl.md has the measured steps."""
    toxicity_lr: float = 1e-4
    """Learning rate of the toxicity task's GRPO runs (expert and IRL-RLHF)."""
    toxicity_irl_rlhf_steps: int = 0
    """IRL-RLHF on the toxicity task: GRPO steps on its recovered reward, compared with the
    detoxified expert (0 skips it; off by default for the stage's time budget)."""
    toxicity_balanced: bool = True
    """Toxicity task: toxic texts (by the offline classifier) from ``toxicity_samples`` sampled
    base completions per held-out / validation prompt are added to those sets (up to
    ``n_other_texts`` / ``n_val_texts``), so that accuracy is not the majority class (greedy
    completions are almost all non-toxic)."""
    toxicity_prompts: Literal["toxicity", "jigsaw"] = "toxicity"
    """Prompts of the toxicity task: "toxicity" (offline, shipped) or "jigsaw" (the IRL paper's
    Jigsaw toxic-comment prefixes; needs the Hugging Face hub — the stage checks it first and
    stops with a message naming the offline set when the hub is unreachable). The toxicity
    reward uses s-nlp/roberta_toxicity_classifier when it is in the HF cache, else the offline
    classifier."""
    toxicity_samples: int = 24
    """Sampled base-model completions per held-out / validation prompt, the pool of toxic texts
    of the balanced toxicity sets (about 4% of them are toxic offline)."""
    toxicity_log_ratio_control: bool = False
    """The log-ratio control on the toxicity task too (off by default: its binarized accuracy
    there is the majority class, and it costs about a minute)."""
    seed: RunSeed = 0
    """Seed of prompt sampling and of generation sampling; run ``i`` uses seed ``seed + i``."""
    device: RunDevice = "cpu"
    """Torch device for generation and training."""
    dtype: RunDtype = "float32"
    """The run's dtype: demonstrations are generated, policies evaluated and the probe estimate
    computed with the models in it, and the re-trained policies use it as TRL mixed precision.
    The reward model and the log-ratio control stay float32 (see ``irl.experiment``)."""

    def __post_init__(self) -> None:
        self.require_at_least(
            1, "n_train_prompts", "n_test_prompts", "max_new_tokens", "gen_batch_size",
            "n_seeds", "n_epochs", "batch_size", "max_length", "eval_batch_size",
            "rlhf_eval_prompts",
        )  # fmt: skip
        self.require_at_least(
            0, "n_other_texts", "n_trainable_blocks", "toxicity_rlhf_steps",
            "toxicity_irl_rlhf_steps", "n_val_prompts", "n_val_texts", "toxicity_samples",
        )  # fmt: skip
        self.require_choice("mode", ("cached", "full"))
        self.require_choice("pooling", POOLINGS)
        self.require_choice("threshold_method", ("accuracy", "median"))
        self.require_choice("toxicity_prompts", ("toxicity", "jigsaw"))
        self.require_optional_at_least(1, "n_layers")
        self.require_optional_at_least(0, "rlhf_steps")
        if self.context_layer != "auto":
            self.require_optional_at_least(1, "context_layer")
        if self.context_layer is not None:
            self.require(
                self.mode == "cached" and self.n_trainable_blocks == 0,
                "context_layer",
                "needs the head-only cached mode (mode='cached', n_trainable_blocks=0); "
                "set context_layer=None",
            )
        self.require_positive("lr", "grad_clip", "temperature", "toxicity_lr")
        for pooling in self.grid_pooling:
            self.require(pooling in POOLINGS, "grid_pooling", f"use poolings of {POOLINGS}")
        for lr in self.grid_lr:
            self.require(lr > 0, "grid_lr", "learning rates must be > 0")
        self.require_between("top_p", 0, 1, low_open=True)

    def check_depth(self, n_layers: int, model: str) -> None:
        """``n_layers``, ``context_layer`` and ``n_trainable_blocks`` fit a model of
        ``n_layers`` decoder blocks (called by the model stage, before anything loads)."""
        self.require_block("n_layers", n_layers, model, first=1)
        if self.context_layer != "auto":
            self.require_block("context_layer", n_layers, model, first=1)
        kept = self.n_layers or n_layers
        if self.mode == "cached" and self.n_trainable_blocks > kept:
            raise self.invalid(
                "n_trainable_blocks",
                f"the reward model keeps {kept} of {model}'s {n_layers} decoder blocks; use "
                f"0..{kept}",
            )

    def generation_key(self) -> dict[str, Any]:
        """The settings that change the demonstrations (part of their cache key)."""
        keys = ("max_new_tokens", "do_sample", "temperature", "top_p", "seed", "dtype")
        return {k: getattr(self, k) for k in keys}


def auto_context_layer(n_layers: int) -> int:
    """``context_layer="auto"`` on a model of ``n_layers`` decoder blocks: the block just past
    the middle, ``n_layers // 2 + 1`` (16 of SmolLM2's 30)."""
    return n_layers // 2 + 1
