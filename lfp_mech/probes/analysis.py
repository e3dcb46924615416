"""The feedback-probe analysis end to end, in memory: features → dataset D → probes → evaluation.

[`analyse_feedback_probes`][lfp_mech.probes.analysis.analyse_feedback_probes] computes, for the
tuned model and every baseline of ``config.baselines``, a probe on its own dataset D and its
predictions on the held-out lexicon words, then evaluates them all against VADER (Kendall τ, sign
accuracies, bootstrap CIs, paired differences with the tuned SAE probe) and relates the tuned
probe's errors to how often the tuned policy generates each word (Figure 4). It writes nothing:
``stage.py`` writes the artifacts.

Order of work (fixed: the smoke run's numbers are pinned): the tuned model's features, then the
base model's; probes in the order of the feature sets (``embed``, ``mlp``, ``sae``; tuned then
base), the Xavier and shuffled-label controls right after the tuned SAE probe.
"""

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from einops import reduce
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from lfp_mech.errors import LfpMechError
from lfp_mech.models.coerce import ModelLike, as_hooked_model
from lfp_mech.probes.artifacts import PRIMARY_PROBE
from lfp_mech.probes.config import BASELINES, SIGN_ONLY, ProbesConfig
from lfp_mech.probes.dataset import (
    ProbeDataset,
    build_probe_dataset,
    carrier_sentences,
    carrier_templates,
    check_no_leak,
    default_triples,
    evaluation_words,
    triple_texts_spans,
    triple_words,
)
from lfp_mech.probes.evaluation import (
    PairedDiff,
    ProbeEval,
    evaluate_probe,
    frequency_error_correlation,
    kendall_tau,
    paired_bootstrap_diff,
    sign_only_predictor,
    word_frequencies,
)
from lfp_mech.probes.features import collect_feature_sets, ordered_hooks
from lfp_mech.probes.fit import LinearProbe, fit_feedback_probe, shuffled_labels, xavier_probe
from lfp_mech.rewards import vader_lexicon
from lfp_mech.saes.io import SAELike, load_saes

logger = logging.getLogger(__name__)

__all__ = ["ProbeAnalysis", "analyse_feedback_probes"]

PROBE_ORDER = (PRIMARY_PROBE, *BASELINES, SIGN_ONLY)
"""Row order of the tables: the tuned SAE probe, the baselines, the sign-only reference."""

_Features = dict[str, dict[str, Tensor]]
"""``{probe_name: {"pos", "neu", "neg", "words": features}}``."""


@dataclass
class ProbeAnalysis:
    """Everything [`analyse_feedback_probes`][lfp_mech.probes.analysis.analyse_feedback_probes]
    computed (``stage.py`` writes it out)."""

    triples: list[Any]
    words: list[str]
    """The held-out evaluation words."""
    true_valence: np.ndarray
    n_templates: int
    """Carrier sentences per evaluation word."""
    hooks: list[str]
    """The SAE hooks, in ``A_concat`` order."""
    widths: dict[str, int]
    """``{hook: d_sae}`` of the tuned model's SAEs, in ``A_concat`` order."""
    dataset: ProbeDataset
    """Dataset D of the tuned SAE probe."""
    probes: dict[str, LinearProbe]
    predictions: dict[str, np.ndarray]
    """Each probe's predictions on ``words``."""
    evals: dict[str, ProbeEval]
    diffs: dict[str, PairedDiff]
    """τ(tuned SAE probe) − τ(baseline), paired bootstrap CI and permutation p, per baseline (and
    the sign-only reference)."""
    shuffle_null: list[float]
    """τ of ``config.n_shuffles`` probes fitted on permuted labels (the null distribution)."""
    frequencies: np.ndarray
    """How often the tuned policy generated each word."""
    rho: float
    rho_p: float
    n_completions: int
    within_sign_diffs: dict[str, PairedDiff] = field(default_factory=dict)
    """τ(tuned SAE) − τ(base SAE) on the positive and on the negative words alone (keys
    "positive", "negative"): the tuned − base comparison of magnitude, sign taken out."""
    base_sae_source: str = "tuned SAEs on base activations"
    """What the ``base_sae`` baseline reads: "base-model SAEs" (trained on the base model's
    activations) or "tuned SAEs on base activations" (the stand-in when none was given)."""

    @property
    def order(self) -> list[str]:
        """The probes in table order (tuned SAE probe first)."""
        return [PRIMARY_PROBE] + [b for b in PROBE_ORDER if b in self.evals and b != PRIMARY_PROBE]

    @property
    def abs_error(self) -> np.ndarray:
        """|tuned SAE probe − VADER| per word."""
        return np.abs(self.predictions[PRIMARY_PROBE] - self.true_valence)


