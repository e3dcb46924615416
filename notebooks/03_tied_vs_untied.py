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
# # 03 · Tied or untied decoder? (LFP appendix table)
#
# The LFP paper ties the SAE decoder to the encoder, $W_D = W_E^\top$: half the parameters,
# and each feature's reading and writing direction coincide. Its appendix table justifies the
# choice by training both variants and comparing the **normalised reconstruction loss** and the
# **scaled true sparsity** (L0 divided by the dictionary size), averaged over the highly
# divergent layers of Pythia-70m and Pythia-160m.
#
# The `saes` stage trains an untied twin of every small dictionary on the same data with the
# same α and reports the same two quantities (`nmse`, `l0_scaled`), plus FVU, the dead-feature
# fraction and the CE loss recovered. SAE-Lens has no tied ReLU SAE, so the tied one is a
# subclass whose `W_enc` is `W_dec.T`; saved, it is a plain SAE-Lens SAE.

# %% [markdown]
# ## The run
#
# `run_for_notebooks("smoke-l1")` returns the run this notebook reads, a `Run` (what
# `lfp_mech.load_run(path)` returns). The default study trains sparse matching-pursuit dictionaries,
# with no L1 coefficient and no tied/untied pair: this notebook needs a run with the paper's L1 SAEs
# (`saes.architecture = "l1"`, as the paper presets such as `pythia-70m` set). Set the environment
# variable `LFP_MECH_RUN_DIR` to such a finished run directory (relative to the repository root or
# absolute) to read a real run. Without it the notebook computes the **smoke-l1** preset (the smoke
# preset with the paper's L1 dictionaries) into `runs/smoke-l1` (a tiny random 2-layer model, a
# minute or two the first time; later notebooks resume it from disk). Smoke numbers only show that
# the code runs: they mean nothing about the method.

# %%
import pandas as pd

from lfp_mech import run_for_notebooks

pd.set_option("display.precision", 3)
run = run_for_notebooks("smoke-l1")
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## Averaged over the divergent layers (the paper's table)

# %%
saes = run.saes
tied_vs_untied = saes.tied_vs_untied
assert tied_vs_untied is not None, "run the saes stage with compare_untied = true"
tied_vs_untied = tied_vs_untied.set_index("variant")
tied_vs_untied

# %% [markdown]
# ## Per layer (small dictionaries)
#
# The paper's table is the mean over layers of these per-layer numbers:

# %%
metrics = saes.metrics.query("model == 'tuned'")  # the table also has the base model's
small = metrics[metrics["size"] == "small"]
columns = ["nmse", "l0_scaled", "fvu", "dead_fraction", "ce_recovered"]
per_layer_mean = small.groupby("variant")[["nmse", "l0_scaled"]].mean()
pd.testing.assert_frame_equal(
    per_layer_mean, tied_vs_untied[["nmse", "l0_scaled"]], check_names=False, atol=2e-3
)
small.pivot(index="layer", columns="variant", values=columns)

# %%
difference = tied_vs_untied.loc["tied", columns] - tied_vs_untied.loc["untied", columns]
difference.rename("tied - untied").to_frame()

# %% [markdown]
# ## What to look for
#
# * **Does tying cost reconstruction?** A tied SAE has half the parameters; if its `nmse` and
#   FVU are within a few percent of the untied one at similar `l0_scaled`, tying is free and
#   gives features whose encoder and decoder directions agree (convenient for ablation and
#   for the MMCS comparison of notebook 09).
# * **Sparsity at equal α is not equal sparsity.** Compare the pair at similar L0, not only at
#   equal α: an untied encoder can buy lower loss with more active features.
# * Smoke: meaningless numbers (and negative CE recovered: the random model's SAEs hurt it).
