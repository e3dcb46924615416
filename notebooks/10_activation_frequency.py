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
# # 10 · Are the task-related features active where the feedback is? (LFP Table 7)
#
# If a feature is part of the learned feedback pattern, it should be active when the model
# processes inputs that the feedback cares about. The paper's Table 7 compares, on the inputs
# the probe predicts with **delta > 3** (strong positive implicit feedback; predictions are
# normalised to the VADER range [−4, 4]), how often the features GPT-4 called task-related are
# active against the average feature of the dictionary. **Published:** the task-related
# features were **2–3× more often active** than the average feature.
#
# The probe's inputs are its dataset D: for each contrastive triple (x⁺, x⁰, x⁻) the SAE
# features at the substituted word of x⁺ (label +Δ⁺) and of x⁻ (label −Δ⁻). The `probes` stage
# saves them per layer with the tuned SAE probe's prediction of each
# (`run.probes.probe_inputs()`; the probe was fitted on all of D, its evaluation uses
# held-out lexicon words), and the `validate` stage selects those with predicted delta > 3.
#
# The table has one row per layer and feature group (`task-related`, all `chosen` features,
# `all features`): `active_share` is the mean share of the selected inputs on which a group's
# features are active (> 0), and `ratio_to_average` divides it by the all-features share.
# `source` and `inputs` say which inputs were used and `n_inputs` how many were selected (out
# of `n_inputs_total`). If no input passes the threshold the shares are NaN and `n_inputs` is
# 0; the stage does not fall back to other inputs. (A run whose probes stage predates
# `probe_inputs.safetensors` uses corpus tokens of VADER words with |valence| ≥ 1 instead,
# and says so in `source`.) `active_share_all_inputs` is the same share over all inputs.

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
from lfp_mech.validate import predicted_delta_figure

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## Table 7

# %%
validate = run.validate
frequency = validate.activation_frequency
first = frequency.iloc[0]
display(
    Markdown(
        f"Inputs ({first['source']}): **{first['inputs']}** "
        f"({first['n_inputs']} of {first['n_inputs_total']} selected)"
    )
)
frequency.drop(columns=["source", "inputs"]).set_index(["hook", "group"])

# %%
validate.activation_frequency_figure()

# %% [markdown]
# ## The selected probe inputs
#
# The tuned probe's predicted delta of every input of D, split by the sign of its
# label, with the threshold; then the words behind the selected inputs. Normalisation
# maps the largest |prediction| on D to 4, so the threshold 3 keeps the top of that
# range; inputs with a strongly *negative* prediction are not selected (the paper's
# "delta > 3").

# %%
threshold = run.config.stages.validate.delta_threshold
probe_inputs = run.probes.probe_inputs()
assert probe_inputs is not None, "this run's probes stage predates probe_inputs.safetensors"
predicted = probe_inputs.predicted_delta.numpy()
display(
    Markdown(
        f"{int((predicted > threshold).sum())} of {len(predicted)} probe inputs have predicted "
        f"delta > {threshold:g}; {int((predicted < -threshold).sum())} have < −{threshold:g}."
    )
)
predicted_delta_figure(predicted, probe_inputs.label_delta, threshold=threshold)

# %%
inputs = pd.DataFrame(
    {"word": probe_inputs.words, "text": probe_inputs.texts, "predicted": predicted}
)
selected = inputs[inputs["predicted"] > threshold]
display(selected["word"].value_counts().head(15).rename("selected inputs").to_frame())
selected.sort_values("predicted", ascending=False).head(8)

# %% [markdown]
# ## Per-feature activation frequencies
#
# How often each feature fires on all corpus tokens, chosen features against the whole
# dictionary. These are corpus-token frequencies (the ablation's matched random control uses
# them), not the probe inputs of Table 7.

# %%
choice = validate.feature_choice
rows = []
for hook, freq in validate.feature_frequencies().items():
    chosen = freq[choice[hook]]
    rows.append(
        {
            "hook": hook,
            "chosen: mean": float(chosen.mean()),
            "chosen: median": float(chosen.median()),
            "all: mean": float(freq.mean()),
            "all: median": float(freq.median()),
            "dead features": int((freq == 0).sum()),
        }
    )
pd.DataFrame(rows).set_index("hook")

# %% [markdown]
# ## What to look for
#
# * **Ratio > 1 on the selected inputs**, and larger than the same ratio over all inputs: the
#   features fire *specifically* where the probe sees strong positive feedback, not just often
#   everywhere. A feature group that is active on every input has a ratio near 1 that says
#   nothing.
# * **How many inputs were selected** (`n_inputs`): with a handful the shares are coarse
#   (multiples of 1/n); with none the table is NaN by design.
# * **Selection is partly circular.** The `chosen` features include the probe's most heavily
#   weighted features, and the inputs are selected by the same probe, so a high `chosen`
#   ratio is expected by construction (the paper had the same issue). The `task-related`
#   features are labelled from corpus contexts, independently of the probe.
# * Smoke: random-model features fire on almost every input, so every ratio is close to 1.
