"""Options of the ``rlhf`` stage: GRPO/RLOO on a reward, or DPO on preference pairs."""

from dataclasses import dataclass
from typing import Literal

from lfp_mech.config_base import RunDevice, RunDtype, RunSeed, StageConfig

__all__ = ["DPOConfigLite", "PREFERENCE_DATASETS", "RLHFConfig", "TASKS"]

TASKS: dict[str, dict[str, str]] = {
    "vader": {"reward": "vader", "prompts": "reviews", "preference_data": "offline"},
    "toxicity": {"reward": "toxicity", "prompts": "toxicity", "preference_data": "offline"},
    "hh": {"reward": "toxicity", "prompts": "hh-rlhf", "preference_data": "hh-rlhf"},
}
"""Task name -> reward name (``lfp_mech.rewards.get_reward``), prompt set, DPO preference data.

"hh" (the paper's helpful/harmless DPO task) needs the hub (Anthropic HH-RLHF); its held-out
evaluation uses the toxicity reward as a harmlessness proxy.
"""

PREFERENCE_DATASETS: dict[str, str] = {
    "hh-rlhf": "Anthropic/hh-rlhf",
    "toxic-dpo": "unalignment/toxic-dpo-v0.2",
}
"""Hub preference datasets the paper used for DPO (name -> hub id)."""

DPO_PROMPT_TOKENS = 44
"""Room for the prompt in DPO's ``max_length`` (review prefixes are short)."""

Task = Literal["vader", "toxicity", "hh"]
Method = Literal["grpo", "rloo", "dpo"]
PreferenceData = Literal["offline", "hh-rlhf", "toxic-dpo"]
PromptSet = Literal["reviews", "toxicity", "imdb", "jigsaw"]


