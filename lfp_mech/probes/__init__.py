"""Feedback probes: can a linear read-out of SAE features recover the reward the model was tuned on?

This is §3 of the LFP paper (Marks et al. 2024; ``REFERENCE.md`` §A.3), done with its known
weaknesses addressed (held-out words, baselines, confidence intervals).

**Features.** For a text and the character span of one word in it, :func:`concat_features` runs
the model once (TransformerLens ``run_with_cache`` with ``names_filter`` = the SAE hooks and
``stop_at_layer`` = last layer + 1), encodes each hook's activations with its SAE and averages
the feature activations over the word's tokens (a word may split into several BPE tokens); the
per-layer vectors are concatenated into ``A_concat`` in a fixed order: by layer index, then by
hook name (``hook_embed`` first). :func:`ordered_hooks` gives that order. Passing ``None``
instead of an SAE for a hook gives that hook's raw activations (the raw-MLP and
``hook_embed`` embedding baselines); :func:`collect_feature_sets` computes several feature sets
in one forward pass.

Char spans become token positions through the fast tokenizer's ``offset_mapping``: a token
belongs to the word if its character range overlaps the span (tokens carry their leading
space, ``" good"``). TransformerLens prepends BOS, so token ``j`` of the text is position
``j + 1`` of the model input; BOS itself is never pooled. Because the models are causal, the
activations at the word only depend on the tokens up to it, so each sequence is cut after the
word's last token before the forward pass (exact, and ~5% cheaper on the shipped templates),
and sequences are sorted by length before batching to keep padding small.

**Dataset.** A contrastive triple ``(x⁺, x⁰, x⁻)`` is one sentence with a positive, a neutral and
a negative word in the same slot (built by :mod:`lfp_mech.data`). :func:`activation_deltas`
forms the paper's dataset ``D``: input ``A(x⁺)`` labelled ``+Δ⁺ = +||A(x⁺) − A(x⁰)||₂`` and input
``A(x⁻)`` labelled ``−Δ⁻ = −||A(x⁻) − A(x⁰)||₂``.

**Probe.** :func:`fit_feedback_probe` fits scikit-learn ``Ridge`` after ``StandardScaler`` (on
by default: SAE features differ in scale by orders of magnitude, and the penalty should not
prefer the loud ones). α is picked from a log grid by cross-validation grouped by word
(``GroupKFold``: a word is never in both the fitting and the scoring part of a fold, matching
the held-out-word evaluation; ``RidgeCV`` leave-one-out when no words are given). The fitted
pipeline is folded into one linear map ``w·x + b`` on raw features (:class:`LinearProbe`).
Predictions are normalised to the VADER range: ``clip(4 · raw / max|raw on the training
inputs|, −4, 4)``. The scale uses training predictions only (no test labels) and keeps 0
fixed, so signs (sign accuracy) and ranks (Kendall τ) are those of the raw probe.

**Evaluation.** The probe is applied to lexicon words held out of every training triple: each
word is put into ``n_carrier_templates`` carrier sentences (the triple templates) and its
features averaged. :func:`evaluate_probe` reports Kendall τ (``scipy.stats.kendalltau``, τ-b)
against the VADER valence with its p-value, τ on negative words only, the sign accuracy on
positive and on negative words, a per-word table (paper Table 2) and bootstrap 95% CIs
(resampling words). Baselines on the same words: an untrained Xavier-initialised linear probe
(the paper's baseline), the same pipeline on the base model, on raw MLP outputs (no SAE), on
token embeddings alone (``hook_embed``) and with shuffled labels; :func:`paired_bootstrap_diff`
gives the τ difference tuned − baseline with a paired bootstrap CI.

**Preference tasks** (paper Table 3, Figure 5): :func:`mean_pooled_features` averages
``A_concat`` over all tokens of a text, :func:`fit_logistic_probe` fits a logistic probe on
chosen vs rejected texts with a held-out split by pair, :func:`pca_explained` gives the PCA of its
inputs. **Figure 4**: :func:`word_frequencies` counts lexicon words in the tuned policy's
completions (with :func:`lfp_mech.rewards.words`, the reward's own tokenizer) and
:func:`frequency_error_correlation` relates |probe − VADER| to that frequency (Spearman ρ).

:func:`run_probes_stage` runs the whole analysis and writes the tables and figures. It also
saves the tuned SAE probe's inputs (dataset ``D``, split back into one feature block per hook)
with the probe's prediction for each (:func:`save_probe_inputs`, read back with
:func:`load_probe_inputs`): the ``validate`` stage selects the inputs the probe predicts with
delta > 3 from them for paper Table 7.
"""

import csv
import io
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Float, Int
from sae_lens import SAE
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from lfp_mech._io import load_tensors, save_tensors, write_json, write_text
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.probes.config import BASELINES, VADER_RANGE, ProbesConfig
from lfp_mech.rewards import WORD_RE

logger = logging.getLogger(__name__)

__all__ = [
    "BASELINES",
    "VADER_RANGE",
    "LinearProbe",
    "FeedbackProbe",
    "LogisticProbeResult",
    "PROBE_INPUTS_FILE",
    "PCAResult",
    "PairedDiff",
    "PreferenceProbeConfig",
    "ProbeDataset",
    "ProbeEval",
    "ProbeInputs",
    "ProbesConfig",
    "activation_deltas",
    "build_probe_dataset",
    "carrier_sentences",
    "check_no_leak",
    "collect_feature_sets",
    "concat_activations",
    "concat_features",
    "evaluate_probe",
    "fit_feedback_probe",
    "fit_logistic_probe",
    "frequency_error_correlation",
    "kendall_tau",
    "load_probe_inputs",
    "load_saes",
    "mean_pooled_features",
    "ordered_hooks",
    "paired_bootstrap_diff",
    "pca_explained",
    "run_preference_probe",
    "run_probes_stage",
    "save_probe_inputs",
    "shuffled_labels",
    "word_frequencies",
    "xavier_probe",
]


_HOOK_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")
_PRIMARY = "tuned_sae"

PROBE_INPUTS_FILE = "probe_inputs.safetensors"
"""File of :func:`run_probes_stage` with the tuned SAE probe's inputs and predictions
(:func:`save_probe_inputs`)."""


