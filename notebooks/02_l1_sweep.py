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
# # 02 · The sparsity–reconstruction trade-off (LFP appendix: L1 sweep)
#
# An SAE rewrites an MLP output $x \in \mathbb{R}^n$ as a sparse, non-negative code
# $f = \mathrm{ReLU}(W_E x + b_E)$ and reconstructs $\hat x = W_D f$, trained on
#
# $$\mathcal{L} = \operatorname{mean} \lVert x - \hat x \rVert^2 + \alpha \lVert f \rVert_1 .$$
#
# The L1 coefficient $\alpha$ sets the trade-off: larger $\alpha$ gives fewer active features
# per token ("true sparsity", L0) but worse reconstruction. The paper's appendix figure sweeps
# $\alpha$ for Pythia-70m and plots reconstruction loss and L0 against it; the paper then used
# **α = 0.001** (GPT-Neo-125m: 0.0015), lr 1e-3, batch 32, 75,000 training examples.
#
# Our SAEs are SAE-Lens SAEs trained on activations rescaled to mean norm $\sqrt{n}$, with the
# L1 term weighted by decoder-row norms, so α is in different units from the paper's (the
# `alpha_meaning` below spells them out) and was re-calibrated with this sweep. Reconstruction
# is reported on held-out activations as the normalised loss
# $\sum\lVert x-\hat x\rVert^2/\sum\lVert x\rVert^2$ and the fraction of variance
# unexplained (FVU).

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
from IPython.display import Markdown, display

from lfp_mech import run_for_notebooks

pd.set_option("display.precision", 3)
run = run_for_notebooks("smoke-l1")
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## The sweep
#
# One SAE per α on one layer (`l1_sweep_layer`), each trained on the same activations and
# scored on held-out ones.

# %%
saes = run.saes
sweep = saes.l1_sweep
assert sweep is not None, "the run has no L1 sweep (saes.sweep_alphas = [])"
display(Markdown(f"**α in this package:** {saes.alpha_meaning}"))
sweep.sort_values("alpha").set_index("alpha")

# %%
saes.plot_l1_sweep()

# %% [markdown]
# ## The dictionaries the study uses
#
# With the chosen α (dashed line above), the `saes` stage trains a small (n features)
# and a big (2n) dictionary per layer. Held-out metrics, including the cross-entropy
# loss recovered when the SAE's reconstruction replaces the MLP output in the model,
# $(CE_\text{zero} - CE_\text{SAE}) / (CE_\text{zero} - CE_\text{clean})$
# (1 = as good as the real activation, 0 = as bad as zeroing it), and the stage's quality
# checks of the small dictionaries:

# %%
metrics = saes.metrics
display(metrics[metrics["variant"] == saes.variant].set_index(["layer", "size"]))
pd.Series(saes.checks, name="passed").to_frame()

# %% [markdown]
# ## What to look for
#
# * **The trade-off curve.** L0 should fall steeply with α while the reconstruction loss rises;
#   a good α sits near the knee, where L0 is small (tens of features per token, not hundreds)
#   and FVU still low. Flat curves mean the sweep range is too narrow.
# * **Dead features** (never active on held-out tokens) grow with α; a large dead fraction
#   wastes dictionary capacity.
# * **CE recovered** is the honest test of an SAE: low FVU with poor CE recovered means the
#   SAE reconstructs the large but unimportant directions.
# * Smoke: 2 α values and ~6k training tokens on a random model; the numbers are noise.
