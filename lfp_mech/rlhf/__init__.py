"""RLHF stage: tune a base LM toward a reward with TRL, then measure what changed.

This is step (1) of the LFP paper (Marks et al. 2024, §A.1 of ``REFERENCE.md``): the "controlled
sentiment generation" task rewards a policy for completing short movie-review prefixes with text
whose VADER lexicon valence is high,
``Reward(prefix + completion) = clip((1/5) Σ V(word), -10, 10)``
([`lfp_mech.rewards.vader_reward`][lfp_mech.rewards.vader_reward]).

What the paper did and what this package does instead:

* **Optimizer.** The paper used PPO (TRL 0.7; batch 64, KL coefficient 0.5, lr 1e-6). Current TRL
  has no PPO; its online RL trainers with a KL penalty to a frozen reference model are
  ``GRPOTrainer`` (group-relative advantages: each prompt is completed ``num_generations`` times and
  each completion's advantage is its reward minus the group mean, divided by the group std) and
  ``RLOOTrainer`` (REINFORCE leave-one-out baseline).
  [`train_policy`][lfp_mech.rlhf.grpo.train_policy] runs either; GRPO is the default. ``beta`` is
  the KL coefficient to the reference (the base model).
* **CPU budget.** Defaults are settings verified on a 2-core CPU with SmolLM2-135M: 16
  completions per step (2 prompts x 8 generations), 8–20 new tokens (the paper's completion
  length), lr 5e-5, beta 0.04, constant learning rate, float32. A wall-clock safety cap
  (``RLHFConfig.budget_minutes``) stops training cleanly and still saves the policy.
* **Collapse guard.** The known failure is reward hacking by repeating one positive word ("great
  great great ..."). Three defences: a sampling repetition penalty during training rollouts, the KL
  penalty, and monitoring: every step logs the distinct-2 of that step's completions
  ([`distinct_n`][lfp_mech.rlhf.evaluation.distinct_n]) and warns when it falls below a threshold.
* **DPO.** The paper's two other tasks (helpful/harmless from Anthropic HH-RLHF, toxicity from
  toxic-dpo) used TRL's ``DPOTrainer``. [`train_dpo`][lfp_mech.rlhf.dpo.train_dpo] runs it on
  preference pairs, either from those hub datasets
  ([`load_preference_pairs`][lfp_mech.rlhf.dpo.load_preference_pairs]) or, offline, from pairs made
  by sampling the base model several times per prompt and ranking the samples by a reward
  ([`make_preference_pairs`][lfp_mech.rlhf.dpo.make_preference_pairs]).

Outputs are plain Hugging Face checkpoint folders (safetensors + tokenizer), so the tuned policy
loads into TransformerLens with [`lfp_mech.models.load_model`][lfp_mech.models.loading.load_model]
for the later stages. Training is resumable: Trainer checkpoints go to ``out_dir/checkpoints`` and a
rerun with the same ``out_dir`` continues from the last complete one. (Those Trainer checkpoints
hold the optimizer and RNG state in torch's own format; the exported policy holds only safetensors.)

Modules:

* [`config`][lfp_mech.rlhf.config] — [`RLHFConfig`][lfp_mech.rlhf.config.RLHFConfig] (the stage's
  options), [`DPOConfigLite`][lfp_mech.rlhf.config.DPOConfigLite],
  [`TASKS`][lfp_mech.rlhf.config.TASKS];
* [`grpo`][lfp_mech.rlhf.grpo] — [`train_policy`][lfp_mech.rlhf.grpo.train_policy] (GRPO/RLOO) and
  its TRL reward adapter;
* [`dpo`][lfp_mech.rlhf.dpo] — [`train_dpo`][lfp_mech.rlhf.dpo.train_dpo],
  [`make_preference_pairs`][lfp_mech.rlhf.dpo.make_preference_pairs],
  [`load_preference_pairs`][lfp_mech.rlhf.dpo.load_preference_pairs];
* [`session`][lfp_mech.rlhf.session] — the resumable training session (checkpoints, budget, export)
  and the Trainer callback that logs each step and watches for collapse;
* [`logs`][lfp_mech.rlhf.logs] — the per-step ``train_log.csv``;
* [`evaluation`][lfp_mech.rlhf.evaluation] — [`PolicyEval`][lfp_mech.rlhf.evaluation.PolicyEval],
  [`evaluate_policy`][lfp_mech.rlhf.evaluation.evaluate_policy],
  [`compare_policies`][lfp_mech.rlhf.evaluation.compare_policies],
  [`distinct_n`][lfp_mech.rlhf.evaluation.distinct_n];
* [`sampling`][lfp_mech.rlhf.sampling] — sampling and scoring completions (shared by the above);
* [`tasks`][lfp_mech.rlhf.tasks] — each task's reward and prompts;
* [`stage`][lfp_mech.rlhf.stage] — the stage (``run(ctx)``) and
  [`train_and_evaluate`][lfp_mech.rlhf.stage.train_and_evaluate], the same outside a run directory;
* [`results`][lfp_mech.rlhf.results] — [`RLHFResults`][lfp_mech.rlhf.results.RLHFResults], reading
  the stage folder back;
* [`plots`][lfp_mech.rlhf.plots] — the training-curve figures;
* [`artifacts`][lfp_mech.rlhf.artifacts] — the file names of the stage folder.

Typical use::

    from lfp_mech.rlhf import RLHFConfig, train_and_evaluate
    summary = train_and_evaluate("smollm2-135m", "runs/rlhf_only", RLHFConfig())
"""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DPOConfigLite": "config",
        "PREFERENCE_DATASETS": "config",
        "RLHFConfig": "config",
        "TASKS": "config",
        "train_policy": "grpo",
        "train_dpo": "dpo",
        "make_preference_pairs": "dpo",
        "load_preference_pairs": "dpo",
        "PolicyEval": "evaluation",
        "compare_policies": "evaluation",
        "distinct_n": "evaluation",
        "evaluate_policy": "evaluation",
        "DPO_LOG_COLUMNS": "logs",
        "RL_LOG_COLUMNS": "logs",
        "read_train_log": "logs",
        "write_train_log": "logs",
        "train_and_evaluate": "stage",
        "RLHFResults": "results",
        "dpo_curve_figure": "plots",
        "reward_curve_figure": "plots",
    },
)

__all__ = [
    "DPOConfigLite",
    "DPO_LOG_COLUMNS",
    "PREFERENCE_DATASETS",
    "PolicyEval",
    "RLHFConfig",
    "RLHFResults",
    "RL_LOG_COLUMNS",
    "TASKS",
    "compare_policies",
    "distinct_n",
    "dpo_curve_figure",
    "evaluate_policy",
    "load_preference_pairs",
    "make_preference_pairs",
    "read_train_log",
    "reward_curve_figure",
    "train_and_evaluate",
    "train_dpo",
    "train_policy",
    "write_train_log",
]