@dataclass
class RLHFConfig(StageConfig):
    """Settings of the RLHF stage. Defaults: the offline SmolLM2 VADER study on a 2-core CPU."""

    section = "rlhf"

    task: Task = "vader"
    """"vader" (paper's sentiment task), "toxicity" (be less toxic) or "hh" (DPO, hub only)."""
    method: Method = "grpo"
    """"grpo" (TRL GRPOTrainer), "rloo" (TRL RLOOTrainer) or "dpo" (TRL DPOTrainer)."""
    prompts: PromptSet | None = None
    """Prompt set of training and evaluation (a name for
    [`lfp_mech.data.load_prompts`][lfp_mech.data.load_prompts]): "reviews" / "toxicity" (shipped,
    offline), "imdb" / "jigsaw" (the papers' sets, hub only). None: the task's offline set."""
    learning_rate: float = 5e-5
    """GRPO/RLOO learning rate (constant)."""
    beta: float = 0.04
    """KL coefficient to the reference (base) model in GRPO/RLOO."""
    batch_size: int = 16
    """Completions per optimizer step (per device); prompts per step = batch_size / num_generations.
    """
    num_generations: int = 8
    """Completions sampled per prompt (the group of GRPO's group-relative advantage)."""
    mini_batch_size: int | None = None
    """Completions per optimizer update: each batch of ``batch_size`` rollouts is split into
    ``batch_size / mini_batch_size`` updates, like PPO's mini-batches (paper: 64 rollouts,
    mini-batch 16). None: one update per batch. ``max_steps`` counts updates."""
    min_new_tokens: int = 8
    """Minimum completion length in tokens (paper: 8–20)."""
    max_new_tokens: int = 20
    """Maximum completion length in tokens (paper: 8–20)."""
    temperature: float = 1.0
    """Sampling temperature for training rollouts and evaluation."""
    repetition_penalty: float = 1.2
    """Sampling repetition penalty of training rollouts (> 1 discourages repeated tokens)."""
    max_steps: int = 70
    """Optimizer steps (GRPO/RLOO and DPO)."""
    budget_minutes: float | None = 40.0
    """Wall-clock safety cap (cumulative over resumes): training stops cleanly and saves. It sits
    well above the expected time (~15 min for 70 steps at 11-15 s a step on 2 idle cores) so that
    ``max_steps``, not the machine's load, ends training and the run is reproducible (a 20-min cap
    stopped a run on a shared machine at step 59); a budget stop is logged and recorded in the
    policy metadata. None: no cap."""
    save_steps: int = 10
    """Write a resumable Trainer checkpoint every this many steps (and at a budget stop)."""
    keep_checkpoints: bool = False
    """Keep ``checkpoints/`` after the policy is exported (False deletes them to save disk)."""
    distinct2_threshold: float = 0.6
    """Warn when a step's (or the tuned policy's) distinct-2 falls below this (collapse)."""
    stop_on_collapse: bool = False
    """Stop training when distinct-2 stays below the threshold for ``collapse_patience`` steps."""
    collapse_patience: int = 3
    """Consecutive collapsed steps that trigger a stop when ``stop_on_collapse``."""
    n_train_prompts: int | None = None
    """Training prompts drawn from the task's train split (None: all of them)."""
    n_eval_prompts: int = 256
    """Held-out prompts for the base-vs-tuned evaluation (test split; capped at its size)."""
    eval_batch_size: int = 32
    """Prompts per ``generate`` call in evaluation and preference-pair sampling."""
    eval_repetition_penalty: float = 1.0
    """Repetition penalty in evaluation (1.0: the policy's own distribution, the honest measure)."""
    dpo_learning_rate: float = 3e-5
    """DPO learning rate (paper: 3e-5)."""
    dpo_beta: float = 0.1
    """DPO's beta (strength of the implicit KL to the reference)."""
    dpo_batch_size: int = 8
    """DPO preference pairs per step (paper: 8)."""
    preference_data: PreferenceData | None = None
    """DPO pairs: "offline" (sample + rank), "hh-rlhf" or "toxic-dpo" (hub). None: the task's."""
    n_pair_prompts: int = 256
    """Offline DPO: train prompts to sample preference pairs for."""
    pair_samples: int = 4
    """Offline DPO: completions sampled per prompt; best vs worst by reward form a pair."""
    seed: RunSeed = 0
    """Seed of training (data order, sampling) and of evaluation sampling (the run's seed)."""
    device: RunDevice = "cpu"
    """"cpu", "cuda", ... (the run's device; under ``accelerate launch`` the launcher places
    the model)."""
    dtype: RunDtype = "float32"
    """The run's dtype: TRL trains with that mixed precision ("bfloat16": ``bf16=True``,
    "float16": ``fp16=True``; fp32 master weights, the exported policy is float32); evaluation
    and pair sampling generate with the model in that dtype."""

    def __post_init__(self) -> None:
        self.require_choice("task", TASKS)
        self.require_choice("method", ("grpo", "rloo", "dpo"))
        self.require(
            self.task != "hh" or self.method == "dpo",
            "method",
            "task 'hh' is a preference task: set method='dpo'",
        )
        self.require_positive(
            "learning_rate", "batch_size", "num_generations", "max_new_tokens", "temperature",
            "repetition_penalty", "max_steps", "save_steps", "collapse_patience",
            "n_eval_prompts", "eval_batch_size", "eval_repetition_penalty", "dpo_learning_rate",
            "dpo_beta", "dpo_batch_size", "n_pair_prompts",
        )  # fmt: skip
        self.require_at_least(0, "beta")
        if self.method != "dpo":
            self.require_at_least(2, "num_generations")
            self.require(
                self.batch_size % self.num_generations == 0,
                "batch_size",
                f"must be a multiple of num_generations ({self.num_generations})",
            )
        if self.mini_batch_size is not None:
            self.require(
                self.mini_batch_size >= 1 and self.batch_size % self.mini_batch_size == 0,
                "mini_batch_size",
                f"must divide batch_size ({self.batch_size}), or be None",
            )
        self.require_between("min_new_tokens", 0, self.max_new_tokens)
        self.require(
            self.budget_minutes is None or self.budget_minutes > 0,
            "budget_minutes",
            "must be > 0 or None (no cap)",
        )
        self.require_between("distinct2_threshold", 0, 1)
        self.require_optional_at_least(1, "n_train_prompts")
        self.require_at_least(2, "n_eval_prompts", "pair_samples")
        if self.prompts is not None:
            self.require_choice("prompts", ("reviews", "toxicity", "imdb", "jigsaw"))
            self.require(self.task != "hh", "prompts", "task 'hh' takes its prompts from HH-RLHF")
        if self.preference_data is not None:
            self.require_choice("preference_data", ("offline", *PREFERENCE_DATASETS))

    def to_dpo_config(self) -> "DPOConfigLite":
        """The [`DPOConfigLite`][lfp_mech.rlhf.config.DPOConfigLite] this stage config implies for
        ``method="dpo"``."""
        return DPOConfigLite(
            learning_rate=self.dpo_learning_rate,
            beta=self.dpo_beta,
            batch_size=self.dpo_batch_size,
            max_steps=self.max_steps,
            max_length=DPO_PROMPT_TOKENS + self.max_new_tokens,
            budget_minutes=self.budget_minutes,
            save_steps=self.save_steps,
            keep_checkpoints=self.keep_checkpoints,
            seed=self.seed,
            device=self.device,
            dtype=self.dtype,
        )


@dataclass
class DPOConfigLite(StageConfig):
    """Settings of [`lfp_mech.rlhf.train_dpo`][lfp_mech.rlhf.dpo.train_dpo] (a small subset of TRL's
    ``DPOConfig``)."""

    section = "dpo"

    learning_rate: float = 3e-5
    """AdamW learning rate, constant (paper: 3e-5; AdamW eps 1e-8)."""
    beta: float = 0.1
    """DPO beta: how strongly the policy is kept near the reference."""
    batch_size: int = 8
    """Preference pairs per optimizer step (paper: 8)."""
    max_steps: int = 40
    """Optimizer steps (paper: 5000 on GPUs; a few dozen suffice for the offline CPU demo)."""
    max_length: int = 64
    """Maximum tokens of prompt + completion (longer pairs are truncated)."""
    budget_minutes: float | None = 14.0
    """Wall-clock training budget (cumulative over resumes); None: no cap."""
    save_steps: int = 20
    """Resumable checkpoint every this many steps."""
    keep_checkpoints: bool = False
    """Keep ``checkpoints/`` after export."""
    seed: RunSeed = 0
    """Training seed."""
    device: RunDevice = "cpu"
    """"cpu", "cuda", ..."""
    dtype: RunDtype = "float32"
    """Mixed precision of training: "float32" (none), "bfloat16" or "float16"."""

    def __post_init__(self) -> None:
        self.require_positive(
            "learning_rate", "beta", "batch_size", "max_steps", "max_length", "save_steps"
        )
        self.require(
            self.budget_minutes is None or self.budget_minutes > 0,
            "budget_minutes",
            "must be > 0 or None (no cap)",
        )
