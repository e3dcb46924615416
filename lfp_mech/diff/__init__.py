"""What did RLHF change, causally? Model diffing with a dictionary, ablation and steering.

**Method.** On the same tokens (train-split prompts completed by the tuned policy) the base and
the tuned model's residual streams are read after a few blocks (``blocks.{L}.hook_resid_post``,
default ``L ≈ (0.69, 0.76, 0.83) · (n_layers − 1)``: blocks 20, 22 and 24 of SmolLM2-135M). At
each, a TopK dictionary learns the difference ``δ = x_tuned − x_base`` from the tuned activation
alone ([`DiffDictionary`][lfp_mech.diff.dictionary.DiffDictionary]); the features of all blocks
are ranked together by how much ablating them is estimated to bring the tuned model's next-token
predictions back to the base model's (greedy KL attribution,
[`attribution`][lfp_mech.diff.attribution] and [`blocks`][lfp_mech.diff.blocks]; or by their mean
activation on the tokens the policy wrote). The top-k features are then ablated in the tuned policy (error
term kept) and added to the base model (scaled to their mean tuned activation) while they
generate, against frequency-matched random latents, the LFP probe's SAE features and the
difference-of-means direction, measuring VADER reward, distinct-2 and perplexity under the base
model.

**Why this dictionary.** A crosscoder (Anthropic 2024; Minder et al. 2025) encodes ``[x_base;
x_tuned]`` and needs both models' activations to find its latents; a diff-SAE encodes ``δ`` and
needs them too. During generation only the edited model runs, so ablating such latents would
need the other model in lockstep. Reading the tuned activation and decoding the *difference*
keeps the diffing objective (every latent is something the tuning added, no shared latents to
separate, so no relative-decoder-norm artefacts to control) and makes ablation a per-token edit
of the tuned model alone. Without a decoder bias the mean shift must live in latents, so ablating
all of them returns a perfectly trained dictionary to the base model's activation.

Modules: [`config`][lfp_mech.diff.config], [`residual`][lfp_mech.diff.residual] (HF hooks),
[`dictionary`][lfp_mech.diff.dictionary], [`attribution`][lfp_mech.diff.attribution], [`build`][lfp_mech.diff.build]
([`diff_features`][lfp_mech.diff.build.diff_features]), [`blocks`][lfp_mech.diff.blocks]
([`diff_features_by_block`][lfp_mech.diff.blocks.diff_features_by_block]),
[`scoring`][lfp_mech.diff.scoring],
[`interventions`][lfp_mech.diff.interventions] (pure edit functions),
[`causal`][lfp_mech.diff.causal] ([`steer_features`][lfp_mech.diff.causal.steer_features],
statistics), [`tables`][lfp_mech.diff.tables], [`dashboards`][lfp_mech.diff.dashboards],
[`study`][lfp_mech.diff.study] ([`run_diff`][lfp_mech.diff.study.run_diff]),
[`stage`][lfp_mech.diff.stage], [`results`][lfp_mech.diff.results],
[`plots`][lfp_mech.diff.plots]."""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DiffConfig": "config",
        "DiffDictionary": "dictionary",
        "train_dictionary": "dictionary",
        "DiffFeatures": "build",
        "diff_features": "build",
        "BlockDiff": "blocks",
        "diff_features_by_block": "blocks",
        "attribution_ranking": "blocks",
        "kl_attribution": "attribution",
        "rank_across_blocks": "blocks",
        "residual_hooks": "residual",
        "ablate_latents": "interventions",
        "add_latents": "interventions",
        "add_vector": "interventions",
        "project_out": "interventions",
        "ablate_sae_features": "interventions",
        "steer_features": "causal",
        "gap_share": "causal",
        "permutation_p": "causal",
        "run_diff": "study",
        "DiffResults": "results",
        "plot_dose_response": "plots",
    },
)

__all__ = [
    "BlockDiff",
    "DiffConfig",
    "DiffDictionary",
    "DiffFeatures",
    "DiffResults",
    "ablate_latents",
    "ablate_sae_features",
    "add_latents",
    "add_vector",
    "attribution_ranking",
    "diff_features",
    "diff_features_by_block",
    "gap_share",
    "kl_attribution",
    "permutation_p",
    "plot_dose_response",
    "project_out",
    "rank_across_blocks",
    "residual_hooks",
    "run_diff",
    "steer_features",
    "train_dictionary",
]
