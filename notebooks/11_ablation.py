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
# # 11 · Switching the features off (LFP Table 6)
#
# The last check of the LFP paper: if the task-related features carry the learned feedback
# pattern, removing them while the model writes should cost reward. Table 6 zero-ablates them
# during generation and reports the mean reward of 1000 completions to 30-token prefixes, for
# the base and the fine-tuned model, before and after. **Published:** performance was
# "consistent or worse" after ablation. (The paper's released code zeroed residual-stream
# *dimensions* instead of SAE features, on a random model; see `REFERENCE.md` §C.)
#
# Here an ablation removes exactly the chosen features' decoder contributions and keeps the
# SAE's error term,
#
# $$x \;\mapsto\; x - \sum_{f \in F} a_f(x)\, W_{\text{dec}}[f],$$
#
# so ablating nothing leaves the model unchanged and nothing the SAE fails to reconstruct is
# lost. Three conditions per model: `clean`, `task` (the task-related features; all described
# features if none is labelled task-related) and `random`, the same number of random features
# matched in activation frequency, the control the paper did not have. Means come with 95%
# t-intervals, and each ablation with the paired difference to the clean completions (same
# prompts, same sampling seed).

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
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from lfp_mech import run_for_notebooks

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## Table 6

# %%
validate = run.validate
summary = validate.summary
ablation = validate.ablation.set_index(["model", "condition"])
display(
    Markdown(
        f"Ablated set: **{validate.ablated_set}** ({summary['n_ablated']} features, "
        f"{summary['mode']} ablation); reward: {summary['reward']}; "
        f"{summary['n_completions']} completions per cell."
    )
)
ablation

# %%
validate.ablation_figure()

# %% [markdown]
# Features ablated per layer and condition:

# %%
counts = {
    condition: {hook: len(ids) for hook, ids in per_hook.items()}
    for condition, per_hook in validate.ablated_features.items()
}
pd.DataFrame(counts).fillna(0).astype(int)

# %% [markdown]
# ## The completions behind the table
#
# Every cell of Table 6 is the mean reward of its completions; the same index is the same
# prompt and sampling seed in every cell, which is what makes the paired differences paired.

# %%
means = validate.rewards.groupby(["model", "condition"])["reward"].mean()
assert np.allclose(means.loc[ablation.index], ablation["mean_reward"], atol=1e-5)
examples = validate.completions
tuned = examples[examples["model"] == "tuned"]
tuned.pivot(index=["index", "prompt"], columns="condition", values="completion").head(8)

# %% [markdown]
# ## What to look for
#
# * **Task vs random, not task vs clean.** Any ablation perturbs the model; the evidence for a
#   feedback pattern is a drop in reward from ablating the task features that is larger than
#   from ablating matched random ones (compare the `delta_vs_clean` CIs).
# * **Tuned vs base.** If the features encode what RLHF added, ablating them should hurt the
#   tuned model more than the base model.
# * **Read the completions**: an ablation that breaks fluency also lowers the reward, for a
#   reason unrelated to sentiment.
# * Smoke: 8 completions of 6 tokens from a random model; all rewards are ~0.