@dataclass
class PreferenceProbeConfig:
    """Options of the logistic preference probe (paper Table 3, Figure 5)."""

    test_fraction: float = 0.2
    """Fraction of preference pairs held out (split by pair: both texts on the same side)."""
    C: float = 1.0
    """Inverse L2 strength of the logistic regression (on standardised features)."""
    n_pca_components: int = 2
    """PCA components reported (Figure 5 plots the first two)."""
    batch_size: int = 32
    """Texts per forward pass."""
    seed: int = 0
    """Seeds the train/test split."""
    device: str = "cpu"
    """Torch device."""

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.C <= 0:
            raise ConfigError(f"C must be > 0, got {self.C}")
        if self.n_pca_components < 1:
            raise ConfigError(f"n_pca_components must be >= 1, got {self.n_pca_components}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


# --------------------------------------------------------------------------- result types


@dataclass
class LinearProbe:
    """A linear probe ``pred(x) = clip(scale · (x·w + b), −4, 4)`` on raw (unstandardised) features.

    ``scale`` maps the largest |raw prediction| on the training inputs to 4 (the VADER range).
    """

    weight: Float[np.ndarray, " d"]
    bias: float
    scale: float
    alpha: float | None = None
    """Ridge penalty chosen by cross-validation (None for untrained probes)."""
    kind: str = "ridge"

    def raw_predict(self, inputs: Float[Tensor, "batch d"]) -> Float[np.ndarray, " batch"]:
        """``x·w + b`` before normalisation."""
        if inputs.shape[-1] != self.weight.shape[0]:
            raise ValueError(
                f"probe expects {self.weight.shape[0]} features, got {inputs.shape[-1]}"
            )
        x = inputs.detach().to("cpu", torch.float64).numpy()
        return x @ self.weight + self.bias

    def predict(self, inputs: Float[Tensor, "batch d"]) -> Float[np.ndarray, " batch"]:
        """Predictions normalised to the VADER range [-4, 4]."""
        return np.clip(self.scale * self.raw_predict(inputs), -VADER_RANGE, VADER_RANGE)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for :func:`lfp_mech._io.save_tensors`."""
        return {
            "weight": torch.from_numpy(np.ascontiguousarray(self.weight)).float(),
            "bias": torch.tensor([self.bias], dtype=torch.float32),
            "scale": torch.tensor([self.scale], dtype=torch.float32),
        }


FeedbackProbe = LinearProbe
"""The probe :func:`fit_feedback_probe` returns."""


@dataclass
class ProbeDataset:
    """The paper's dataset D: inputs ``A(x⁺)`` (label ``+Δ⁺``) then ``A(x⁻)`` (label ``−Δ⁻``)."""

    inputs: Float[Tensor, "sample d"]
    labels: Float[Tensor, " sample"]
    words: list[str]
    """The substituted word of each sample (for leak checks)."""
    neutral_words: list[str]
    """The neutral words of the triples (inputs were never built from them, listed for checks)."""


@dataclass
class ProbeInputs:
    """The tuned SAE probe's inputs (the paper's dataset D), one feature block per hook.

    Input ``i`` is ``A(x⁺)`` of triple ``i`` for ``i < n_triples`` and ``A(x⁻)`` of triple
    ``i − n_triples`` after that (the order of :func:`activation_deltas`). The probe was fitted on
    all of them (its evaluation uses held-out lexicon words, which are not in D).
    """

    features: dict[str, Tensor]
    """``{hook_name: Float[n_inputs, d_sae]}``: the SAE features at the substituted word (mean
    over its tokens), in :func:`ordered_hooks` order; concatenated they are ``A_concat``."""
    predicted_delta: Float[Tensor, " sample"]
    """The probe's prediction, normalised to [-4, 4] like every probe output
    (:meth:`LinearProbe.predict`)."""
    predicted_delta_raw: Float[Tensor, " sample"]
    """The same before normalisation (:meth:`LinearProbe.raw_predict`)."""
    label_delta: Float[Tensor, " sample"]
    """The implicit feedback the probe regressed on: ``+Δ⁺`` / ``−Δ⁻`` (feature-space norms)."""
    words: list[str]
    """The substituted word of each input."""
    texts: list[str]
    """The sentence of each input."""

    @property
    def n_inputs(self) -> int:
        return int(self.predicted_delta.shape[0])


@dataclass
class ProbeEval:
    """How well predicted valences match the lexicon on a set of words."""

    name: str
    n_words: int
    n_positive: int
    n_negative: int
    tau: float
    p_value: float
    tau_ci: tuple[float, float]
    tau_negative: float
    p_negative: float
    tau_negative_ci: tuple[float, float]
    tau_positive: float
    """τ on positive words only: does the probe rank magnitudes within a sign?"""
    p_positive: float
    tau_positive_ci: tuple[float, float]
    sign_acc_positive: float
    sign_acc_positive_ci: tuple[float, float]
    sign_acc_negative: float
    sign_acc_negative_ci: tuple[float, float]
    words: list[str] = field(repr=False)
    true_valence: Float[np.ndarray, " word"] = field(repr=False)
    predicted: Float[np.ndarray, " word"] = field(repr=False)

    def kendall_row(self) -> dict[str, Any]:
        """One row of the Kendall τ table."""
        return {
            "probe": self.name,
            "n_words": self.n_words,
            "tau": self.tau,
            "p_value": self.p_value,
            "tau_ci_low": self.tau_ci[0],
            "tau_ci_high": self.tau_ci[1],
            "tau_negative": self.tau_negative,
            "p_negative": self.p_negative,
            "tau_negative_ci_low": self.tau_negative_ci[0],
            "tau_negative_ci_high": self.tau_negative_ci[1],
            "tau_positive": self.tau_positive,
            "p_positive": self.p_positive,
            "tau_positive_ci_low": self.tau_positive_ci[0],
            "tau_positive_ci_high": self.tau_positive_ci[1],
        }

    def sign_row(self) -> dict[str, Any]:
        """One row of the sign-accuracy table (paper Table 5)."""
        return {
            "probe": self.name,
            "n_positive": self.n_positive,
            "sign_acc_positive": self.sign_acc_positive,
            "positive_ci_low": self.sign_acc_positive_ci[0],
            "positive_ci_high": self.sign_acc_positive_ci[1],
            "n_negative": self.n_negative,
            "sign_acc_negative": self.sign_acc_negative,
            "negative_ci_low": self.sign_acc_negative_ci[0],
            "negative_ci_high": self.sign_acc_negative_ci[1],
        }

    def table(self) -> list[dict[str, Any]]:
        """Per-word rows (paper Table 2): word, true valence, predicted valence."""
        return [
            {"word": w, "true_valence": float(t), "predicted": float(p)}
            for w, t, p in zip(self.words, self.true_valence, self.predicted, strict=True)
        ]


@dataclass
class PairedDiff:
    """``metric(a) − metric(b)`` on the same words, with a paired bootstrap CI."""

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    """Two-sided bootstrap p-value: 2·min(P(diff* ≤ 0), P(diff* ≥ 0)), floored at 1/n."""
    n_bootstrap: int


@dataclass
class LogisticProbeResult:
    """A logistic preference probe and its accuracies."""

    labels: str
    train_accuracy: float
    test_accuracy: float
    n_train: int
    n_test: int
    label_agreement: float
    """Fraction of samples whose label equals the preference label (1 for labels='preference')."""
    probe: LinearProbe = field(repr=False)
    inputs: Float[np.ndarray, "sample d"] = field(repr=False)
    targets: Int[np.ndarray, " sample"] = field(repr=False)


@dataclass
class PCAResult:
    """PCA of probe inputs."""

    projected: Float[np.ndarray, "sample component"]
    explained_variance_ratio: Float[np.ndarray, " component"]


# --------------------------------------------------------------------------- features


def ordered_hooks(saes: Mapping[str, SAE | None] | Sequence[SAE]) -> list[tuple[str, SAE | None]]:
    """``(hook_name, sae_or_None)`` in the fixed ``A_concat`` order: by layer, then by hook name.

    ``hook_embed`` (and any hook outside ``blocks.{l}``) comes first. A sequence of SAEs is keyed
    by each SAE's ``cfg.metadata.hook_name``.
    """
    if isinstance(saes, Mapping):
        items = list(saes.items())
    else:
        items = []
        for sae in saes:
            hook = sae.cfg.metadata.hook_name
            if not hook:
                raise ConfigError(
                    "an SAE has no cfg.metadata.hook_name; pass a mapping {hook_name: sae} or set "
                    "sae.cfg.metadata.hook_name (e.g. 'blocks.15.hook_mlp_out')"
                )
            items.append((hook, sae))
    if not items:
        raise ConfigError("no hooks given: pass at least one {hook_name: SAE or None}")
    names = [h for h, _ in items]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate hooks in {names}: one SAE per hook")
    return sorted(items, key=lambda item: (_hook_layer(item[0]), item[0]))


def concat_features(
    model: HookedTransformer,
    saes: Mapping[str, SAE | None] | Sequence[SAE],
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    *,
    batch_size: int = 64,
    device: str = "cpu",
) -> Float[Tensor, "batch d_concat"]:
    """``A_concat``: SAE features at each text's span, averaged over its tokens, concatenated.

    Args:
        model: the (base or tuned) model.
        saes: ``{hook_name: SAE}`` (a value ``None`` = raw activations of that hook) or a
            sequence of SAEs with ``cfg.metadata.hook_name`` set. Concatenation order:
            :func:`ordered_hooks` (by layer).
        texts: the sentences.
        spans: one ``(start, end)`` character span per text (end exclusive), e.g. the
            substituted word of a triple; features are averaged over the tokens it overlaps.
        batch_size: sequences per forward pass.
        device: torch device for the forward pass.

    Returns:
        ``[len(texts), Σ d_sae]`` float32 on CPU (``d_in`` of the hook for raw hooks).
    """
    hooks = ordered_hooks(saes)
    sets = collect_feature_sets(
        model, {"features": dict(hooks)}, texts, spans, batch_size=batch_size, device=device
    )
    return sets["features"]


def concat_activations(
    model: HookedTransformer,
    hook_names: Sequence[str],
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    *,
    batch_size: int = 64,
    device: str = "cpu",
) -> Float[Tensor, "batch d_concat"]:
    """Raw hook activations (no SAE) at the spans, averaged over tokens, concatenated by layer.

    ``["blocks.{l}.hook_mlp_out", ...]`` is the raw-MLP baseline, ``["hook_embed"]`` the
    token-embedding baseline.
    """
    return concat_features(
        model, dict.fromkeys(hook_names), texts, spans, batch_size=batch_size, device=device
    )


def mean_pooled_features(
    model: HookedTransformer,
    saes: Mapping[str, SAE | None] | Sequence[SAE],
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    device: str = "cpu",
) -> Float[Tensor, "batch d_concat"]:
    """``A_concat`` averaged over all tokens of each text (BOS and padding excluded)."""
    return concat_features(
        model, saes, texts, [(0, len(t)) for t in texts], batch_size=batch_size, device=device
    )


def collect_feature_sets(
    model: HookedTransformer,
    feature_sets: Mapping[str, Mapping[str, SAE | None]],
    texts: Sequence[str],
    spans: Sequence[tuple[int, int]],
    *,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, Float[Tensor, "batch _"]]:
    """Several ``A_concat`` variants from ONE forward pass per batch.

    Args:
        feature_sets: ``{set_name: {hook_name: SAE or None}}``, e.g.
            ``{"sae": saes, "mlp": {h: None for h in saes}, "embed": {"hook_embed": None}}``.

    Returns:
        ``{set_name: [len(texts), d_set]}`` float32 CPU tensors, each concatenated in
        :func:`ordered_hooks` order.
    """
    texts = list(texts)
    spans = [(int(s), int(e)) for s, e in spans]
    _check_texts_spans(texts, spans)
    ordered = {name: ordered_hooks(hooks) for name, hooks in feature_sets.items()}
    if not ordered:
        raise ConfigError("feature_sets is empty")
    hook_names = sorted({h for hooks in ordered.values() for h, _ in hooks}, key=_hook_sort_key)
    _check_hooks(model, hook_names)
    max_layer = max(_hook_layer(h) for h in hook_names)
    stop_at_layer = max_layer + 1  # hook_embed only: layer -1 → stop_at_layer 0 (embed only)

    seqs = _tokenize_to_spans(model, texts, spans)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    pooled: dict[str, list[Tensor]] = {name: [] for name in ordered}
    if torch.device(device) != torch.device(model.cfg.device):
        model.to(device)
    pad_id = _pad_id(model)
    batches = range(0, len(order), batch_size)
    with torch.no_grad():
        for start in tqdm(batches, desc="probe features", disable=None, leave=False):
            idx = order[start : start + batch_size]
            tokens, attention, span_mask = _pad_batch([seqs[i] for i in idx], pad_id)
            _, cache = model.run_with_cache(
                tokens.to(device),
                attention_mask=attention.to(device),
                names_filter=hook_names,
                stop_at_layer=stop_at_layer,
            )
            mask = span_mask.to(device)
            for name, hooks in ordered.items():
                parts = [_pool(_encode(cache[h], sae, h), mask) for h, sae in hooks]
                pooled[name].append(torch.cat(parts, dim=-1).cpu())
            del cache
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {name: torch.cat(chunks)[inverse].contiguous() for name, chunks in pooled.items()}


# --------------------------------------------------------------------------- dataset D


def activation_deltas(
    a_pos: Float[Tensor, "triple d"],
    a_neu: Float[Tensor, "triple d"],
    a_neg: Float[Tensor, "triple d"],
) -> tuple[Float[Tensor, "sample d"], Float[Tensor, " sample"]]:
    """The paper's dataset D from the features of contrastive triples.

    ``Δ⁺ = ||A(x⁺) − A(x⁰)||₂`` and ``Δ⁻ = ||A(x⁻) − A(x⁰)||₂``; inputs are ``[A(x⁺); A(x⁻)]``
    (all positives first, then all negatives, triple order kept) with labels ``[+Δ⁺; −Δ⁻]``.
    """
    if a_pos.shape[0] == 0:
        raise ValueError("activation_deltas got no triples")
    delta_pos = reduce((a_pos - a_neu) ** 2, "triple d -> triple", "sum").sqrt()
    delta_neg = reduce((a_neg - a_neu) ** 2, "triple d -> triple", "sum").sqrt()
    inputs = torch.cat([a_pos, a_neg], dim=0)
    labels = torch.cat([delta_pos, -delta_neg], dim=0)
    return inputs, labels


def build_probe_dataset(
    a_pos: Float[Tensor, "triple d"],
    a_neu: Float[Tensor, "triple d"],
    a_neg: Float[Tensor, "triple d"],
    triples: Sequence[Any],
) -> ProbeDataset:
    """:func:`activation_deltas` plus the word behind each sample (from the triples' ``words``)."""
    if len(triples) != a_pos.shape[0]:
        raise ValueError(f"{len(triples)} triples but {a_pos.shape[0]} feature rows")
    inputs, labels = activation_deltas(a_pos, a_neu, a_neg)
    pos_words = [_triple_words(t)[0] for t in triples]
    neg_words = [_triple_words(t)[2] for t in triples]
    return ProbeDataset(
        inputs, labels, pos_words + neg_words, [_triple_words(t)[1] for t in triples]
    )


def check_no_leak(train_words: Sequence[str], eval_words: Sequence[str]) -> None:
    """Raise :class:`LfpMechError` if an evaluation word was used in probe training."""
    leaked = sorted({w.lower() for w in train_words} & {w.lower() for w in eval_words})
    if leaked:
        raise LfpMechError(
            f"{len(leaked)} evaluation word(s) appear in the probe's training triples "
            f"({leaked[:10]}...): build triples with the same seed/heldout_fraction as the "
            "held-out words so that held-out words never enter training"
        )


def carrier_sentences(
    words: Sequence[str], templates: Sequence[str]
) -> tuple[list[str], list[tuple[int, int]]]:
    """Each word in each template's ``{}`` slot: texts and word spans, word-major order."""
    texts, spans = [], []
    for word in words:
        for template in templates:
            if template.count("{}") != 1:
                raise ValueError(f"template must contain exactly one '{{}}' slot: {template!r}")
            start = template.index("{}")
            texts.append(template[:start] + word + template[start + 2 :])
            spans.append((start, start + len(word)))
    return texts, spans


# --------------------------------------------------------------------------- probes


def fit_feedback_probe(
    inputs: Float[Tensor, "sample d"],
    labels: Float[Tensor, " sample"],
    config: ProbesConfig | None = None,
    *,
    groups: Sequence[str] | None = None,
    alpha: float | None = None,
) -> LinearProbe:
    """Ridge regression probe with a cross-validated penalty, normalised to [-4, 4].

    The penalty α is chosen from ``config.alphas`` by mean squared error:

    * with ``groups`` (the word of each sample, as in :class:`ProbeDataset`): ``GroupKFold``
      with ``config.cv_folds`` folds, so a word is never in both the fitting and the scoring
      part of a fold — the probe is evaluated on unseen words, and α should be chosen that way
      too (leave-one-out would reward memorising words seen in other triples);
    * without: scikit-learn ``RidgeCV``'s efficient leave-one-out.

    ``alpha`` skips the search. With ``config.standardize`` the features are standardised
    (``StandardScaler``, fitted on all ``inputs``) before the Ridge fit; the fitted pipeline is
    folded back into raw-feature weights. The normalisation scale is ``4 / max|raw prediction|``
    over the training inputs (no test data involved).
    """
    config = config or ProbesConfig()
    x, y = _to_numpy(inputs), _to_numpy(labels)
    _check_fit_data(x, y)
    if groups is not None and len(groups) != x.shape[0]:
        raise ValueError(f"{len(groups)} groups for {x.shape[0]} samples")
    scaler = StandardScaler(with_mean=True, with_std=config.standardize).fit(x)
    xs = scaler.transform(x)
    if alpha is None:
        if groups is not None and len(set(groups)) >= config.cv_folds:
            alpha = _grouped_cv_alpha(xs, y, groups, config.alphas, config.cv_folds)
        else:
            alpha = float(RidgeCV(alphas=np.asarray(config.alphas)).fit(xs, y).alpha_)
    ridge = Ridge(alpha=alpha).fit(xs, y)
    scale = scaler.scale_ if config.standardize else np.ones(x.shape[1])
    weight = ridge.coef_ / scale
    bias = float(ridge.intercept_ - scaler.mean_ @ weight)
    probe = LinearProbe(np.asarray(weight, dtype=np.float64), bias, 1.0, float(alpha))
    probe.scale = _normalisation_scale(probe.raw_predict(inputs))
    logger.info("ridge probe: alpha=%.3g on %d samples x %d features", alpha, *x.shape)
    return probe


def xavier_probe(train_inputs: Float[Tensor, "sample d"], *, seed: int = 0) -> LinearProbe:
    """The paper's baseline: an untrained ``Linear(d, 1)`` with ``xavier_uniform_`` weights.

    Bias 0; seeded with its own generator (the global RNG is untouched). The normalisation scale
    is fitted on ``train_inputs`` like a trained probe's (no labels involved).
    """
    d = train_inputs.shape[-1]
    linear = torch.nn.Linear(d, 1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(linear.weight, generator=generator)
        linear.bias.zero_()
    weight = rearrange(linear.weight.detach(), "1 d -> d").numpy().copy()
    probe = LinearProbe(weight, 0.0, 1.0, None, kind="xavier")
    probe.scale = _normalisation_scale(probe.raw_predict(train_inputs))
    return probe


def shuffled_labels(labels: Float[Tensor, " sample"], *, seed: int = 0) -> Float[Tensor, " sample"]:
    """``labels`` randomly permuted (seeded): the shuffled-label control."""
    generator = torch.Generator().manual_seed(seed)
    return labels[torch.randperm(labels.shape[0], generator=generator)]


# --------------------------------------------------------------------------- evaluation


def kendall_tau(predicted: Float[np.ndarray, " word"], true: Float[np.ndarray, " word"]) -> float:
    """Kendall τ-b (NaN if fewer than 2 words or a constant input)."""
    if predicted.shape[0] < 2 or np.ptp(predicted) == 0 or np.ptp(true) == 0:
        return float("nan")
    return float(stats.kendalltau(predicted, true).statistic)


def evaluate_probe(
    predicted: Float[np.ndarray, " word"],
    true_valence: Float[np.ndarray, " word"],
    words: Sequence[str],
    *,
    name: str = "probe",
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> ProbeEval:
    """Kendall τ (+ p), τ on negative (and positive) words, sign accuracies, per-word table, CIs.

    A word is positive if its true valence is > 0 and negative if < 0; sign accuracy counts
    predictions with the right strict sign (a prediction of exactly 0 is wrong for both).
    CIs: 2.5/97.5 percentiles over ``n_bootstrap`` resamples of the words (with replacement,
    ``numpy.random.default_rng(seed)``).
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    true_valence = np.asarray(true_valence, dtype=np.float64)
    words = list(words)
    if not predicted.shape[0] == true_valence.shape[0] == len(words):
        raise ValueError(
            f"predicted ({predicted.shape[0]}), true_valence ({true_valence.shape[0]}) and "
            f"words ({len(words)}) must have the same length"
        )
    if len(words) < 3:
        raise ValueError(f"need at least 3 words to evaluate a probe, got {len(words)}")
    point = _metrics(predicted, true_valence)
    tau_p = _kendall_p(predicted, true_valence)
    pos, neg = true_valence > 0, true_valence < 0
    tau_neg_p = _kendall_p(predicted[neg], true_valence[neg])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(words), size=(n_bootstrap, len(words)))
    boot = np.array([_metrics(predicted[i], true_valence[i]) for i in idx])
    ci = {k: _percentile_ci(boot[:, j]) for j, k in enumerate(_METRIC_NAMES)}
    return ProbeEval(
        name=name,
        n_words=len(words),
        n_positive=int(pos.sum()),
        n_negative=int(neg.sum()),
        tau=point[0],
        p_value=tau_p,
        tau_ci=ci["tau"],
        tau_negative=point[1],
        p_negative=tau_neg_p,
        tau_negative_ci=ci["tau_negative"],
        tau_positive=point[4],
        p_positive=_kendall_p(predicted[pos], true_valence[pos]),
        tau_positive_ci=ci["tau_positive"],
        sign_acc_positive=point[2],
        sign_acc_positive_ci=ci["sign_acc_positive"],
        sign_acc_negative=point[3],
        sign_acc_negative_ci=ci["sign_acc_negative"],
        words=words,
        true_valence=true_valence,
        predicted=predicted,
    )


def paired_bootstrap_diff(
    pred_a: Float[np.ndarray, " word"],
    pred_b: Float[np.ndarray, " word"],
    true: Float[np.ndarray, " word"],
    *,
    metric: Callable[[np.ndarray, np.ndarray], float] | Literal["kendall"] = "kendall",
    n: int = 2000,
    seed: int = 0,
) -> PairedDiff:
    """``metric(a, true) − metric(b, true)`` with a paired bootstrap over words (95% CI).

    The same resampled words are used for both probes in each replicate, so word-level noise
    shared by the two probes cancels.
    """
    fn = kendall_tau if metric == "kendall" else metric
    pred_a, pred_b = np.asarray(pred_a, np.float64), np.asarray(pred_b, np.float64)
    true = np.asarray(true, np.float64)
    if not pred_a.shape == pred_b.shape == true.shape:
        raise ValueError(f"shape mismatch: {pred_a.shape}, {pred_b.shape}, {true.shape}")
    diff = fn(pred_a, true) - fn(pred_b, true)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, true.shape[0], size=(n, true.shape[0]))
    boots = np.array([fn(pred_a[i], true[i]) - fn(pred_b[i], true[i]) for i in idx])
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return PairedDiff(float(diff), float("nan"), float("nan"), float("nan"), n)
    low, high = np.percentile(boots, [2.5, 97.5])
    p = min(1.0, 2 * min((boots <= 0).mean(), (boots >= 0).mean()))
    return PairedDiff(float(diff), float(low), float(high), max(p, 1.0 / boots.size), n)


# --------------------------------------------------------------------------- preference tasks


def fit_logistic_probe(
    features_chosen: Float[Tensor, "pair d"],
    features_rejected: Float[Tensor, "pair d"],
    *,
    labels: Literal["preference", "delta"] = "preference",
    test_fraction: float = 0.2,
    C: float = 1.0,
    seed: int = 0,
) -> LogisticProbeResult:
    """Logistic probe on mean-pooled features of chosen vs rejected texts (paper Table 3).

    Labels:

    * ``"preference"`` (default): chosen = 1, rejected = 0 — the preference itself.
    * ``"delta"``: the paper's "label from the averaged delta": with the mean pair delta
      ``d̄ = mean(A(chosen) − A(rejected))`` and the mean input ``m`` (both from the TRAIN pairs
      only), a text is labelled 1 iff ``(A(x) − m)·d̄ > 0``. These labels are a linear function
      of the inputs, so near-perfect accuracy is expected by construction; ``label_agreement``
      says how often they match the preference.

    The split is by pair (both texts of a pair on the same side), seeded. Features are
    standardised before ``LogisticRegression(C=C)``.
    """
    if features_chosen.shape != features_rejected.shape:
        raise ValueError(
            f"chosen {tuple(features_chosen.shape)} and rejected "
            f"{tuple(features_rejected.shape)} features must have the same shape"
        )
    n_pairs = features_chosen.shape[0]
    n_test = max(1, round(test_fraction * n_pairs))
    if n_pairs - n_test < 2:
        raise ValueError(f"need at least {n_test + 2} preference pairs, got {n_pairs}")
    perm = np.random.default_rng(seed).permutation(n_pairs)
    test_pairs, train_pairs = perm[:n_test], perm[n_test:]
    chosen, rejected = _to_numpy(features_chosen), _to_numpy(features_rejected)
    x = np.concatenate([chosen, rejected])
    pref = np.concatenate([np.ones(n_pairs, np.int64), np.zeros(n_pairs, np.int64)])
    train_idx = np.concatenate([train_pairs, train_pairs + n_pairs])
    test_idx = np.concatenate([test_pairs, test_pairs + n_pairs])
    if labels == "preference":
        y = pref
    elif labels == "delta":
        mean_delta = (chosen[train_pairs] - rejected[train_pairs]).mean(axis=0)
        centre = x[train_idx].mean(axis=0)
        y = ((x - centre) @ mean_delta > 0).astype(np.int64)
    else:
        raise ValueError(f"labels must be 'preference' or 'delta', got {labels!r}")
    if np.unique(y[train_idx]).size < 2:
        raise LfpMechError(
            f"labels={labels!r}: the training split has a single class; use more pairs "
            "or labels='preference'"
        )
    scaler = StandardScaler()
    clf = LogisticRegression(C=C, max_iter=5000)
    make_pipeline(scaler, clf).fit(x[train_idx], y[train_idx])
    weight = clf.coef_[0] / scaler.scale_
    bias = float(clf.intercept_[0] - scaler.mean_ @ weight)
    probe = LinearProbe(weight.astype(np.float64), bias, 1.0, 1.0 / C, kind="logistic")
    decision = x @ probe.weight + probe.bias
    correct = (decision > 0).astype(np.int64) == y
    return LogisticProbeResult(
        labels=labels,
        train_accuracy=float(correct[train_idx].mean()),
        test_accuracy=float(correct[test_idx].mean()),
        n_train=int(train_idx.size),
        n_test=int(test_idx.size),
        label_agreement=float((y == pref).mean()),
        probe=probe,
        inputs=x,
        targets=y,
    )


def pca_explained(inputs: Float[Tensor, "sample d"], n_components: int = 2) -> PCAResult:
    """PCA (``sklearn.decomposition.PCA``) of probe inputs: projections and explained-variance ratios."""
    x = _to_numpy(inputs)
    k = min(n_components, x.shape[0], x.shape[1])
    pca = PCA(n_components=k, random_state=0).fit(x)
    return PCAResult(pca.transform(x), pca.explained_variance_ratio_.astype(np.float64))


# --------------------------------------------------------------------------- word frequency


def word_frequencies(completions: Sequence[str], words: Sequence[str]) -> dict[str, int]:
    """How often each of ``words`` occurs in ``completions`` (lower-cased).

    Words are split with :func:`lfp_mech.rewards.words`, the VADER reward's own tokenizer, so a
    word counts exactly when the reward would score it.
    """
    from lfp_mech.rewards import words as split_words

    counts = Counter(w for text in completions for w in split_words(text))
    return {w: int(counts[w.lower()]) for w in words}


def frequency_error_correlation(
    frequencies: Float[np.ndarray, " word"], abs_errors: Float[np.ndarray, " word"]
) -> tuple[float, float]:
    """Spearman ρ and p between word frequency and |probe − VADER| (Figure 4; the paper expects ρ < 0)."""
    if np.ptp(frequencies) == 0 or np.ptp(abs_errors) == 0:
        return float("nan"), float("nan")
    result = stats.spearmanr(frequencies, abs_errors)
    return float(result.statistic), float(result.pvalue)


# --------------------------------------------------------------------------- the stage


def run_probes_stage(
    base_model_path: str | Path | HookedTransformer,
    tuned_model_path: str | Path | HookedTransformer,
    sae_dirs: Mapping[str, str | Path],
    completions: Sequence[str],
    out_dir: Path,
    config: ProbesConfig | None = None,
    *,
    base_sae_dirs: Mapping[str, str | Path] | None = None,
    triples: Sequence[Any] | None = None,
    eval_words: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The feedback-probe analysis, end to end; writes every artifact into ``out_dir``.

    Args:
        base_model_path: the base model: a model name or checkpoint dir (see
            :func:`lfp_mech.models.load_model`), or an already loaded model.
        tuned_model_path: the tuned model, in the same forms.
        sae_dirs: ``{hook_name: dir}`` of SAE-Lens SAEs (``SAE.load_from_disk``) for the tuned
            model; ``base_sae_dirs`` (default: the same SAEs) for the base model.
        completions: texts sampled from the tuned policy (Figure 4 word frequencies).
        triples: contrastive triples for training (default
            ``lfp_mech.data.make_triples(n_triples, seed, heldout_fraction, split="train")``).
        eval_words: lexicon words to evaluate on (default: the held-out words of
            ``lfp_mech.data``); checked to never occur in ``triples``.

    Writes ``kendall.csv/.md`` (tuned + every baseline: τ, p, CI; paired differences),
    ``sign_accuracy.csv/.md``, ``per_word.csv/.md``, ``predicted_vs_true.png``,
    ``word_frequency.png``, ``baselines.png``, ``probes.safetensors`` (probe weights),
    ``probe_inputs.safetensors`` (the tuned SAE probe's inputs per hook and its predictions,
    :func:`save_probe_inputs`; the inputs of paper Table 7) and ``summary.json``. Returns the
    summary dict.
    """
    from lfp_mech.plots import probes as probe_plots
    from lfp_mech.plots import save_figure
    from lfp_mech.rewards import vader_lexicon

    config = config or ProbesConfig()
    out_dir = Path(out_dir)
    triples = list(triples) if triples is not None else _default_triples(config)
    if not triples:
        raise LfpMechError("no contrastive triples: check lfp_mech.data.make_triples")
    lexicon = vader_lexicon()
    words = _eval_words(eval_words, config, lexicon)
    train_words = [w for t in triples for w in _triple_words(t)]
    check_no_leak(train_words, words)
    true = np.array([lexicon[w.lower()] for w in words], dtype=np.float64)
    templates = _carrier_templates(config.n_carrier_templates, config.seed)
    word_texts, word_spans = carrier_sentences(words, templates)
    logger.info(
        "probes: %d triples (%d distinct training words), %d eval words x %d templates",
        len(triples),
        len(set(train_words)),
        len(words),
        len(templates),
    )

    sae_paths = dict(sae_dirs)
    feats: dict[str, dict[str, Tensor]] = {}
    widths: dict[str, int] = {}  # d_sae of the tuned model's SAEs, in A_concat order
    for prefix, model_src, dirs in [
        ("tuned", tuned_model_path, sae_paths),
        ("base", base_model_path, dict(base_sae_dirs) if base_sae_dirs else sae_paths),
    ]:
        wanted = {"sae"}
        if f"{prefix}_mlp" in config.baselines:
            wanted.add("mlp")
        if f"{prefix}_embed" in config.baselines:
            wanted.add("embed")
        if prefix == "base" and "base_sae" not in config.baselines:
            wanted.discard("sae")
        if not wanted:
            continue
        tic = time.perf_counter()
        model = _as_model(model_src, config.device)
        saes = load_saes(dirs, device=config.device)
        if prefix == "tuned":
            widths = {h: int(sae.cfg.d_sae) for h, sae in ordered_hooks(saes)}
        logger.info("probes: %s model + SAEs loaded in %.1f s", prefix, time.perf_counter() - tic)
        tic = time.perf_counter()
        sets = {
            "sae": saes,
            "mlp": dict.fromkeys(saes),
            "embed": {"hook_embed": None},
        }
        got = _triple_and_word_features(
            model, {k: sets[k] for k in sorted(wanted)}, triples, word_texts, word_spans, config
        )
        feats.update({f"{prefix}_{k}": v for k, v in got.items()})
        logger.info("probes: %s features in %.1f s", prefix, time.perf_counter() - tic)
        del model, saes

    # fit every probe on its own dataset D, predict the held-out words
    tic = time.perf_counter()
    k = len(templates)
    predictions: dict[str, np.ndarray] = {}
    probes_fitted: dict[str, LinearProbe] = {}
    shuffle_null: list[float] = []
    for name, f in feats.items():
        dataset = build_probe_dataset(f["pos"], f["neu"], f["neg"], triples)
        check_no_leak(dataset.words + dataset.neutral_words, words)
        probe = fit_feedback_probe(dataset.inputs, dataset.labels, config, groups=dataset.words)
        probes_fitted[name] = probe
        word_x = reduce(f["words"], "(word k) d -> word d", "mean", k=k)
        predictions[name] = probe.predict(word_x)
        if name != _PRIMARY:
            continue
        primary_dataset = dataset
        if "xavier" in config.baselines:
            probes_fitted["xavier"] = xavier_probe(dataset.inputs, seed=config.seed)
            predictions["xavier"] = probes_fitted["xavier"].predict(word_x)
        if "shuffled" in config.baselines:
            probes_fitted["shuffled"] = fit_feedback_probe(
                dataset.inputs,
                shuffled_labels(dataset.labels, seed=config.seed),
                config,
                groups=dataset.words,
            )
            predictions["shuffled"] = probes_fitted["shuffled"].predict(word_x)
        for i in range(config.n_shuffles):
            null_labels = shuffled_labels(dataset.labels, seed=config.seed + 1 + i)
            null_probe = fit_feedback_probe(dataset.inputs, null_labels, config, alpha=probe.alpha)
            shuffle_null.append(kendall_tau(null_probe.predict(word_x), true))

    evals = {
        name: evaluate_probe(
            pred, true, words, name=name, n_bootstrap=config.n_bootstrap, seed=config.seed
        )
        for name, pred in predictions.items()
    }
    primary = predictions[_PRIMARY]
    diffs = {
        other: paired_bootstrap_diff(
            primary, predictions[other], true, n=config.n_bootstrap, seed=config.seed
        )
        for other in predictions
        if other != _PRIMARY
    }

    logger.info("probes: fits + evaluation in %.1f s", time.perf_counter() - tic)
    freqs = word_frequencies(completions, words)
    freq_arr = np.array([freqs[w] for w in words], dtype=np.float64)
    abs_err = np.abs(primary - true)
    rho, rho_p = frequency_error_correlation(freq_arr, abs_err)

    # ---- artifacts
    order = [_PRIMARY] + [b for b in _ALL_PROBES if b in evals and b != _PRIMARY]
    kendall_rows = []
    for name in order:
        row = evals[name].kendall_row()
        d = diffs.get(name)
        row |= {
            "tuned_minus_this": d.diff if d else None,
            "diff_ci_low": d.ci_low if d else None,
            "diff_ci_high": d.ci_high if d else None,
            "diff_p_value": d.p_value if d else None,
        }
        kendall_rows.append(row)
    _write_table(out_dir, "kendall", kendall_rows)
    _write_table(out_dir, "sign_accuracy", [evals[n].sign_row() for n in order])
    per_word = []
    for i, w in enumerate(words):
        row: dict[str, Any] = {"word": w, "true_valence": float(true[i])}
        row |= {f"pred_{n}": float(predictions[n][i]) for n in order}
        row |= {"abs_error_tuned": float(abs_err[i]), "frequency": int(freq_arr[i])}
        per_word.append(row)
    _write_table(out_dir, "per_word", per_word)
    save_tensors(
        out_dir / "probes.safetensors",
        {f"{name}.{k}": v for name, p in probes_fitted.items() for k, v in p.state_dict().items()},
        {"hooks": ",".join(h for h, _ in ordered_hooks(dict.fromkeys(sae_paths)))},
    )
    primary_probe = probes_fitted[_PRIMARY]
    t_texts, _ = _triple_texts_spans(triples)
    n = len(triples)
    probe_inputs = save_probe_inputs(
        out_dir / PROBE_INPUTS_FILE,
        primary_dataset,
        widths,
        primary_probe,
        texts=t_texts[:n] + t_texts[2 * n :],
    )
    save_figure(
        probe_plots.predicted_vs_true_figure(
            true, primary, words, title=f"tuned SAE probe: Kendall τ = {evals[_PRIMARY].tau:.2f}"
        ),
        out_dir / "predicted_vs_true.png",
    )
    save_figure(
        probe_plots.word_frequency_figure(freq_arr, abs_err, words, rho=rho, p_value=rho_p),
        out_dir / "word_frequency.png",
    )
    save_figure(
        probe_plots.baselines_figure(
            order,
            [evals[n].tau for n in order],
            [evals[n].tau_ci for n in order],
            [evals[n].p_value for n in order],
        ),
        out_dir / "baselines.png",
    )

    summary: dict[str, Any] = {
        "n_triples": len(triples),
        "n_train_samples": 2 * len(triples),
        "n_eval_words": len(words),
        "n_carrier_templates": len(templates),
        "hooks": [h for h, _ in ordered_hooks(dict.fromkeys(sae_paths))],
        "alpha_tuned": probes_fitted[_PRIMARY].alpha,
        "tau": {n: evals[n].tau for n in order},
        "p_value": {n: evals[n].p_value for n in order},
        "tau_ci": {n: list(evals[n].tau_ci) for n in order},
        "tau_negative": {n: evals[n].tau_negative for n in order},
        "tau_positive": {n: evals[n].tau_positive for n in order},
        "sign_acc_positive": {n: evals[n].sign_acc_positive for n in order},
        "sign_acc_negative": {n: evals[n].sign_acc_negative for n in order},
        "tuned_minus": {n: asdict(d) for n, d in diffs.items()},
        "shuffled_null_tau": shuffle_null,
        "shuffled_null_abs_tau_max": max((abs(t) for t in shuffle_null), default=None),
        "frequency_spearman_rho": rho,
        "frequency_spearman_p": rho_p,
        "n_completions": len(completions),
        "n_probe_inputs": probe_inputs.n_inputs,
        "n_probe_inputs_predicted_above_3": int((probe_inputs.predicted_delta > 3).sum()),
        "n_probe_inputs_predicted_below_minus_3": int((probe_inputs.predicted_delta < -3).sum()),
        "tuned_significant_p01": bool(evals[_PRIMARY].p_value < 0.01),
        "tuned_above_every_baseline": bool(
            all(evals[_PRIMARY].tau > evals[n].tau for n in order if n != _PRIMARY)
        ),
    }
    write_json(out_dir / "summary.json", _json_safe(summary))
    return _json_safe(summary)


def run_preference_probe(
    policy_model_path: str | Path | HookedTransformer,
    sae_dirs: Mapping[str, str | Path],
    chosen: Sequence[str],
    rejected: Sequence[str],
    out_dir: Path,
    config: PreferenceProbeConfig | None = None,
) -> dict[str, Any]:
    """Logistic preference probe on the (DPO) policy's mean-pooled SAE features, plus PCA.

    Fits :func:`fit_logistic_probe` with ``labels="preference"`` and ``labels="delta"`` (the
    paper's), writes ``preference_probe.csv/.md`` (train/held-out accuracy per label mode),
    ``preference_pca.png`` (Figure 5) and ``preference_summary.json``; returns the summary.
    """
    from lfp_mech.plots import probes as probe_plots
    from lfp_mech.plots import save_figure

    config = config or PreferenceProbeConfig()
    chosen, rejected = list(chosen), list(rejected)
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(
            f"need equally many chosen and rejected texts (got {len(chosen)} and {len(rejected)})"
        )
    out_dir = Path(out_dir)
    model = _as_model(policy_model_path, config.device)
    saes = load_saes(sae_dirs, device=config.device)
    feats = mean_pooled_features(
        model, saes, chosen + rejected, batch_size=config.batch_size, device=config.device
    )
    f_chosen, f_rejected = feats[: len(chosen)], feats[len(chosen) :]
    results = {
        mode: fit_logistic_probe(
            f_chosen,
            f_rejected,
            labels=mode,
            test_fraction=config.test_fraction,
            C=config.C,
            seed=config.seed,
        )
        for mode in ("preference", "delta")
    }
    pca = pca_explained(feats, config.n_pca_components)
    rows = [
        {
            "labels": r.labels,
            "train_accuracy": r.train_accuracy,
            "test_accuracy": r.test_accuracy,
            "n_train": r.n_train,
            "n_test": r.n_test,
            "label_agreement_with_preference": r.label_agreement,
        }
        for r in results.values()
    ]
    _write_table(out_dir, "preference_probe", rows)
    save_figure(
        probe_plots.pca_figure(
            pca.projected, results["preference"].targets, pca.explained_variance_ratio
        ),
        out_dir / "preference_pca.png",
    )
    summary = {
        "n_pairs": len(chosen),
        "test_accuracy": {m: r.test_accuracy for m, r in results.items()},
        "train_accuracy": {m: r.train_accuracy for m, r in results.items()},
        "delta_label_agreement": results["delta"].label_agreement,
        "pca_explained_variance_ratio": pca.explained_variance_ratio.tolist(),
    }
    write_json(out_dir / "preference_summary.json", _json_safe(summary))
    return _json_safe(summary)


def load_saes(dirs: Mapping[str, str | Path], *, device: str = "cpu") -> dict[str, SAE]:
    """``{hook_name: SAE.load_from_disk(dir)}``; checks/sets each SAE's ``cfg.metadata.hook_name``."""
    saes = {}
    for hook, path in dirs.items():
        if not Path(path).is_dir():
            raise LfpMechError(f"SAE directory for {hook} not found: {path} (run the saes stage)")
        sae = SAE.load_from_disk(str(path), device=device)
        stored = sae.cfg.metadata.hook_name
        if stored and stored != hook:
            raise ConfigError(f"SAE in {path} was trained on {stored!r}, not on {hook!r}")
        sae.cfg.metadata.hook_name = hook
        saes[hook] = sae.eval()
    return saes


def save_probe_inputs(
    path: str | Path,
    dataset: ProbeDataset,
    widths: Mapping[str, int],
    probe: LinearProbe,
    *,
    texts: Sequence[str] | None = None,
) -> ProbeInputs:
    """Save a probe's inputs per hook with its predictions, atomically as safetensors.

    Args:
        path: the ``.safetensors`` file to write.
        dataset: the probe's dataset D (:func:`build_probe_dataset`).
        widths: ``{hook_name: d_sae}`` in the concatenation order of ``dataset.inputs``
            (:func:`ordered_hooks`); the widths must add up to the input width.
        probe: the probe fitted on ``dataset``; its predictions of every input are saved.
        texts: the sentence of each input (optional, for reading).

    Tensors ``features.<hook_name>`` (float32 ``[n_inputs, d_sae]``), ``predicted_delta``,
    ``predicted_delta_raw`` and ``label_delta`` (float32 ``[n_inputs]``); the hook order, the
    words and the texts are JSON in the file's metadata. Returns what was saved.
    """
    inputs = dataset.inputs.detach().float().cpu()
    sizes = [int(w) for w in widths.values()]
    if sum(sizes) != inputs.shape[1]:
        raise ConfigError(
            f"the hook widths {dict(widths)} add up to {sum(sizes)}, but the probe inputs have "
            f"{inputs.shape[1]} features"
        )
    texts = list(texts) if texts is not None else [""] * inputs.shape[0]
    if len(texts) != inputs.shape[0]:
        raise ConfigError(f"{len(texts)} texts for {inputs.shape[0]} probe inputs")
    blocks = torch.split(inputs, sizes, dim=1)
    saved = ProbeInputs(
        features={h: b.contiguous() for h, b in zip(widths, blocks, strict=True)},
        predicted_delta=torch.from_numpy(probe.predict(inputs)).float(),
        predicted_delta_raw=torch.from_numpy(probe.raw_predict(inputs)).float(),
        label_delta=dataset.labels.detach().float().cpu(),
        words=list(dataset.words),
        texts=texts,
    )
    tensors = {f"features.{h}": b for h, b in saved.features.items()}
    tensors |= {
        "predicted_delta": saved.predicted_delta,
        "predicted_delta_raw": saved.predicted_delta_raw,
        "label_delta": saved.label_delta,
    }
    metadata = {
        "what": "inputs of the tuned SAE probe (dataset D: A(x+) of every triple, then A(x-)), "
        "SAE features per hook, with the probe's predicted delta of each (normalised to [-4, 4])",
        "hooks": json.dumps(list(widths)),
        "words": json.dumps(saved.words),
        "texts": json.dumps(saved.texts),
    }
    save_tensors(path, tensors, metadata)
    return saved


def load_probe_inputs(path: str | Path) -> ProbeInputs:
    """Read a file written by :func:`save_probe_inputs` (``probes/probe_inputs.safetensors``)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LfpMechError(f"{path} not found: run (or --force) the probes stage to write it")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    tensors = load_tensors(path)
    hooks = json.loads(metadata.get("hooks", "[]"))
    missing = [
        k for k in ("predicted_delta", "predicted_delta_raw", "label_delta") if k not in tensors
    ]
    missing += [f"features.{h}" for h in hooks if f"features.{h}" not in tensors]
    if missing or not hooks:
        raise LfpMechError(f"{path} is not a probe-inputs file (missing {missing or ['hooks']})")
    return ProbeInputs(
        features={h: tensors[f"features.{h}"] for h in hooks},
        predicted_delta=tensors["predicted_delta"],
        predicted_delta_raw=tensors["predicted_delta_raw"],
        label_delta=tensors["label_delta"],
        words=json.loads(metadata.get("words", "[]")),
        texts=json.loads(metadata.get("texts", "[]")),
    )


def load_probe(path: str | Path, name: str = _PRIMARY) -> LinearProbe:
    """A probe saved by :func:`run_probes_stage` (``probes.safetensors``; default: the tuned one)."""
    tensors = load_tensors(path)
    if f"{name}.weight" not in tensors:
        names = sorted({key.split(".")[0] for key in tensors})
        raise ConfigError(f"{path} has no probe {name!r}; probes: {names}")
    return LinearProbe(
        weight=tensors[f"{name}.weight"].double().numpy(),
        bias=float(tensors[f"{name}.bias"]),
        scale=float(tensors[f"{name}.scale"]),
    )


def probe_reward(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    probe: LinearProbe,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    device: str = "cpu",
) -> Float[Tensor, " batch"]:
    """The probe's estimate of the VADER reward of whole texts: the paper's reward formula with
    the probe in place of the lexicon, ``clip(Σ_word probe(A_concat(word)) / 5, −10, 10)``.

    Each word's ``A_concat`` is its SAE features averaged over its tokens, in context (one
    forward pass per batch of texts). Words are found like :func:`lfp_mech.rewards.words`
    does (runs of letters/digits with inner apostrophes).
    """
    hooks = ordered_hooks(saes)
    hook_names = [h for h, _ in hooks]
    _check_hooks(model, hook_names)
    tokenizer = model.tokenizer
    bos = [tokenizer.bos_token_id] if model.cfg.default_prepend_bos else []
    pad_id = _pad_id(model)
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            enc = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True)
            ids = [bos + list(i) for i in enc["input_ids"]]
            length = max(len(i) for i in ids)
            tokens = torch.full((len(ids), length), pad_id, dtype=torch.long)
            attention = torch.zeros((len(ids), length), dtype=torch.long)
            for row, seq in enumerate(ids):
                tokens[row, : len(seq)] = torch.tensor(seq)
                attention[row, : len(seq)] = 1
            _, cache = model.run_with_cache(
                tokens.to(device),
                attention_mask=attention.to(device),
                names_filter=hook_names,
                stop_at_layer=max(_hook_layer(h) for h in hook_names) + 1,
            )
            features = torch.cat([_encode(cache[h], sae, h) for h, sae in hooks], dim=-1).cpu()
            for row, (text, offsets) in enumerate(zip(batch, enc["offset_mapping"], strict=True)):
                words = []
                for match in WORD_RE.finditer(text):
                    lo, hi = match.span()
                    positions = [
                        j + len(bos)
                        for j, (a, b) in enumerate(offsets)
                        if b > a and a < hi and b > lo
                    ]
                    if positions:
                        words.append(features[row, positions].mean(dim=0))
                total = float(probe.predict(torch.stack(words)).sum()) / 5.0 if words else 0.0
                scores.append(min(max(total, -10.0), 10.0))
    return torch.tensor(scores, dtype=torch.float32)


# --------------------------------------------------------------------------- helpers

_ALL_PROBES = (_PRIMARY, *BASELINES)
_METRIC_NAMES = ("tau", "tau_negative", "sign_acc_positive", "sign_acc_negative", "tau_positive")
_Seq = tuple[list[int], list[int]]  # (token ids with BOS, positions of the span's tokens)


def _hook_layer(hook: str) -> int:
    match = _HOOK_LAYER_RE.match(hook)
    return int(match.group(1)) if match else -1


def _hook_sort_key(hook: str) -> tuple[int, str]:
    return _hook_layer(hook), hook


def _check_hooks(model: HookedTransformer, hooks: Sequence[str]) -> None:
    n_layers = model.cfg.n_layers
    for hook in hooks:
        layer = _hook_layer(hook)
        if layer >= n_layers:
            raise ConfigError(
                f"{hook}: layer {layer} out of range: {model.cfg.model_name} has layers "
                f"0–{n_layers - 1}"
            )
        if hook not in model.hook_dict:
            raise ConfigError(
                f"{hook!r} is not a hook of {model.cfg.model_name}; use e.g. "
                "'blocks.{l}.hook_mlp_out' or 'hook_embed'"
            )


def _check_texts_spans(texts: Sequence[str], spans: Sequence[tuple[int, int]]) -> None:
    if not texts:
        raise ValueError("no texts given")
    if len(texts) != len(spans):
        raise ValueError(f"{len(texts)} texts but {len(spans)} spans: give one span per text")
    for text, (start, end) in zip(texts, spans, strict=True):
        if not 0 <= start < end <= len(text):
            raise ValueError(f"span ({start}, {end}) is empty or outside the text {text!r}")


def _tokenize_to_spans(
    model: HookedTransformer, texts: Sequence[str], spans: Sequence[tuple[int, int]]
) -> list[_Seq]:
    """Token ids (BOS prepended as TransformerLens does) cut after each span's last token."""
    tokenizer = model.tokenizer
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            "span features need a fast (Rust) tokenizer with offset mapping; load the model "
            "with its tokenizer via lfp_mech.models.load_model"
        )
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    bos = [tokenizer.bos_token_id] if model.cfg.default_prepend_bos else []
    seqs = []
    for text, (start, end), ids, offsets in zip(
        texts, spans, enc["input_ids"], enc["offset_mapping"], strict=True
    ):
        positions = [j for j, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        if not positions:
            raise ValueError(f"span ({start}, {end}) of {text!r} covers no token")
        last = positions[-1]
        offset = len(bos)  # token j of the text is position j + 1 after BOS
        seqs.append((bos + list(ids[: last + 1]), [j + offset for j in positions]))
    return seqs


def _pad_batch(
    seqs: Sequence[_Seq], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """Right-padded tokens, attention mask, and a span mask normalised to sum 1 per row."""
    length = max(len(ids) for ids, _ in seqs)
    tokens = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), length), dtype=torch.long)
    span_mask = torch.zeros((len(seqs), length), dtype=torch.float32)
    for row, (ids, positions) in enumerate(seqs):
        tokens[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        span_mask[row, positions] = 1.0 / len(positions)
    return tokens, attention, span_mask


def _pad_id(model: HookedTransformer) -> int:
    tok = model.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0  # pragma: no cover


def _encode(acts: Float[Tensor, "batch pos d_in"], sae: SAE | None, hook: str) -> Tensor:
    if sae is None:
        return acts
    if acts.shape[-1] != sae.cfg.d_in:
        raise ConfigError(
            f"SAE for {hook} expects d_in={sae.cfg.d_in} but the hook has width {acts.shape[-1]}; "
            "train/load the SAE for this model and hook"
        )
    device = sae.W_dec.device
    return sae.encode(acts.to(device=device, dtype=sae.W_dec.dtype)).to(acts.device, torch.float32)


def _pool(
    acts: Float[Tensor, "batch pos d"], span_mask: Float[Tensor, "batch pos"]
) -> Float[Tensor, "batch d"]:
    """Mean over the span's tokens (``span_mask`` rows sum to 1)."""
    return einsum(acts.float(), span_mask, "batch pos d, batch pos -> batch d")


def _triple_words(triple: Any) -> tuple[str, str, str]:
    """(positive, neutral, negative) word of a triple (``ContrastiveTriple.words``)."""
    words = tuple(triple.words)
    if len(words) != 3:
        raise ValueError(f"a triple must have 3 words (positive, neutral, negative): {words}")
    return words  # type: ignore[return-value]


def _triple_texts_spans(triples: Sequence[Any]) -> tuple[list[str], list[tuple[int, int]]]:
    """Texts and spans, variant-major: all positives, then all neutrals, then all negatives."""
    texts, spans = [], []
    for variant in ("positive", "neutral", "negative"):
        for t in triples:
            texts.append(getattr(t, variant))
            spans.append(tuple(getattr(t, f"span_{variant}")))
    return texts, spans


def _triple_and_word_features(
    model: HookedTransformer,
    sets: Mapping[str, Mapping[str, SAE | None]],
    triples: Sequence[Any],
    word_texts: Sequence[str],
    word_spans: Sequence[tuple[int, int]],
    config: ProbesConfig,
) -> dict[str, dict[str, Tensor]]:
    """Features of every triple variant and carrier sentence in one pass (duplicates run once)."""
    t_texts, t_spans = _triple_texts_spans(triples)
    all_keys = list(zip(t_texts + list(word_texts), t_spans + list(word_spans), strict=True))
    unique = list(dict.fromkeys(all_keys))
    where = {key: i for i, key in enumerate(unique)}
    index = torch.tensor([where[key] for key in all_keys])
    got = collect_feature_sets(
        model,
        sets,
        [t for t, _ in unique],
        [s for _, s in unique],
        batch_size=config.batch_size,
        device=config.device,
    )
    n = len(triples)
    out = {}
    for name, feats in got.items():
        full = feats[index]
        out[name] = {
            "pos": full[:n],
            "neu": full[n : 2 * n],
            "neg": full[2 * n : 3 * n],
            "words": full[3 * n :],
        }
    return out


def _as_model(src: str | Path | HookedTransformer, device: str) -> HookedTransformer:
    if isinstance(src, HookedTransformer):
        return src.to(device)
    from lfp_mech.models import load_model

    return load_model(src, device=device)


def _default_triples(config: ProbesConfig) -> list[Any]:
    from lfp_mech import data

    return data.make_triples(
        config.n_triples, seed=config.seed, heldout_fraction=config.heldout_fraction, split="train"
    )


def _eval_words(
    eval_words: Sequence[str] | None, config: ProbesConfig, lexicon: Mapping[str, float]
) -> list[str]:
    if eval_words is None:
        from lfp_mech import data

        _, test = data.heldout_words(seed=config.seed, heldout_fraction=config.heldout_fraction)
        eval_words = sorted(test)
    words = list(dict.fromkeys(w.lower() for w in eval_words))
    missing = [w for w in words if w not in lexicon]
    if missing:
        raise LfpMechError(f"evaluation words not in the VADER lexicon: {missing[:10]}")
    words = [w for w in words if abs(lexicon[w]) >= config.min_abs_valence and lexicon[w] != 0]
    if len(words) < 3:
        raise LfpMechError(
            f"only {len(words)} evaluation words with |valence| >= {config.min_abs_valence}; "
            "lower min_abs_valence or raise heldout_fraction"
        )
    return words


def _carrier_templates(k: int, seed: int) -> list[str]:
    """``k`` of the triple templates (``lfp_mech.data.triple_templates``), chosen with ``seed``."""
    from lfp_mech import data

    templates = [t for t in data.triple_templates() if t.count("{}") == 1]
    if not templates:
        raise LfpMechError("no triple templates with a '{}' slot (lfp_mech.data.triple_templates)")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(templates), size=min(k, len(templates)), replace=False)
    return [templates[i] for i in sorted(chosen)]


