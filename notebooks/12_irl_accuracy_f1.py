# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 12 · Recovering the reward from behaviour: accuracy and F1 (IRL paper)
#
# Joselowitz et al. ask whether the reward an RLHF model was trained on can be read off its
# *behaviour*. An RLHF'd **expert** and the model it started from (**non-expert**) complete
# the same prompts; a reward model $R$ (the base LM with a linear head) is trained with a
# max-margin objective on pairs of their texts: with $x = R(\text{expert}) -
# R(\text{non-expert})$, the loss is $-x$ if $x > 0$ and $-2x$ otherwise (violations cost
# twice). $R$ is then compared with the true reward on held-out texts: both rewards are
# binarised and scored by **accuracy** and **F1**, plus correlations.
#
# **Published** (toxicity task, Pythia policies RLHF'd against a RoBERTa toxicity classifier):
#
# | policy | accuracy | F1 |
# |---|---|---|
# | Pythia-70m | 80.40% | 78.39% |
# | Pythia-410m | 78.20% | 71.61% |
#
# The 80.40% is the **best of 78 runs**; the mean over runs was about 0.61 ± 0.10.
#
# Here the expert is the `rlhf` stage's VADER policy and the true reward is VADER. The true
# reward is binarised at 0 (positive sentiment); the IRL reward at a threshold fitted on the
# *training* texts (the max-margin loss sees only reward differences, so $R$'s offset is
# arbitrary; threshold 0 is reported too, as `acc_zero`). Held-out texts: both models'
# completions of test prompts plus other review sentences. The honest headline is the median
# over seeds at the last epoch; the best run is selected on the evaluation texts themselves.

# %% [markdown]
# ## The run
#
# `run_for_notebooks()` returns the run this notebook reads, a `Run` (what
# `lfp_mech.load_run(path)` returns). Set the environment variable `LFP_MECH_RUN_DIR` to a
# finished run directory (e.g. `LFP_MECH_RUN_DIR=runs/default`, relative to the repository root
# or absolute) to read a real run. Without it the notebook computes the **smoke** preset into
# `runs/smoke` (a tiny random 2-layer model, a minute or two the first time; later notebooks
# resume it from disk). Smoke numbers only show that the code runs: they mean nothing about the
# method.

# %%
import pandas as pd
from IPython.display import Markdown, display

from lfp_mech import run_for_notebooks
from lfp_mech.irl.plots import plot_three_way

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## Summary over seeds, the best run, and the majority-class baseline

# %%
vader = run.irl.vader
summary = vader.summary
display(Markdown(f"Last epoch, over {summary['n_seeds']} seeds:"))
display(vader.final_epoch.loc[["acc", "f1", "acc_zero", "f1_zero", "pearson", "spearman",
                               "kendall", "pair_acc"]])  # fmt: skip
best = pd.Series(summary["best_run"], name="best run (selected on held-out texts)")
display(best.to_frame())
Markdown(
    f"Held-out texts: {summary['n_heldout']}, of which "
    f"{summary['heldout_positive_rate']:.0%} have positive true reward: always predicting the "
    f"majority class scores **{summary['majority_baseline_acc']:.1%}** accuracy."
)

# %% [markdown]
# ## Every run (seed × epoch)

# %%
runs = vader.runs
assert len(runs) == summary["n_runs"]
runs.set_index(["seed", "epoch"])

# %% [markdown]
# ## The best run on the held-out texts
#
# `vader.heldout_scores` holds each held-out text's true and (best-run) IRL reward.
# Binarising them again, the true reward at 0 and the IRL reward at the best run's fitted
# threshold, reproduces the best run's accuracy:

# %%
scores = vader.heldout_scores
assert len(scores) == summary["n_heldout"]
best_row = runs[(runs["seed"] == best["seed"]) & (runs["epoch"] == best["epoch"])].iloc[0]
truth = scores["true_reward"] > 0
predicted = scores["irl_reward"] > best_row["threshold"]
assert abs((truth == predicted).mean() - best["acc"]) < 1e-9
display(pd.crosstab(truth.rename("true reward > 0"), predicted.rename("IRL > threshold")))
scores.groupby("source")[["true_reward", "irl_reward"]].agg(["count", "mean"])

