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
# # 06 · Does the probe get the sign right? (LFP Table 5)
#
# Kendall τ asks for the right *order*; the paper's Table 5 asks the simpler question whether
# the probe gives each lexicon word the right *sign*: the percentage of positive words predicted
# positive and of negative words predicted negative. The paper found high sign accuracy for
# its VADER probes, even where the magnitudes were off (notebook 04).
#
# Here a word is positive if its VADER valence is > 0 and negative if < 0, and a prediction
# counts only with the right strict sign (exactly 0 is wrong for both). The two columns must
# be read together: a probe that calls every word positive scores 100% on positive words and
# 0% on negative ones. Their mean, the **balanced accuracy**, is 50% for any constant guess.
# CIs are bootstrap percentiles over words.

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

from lfp_mech import run_for_notebooks

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## Sign accuracy of every probe

# %%
probes = run.probes
sign = probes.sign_accuracy.set_index("probe")
sign["balanced"] = (sign["sign_acc_positive"] + sign["sign_acc_negative"]) / 2
sign

# %% [markdown]
# What "right sign" means, checked on the per-word table: a positive word counts only if its
# prediction is strictly positive, a negative word only if strictly negative. The tuned probe's
# confusion table of signs:

# %%
per_word = probes.per_word
positive, negative = per_word["true_valence"] > 0, per_word["true_valence"] < 0
for probe in sign.index:
    pred = per_word[f"pred_{probe}"]
    assert np.isclose((pred[positive] > 0).mean(), sign.loc[probe, "sign_acc_positive"])
    assert np.isclose((pred[negative] < 0).mean(), sign.loc[probe, "sign_acc_negative"])
true_sign = np.sign(per_word["true_valence"]).map({1: "positive", -1: "negative"})
pred_sign = np.sign(per_word["pred_tuned_sae"]).map({1: "+", -1: "-", 0: "0"})
pd.crosstab(true_sign.rename("VADER"), pred_sign.rename("probe"), margins=True)

# %% [markdown]
# Right sign = the top-right and bottom-left quadrants:

# %%
probes.predicted_vs_true_figure()

# %% [markdown]
# ## What to look for
#
# * **Both columns high**, and balanced accuracy well above 50% with a CI that excludes it;
#   compare with `base_sae` and `tuned_embed` exactly as for τ (notebook 05).
# * **One column at 100%, the other near 0%** is a probe whose predictions all share one sign
#   (a large bias), not a good probe; this is the typical failure when most training labels
#   are of one sign.
# * **Asymmetry.** Expect the probe to be better on positive words: the policy was pushed to
#   write them, so that is where its representation met the reward (Figure 4, notebook 07).
