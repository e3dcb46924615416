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
# # 04 · What the probe thinks each word is worth (LFP Table 2 and appendix table)
#
# **The probe.** For a review sentence with a VADER word in it, the `probes` stage builds a
# *contrastive triple* $(x^+, x^0, x^-)$: the same sentence with a positive, a neutral and a
# negative word in that slot. $A(x)$ is the concatenation, over the divergent layers, of the
# small SAE's features at the substituted word (averaged over its tokens if it splits). The
# paper's dataset labels $A(x^+)$ with $+\lVert A(x^+) - A(x^0)\rVert_2$ and $A(x^-)$ with
# $-\lVert A(x^-) - A(x^0)\rVert_2$, so a linear regression on it learns the direction in
# feature space along which the tuned model separates good from bad words. Its predictions are
# rescaled to the lexicon's range [−4, 4].
#
# **The table.** The probe is applied to lexicon words that were in *no* training triple (each
# word placed in a few carrier sentences, features averaged) and its predicted valence is
# compared with VADER's. Table 2 of the paper lists eleven randomly chosen tokens with predicted
# and true sentiment for GPT-Neo-125m (the appendix has thirty); Table 5 (notebook 06) shows
# that the signs were mostly right even where the magnitudes were not.

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
# ## Held-out words: predicted vs true valence

# %%
probes = run.probes
per_word = probes.per_word
assert len(per_word) == probes.summary["n_eval_words"]
assert per_word["word"].is_unique and per_word["pred_tuned_sae"].notna().all()
table = per_word[["word", "true_valence", "pred_tuned_sae", "abs_error_tuned"]].rename(
    columns={"pred_tuned_sae": "probe", "abs_error_tuned": "|error|"}
)
display(Markdown("Eleven random held-out words, as in the paper's Table 2:"))
table.sample(n=min(11, len(table)), random_state=0).set_index("word")

# %%
probes.predicted_vs_true_figure()

# %% [markdown]
# The best and the worst predicted words, and every probe's prediction (baselines in 05):

# %%
ranked = table.sort_values("|error|").set_index("word")
display(pd.concat({"best": ranked.head(5), "worst": ranked.tail(5)}))
per_word.set_index("word").filter(like="pred_").head(12)

# %% [markdown]
# ## What to look for
#
# * **Sign before magnitude.** Most points should fall in the top-right and bottom-left
#   quadrants (the sign is right) even when they are far from the diagonal; that is what the
#   paper reports, and what Table 5 (notebook 06) quantifies.
# * **Saturation at ±4.** Predictions are scaled so the largest training prediction maps to 4
#   and clipped; a band of words at exactly ±4 means the probe only separates two groups.
# * **Which words are wrong?** Large errors on words the policy never writes (notebook 07)
#   are what the paper's Figure 4 predicts.
# * Smoke: a random model's probe; the table only shows the format.
