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
# # 08 · A logistic probe on preference data, and its PCA (LFP Table 3, Figure 5)
#
# For the preference tasks (helpful–harmless on Anthropic HH-RLHF, and toxicity) the LFP paper
# fine-tuned with DPO and probed differently: each text's SAE features $A$ are averaged over
# **all** its tokens, each text gets a binary label (positive/negative, derived from the
# averaged delta between chosen and rejected texts), and a **logistic regression** predicts it.
# **Published:** accuracy ≥ 99.80% on held-out data for every model (Table 3), and in
# Figure 5 the first principal component of the probe's inputs explains **97%** of their
# variance, with the two classes separated along it.
#
# A run tuned with DPO (`--set rlhf.method=dpo`) has Table 3 and Figure 5 already: its `probes`
# stage fits both probes on the policy's held-out preference pairs and scores them against the
# true preference; the next cell shows them. For other runs (the GRPO default), and as a
# walk-through of the steps, the rest of the notebook builds preference pairs from the
# run itself, with the VADER reward as the preference: the base and the tuned policy's
# completions of the same held-out prompt (`run.rlhf.completion_pairs()`), the higher-reward
# one chosen and ties dropped; if that gives too few pairs, pairs sampled from the tuned policy and
# ranked by reward (`lfp_mech.make_preference_pairs`: best vs worst of 4 samples per prompt) are
# added. Two logistic probes (`lfp_mech.probes.fit_logistic_probe`, the steps of
# `lfp_mech.probes.run_preference_probe` without its files) are then fitted on the tuned
# policy's mean-pooled SAE features:
#
# * `labels="preference"`: chosen = 1, rejected = 0, the real question;
# * `labels="delta"`: the paper's labels, the sign of $(A(x) - m)\cdot\bar d$ with $\bar d$
#   the mean chosen − rejected difference. These labels are a *linear function of the inputs*,
#   so a linear probe separates them almost perfectly by construction.
#
# The split is by pair (both texts of a pair on the same side).

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
from IPython.display import Image, display

import lfp_mech
from lfp_mech import run_for_notebooks
from lfp_mech.probes import (
    PreferenceProbeConfig,
    fit_preference_probes,
    mean_pooled_features,
    pca_explained,
    pca_figure,
)

pd.set_option("display.precision", 3)
run = run_for_notebooks()
print(f"{run.path}: model {run.config.model}, seed {run.config.seed}")
if run.is_smoke:
    print("smoke run: a tiny random model, the numbers mean nothing")

# %% [markdown]
# ## The run's own Table 3 (DPO runs)

# %%
if run.probes.has_preference:
    display(run.probes.preference.set_index("labels"))
    display(Image(run.probes.figures()["preference_pca"]))
else:
    print(f"{run.path.name}: policy tuned with {run.config.stages.rlhf.method}, no DPO Table 3")

# %% [markdown]
# ## Preference pairs

# %%
MIN_PAIRS, MAX_PAIRS = 24, 128
pairs = run.rlhf.completion_pairs().assign(source="base vs tuned")
if len(pairs) < MIN_PAIRS:
    prompts = lfp_mech.load_prompts("reviews", "test", n=4 * MIN_PAIRS, seed=run.config.seed)
    sampled = lfp_mech.make_preference_pairs(
        run.rlhf.policy_dir,
        prompts,
        lfp_mech.vader_reward,
        n_samples=4,
        n_new_tokens=8 if run.is_smoke else 20,
        min_new_tokens=2 if run.is_smoke else 8,
        seed=run.config.seed,
    )
    pairs = pd.concat([pairs, pd.DataFrame(sampled).assign(source="sampled best vs worst")])
pairs = pairs.head(MAX_PAIRS).reset_index(drop=True)
assert len(pairs) >= 8, "too few preference pairs for a held-out split"
display(pairs["source"].value_counts().to_frame())
pairs.head(5)

# %% [markdown]
# ## The logistic probes (Table 3)
#
# Each text (prompt + completion) is run through the tuned policy; its small SAEs' features are
# averaged over all tokens. The held-out split is by pair.

# %%
config = PreferenceProbeConfig(seed=run.config.seed)
model = run.rlhf.load_policy()
saes = run.saes.load_saes()
chosen = list(pairs["prompt"] + pairs["chosen"])
rejected = list(pairs["prompt"] + pairs["rejected"])
features = mean_pooled_features(model, saes, chosen + rejected, batch_size=config.batch_size)
n = len(chosen)
probes, not_fitted = fit_preference_probes(features[:n], features[n:], config)
print("not fitted:", not_fitted or "none")
pd.DataFrame([probe.row() for probe in probes.values()]).set_index("labels")

# %% [markdown]
# ## PCA of the probe's inputs (Figure 5)
#
# The same mean-pooled features, projected on their first two principal components and
# coloured by preference:

# %%
pca = pca_explained(features, n_components=config.n_pca_components)
labels = np.r_[np.ones(n, int), np.zeros(n, int)]  # chosen = 1, rejected = 0
pca_figure(pca.projected, labels, pca.explained_variance_ratio)

# %% [markdown]
# ## What to look for
#
# * **`preference` vs `delta` accuracy.** The paper's ≥ 99.8% used delta-derived labels, which
#   a linear probe can fit by construction (the `delta` row should be near 100% here too).
#   The `preference` row is the informative one: held-out accuracy well above 50% means the
#   tuned model's features encode which text the reward prefers.
# * **`label_agreement_with_preference`** says how often the delta labels match the actual
#   preference: near 50% means the paper's labels are not about the preference at all.
# * **PC1's share.** A PC1 near 97% (as in the paper) with both classes spread along it means
#   one dominant direction, often text length or position, not preference. Look at whether the
#   colours separate along PC1, not only at the percentage.
# * Smoke: a random model, so preference accuracy is chance and the delta labels are trivial.
