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
# # 05 · Does the probe rank words like the reward does? (LFP Kendall τ tables)
#
# Kendall's τ compares two rankings: the share of word pairs that the probe and the VADER
# lexicon order the same way minus the share they order oppositely (τ-b, with a correction for
# ties), with a p-value for τ = 0. The paper reports, for the VADER task:
#
# | model | p-value of τ |
# |---|---|
# | Pythia-70m | 0.26 |
# | Pythia-160m | **0.014** (significant) |
# | GPT-Neo-125m | 0.48 |
# | baseline: untrained, Xavier-initialised linear probe | 0.55 |
#
# and, in the appendix, τ on **negative** words only.
#
# A single untrained baseline says little, so the `probes` stage evaluates every probe on the
# same held-out words and adds baselines that each remove one ingredient:
#
# * `xavier`: the paper's baseline (untrained probe on the tuned model's SAE features);
# * `base_sae`: the whole pipeline on the **base** model: did RLHF add anything?
# * `tuned_mlp` / `base_mlp`: raw MLP outputs instead of SAE features: does the SAE help?
# * `tuned_embed` / `base_embed`: token **embeddings** alone: how much is just the word's
#   identity, which any language model knows without RLHF?
# * `shuffled`: the training labels permuted: what a probe learns from nothing.
#
# Each row also has the paired bootstrap difference τ(tuned_sae) − τ(baseline) with its 95% CI
# (resampling words) and p-value.

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
# ## τ on all held-out words

# %%
probes = run.probes
kendall = probes.kendall.set_index("probe")
assert kendall.index[0] == "tuned_sae", "the first row is the probe under test"
assert kendall["n_words"].nunique() == 1, "every probe is scored on the same words"
columns = ["n_words", "tau", "p_value", "tau_ci_low", "tau_ci_high", "tuned_minus_this",
           "diff_ci_low", "diff_ci_high", "diff_p_value"]  # fmt: skip
kendall[columns]

# %% [markdown]
# The shuffled null: probes fitted on permuted labels show how large |τ| gets by chance with
# this many words.

# %%
null = probes.shuffled_null_tau
if null:
    display(
        Markdown(
            f"{len(null)} probes fitted on permuted labels: |τ| up to "
            f"{max(abs(t) for t in null):.3f}; the tuned probe: τ = "
            f"{kendall['tau'].iloc[0]:.3f} (p = {kendall['p_value'].iloc[0]:.3g})."
        )
    )
probes.baselines_figure()

# %% [markdown]
# ## τ on negative words only (paper appendix), and on positive words only
#
# Within one sign, τ asks whether the probe also orders *magnitudes* (is "terrible"
# worse than "bad"?), which the sign alone cannot explain.

# %%
within = ["tau_negative", "p_negative", "tau_negative_ci_low", "tau_negative_ci_high",
          "tau_positive", "p_positive", "tau_positive_ci_low", "tau_positive_ci_high"]  # fmt: skip
kendall[within]

# %%
probes.baselines_figure(words="negative")

# %% [markdown]
# ## What to look for
#
# * **Significance is not the point; the baselines are.** A τ with p < 0.01 is only evidence of
#   a *learned feedback pattern* if it beats `base_sae` (the same probe before RLHF) and
#   `tuned_embed` (the word's identity): the paired difference's CI should exclude 0.
# * **Embeddings know sentiment.** If `tuned_embed` is as good as `tuned_sae`, the probe reads
#   the words' meaning, which the model had before RLHF; the paper had no such baseline.
# * **The shuffled null** shows how large |τ| gets by chance with this many words.
# * **Negative words.** The policy is pushed toward positive words and rarely writes negative
#   ones, so by the logic of Figure 4 (notebook 07) the probe should know them less well: τ on
#   negative words alone can be near 0 even when the overall τ is not.
# * Smoke: all τ are chance-level by construction.
