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
# # 14 · RLHF with the recovered reward (IRL paper: IRL-RLHF)
#
# If IRL recovered the reward, training a fresh policy on the *recovered* reward should
# reproduce the effect of training on the true one. The IRL paper re-ran RLHF with the
# extracted reward and measured the toxicity of the outputs. **Published** (Pythia-70m, mean
# toxicity, lower is better): SFT model **0.0559** → RLHF with the ground-truth reward
# **0.0358** → RLHF with the IRL reward **0.0264**: the recovered reward worked at least as well.
#
# `lfp_mech.irl_rlhf` does this for the run's VADER task: it trains a policy from the base
# model on the IRL stage's best reward model (normalised so 0 is its fitted decision threshold)
# with the same GRPO trainer as the `rlhf` stage, then scores the base policy, the true-reward
# policy (the `rlhf` stage's) and the IRL-reward policy on the same held-out prompts with the
# **true** reward (and, for reference, the mean recovered reward, `irl_reward_mean`).
#
# The `irl` stage runs it after the reward recovery (`irl/irl_rlhf/`; its `rlhf_steps` option
# sets the budget, `rlhf_steps=0` skips it, and then this notebook has nothing to show). The
# smoke preset trains for 2 optimizer steps, which shows the procedure but says nothing about
# the result.

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

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## The table

# %%
irl = run.irl
table = irl.irl_rlhf()
if table is None:
    print("This run skipped IRL-RLHF (irl.rlhf_steps = 0): nothing to show.")
else:
    assert table["policy"].iloc[-1] == "RLHF (IRL reward)"
    steps = run.config.stages.irl.rlhf_steps
    display(Markdown(f"From the `irl` stage, {steps} GRPO steps on the recovered reward."))
    display(table.set_index("policy"))

# %% [markdown]
# ## Training on the recovered reward
#
# The IRL-reward policy's training curve: here the reward on the left axis is the
# *recovered* reward the policy was trained on, not VADER.

# %%
irl.irl_rlhf_curve_figure()

# %% [markdown]
# ## What to look for
#
# * **True reward of the IRL-reward policy** against the base (does the recovered reward
#   improve the real objective?) and against the true-reward policy (does it match it?). The
#   paper's IRL-reward policy even beat the ground-truth one; with a non-identifiable reward
#   it could as well have exploited what the IRL reward gets wrong.
# * **`irl_reward_mean` vs `mean_reward`.** A policy that raises the recovered reward far more
#   than the true reward is hacking the recovered reward.
# * **distinct-2** again guards against collapse.
# * With a tiny budget (and in smoke mode) the three policies are nearly identical.