# %%
plot_three_way(scores["true_reward"], scores["irl_reward"], title="held-out texts (best IRL run)")

# %% [markdown]
# ## Where the errors are, and the supervised ceiling
#
# Accuracy of the best run per source of held-out text, and a **control the paper
# lacked**: a logistic probe fitted with the *true* labels on the untrained reward
# model's own pooled features and the same training texts (`supervised_ceiling`).
# IRL never sees the true reward, so it should not beat that probe; an IRL accuracy
# close to it means the representation and the texts, not the max-margin objective,
# are the limit.
#
# A second control reads the policy's *probabilities* instead of its texts: the
# implicit reward of KL-regularised RLHF, $\log \pi_\text{expert}(y) -
# \log \pi_\text{base}(y)$ averaged over tokens (`log_ratio_reward`; the optimum of
# RLHF is $\pi \propto \pi_\text{ref}\, e^{r/\beta}$). It needs no training, and is
# thresholded like the IRL reward (the cut fitted on the training texts).
#
# A third measures how much of the reward the demonstrations show at all
# (`expressed_lexicon_bound`, VADER task only): the true lexicon kept only on the words
# whose use the expert moved the way their valence says (more often if positive, less
# often if negative). A held-out text whose sentiment rests on a word the expert never
# moved (VADER scores "original", "created" and "played" positive) can be right only
# if the reward model generalises to that word from others.

# %%
display(vader.accuracy_by_source())
vader.controls()

# %% [markdown]
# ## The paper's own task: toxicity
#
# The `irl` stage also detoxifies the base model with GRPO on the offline toxicity
# reward ($1 - 2\,p_\text{toxic}$, `alt-profanity-check`), then recovers that reward
# from the detoxified model's behaviour the same way (`irl/toxicity/`). The policy
# table reports the toxicity probability of each policy's completions, as the
# paper's IRL-RLHF table does.

# %%
irl = run.irl
if "toxicity" in irl.tasks:
    toxicity = irl.toxicity
    display(toxicity.controls())
    headline = toxicity.headline()
    low, high = headline["best_auroc_ci95"]
    display(
        Markdown(
            f"Majority-class baseline: **{headline['majority_baseline_acc']:.1%}**; "
            f"{toxicity.summary['n_heldout']} held-out texts "
            f"({1 - headline['heldout_positive_rate']:.1%} toxic). Median over seeds: balanced "
            f"accuracy **{headline['balanced_acc_median']:.2f}**, AUROC "
            f"**{headline['auroc_median']:.2f}** (0.5 is chance). The run selected on "
            f"validation: AUROC {headline['best_auroc']:.3f}, 95% bootstrap CI "
            f"[{low:.2f}, {high:.2f}], one-sided rank-test p = "
            f"{headline['best_auroc_p_vs_chance']:.1g} against chance."
        )
    )
    columns = ["policy", "mean_reward", "toxicity_mean", "n"]
    display(irl.policy_table("toxicity")[columns])
    display(toxicity.plot_seed_heatmaps())
else:
    print("This run has no toxicity task (irl.toxicity_rlhf_steps = 0).")

# %% [markdown]
# ## What to look for
#
# * **Against the majority baseline.** With a skewed held-out set, accuracy must be read
#   against always predicting the majority class; F1 and the rank correlations are harder to
#   game.
# * **Median vs best.** The paper's 80.4% is a maximum over 78 runs picked on the evaluation
#   data; compare our best run with our median to see how much of such a headline is
#   selection.
# * **Source means.** The IRL reward should score expert texts above non-expert ones
#   (`pair_acc`), and its ranking of the *other* texts (never generated by either model) shows
#   whether it learned sentiment or just "looks like the expert".
# * Smoke: 24 held-out texts from a random model; the accuracy is the majority-class rate.