def _to_numpy(x: Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def _check_fit_data(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    if x.shape[0] < 3:
        raise ValueError(f"need at least 3 samples to fit a probe, got {x.shape[0]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("probe inputs or labels contain NaN/inf")


def _grouped_cv_alpha(
    x: np.ndarray, y: np.ndarray, groups: Sequence[str], alphas: Sequence[float], n_folds: int
) -> float:
    """α with the lowest GroupKFold mean squared error; one eigendecomposition per fold.

    Per fold, with centred training data ``Xc`` and targets ``yc``, the Ridge prediction for
    every α is ``H · (b / (s + α)) + mean(y)``: in the dual (kernel ``Xc Xcᵀ = U s Uᵀ``,
    ``H = (X_test − μ) Xcᵀ U``, ``b = Uᵀ yc``) when samples <= features, otherwise in the primal
    (``Xcᵀ Xc = V s Vᵀ``, ``H = (X_test − μ) V``, ``b = Vᵀ Xcᵀ yc``).
    """
    alphas_arr = np.asarray(alphas, dtype=np.float64)
    sq_err = np.zeros_like(alphas_arr)
    for train, test in GroupKFold(n_splits=n_folds).split(x, y, groups=list(groups)):
        mu, y_mean = x[train].mean(axis=0), y[train].mean()
        xc, yc, xt = x[train] - mu, y[train] - y_mean, x[test] - mu
        if xc.shape[0] <= xc.shape[1]:
            s, u = np.linalg.eigh(xc @ xc.T)
            h, b = (xt @ xc.T) @ u, u.T @ yc
        else:
            s, v = np.linalg.eigh(xc.T @ xc)
            h, b = xt @ v, v.T @ (xc.T @ yc)
        s = np.clip(s, 0.0, None)
        preds = h @ (b[:, None] / (s[:, None] + alphas_arr[None, :])) + y_mean
        sq_err += ((preds - y[test, None]) ** 2).sum(axis=0)
    return float(alphas_arr[int(np.argmin(sq_err))])


def _normalisation_scale(raw_train: np.ndarray) -> float:
    peak = float(np.max(np.abs(raw_train)))
    return VADER_RANGE / peak if peak > 0 else 1.0


def _metrics(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float, float, float]:
    """τ, τ on negative words, sign accuracy on positive / negative words, τ on positive words."""
    pos, neg = true > 0, true < 0
    return (
        kendall_tau(pred, true),
        kendall_tau(pred[neg], true[neg]),
        float((pred[pos] > 0).mean()) if pos.any() else float("nan"),
        float((pred[neg] < 0).mean()) if neg.any() else float("nan"),
        kendall_tau(pred[pos], true[pos]),
    )


def _kendall_p(pred: np.ndarray, true: np.ndarray) -> float:
    if pred.shape[0] < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return float("nan")
    return float(stats.kendalltau(pred, true).pvalue)


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def _write_table(out_dir: Path, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """``name.csv`` and ``name.md`` (a Markdown table) with the same rows, written atomically."""
    if not rows:
        raise ValueError(f"table {name} has no rows")
    columns = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in columns})
    write_text(out_dir / f"{name}.csv", buf.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in columns) + " |" for row in rows]
    write_text(out_dir / f"{name}.md", "\n".join(lines) + "\n")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
