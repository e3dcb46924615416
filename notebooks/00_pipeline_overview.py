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
# # 00 · The pipeline at a glance (LFP Figure 1)
#
# **The question.** RLHF tunes a language model to earn more reward. What did the model
# actually *learn* about that reward, and how far is it from the reward itself? Two papers
# answer from two sides:
#
# * **Learned Feedback Patterns** (LFP; Marks et al., NeurIPS 2024) look *inside* the model.
#   Figure 1 of the paper is the pipeline: (1) RLHF-tune a base model; (2) find the MLP layers
#   that changed most and learn sparse autoencoders (SAEs) on their outputs, a condensed and
#   more interpretable basis of features; (3) train probes that predict the feedback signal
#   from those features and compare the prediction with the true feedback; (4) validate the
#   features the probes rely on (descriptions of the features, ablation).
# * **Inverse RL** (Joselowitz et al., 2024) looks at *behaviour* only: from the texts the
#   tuned ("expert") and the base ("non-expert") model write, a max-margin objective recovers a
#   reward model, which is then compared with the true reward (accuracy, F1, correlations).
#
# `lfp_mech` runs both as one resumable pipeline of stages. Each stage is a package
# (`lfp_mech/<stage>/`: `stage.py` runs it, `config.py` holds its options, `results.py` reads
# back what it wrote); each writes its own folder of tables (CSV, Markdown, JSON), figures
# (PNG), tensors (safetensors) and a `summary.json`, and `manifest.json` records the config,
# package versions, timings and the hash of every file. The notebooks read a run only through
# its results API (`run.<stage>.<table>`), never by opening its files.
#
# | stage | paper step | notebooks |
# |---|---|---|
# | `model` | load the base model, check HF ↔ TransformerLens parity | 00 |
# | `rlhf` | (1) RLHF on the VADER reward (GRPO: TRL has no PPO any more) | 00 |
# | `divergence` | (2) per-layer parameter divergence, pick the top layers | 01 |
# | `activations` | (2) MLP outputs of those layers from the tuned model | — |
# | `saes` | (2) SAEs: L1 sweep, tied vs untied, small/big dictionaries, MMCS | 02, 03, 09 |
# | `probes` | (3) feedback probes vs VADER: Table 2, Kendall τ, Table 5, Figure 4 | 04–08 |
# | `validate` | (4) feature descriptions, Table 7, Table 6 (ablation) | 09–11 |
# | `irl` | IRL paper: reward recovery, accuracy/F1, non-identifiability | 12–15 |
#
# This notebook shows the state of a run and the first step, the RLHF itself.

# %% [markdown]
# ## The run
#
# `run_for_notebooks()` returns the run this notebook reads, a `Run` (the object
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
pd.set_option("display.max_colwidth", 90)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## The stages of the run
#
# Status, wall time and peak memory of every stage, from the run's manifest. A stage is
# skipped on the next run when its config and inputs are unchanged and every artifact
# still has its recorded hash.

# %%
status = run.status
display(status)
display(Markdown(f"Total stage time: **{status['seconds'].sum():.1f} s**"))

# %% [markdown]
# Headline numbers of every stage (the scalar entries of each stage's summary, as
# recorded in the manifest), and the package versions the run used.

# %%
display(run.headlines)
pd.Series(run.versions, name="version").to_frame()

# %% [markdown]
# ## The model
#
# The base model's card. TransformerLens re-implements the architecture, so the
# `model` stage checks that its log-probabilities equal Hugging Face's
# (`parity_max_abs_logprob_diff`) before anything is measured with hooks.

# %%
pd.Series(run.model.card, name=run.config.model).to_frame()

# %% [markdown]
# ## Step 1: RLHF on the VADER reward
#
# The paper's controlled-sentiment task: a review prefix (2–10 tokens) is continued by
# the policy, and the text earns
# $\mathrm{Reward}(s) = \mathrm{clip}\big(\tfrac15 \sum_{w \in s} V(w), -10, 10\big)$
# where $V$ is the VADER lexicon valence (−4…+4, 0 for words outside the lexicon).
# The paper used PPO (TRL 0.7: batch 64, KL coefficient 0.5, lr 1e-6); current TRL has
# no PPO, so the `rlhf` stage uses GRPO (group-relative advantages with a KL penalty to
# the base model), the modern equivalent. The table compares the base and the tuned
# policy on held-out prompts: mean reward with its 95% CI, Welch's t-test, and
# distinct-2 (share of distinct word bigrams), which falls when a policy collapses
# into repeating one rewarded phrase.

# %%
run.rlhf.eval.set_index("policy")

# %%
run.rlhf.reward_curve_figure()

# %% [markdown]
# Completions of the same held-out prompts by both policies, with their rewards:

# %%
completions = run.rlhf.completions
columns = ["prompt", "completion", "reward"]
base = completions.loc[completions["policy"] == "base", columns]
tuned = completions.loc[completions["policy"] == "tuned", columns]
base.merge(tuned, on="prompt", suffixes=(" (base)", " (tuned)")).head(10)

# %% [markdown]
# The run's own report, `report.md` / `report.html` in the run directory, shows every table
# and figure of every stage with the papers' published numbers beside ours.

# %% [markdown]
# ## What to look for
#
# * **Every stage `complete`**, with the artifacts the later notebooks read. A stage that is
#   `running` or missing means the run was interrupted: run the same command again and it
#   resumes.
# * **Did RLHF work?** The tuned policy's mean reward should be above the base's with
#   non-overlapping CIs (`ci_overlap` False, small Welch p). If not, nothing downstream has a
#   learned feedback pattern to find, and the probes and IRL can only find what the base model
#   already knew.
# * **Collapse.** A reward that rises while distinct-2 falls below the dashed line means the
#   policy found one rewarded phrase and repeats it; probes and IRL then see a degenerate
#   behaviour. Read the completions.
