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
# # 01 · Which layers did RLHF change? (LFP appendix: layer divergence)
#
# Sparse autoencoders are expensive, so the LFP paper trains them only where fine-tuning left
# its mark. For every transformer block $l$ it sums the Frobenius norms of the parameter
# changes,
#
# $$\mathrm{div}(l) = \sum_{p \in \text{block } l} \lVert \theta^{\text{base}}_p - \theta^{\text{tuned}}_p \rVert_F ,$$
#
# and keeps the 5 most divergent blocks (their MLP outputs are what the SAEs encode). The
# appendix figure plots divergence against layer, one line per model. **Published:** the most
# divergent layers were mostly deep ones: Pythia-70m layers 1–5, Pythia-160m 7–11,
# GPT-Neo-125m 7–11.
#
# The divergence is a cheap proxy: a parameter change is not an activation change, and the
# sum over a block mixes attention and MLP weights of different sizes.

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
# ## The per-layer divergence
#
# One row per block: its divergence, its rank (1 = most divergent) and whether it is among the
# `top_k` the later stages use.

# %%
divergence = run.divergence.divergence
assert len(divergence) == run.model.n_layers, "one divergence value per layer"
top = divergence[divergence["selected"]]
assert sorted(top["layer"]) == run.divergence.top_layers_sorted
display(Markdown(f"The {min(10, len(divergence))} most divergent layers:"))
divergence.sort_values("rank").set_index("layer").head(10)

# %%
share = float(top["divergence"].sum() / divergence["divergence"].sum())
display(
    Markdown(
        f"Top {len(top)} layers {run.divergence.top_layers_sorted} carry {share:.0%} of "
        f"the total divergence ({len(divergence)} layers)."
    )
)
run.divergence.figure()

# %% [markdown]
# The layers the later stages use (activations and SAEs are taken at these hooks):

# %%
assert run.activations.layers == run.divergence.top_layers_sorted
pd.Series(run.activations.hook_names, index=run.activations.layers, name="hook").to_frame()

# %% [markdown]
# ## What to look for
#
# * **Where is the change?** The paper found the deepest layers most changed. A flat profile
#   means RLHF spread its update thinly (or hardly trained: compare with the reward gain in
#   notebook 00); a single spike may be the embedding-adjacent block absorbing a lexical shift.
# * **How concentrated?** If the top-k layers carry little more than k/n of the total, the
#   choice of layers is close to arbitrary and the SAE analysis could as well look elsewhere.
# * Smoke: the tiny model has 2 layers and both are "top"; the values are from 2 GRPO steps.
