# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
# ---

# %%
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

# %% [markdown]
# # 16 · What did RLHF change? Model-diffing features, ablated and added
#
# The LFP probe's features turn out not to be causal for the behaviour RLHF trained (notebook
# 11). This notebook asks the question directly: on the same tokens, where do the tuned and the
# base model's residual streams differ, which sparse features carry that difference, and does
# removing them from the tuned policy (or adding them to the base model) move the reward?
#
# The `diff` stage reads the residual stream after a few blocks $L$ (blocks 20, 22 and 24 of
# SmolLM2-135M) of both models on train-split prompts completed by the tuned policy, and fits at
# each a TopK dictionary that predicts the difference from the tuned activation alone:
#
# $$z = \mathrm{TopK}\big(\mathrm{ReLU}((x_t - \mu) W_{\text{enc}} + b)\big), \qquad
#   x_t - x_b \approx z\, W_{\text{dec}} .$$
#
# One block is not enough: the tuned model's later blocks rebuild a change removed at one block,
# so all the blocks are edited at once. Latents that share a decoder direction form one feature.
# "The top $k$" are the features whose ablation brings the tuned model's next-token predictions
# closest to the base model's on the corpus: attribution patching of $\mathrm{KL}(p_{base} \|
# p_{tuned})$, taken greedily in rounds of 5, each round given the features already taken (the
# `kl_attribution` column; it uses the base model, not the reward). The rule and the blocks were
# chosen on validation prompts; see the tutorial. Then, on held-out prompts, during generation:
#
# * **ablate** the top-$k$ features in the tuned policy, $x \mapsto x - \sum_{f\in F} z_f(x) W_{\text{dec}}[f]$
#   (error term kept), $k \in \{1, 5, 10, 20, 50\}$;
# * **steer** the base model, $x \mapsto x + \sum_{f\in F} \bar z_f W_{\text{dec}}[f]$ (their mean
#   tuned activation);
# * controls: frequency-matched random features (from the same blocks), the LFP probe's SAE
#   features (if the run has them), and the difference-of-means direction (the first block's
#   projected out of the tuned policy at that block and every later one, each dictionary block's
#   projected out at its block; added to the base model).
#
# Every condition is scored by the VADER reward, distinct-2 and the perplexity of its
# completions under the base model; shares of the tuned − base reward gap come with paired
# bootstrap CIs over prompts.

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

from lfp_mech import run_for_notebooks

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## The dictionaries
#
# One row per block: held-out unexplained variance of the difference it learns, live features,
# the norm of that difference's mean, and how many of the top-20 features it holds. Then the
# ranking's own measure: $\sum \mathrm{KL}(p_{base} \| p_{tuned})$ on the corpus with the first
# $n$ features ablated (teacher-forced on the policy's texts).

# %%
diff = run.diff
summary = diff.summary
k = summary["config"]["control_k"]
pd.DataFrame.from_dict(summary["blocks"], orient="index").rename_axis("block")[
    ["n_tokens", "fvu", "l0", "dead_fraction", "n_features", "mean_diff_norm", f"top{k}_features"]
]

# %%
kl = {int(n): value for n, value in summary.get("attribution_kl", {}).items()}
pd.Series(kl, name="KL with the first n ablated", dtype=float).rename_axis("n").sort_index()

# %% [markdown]
# ## The most tuned-specific features
#
# `promoted` / `suppressed`: the tokens whose logits the feature's decoder direction raises /
# lowers most (through the final norm and the unembedding). `vader_*`: the share of promoted
# tokens and of top-context tokens that are VADER lexicon words, and the promoted words' mean
# valence. The dashboards (`diff/dashboards/index.html`) show contexts, logit effects and
# activation histograms, offline.

# %%
columns = ["rank", "layer", "latent", "kl_attribution", "score", "frequency", "cos_mean_diff",
           "promoted", "vader_promoted_share", "vader_promoted_valence", "description"]  # fmt: skip
diff.latents[columns].head(10)

# %% [markdown]
# ## Causal tests
#
# `gap_share` is the share of the tuned − base reward gap the condition removes (tuned policy)
# or adds (base model), with its 95% CI; `p_vs_random` is the one-sided permutation test of the
# top-k features against the frequency-matched random ones.

# %%
diff.interventions.set_index("condition")

# %%
diff.figure()

# %% [markdown]
# ## The completions behind the numbers
#
# Same prompt and sampling seed in every condition.

# %%
completions = diff.completions
wanted = ["tuned", "base", f"ablate_top{k}", f"steer_top{k}", "dom_project"]  # k: control_k
shown = completions[completions.condition.isin(wanted)]
shown.pivot(index="prompt", columns="condition", values="completion").head(6)

# %% [markdown]
# ## What to look for
#
# * **Top-k vs random, and vs the difference of means.** A feature-level answer should beat
#   matched random features by a wide margin and come close to the one-direction baseline. The
#   latents are ablated at the dictionary blocks: compare them with the blocks' own directions
#   projected out there (`dom_project_dictionary_blocks`) as well as the first block's direction
#   projected out at that block and every later one (`dom_project`).
# * **Fluency.** A share bought with broken text (distinct-2 below 0.6, perplexity far above the
#   clean policy's) is not the behaviour being removed.
# * **Dose-response.** If one feature carries most of the change, the curve saturates at
#   small $k$.
# * Smoke: a tiny random model whose "tuning" barely moved the reward; shares are undefined
#   (NaN) when there is no gap.
