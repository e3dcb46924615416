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
# # 15 · Inside vs outside: the probe's and IRL's reward on the same texts
#
# Neither paper has this figure. The two methods answer the same question, *what reward did the
# model learn?*, from opposite sides: the LFP probe reads the tuned model's **activations**,
# IRL reads its **behaviour**. On the same held-out texts we can put three numbers side by
# side:
#
# * the **true reward**, VADER: $\mathrm{clip}(\tfrac15 \sum_w V(w), -10, 10)$;
# * the **IRL reward** of the IRL stage's best reward model;
# * the **probe estimate** (`lfp_mech.probes.probe_reward`): the feedback probe predicts a
#   valence for each word of the text from the tuned model's SAE features at that word
#   (averaged over the word's tokens, in context: how the probe was evaluated on lexicon
#   words, notebook 04), and the reward's formula is applied to those predictions,
#   $\mathrm{clip}(\tfrac15 \sum_w \hat V(w), -10, 10)$, summing over *all* words (the
#   probe does not know which words are in the lexicon).
#
# The probe is the `probes` stage's `tuned_sae` probe (`run.probes.load_probe()`: weight, bias
# and the scale that maps it to [−4, 4]) over the SAE features concatenated in `ordered_hooks`
# order. The `irl` stage stores all three numbers per held-out text
# (`run.irl.vader.heldout_scores`); the notebook recomputes the probe estimate of a few texts
# with the public functions to show how it is made.

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
from lfp_mech.probes import probe_reward

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## Held-out texts and the three rewards

# %%
vader = run.irl.vader
scores = vader.heldout_scores
assert "probe" in scores, "the irl stage scored no probe estimate (is the probes stage done?)"
display(Markdown(f"{len(scores)} held-out texts."))
scores[["source", "true_reward", "irl_reward", "probe", "text"]].head(8)

# %% [markdown]
# The probe estimate of the first texts, computed again: the tuned policy, its small SAEs and
# the probe, read from the run, then `probe_reward`.

# %%
model = run.rlhf.load_policy()
saes = run.saes.load_saes()
probe = run.probes.load_probe()
assert probe.weight.shape[0] == sum(sae.cfg.d_sae for sae in saes.values())
check = scores.head(8)
again = probe_reward(model, saes, probe, list(check["text"])).numpy()
assert np.allclose(again, check["probe"], atol=1e-3), "stored and recomputed estimates differ"
pd.DataFrame({"stored": check["probe"], "recomputed": again})

# %% [markdown]
# ## Three-way comparison

# %%
vader.plot_three_way()

# %% [markdown]
# Spearman ρ per pair, on all texts and per source, and each reward's mean per source:

# %%
sources = [None, *sorted(scores["source"].unique())]
display(
    pd.DataFrame(
        {
            source or "all": vader.three_way(source).set_index("pair")["spearman"]
            for source in sources
        }
    )
)
scores.groupby("source")[["true_reward", "irl_reward", "probe"]].mean()

# %% [markdown]
# ## What to look for
#
# * **Which view is closer to the truth?** Compare the rank correlations of the IRL reward and
#   of the probe estimate with the true reward. The probe was trained on word-level contrasts
#   with the lexicon's help and sees activations; IRL saw only two models' texts. A probe that
#   wins says the model *represents* the reward better than its behaviour reveals it.
# * **Do they agree with each other** more than with the truth? Then both recover the same
#   learned feedback pattern, and its divergence from the reward is a property of the model,
#   not of either method.
# * **By source:** on the expert's texts (what RLHF shaped) vs the *other* texts.
# * **Bias of the probe estimate:** summing over all words adds the probe's prediction for
#   non-lexicon words; a constant shift does not change rank correlations, but a
#   length-dependent one does (in smoke mode every estimate is large and positive for this
#   reason).
# * Smoke: everything is noise; the notebook only checks that the pieces fit together.
