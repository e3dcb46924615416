"""IRL reward reconstruction: recover the reward an RLHF'd model was trained on from its behaviour.

This is the method of Joselowitz et al., "Insights from the Inverse: Reconstructing LLM Training
Goals through Inverse RL" (arXiv 2410.12491), written so that it runs offline on a 2-core CPU.

**What.** An RLHF'd ("expert") policy and the model it started from ("non-expert") answer the
same prompts. Whatever the expert does differently is evidence of the reward it was trained on.
IRL fits a reward model ``R`` (a language model with a linear head) that scores the expert's
texts above the non-expert's, then checks how well ``R`` agrees with the *true* reward on texts
it never saw.

**How, step by step** (paper section → function):

1. *Demonstrations* — greedy completions of train and test prompts by both models
   ([`generate_demonstrations`][lfp_mech.irl.demonstrations.generate_demonstrations]), cached in the
   run directory.
2. *Reward model* — [`RewardModel`][lfp_mech.irl.reward_model.RewardModel]: the base model's decoder
   plus a linear head on the last non-padding token (the paper), or on the sum (``pooling="sum"``,
   the CPU default) or mean of the token states, optionally beside a second, sentence-level readout
   (``context_layer``).
3. *Max-margin objective* — [`max_margin_loss`][lfp_mech.irl.training.max_margin_loss]:
   ``x = R(expert) - R(non-expert)``, ``loss = -x if x > 0 else -2x``, Adam with ``zero_grad`` every
   step, gradient clipping.
4. *Evaluation* — [`evaluate_reward_model`][lfp_mech.irl.evaluation.evaluate_reward_model] /
   [`irl_metrics`][lfp_mech.irl.evaluation.irl_metrics]: the true reward binarized at 0, the IRL
   reward at a threshold fitted on the training texts
   ([`fit_threshold`][lfp_mech.irl.evaluation.fit_threshold]); accuracy, F1, Pearson, Spearman and
   Kendall on held-out texts; [`auroc_with_ci`][lfp_mech.irl.evaluation.auroc_with_ci]: the
   AUROC with a bootstrap CI and its rank-test p-value against chance.
5. *Non-identifiability* — [`run_seeds`][lfp_mech.irl.training.run_seeds]: seeds × epochs give
   different reward models of similar accuracy;
   [`summarize_runs`][lfp_mech.irl.evaluation.summarize_runs] reports mean ± std, median (the honest
   headline) and the best run (the paper's best-of-78: selected on the held-out texts, optimistic).
6. *Controls* — [`supervised_ceiling`][lfp_mech.irl.controls.supervised_ceiling],
   [`log_ratio_reward`][lfp_mech.irl.controls.log_ratio_reward] and, for the lexicon reward,
   [`expressed_lexicon_bound`][lfp_mech.irl.controls.expressed_lexicon_bound].
7. *IRL-RLHF* — [`irl_rlhf`][lfp_mech.irl.policies.irl_rlhf]: a new policy trained on the recovered
   reward with ``lfp_mech.rlhf.train_policy``, compared under the true reward
   ([`evaluate_policies`][lfp_mech.irl.policies.evaluate_policies]).

**Tasks** ([`TASKS`][lfp_mech.irl.tasks.TASKS]): ``"vader"`` (the RLHF stage's reward) and
``"toxicity"`` (the IRL paper's detoxification task:
[`run_toxicity_task`][lfp_mech.irl.toxicity.run_toxicity_task]).

**Modules.**

* ``config.py`` — [`IRLConfig`][lfp_mech.irl.config.IRLConfig] (the ``irl`` section of a run
  config);
* ``tasks.py`` — [`IRLTask`][lfp_mech.irl.tasks.IRLTask], [`TASKS`][lfp_mech.irl.tasks.TASKS],
  [`task_texts`][lfp_mech.irl.tasks.task_texts], prompt sampling;
* ``demonstrations.py`` — [`Demonstrations`][lfp_mech.irl.demonstrations.Demonstrations],
  [`generate_demonstrations`][lfp_mech.irl.demonstrations.generate_demonstrations];
* ``readout.py`` — tokenization, pooling, readout capture and block surgery on HF decoders;
* ``inputs.py`` — [`RewardInputs`][lfp_mech.irl.inputs.RewardInputs] (what the trainable part reads)
  and its cache;
* ``reward_model.py`` — [`RewardModel`][lfp_mech.irl.reward_model.RewardModel];
* ``training.py`` — [`max_margin_loss`][lfp_mech.irl.training.max_margin_loss],
  [`train_step`][lfp_mech.irl.training.train_step],
  [`train_epoch`][lfp_mech.irl.training.train_epoch],
  [`run_seeds`][lfp_mech.irl.training.run_seeds], [`IRLRuns`][lfp_mech.irl.training.IRLRuns];
* ``evaluation.py`` — [`fit_threshold`][lfp_mech.irl.evaluation.fit_threshold],
  [`irl_metrics`][lfp_mech.irl.evaluation.irl_metrics],
  [`evaluate_reward_model`][lfp_mech.irl.evaluation.evaluate_reward_model],
  [`summarize_runs`][lfp_mech.irl.evaluation.summarize_runs];
* ``controls.py`` — [`supervised_ceiling`][lfp_mech.irl.controls.supervised_ceiling],
  [`expressed_lexicon_bound`][lfp_mech.irl.controls.expressed_lexicon_bound],
  [`log_ratio_reward`][lfp_mech.irl.controls.log_ratio_reward];
* ``persistence.py`` — [`save_reward_model`][lfp_mech.irl.persistence.save_reward_model],
  [`load_reward_model`][lfp_mech.irl.persistence.load_reward_model],
  [`reward_model_fn`][lfp_mech.irl.persistence.reward_model_fn];
* ``policies.py`` — [`evaluate_policies`][lfp_mech.irl.policies.evaluate_policies],
  [`irl_rlhf`][lfp_mech.irl.policies.irl_rlhf],
  [`run_irl_rlhf`][lfp_mech.irl.policies.run_irl_rlhf];
* ``experiment.py`` — [`run_task`][lfp_mech.irl.experiment.run_task]: one IRL experiment on one
  task, every artifact;
* ``toxicity.py`` — [`run_toxicity_task`][lfp_mech.irl.toxicity.run_toxicity_task]: detoxified
  expert, IRL, policy table;
* ``stage.py`` — ``run(ctx)``, the ``irl`` stage; ``results.py`` —
  [`IRLResults`][lfp_mech.irl.results.IRLResults]; ``artifacts.py`` — the file names; ``plots.py`` —
  the figures."""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "IRLConfig": "config",
        "Mode": "config",
        "POOLINGS": "config",
        "Pooling": "config",
        "TASKS": "tasks",
        "IRLTask": "tasks",
        "get_task": "tasks",
        "task_texts": "tasks",
        "split_triples": "tasks",
        "triple_vocabulary": "tasks",
        "validation_prompts": "tasks",
        "policy_eval_prompts": "tasks",
        "select_on_validation": "selection",
        "Demonstrations": "demonstrations",
        "generate_completions": "demonstrations",
        "generate_demonstrations": "demonstrations",
        "RewardInputs": "inputs",
        "RewardModel": "reward_model",
        "IRLRuns": "training",
        "max_margin_loss": "training",
        "run_seeds": "training",
        "train_epoch": "training",
        "train_step": "training",
        "METRICS": "evaluation",
        "IRLEval": "evaluation",
        "auroc_with_ci": "evaluation",
        "evaluate_reward_model": "evaluation",
        "fit_threshold": "evaluation",
        "irl_metrics": "evaluation",
        "summarize_runs": "evaluation",
        "expressed_lexicon_bound": "controls",
        "log_ratio_reward": "controls",
        "supervised_ceiling": "controls",
        "load_reward_model": "persistence",
        "reward_model_fn": "persistence",
        "save_reward_model": "persistence",
        "evaluate_policies": "policies",
        "irl_rlhf": "policies",
        "run_irl_rlhf": "policies",
        "run_task": "experiment",
        "run_toxicity_task": "toxicity",
        "IRLResults": "results",
        "IRLTaskResults": "results",
    },
)

__all__ = [
    "policy_eval_prompts",
    "select_on_validation",
    "split_triples",
    "triple_vocabulary",
    "validation_prompts",
    "Demonstrations",
    "IRLConfig",
    "IRLEval",
    "IRLResults",
    "IRLRuns",
    "IRLTask",
    "IRLTaskResults",
    "METRICS",
    "Mode",
    "POOLINGS",
    "Pooling",
    "RewardInputs",
    "RewardModel",
    "TASKS",
    "auroc_with_ci",
    "evaluate_policies",
    "evaluate_reward_model",
    "expressed_lexicon_bound",
    "fit_threshold",
    "generate_completions",
    "generate_demonstrations",
    "get_task",
    "irl_metrics",
    "irl_rlhf",
    "load_reward_model",
    "log_ratio_reward",
    "max_margin_loss",
    "reward_model_fn",
    "run_irl_rlhf",
    "run_seeds",
    "run_task",
    "run_toxicity_task",
    "save_reward_model",
    "summarize_runs",
    "supervised_ceiling",
    "task_texts",
    "train_epoch",
    "train_step",
]
