"""The ``saes`` stage: sparse autoencoders (SAE-Lens) on the most divergent layers' MLP outputs.

**By default** the stage trains one SAE-Lens **BatchTopK** dictionary per layer (``k`` = 64
active latents per token on average, 2 × d_in latents, saved as a JumpReLU SAE;
``saes.architecture = "topk"`` for exactly ``k`` per token), the kind of sparse dictionary the
field uses today, and, with ``base_model``, the same dictionary on the base model's activations
on the same tokens (``base/``), so tuned and base features compare like with like. The held-out
targets are L0 ≤ 64, FVU ≤ 0.25, CE loss recovered ≥ 0.90 and dead latents ≤ 10%
(``summary.QUALITY_TARGETS``). The paper's L1 SAEs below are ``saes.architecture = "l1"`` (the
paper presets and notebooks 02–03 use them).

The LFP paper (section 3.1, appendix A.2) learns, for each of the 5 most divergent layers, two
dictionaries of the fine-tuned model's MLP output ``x ∈ R^n``: a small one with ``n`` features
and a big one with ``2n``::

    f = ReLU(W_E x + b_E),   x̂ = W_D f (+ b_D),   loss = mean ||x − x̂||² + α ||f||₁

with a tied decoder (``W_D = W_Eᵀ``), α = 1e-3, lr 1e-3, 75,000 training examples. Features that
the two dictionaries share (high max cosine similarity, MMCS) are taken as real directions of
the model and are the ones later explained.

How this maps to SAE-Lens (used for the SAE classes, the trainer, saving and loading):

* Untied SAEs are SAE-Lens ``StandardTrainingSAE`` trained by ``SAETrainer`` on batches streamed
  from an [`ActivationStore`][lfp_mech.activations.store.ActivationStore] (no hub, no wandb).
* SAE-Lens has no tied ReLU SAE:
  [`TiedStandardTrainingSAE`][lfp_mech.saes.tied.TiedStandardTrainingSAE] subclasses
  ``StandardTrainingSAE`` with ``W_enc`` a property returning ``W_dec.T`` (trainable: ``W_dec``,
  ``b_enc``, ``b_dec``) and saves ``W_enc = W_dec.T`` explicitly, so the result is a plain standard
  SAE: ``sae_lens.SAE.load_from_disk(path)`` loads it with no registration.
* **What α means here.** SAE-Lens's loss is ``Σ_d (x − x̂)_d²`` (summed over the ``d_in``
  dimensions, averaged over the batch) ``+ c · Σ_i f_i ||W_D[i]||`` (each feature's L1 weighted by
  its decoder row norm), with activations rescaled so their mean norm is ``sqrt(d_in)`` during
  training (``normalize_activations="expected_average_only_in"``, folded into the weights
  afterwards). Dividing by ``d_in`` gives the paper's form: *per-element* mean squared error plus
  ``α · Σ_i f_i ||W_D[i]||`` with ``α = c / d_in``. [`SAEConfig`][lfp_mech.saes.config.SAEConfig]
  takes α in those units and hands SAE-Lens ``l1_coefficient = α · d_in``. The paper's α = 1e-3 was
  tuned on unnormalised Pythia activations; on SmolLM2 (normalised) it leaves the dictionaries dense
  (L0 in the hundreds), so the default α (``DEFAULT_ALPHA``) was calibrated with
  [`l1_sweep`][lfp_mech.saes.sweep.l1_sweep].
* Metrics on held-out activations: MSE, normalised reconstruction loss
  ``Σ||x − x̂||² / Σ||x||²``, fraction of variance unexplained ``Σ||x − x̂||² / Σ||x − x̄||²``, L0
  (active features per token), dead-feature fraction (never active on the held-out tokens), and
  the CE loss recovered when the SAE replaces the hook in the model:
  ``(CE_zero − CE_sae) / (CE_zero − CE_clean)``.

Modules:

* [`config`][lfp_mech.saes.config] — [`SAEConfig`][lfp_mech.saes.config.SAEConfig], the stage's
  options; ``DEFAULT_ALPHA``.
* [`tied`][lfp_mech.saes.tied] —
  [`TiedStandardTrainingSAE`][lfp_mech.saes.tied.TiedStandardTrainingSAE].
* [`matching_pursuit`][lfp_mech.saes.matching_pursuit] —
  [`GramMatchingPursuitTrainingSAE`][lfp_mech.saes.matching_pursuit.GramMatchingPursuitTrainingSAE]
  and [`GramMatchingPursuitSAE`][lfp_mech.saes.matching_pursuit.GramMatchingPursuitSAE], the
  incremental encoder matching-pursuit dictionaries train and are read with.
* [`training`][lfp_mech.saes.training] —
  [`build_training_sae`][lfp_mech.saes.training.build_training_sae],
  [`train_sae`][lfp_mech.saes.training.train_sae],
  [`train_saes`][lfp_mech.saes.training.train_saes], batch sources from a store or a tensor.
* [`metrics`][lfp_mech.saes.metrics] — [`sae_metrics`][lfp_mech.saes.metrics.sae_metrics],
  [`mmcs`][lfp_mech.saes.metrics.mmcs],
  [`spliced_ce_losses`][lfp_mech.saes.metrics.spliced_ce_losses] with its control
  [`SameNormRandomError`][lfp_mech.saes.metrics.SameNormRandomError],
  [`ce_loss_recovered`][lfp_mech.saes.metrics.ce_loss_recovered] and its bootstrap CI over texts
  ([`ce_recovered_ci`][lfp_mech.saes.metrics.ce_recovered_ci]), the tied-vs-untied table.
* [`sweep`][lfp_mech.saes.sweep] — [`l1_sweep`][lfp_mech.saes.sweep.l1_sweep].
* [`finetune`][lfp_mech.saes.finetune] —
  [`kl_finetune_decoder`][lfp_mech.saes.finetune.kl_finetune_decoder]: the decoder fine-tuned on
  ``KL(p_clean ‖ p_spliced)`` with the trained encoder's latents (``saes.kl_finetune_texts``), kept only if
  the CE loss recovered on validation texts rises;
  [`kl_finetune_decoders`][lfp_mech.saes.finetune.kl_finetune_decoders]: several dictionaries of
  one model at once, sharing each batch's clean pass.
* [`ce_evaluation`][lfp_mech.saes.ce_evaluation] — the stage's CE-loss-recovered evaluation
  (with its CI) of every dictionary, and the detail of a failed CE check.
* [`io`][lfp_mech.saes.io] — [`save_sae`][lfp_mech.saes.io.save_sae],
  [`load_sae`][lfp_mech.saes.io.load_sae], [`load_saes`][lfp_mech.saes.io.load_saes]: THE SAE loader
  of lfp_mech (SAE-Lens folders).
* [`plots`][lfp_mech.saes.plots] — the L1-sweep and MMCS figures.
* [`artifacts`][lfp_mech.saes.artifacts] — the file names of the stage folder.
* [`stage`][lfp_mech.saes.stage] — ``run(ctx)`` and
  [`train_and_evaluate`][lfp_mech.saes.stage.train_and_evaluate] (the stage on two stores).
* [`results`][lfp_mech.saes.results] — [`SAEsResults`][lfp_mech.saes.results.SAEsResults]: the
dictionaries and tables of a run."""

