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
# # 13 · Many rewards explain the same behaviour (IRL paper: non-identifiability)
#
# IRL is ill-posed: many reward functions make the same behaviour optimal (a constant offset,
# a rescaling, or rewards that differ only on texts the policy never writes). The IRL paper
# shows this empirically: many runs (seeds × epochs) reach reward models with **similar
# accuracy but different rewards**, displayed as heatmaps of accuracy and correlation across
# runs and epochs.
#
# The `irl` stage trains `n_seeds` reward models (each seed draws its own head initialisation
# and data order) for `n_epochs` each, evaluating every epoch. Below: held-out accuracy, F1 and
# Spearman correlation with the true reward per seed × epoch, and how much the seeds' rewards
# agree with *each other* (Pearson correlation of their held-out rewards after the last epoch).

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
from IPython.display import Image, Markdown, display

from lfp_mech import run_for_notebooks
from lfp_mech.irl.plots import plot_seed_heatmaps

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## Seeds × epochs

# %%
vader = run.irl.vader
# validation metrics of every seed x epoch: what each seed's epoch was chosen on (the held-out
# texts are scored once per seed, at that epoch: vader.runs)
epochs = vader.epochs
assert epochs["seed"].nunique() * epochs["epoch"].nunique() == len(epochs), "seed x epoch"
for metric in ("val_acc", "val_spearman"):
    display(Markdown(f"**{metric}**"))
    display(epochs.pivot(index="seed", columns="epoch", values=metric))
plot_seed_heatmaps(epochs, metrics=("val_acc", "val_f1", "val_spearman"))

# %% [markdown]
# ## Agreement between seeds
#
# The per-seed held-out rewards are not saved as a table, so this is the stage's figure
# (`irl_seed_agreement`, one of `vader.figures()`). Off-diagonal correlations well below 1 at
# similar accuracy are the non-identifiability.

# %%
Image(filename=vader.figures()["irl_seed_agreement"])

# %% [markdown]
# ## Spread across seeds (held-out, each seed at its epoch chosen on validation)

# %%
spread = vader.runs[["acc", "f1", "pearson", "spearman", "pair_acc"]].describe().T
spread["max - median"] = spread["max"] - spread["50%"]
spread

# %% [markdown]
# ## What to look for
#
# * **Similar accuracy, different rewards:** a narrow accuracy range across seeds together with
#   low seed-to-seed correlations is the non-identifiability the paper describes; the
#   behaviour pins down the decision, not the reward.
# * **Epochs.** Accuracy that rises and then falls with epochs is over-fitting to the
#   demonstrations; that is why every epoch is evaluated.
# * **`max - median`** is the optimism of reporting the best run (the paper's 80.4% was the
#   best of 78).
# * Smoke: 2 seeds × 2 epochs on 24 texts; the heatmap only shows the layout.
