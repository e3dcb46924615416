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
# # 07 · Words the policy writes are the words the probe knows (LFP Figure 4)
#
# Figure 4 of the LFP paper plots, per lexicon word, the probe's error |probe − VADER| against
# how often the RLHF-tuned model generates that word. The finding: **the more often the tuned
# model writes a word, the more accurate the probe is on it**. The feedback pattern is learned
# where the policy got feedback: a word the policy never wrote during RLHF never earned a
# reward, so nothing tied the model's representation of it to the reward.
#
# Here the frequency is the word's count in the tuned policy's completions of the held-out
# prompts (the `rlhf` stage's `completions.jsonl`), split with the reward's own word tokenizer
# (`lfp_mech.rewards.words`), so a word counts exactly when the reward would score it. The
# association is summarised by Spearman's ρ (the paper's claim predicts ρ < 0).

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

import lfp_mech
from lfp_mech import run_for_notebooks

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## Frequencies and errors
#
# The `frequency` column of the per-word table, counted again from the tuned policy's
# completions with `lfp_mech.word_frequencies` (the reward's own word split):

# %%
probes = run.probes
per_word = probes.per_word
texts = run.rlhf.completion_texts("tuned")
assert len(texts) == probes.summary["n_completions"]
counts = lfp_mech.word_frequencies(texts, list(per_word["word"]))
assert [counts[w] for w in per_word["word"]] == list(per_word["frequency"])
rho, p_value = probes.summary["frequency_spearman_rho"], probes.summary["frequency_spearman_p"]
stat = "undefined" if rho is None else f"{rho:.3f} (p = {p_value:.3g})"  # None: no word occurs
display(
    Markdown(
        f"{len(texts)} completions; {int((per_word['frequency'] > 0).sum())} of "
        f"{len(per_word)} held-out words occur in them. Spearman ρ(frequency, |error|) = {stat}."
    )
)
columns = ["true_valence", "pred_tuned_sae", "abs_error_tuned", "frequency"]
per_word.sort_values("frequency", ascending=False).set_index("word")[columns].head(10)

# %%
probes.word_frequency_figure()

# %% [markdown]
# Mean error of words the policy never wrote vs words it wrote:

# %%
written = np.where(per_word["frequency"] > 0, "written by the policy", "never written")
per_word.groupby(written)["abs_error_tuned"].agg(["count", "mean", "median"])

# %% [markdown]
# ## What to look for
#
# * **ρ < 0** with a small p is the paper's effect. With few completions most words have
#   frequency 0 and ρ is undefined or dominated by a handful of words: count how many words
#   occur at all before reading ρ.
# * **Confound:** frequent words are also common, short, mostly positive words (the policy was
#   pushed to positive sentiment), and the probe may be better on positive words for that
#   reason alone; compare within a sign (notebook 05's τ on positive words).
# * Smoke: the tiny policy writes byte soup, so every frequency is 0 and ρ is undefined (NaN).