from lfp_mech._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DEFAULT_ALPHA": "config",
        "PAPER_ALPHA": "config",
        "SIZES": "config",
        "SAEConfig": "config",
        "TiedStandardTrainingSAE": "tied",
        "GramMatchingPursuitSAE": "matching_pursuit",
        "build_training_sae": "training",
        "train_sae": "training",
        "train_saes": "training",
        "store_batches": "training",
        "tensor_batches": "training",
        "mmcs": "metrics",
        "mmcs_with_index": "metrics",
        "sae_metrics": "metrics",
        "spliced_ce_losses": "metrics",
        "SameNormRandomError": "metrics",
        "text_ce_losses": "metrics",
        "ce_loss_recovered": "metrics",
        "ce_recovered_ci": "metrics",
        "ce_recovered_difference_ci": "metrics",
        "tied_vs_untied_table": "metrics",
        "l1_sweep": "sweep",
        "kl_finetune_decoder": "finetune",
        "kl_finetune_decoders": "finetune",
        "SAELike": "io",
        "save_sae": "io",
        "load_sae": "io",
        "load_saes": "io",
        "plot_l1_sweep": "plots",
        "plot_mmcs": "plots",
        "train_and_evaluate": "stage",
        "SAEsResults": "results",
    },
)

__all__ = [
    "DEFAULT_ALPHA",
    "GramMatchingPursuitSAE",
    "PAPER_ALPHA",
    "SIZES",
    "SAEConfig",
    "SAELike",
    "SAEsResults",
    "SameNormRandomError",
    "TiedStandardTrainingSAE",
    "build_training_sae",
    "ce_loss_recovered",
    "ce_recovered_ci",
    "ce_recovered_difference_ci",
    "kl_finetune_decoder",
    "kl_finetune_decoders",
    "l1_sweep",
    "load_sae",
    "load_saes",
    "mmcs",
    "mmcs_with_index",
    "plot_l1_sweep",
    "plot_mmcs",
    "sae_metrics",
    "save_sae",
    "spliced_ce_losses",
    "store_batches",
    "tensor_batches",
    "text_ce_losses",
    "tied_vs_untied_table",
    "train_and_evaluate",
    "train_sae",
    "train_saes",
]
