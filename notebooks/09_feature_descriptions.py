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
# # 09 · What do the features mean? (LFP Tables 1, 8–10)
#
# The LFP paper validates its probes by asking what the features they use *are*. It picks the
# features the small and the big dictionary of a layer share (high **max cosine similarity**,
# MMCS, between a small-dictionary decoder direction and any big-dictionary one: a direction
# found twice is more likely a real feature of the model than an artefact of one training run),
# and has GPT-4 describe each one in the style of Bills et al. (2023): show its top-activating
# contexts with activations discretised to 0–10, ask for an explanation, simulate activations
# from the explanation, score the simulation by correlation. Each description is then labelled
# *related to the fine-tuning task* or not. Tables 1 and 8–10 list layer, feature index and
# description.
#
# Offline there is no GPT-4, so the `validate` stage's default labeler is a lexicon test: for
# the VADER task, the mean |valence| of the words a feature fires most on, against the same
# statistic for random features of the same SAE (a permutation-style p-value; task-related if
# p < α). Its description names the polarity and the top words. With an OpenAI-compatible
# endpoint configured (`LFP_MECH_LLM_BASE_URL`, `LFP_MECH_LLM_MODEL`) the stage runs the
# explain–simulate–score loop instead. The features described are, per layer, the highest-MMCS
# features and the features the feedback probe weights most.

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
# ## Feature overlap between the small and the big dictionary (MMCS)

# %%
saes = run.saes
saes.plot_mmcs()

# %% [markdown]
# The highest-MMCS features of each layer (the validate stage describes the first of them):

# %%
high = saes.high_mmcs_features()
top = {entry["hook_name"]: entry["top_features"][:10] for entry in high.values()}
pd.DataFrame(top).rename_axis("rank")

# %% [markdown]
# ## The descriptions (paper format: layer, feature, description)

# %%
validate = run.validate
descriptions = validate.descriptions
assert len(descriptions) == sum(len(ids) for ids in validate.feature_choice.values())
llm = validate.summary["llm_descriptions"]
labeler = "LLM (explain, simulate, score)" if llm else "offline lexicon test"
display(
    Markdown(
        f"{len(descriptions)} features described by the **{labeler}**; "
        f"{validate.summary['n_task_related']} labelled task-related."
    )
)
paper_columns = ["layer", "feature", "description", "task_related", "p_value"]
descriptions.sort_values("p_value")[paper_columns].head(15)

# %% [markdown]
# How much the feedback probe relies on each described feature: its rank by |probe
# weight| within its layer (1 = the probe's most weighted feature of that layer).

# %%
widths = {hook: sae.cfg.d_sae for hook, sae in saes.load_saes().items()}
weights = run.probes.feature_weights(widths)
ranked = descriptions.merge(
    weights.rename(columns={"rank": "probe_weight_rank", "weight": "probe_weight"}),
    on=["hook", "feature"],
)
columns = ["layer", "feature", "probe_weight_rank", "description", "task_related",
           "mean_valence", "frequency"]  # fmt: skip
ranked.sort_values("probe_weight_rank")[columns].head(12)

# %% [markdown]
# ## Top-activating contexts
#
# The evidence behind a description: the tokens where the feature fires most and the
# context around them (the three features with the smallest p-value, four contexts each).

# %%
strongest = descriptions.sort_values("p_value").head(3)[["hook", "layer", "feature"]]
contexts = validate.top_contexts().merge(strongest, on=["hook", "feature"])
contexts = contexts[contexts["rank"] < 4]
contexts[["layer", "feature", "rank", "activation", "token", "context"]]

# %% [markdown]
# ## What to look for
#
# * **MMCS.** Most small-dictionary features should have a near-duplicate in the big one
#   (MMCS near 1); a second mode at low MMCS are features specific to one training run.
# * **Do the probe's features carry sentiment?** The features the probe weights most (rank 1,
#   2, ...) should be the task-related ones, firing on sentiment words of the right polarity.
#   If the probe's top features are "no clear sentiment", the probe relies on something else
#   (position, frequency, a single token).
# * **A description is a hypothesis.** Check it against the contexts: a feature "firing on
#   positive words" should show positive words in brackets. The offline labeler only tests
#   sentiment; the LLM labeler's simulation score says how predictive its explanation is.
# * Smoke: random-model features fire on bytes of the first token; nothing is task-related.