def analyse_feedback_probes(
    base_model: ModelLike,
    tuned_model: ModelLike,
    sae_dirs: Mapping[str, SAELike],
    completions: Sequence[str],
    config: ProbesConfig | None = None,
    *,
    base_sae_dirs: Mapping[str, SAELike] | None = None,
    triples: Sequence[Any] | None = None,
    eval_words: Sequence[str] | None = None,
) -> ProbeAnalysis:
    """The feedback-probe analysis of a base and a tuned model (nothing is written).

    Args:
        base_model: the base model (a name, checkpoint folder or loaded model,
            [`lfp_mech.models.ModelLike`][lfp_mech.models.coerce.ModelLike]).
        tuned_model: the tuned model, in the same forms.
        sae_dirs: ``{hook_name: SAE folder or SAE}`` for the tuned model; ``base_sae_dirs``
            for the base model: SAEs trained on the base model's activations (default: the
            tuned SAEs applied to the base model, a stand-in that the summary names).
        completions: texts sampled from the tuned policy (Figure 4 word frequencies).
        triples: contrastive triples for training (default
            ``lfp_mech.data.make_triples(n_triples, seed, heldout_fraction, split="train")``).
        eval_words: lexicon words to evaluate on (default: the held-out words of
            ``lfp_mech.data``); checked to never occur in ``triples``.
    """
    config = config or ProbesConfig()
    triples = list(triples) if triples is not None else default_triples(config)
    if not triples:
        raise LfpMechError("no contrastive triples: check lfp_mech.data.make_triples")
    lexicon = vader_lexicon()
    words = evaluation_words(eval_words, config, lexicon)
    train_words = [w for t in triples for w in triple_words(t)]
    check_no_leak(train_words, words)
    true = np.array([lexicon[w.lower()] for w in words], dtype=np.float64)
    templates = carrier_templates(config.n_carrier_templates, config.seed)
    word_texts, word_spans = carrier_sentences(words, templates)
    logger.info(
        "probes: %d triples (%d distinct training words), %d eval words x %d templates",
        len(triples),
        len(set(train_words)),
        len(words),
        len(templates),
    )
    carriers = (word_texts, word_spans)
    feats, widths = _model_features("tuned", tuned_model, sae_dirs, config, triples, carriers)
    base_dirs = base_sae_dirs or sae_dirs
    base_source = "base-model SAEs" if base_sae_dirs else "tuned SAEs on base activations"
    logger.info("probes: base_sae baseline reads %s", base_source)
    feats |= _model_features("base", base_model, base_dirs, config, triples, carriers)[0]
    tic = time.perf_counter()
    fitted = _fit_probes(feats, triples, words, true, len(templates), config)
    fitted.predictions[SIGN_ONLY] = sign_only_predictor(true, seed=config.seed)
    evals, diffs = _evaluate(fitted.predictions, true, words, config)
    logger.info("probes: fits + evaluation in %.1f s", time.perf_counter() - tic)
    freqs = word_frequencies(completions, words)
    freq_arr = np.array([freqs[w] for w in words], dtype=np.float64)
    abs_err = np.abs(fitted.predictions[PRIMARY_PROBE] - true)
    rho, rho_p = frequency_error_correlation(freq_arr, abs_err)
    hooks = [h for h, _ in ordered_hooks(dict.fromkeys(sae_dirs))]
    return ProbeAnalysis(
        triples=triples,
        words=words,
        true_valence=true,
        n_templates=len(templates),
        hooks=hooks,
        widths=widths,
        dataset=fitted.dataset,
        probes=fitted.probes,
        predictions=fitted.predictions,
        evals=evals,
        diffs=diffs,
        within_sign_diffs=_within_sign_diffs(fitted.predictions, true, config),
        shuffle_null=fitted.shuffle_null,
        frequencies=freq_arr,
        rho=rho,
        rho_p=rho_p,
        n_completions=len(completions),
        base_sae_source=base_source,
    )


@dataclass
class _Fitted:
    probes: dict[str, LinearProbe]
    predictions: dict[str, np.ndarray]
    shuffle_null: list[float]
    dataset: ProbeDataset


def _feature_sets(prefix: str, baselines: Sequence[str]) -> list[str]:
    """Which feature sets of the ``prefix`` ("tuned"/"base") model the baselines need (sorted)."""
    wanted = {"sae"}
    if f"{prefix}_mlp" in baselines:
        wanted.add("mlp")
    if f"{prefix}_embed" in baselines:
        wanted.add("embed")
    if prefix == "base" and "base_sae" not in baselines:
        wanted.discard("sae")
    return sorted(wanted)


def _model_features(
    prefix: str,
    model_src: ModelLike,
    dirs: Mapping[str, SAELike],
    config: ProbesConfig,
    triples: Sequence[Any],
    carriers: tuple[list[str], list[tuple[int, int]]],
) -> tuple[_Features, dict[str, int]]:
    """One model's feature sets (``{f"{prefix}_{set}": ...}``) and its SAEs' widths."""
    wanted = _feature_sets(prefix, config.baselines)
    if not wanted:
        return {}, {}
    tic = time.perf_counter()
    model = as_hooked_model(model_src, device=config.device, seed=config.seed, dtype=config.dtype)
    saes = load_saes(dirs, device=config.device)
    widths = {h: int(sae.cfg.d_sae) for h, sae in ordered_hooks(saes)}
    logger.info("probes: %s model + SAEs loaded in %.1f s", prefix, time.perf_counter() - tic)
    tic = time.perf_counter()
    sets = {"sae": saes, "mlp": dict.fromkeys(saes), "embed": {"hook_embed": None}}
    got = _triple_and_word_features(model, {k: sets[k] for k in wanted}, triples, carriers, config)
    logger.info("probes: %s features in %.1f s", prefix, time.perf_counter() - tic)
    return {f"{prefix}_{k}": v for k, v in got.items()}, widths


