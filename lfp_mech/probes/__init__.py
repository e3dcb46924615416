"""The ``probes`` stage: can a linear read-out of SAE features recover the reward the model was
tuned on?

This is §3 of the LFP paper (Marks et al. 2024; ``REFERENCE.md`` §A.3), done with its known
weaknesses addressed (held-out words, baselines, confidence intervals).

**Features** ([`features`][lfp_mech.probes.features]). For a text and the span of one word in it,
``A_concat`` is each hook's SAE features averaged over the word's tokens, concatenated by layer
([`concat_features`][lfp_mech.probes.features.concat_features],
[`ordered_hooks`][lfp_mech.probes.features.ordered_hooks]); ``None`` instead of an SAE gives raw
activations (the raw-MLP and ``hook_embed`` baselines).

**Dataset** ([`dataset`][lfp_mech.probes.dataset]). Contrastive triples ``(x⁺, x⁰, x⁻)`` give the
paper's dataset D: ``A(x⁺)`` labelled ``+||A(x⁺) − A(x⁰)||₂``, ``A(x⁻)`` labelled
``−||A(x⁻) − A(x⁰)||₂`` ([`activation_deltas`][lfp_mech.probes.dataset.activation_deltas]).

**Probe** ([`fit`][lfp_mech.probes.fit]). Ridge on standardised features with a penalty chosen by
word-grouped cross-validation, folded into one linear map and normalised to the VADER range [-4, 4]
([`fit_feedback_probe`][lfp_mech.probes.fit.fit_feedback_probe],
[`LinearProbe`][lfp_mech.probes.fit.LinearProbe]).

**Evaluation** ([`evaluation`][lfp_mech.probes.evaluation]). On lexicon words held out of every
training triple: Kendall τ against VADER, τ on negative / positive words, sign accuracies (paper
Table 5), per-word predictions (Table 2), bootstrap CIs; baselines on the same words (an untrained
Xavier probe — the paper's —, the base model, raw MLP outputs, token embeddings, shuffled labels)
with paired bootstrap differences; Figure 4: probe error vs how often the tuned policy says the
word.

**Preference probes** ([`preference`][lfp_mech.probes.preference], paper Table 3 and Figure 5): a
logistic probe on mean-pooled features of chosen vs rejected texts, and their PCA.

Modules:

* ``config.py`` — [`ProbesConfig`][lfp_mech.probes.config.ProbesConfig] (section ``probes``),
  [`BASELINES`][lfp_mech.probes.config.BASELINES];
* ``features.py`` — ``A_concat`` at word spans, one forward pass for several feature sets;
* ``dataset.py`` — dataset D, carrier sentences, held-out words, leak checks;
* ``fit.py`` — [`LinearProbe`][lfp_mech.probes.fit.LinearProbe], the Ridge probe, Xavier and
  shuffled-label controls;
* ``evaluation.py`` — τ, sign accuracy, bootstrap CIs, paired differences, word frequencies;
* ``analysis.py`` — the whole analysis in memory
  ([`analyse_feedback_probes`][lfp_mech.probes.analysis.analyse_feedback_probes]);
* ``inputs.py`` — the tuned probe's inputs per hook (paper Table 7's inputs, for ``validate``);
* ``reward.py`` — the probe as a reward model
  ([`probe_reward`][lfp_mech.probes.reward.probe_reward]),
  [`load_probe`][lfp_mech.probes.reward.load_probe];
* ``preference.py`` — logistic preference probes and PCA;
* ``plots.py`` — the figures; ``artifacts.py`` — file names;
* ``stage.py`` — ``run(ctx)``: the stage in a run; ``results.py`` —
[`ProbesResults`][lfp_mech.probes.results.ProbesResults]."""

from lfp_mech._lazy import lazy_exports

_EXPORTS = {
    "BASELINES": "config",
    "SIGN_ONLY": "config",
    "VADER_RANGE": "config",
    "ProbesConfig": "config",
    "PRIMARY_PROBE": "artifacts",
    "PROBES_FILE": "artifacts",
    "PROBE_INPUTS_FILE": "artifacts",
    "collect_feature_sets": "features",
    "concat_activations": "features",
    "concat_features": "features",
    "mean_pooled_features": "features",
    "ordered_hooks": "features",
    "ProbeDataset": "dataset",
    "activation_deltas": "dataset",
    "build_probe_dataset": "dataset",
    "carrier_sentences": "dataset",
    "check_no_leak": "dataset",
    "heldout_lexicon_words": "dataset",
    "FeedbackProbe": "fit",
    "LinearProbe": "fit",
    "fit_feedback_probe": "fit",
    "shuffled_labels": "fit",
    "xavier_probe": "fit",
    "PairedDiff": "evaluation",
    "ProbeEval": "evaluation",
    "evaluate_probe": "evaluation",
    "frequency_error_correlation": "evaluation",
    "kendall_tau": "evaluation",
    "paired_bootstrap_diff": "evaluation",
    "sign_only_predictor": "evaluation",
    "sign_only_tau": "evaluation",
    "word_frequencies": "evaluation",
    "ProbeAnalysis": "analysis",
    "analyse_feedback_probes": "analysis",
    "ProbeInputs": "inputs",
    "load_probe_inputs": "inputs",
    "save_probe_inputs": "inputs",
    "load_probe": "reward",
    "probe_reward": "reward",
    "LogisticProbeResult": "preference",
    "PCAResult": "preference",
    "PreferenceProbeConfig": "preference",
    "fit_logistic_probe": "preference",
    "fit_preference_probes": "preference",
    "pca_explained": "preference",
    "run_preference_probe": "preference",
    "baselines_figure": "plots",
    "pca_figure": "plots",
    "predicted_vs_true_figure": "plots",
    "word_frequency_figure": "plots",
    "write_probe_artifacts": "stage",
    "ProbesResults": "results",
    "load_saes": "lfp_mech.saes.io",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "BASELINES",
    "FeedbackProbe",
    "LinearProbe",
    "LogisticProbeResult",
    "PCAResult",
    "PRIMARY_PROBE",
    "PROBES_FILE",
    "PROBE_INPUTS_FILE",
    "PairedDiff",
    "PreferenceProbeConfig",
    "ProbeAnalysis",
    "ProbeDataset",
    "ProbeEval",
    "ProbeInputs",
    "ProbesConfig",
    "ProbesResults",
    "SIGN_ONLY",
    "VADER_RANGE",
    "activation_deltas",
    "analyse_feedback_probes",
    "baselines_figure",
    "build_probe_dataset",
    "carrier_sentences",
    "check_no_leak",
    "collect_feature_sets",
    "concat_activations",
    "concat_features",
    "evaluate_probe",
    "fit_feedback_probe",
    "fit_logistic_probe",
    "fit_preference_probes",
    "frequency_error_correlation",
    "heldout_lexicon_words",
    "kendall_tau",
    "load_probe",
    "load_probe_inputs",
    "load_saes",
    "mean_pooled_features",
    "ordered_hooks",
    "paired_bootstrap_diff",
    "pca_explained",
    "pca_figure",
    "predicted_vs_true_figure",
    "probe_reward",
    "run_preference_probe",
    "save_probe_inputs",
    "shuffled_labels",
    "sign_only_predictor",
    "sign_only_tau",
    "word_frequencies",
    "word_frequency_figure",
    "write_probe_artifacts",
    "xavier_probe",
]