def _triple_and_word_features(
    model: HookedTransformer,
    sets: Mapping[str, Mapping[str, SAE | None]],
    triples: Sequence[Any],
    carriers: tuple[list[str], list[tuple[int, int]]],
    config: ProbesConfig,
) -> _Features:
    """Features of every triple variant and carrier sentence in one pass (duplicates run once)."""
    t_texts, t_spans = triple_texts_spans(triples)
    word_texts, word_spans = carriers
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


def _fit_probes(
    feats: _Features,
    triples: Sequence[Any],
    words: Sequence[str],
    true: np.ndarray,
    n_templates: int,
    config: ProbesConfig,
) -> _Fitted:
    """Every probe on its own dataset D, its predictions on the held-out words, the controls."""
    probes: dict[str, LinearProbe] = {}
    predictions: dict[str, np.ndarray] = {}
    shuffle_null: list[float] = []
    primary_dataset = None
    for name, f in feats.items():
        dataset = build_probe_dataset(f["pos"], f["neu"], f["neg"], triples)
        check_no_leak(dataset.words + dataset.neutral_words, words)
        probe = fit_feedback_probe(dataset.inputs, dataset.labels, config, groups=dataset.words)
        probes[name] = probe
        word_x = reduce(f["words"], "(word k) d -> word d", "mean", k=n_templates)
        predictions[name] = probe.predict(word_x)
        if name == PRIMARY_PROBE:
            primary_dataset = dataset
            controls = _fit_controls(dataset, probe, word_x, true, config)
            probes |= controls.probes
            predictions |= controls.predictions
            shuffle_null = controls.shuffle_null
    if primary_dataset is None:
        raise LfpMechError(f"no {PRIMARY_PROBE} features were computed")  # pragma: no cover
    return _Fitted(probes, predictions, shuffle_null, primary_dataset)


def _fit_controls(
    dataset: ProbeDataset,
    probe: LinearProbe,
    word_x: Tensor,
    true: np.ndarray,
    config: ProbesConfig,
) -> _Fitted:
    """The tuned SAE probe's controls: Xavier, shuffled labels, and the shuffled-label null."""
    probes: dict[str, LinearProbe] = {}
    if "xavier" in config.baselines:
        probes["xavier"] = xavier_probe(dataset.inputs, seed=config.seed)
    if "shuffled" in config.baselines:
        probes["shuffled"] = fit_feedback_probe(
            dataset.inputs,
            shuffled_labels(dataset.labels, seed=config.seed),
            config,
            groups=dataset.words,
        )
    null = []
    for i in range(config.n_shuffles):
        null_labels = shuffled_labels(dataset.labels, seed=config.seed + 1 + i)
        null_probe = fit_feedback_probe(dataset.inputs, null_labels, config, alpha=probe.alpha)
        null.append(kendall_tau(null_probe.predict(word_x), true))
    predictions = {name: p.predict(word_x) for name, p in probes.items()}
    return _Fitted(probes, predictions, null, dataset)


def _evaluate(
    predictions: Mapping[str, np.ndarray],
    true: np.ndarray,
    words: Sequence[str],
    config: ProbesConfig,
) -> tuple[dict[str, ProbeEval], dict[str, PairedDiff]]:
    """Every probe's evaluation, and its paired τ difference with the tuned SAE probe."""
    evals = {
        name: evaluate_probe(
            pred, true, words, name=name, n_bootstrap=config.n_bootstrap, seed=config.seed
        )
        for name, pred in predictions.items()
    }
    primary = predictions[PRIMARY_PROBE]
    diffs = {
        other: paired_bootstrap_diff(
            primary, predictions[other], true, n=config.n_bootstrap, seed=config.seed
        )
        for other in predictions
        if other != PRIMARY_PROBE
    }
    return evals, diffs


def _within_sign_diffs(
    predictions: Mapping[str, np.ndarray], true: np.ndarray, config: ProbesConfig
) -> dict[str, PairedDiff]:
    """τ(tuned SAE) − τ(base SAE) within each sign (paired CI and permutation p), if computed."""
    if "base_sae" not in predictions:
        return {}
    out = {}
    for sign, mask in (("positive", true > 0), ("negative", true < 0)):
        if mask.sum() >= 3:
            out[sign] = paired_bootstrap_diff(
                predictions[PRIMARY_PROBE][mask],
                predictions["base_sae"][mask],
                true[mask],
                n=config.n_bootstrap,
                seed=config.seed,
            )
    return out
