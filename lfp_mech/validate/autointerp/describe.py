"""Describe and label the chosen features of every SAE: the paper's Tables 1 and 8–10.

One corpus pass ([`scan_features`][lfp_mech.validate.autointerp.scan.scan_features]) scans the
chosen features plus ``n_null`` random features per SAE (the null of the offline test); each chosen
feature gets the offline label and, with an LLM endpoint, the LLM's explanation and label."""

import dataclasses
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor, nn

from lfp_mech.errors import ConfigError
from lfp_mech.hooks import layer_of_hook
from lfp_mech.validate.autointerp.corpus import Corpus, tokenize_corpus
from lfp_mech.validate.autointerp.label import (
    DEAD_LABEL,
    adjusted_p_values,
    label_feature,
    load_lexicon,
    valence_statistics,
)
from lfp_mech.validate.autointerp.llm import ENV_BASE_URL, ENV_MODEL, LLMClient, describe_with_llm
from lfp_mech.validate.autointerp.scan import ActivatingExample, FeatureScan, scan_features
from lfp_mech.validate.config import AutointerpConfig

logger = logging.getLogger(__name__)

__all__ = ["Descriptions", "describe_features"]


@dataclass
class Descriptions:
    """The description table and what it was computed from."""

    rows: list[dict[str, Any]]
    """One row per chosen feature: hook, layer, feature, description, task_related, p_value, ..."""
    scans: dict[str, FeatureScan]
    examples: dict[str, dict[int, list[ActivatingExample]]]
    used_llm: bool
    label_source: str = "offline"
    null_features: dict[str, list[int]] = field(default_factory=dict)

    def task_related(self) -> dict[str, list[int]]:
        """``{hook: task-related feature ids}`` by the configured labeler."""
        out: dict[str, list[int]] = {h: [] for h in self.scans}
        key = "llm_task_related" if self.label_source == "llm" else "task_related"
        for row in self.rows:
            if row.get(key):
                out[row["hook"]].append(int(row["feature"]))
        return out

    def contexts_json(self) -> dict[str, Any]:
        """Top contexts of the chosen features, JSON-ready."""
        return {
            hook: {str(f): [dataclasses.asdict(ex) for ex in exs] for f, exs in feats.items()}
            for hook, feats in self.examples.items()
        }


def describe_features(
    model: nn.Module,
    saes: Mapping[str, nn.Module],
    feature_choice: Mapping[str, Sequence[int]],
    texts: Sequence[str],
    config: AutointerpConfig | None = None,
    *,
    lexicon: Mapping[str, float] | None = None,
    client: LLMClient | None = None,
) -> Descriptions:
    """Describe and label the chosen features of every SAE (the paper's Tables 1, 8–10).

    One corpus pass scans the chosen features plus ``config.n_null`` random features per SAE
    (the null of the offline test). The LLM labeler runs when ``client`` is given, or per
    ``config.use_llm`` from the environment.
    """
    config = config or AutointerpConfig()
    lexicon = lexicon if lexicon is not None else load_lexicon(config.lexicon)
    client = _llm_client(config, client)
    corpus = tokenize_corpus(model, texts, max_len=config.max_len)
    rng = random.Random(config.seed)
    scanned, nulls = {}, {}
    for hook, sae in saes.items():
        chosen = [int(f) for f in feature_choice.get(hook, [])]
        others = [f for f in range(int(sae.cfg.d_sae)) if f not in set(chosen)]
        nulls[hook] = sorted(rng.sample(others, min(config.n_null, len(others))))
        scanned[hook] = list(dict.fromkeys(chosen)) + nulls[hook]
    scans = scan_features(
        model,
        saes,
        scanned,
        corpus,
        k=config.k,
        window=config.window,
        batch_size=config.batch_size,
        selected_tokens=_strong_tokens(corpus, lexicon, config.sentiment_word_threshold),
        device=config.device,
    )
    rows, examples = [], {}
    for hook, scan in scans.items():
        null_stats = _null_statistics(scan, nulls[hook], corpus, lexicon)
        examples[hook] = {}
        for f in dict.fromkeys(int(x) for x in feature_choice.get(hook, [])):
            exs = scan.examples(f, corpus)
            examples[hook][f] = exs
            rows.append(_row(hook, f, scan, exs, null_stats, lexicon, config, client))
    _correct_task_related(rows, config)
    return Descriptions(rows, scans, examples, client is not None, config.label_source, nulls)


def _correct_task_related(rows: list[dict[str, Any]], config: AutointerpConfig) -> None:
    """Test the offline label of all described features together: ``q_value`` is the p-value
    adjusted by ``config.correction`` over every row; ``task_related`` becomes ``q < alpha`` (and
    the feature fires on a sentiment word); ``task_related_uncorrected`` keeps ``p < alpha``."""
    q_values = adjusted_p_values([r["p_value"] for r in rows], config.correction)
    for row, q in zip(rows, q_values, strict=True):
        row["task_related_uncorrected"] = bool(row["task_related"])
        row["q_value"] = float(q)
        row["task_related"] = bool(
            row["task_related"] and q < config.alpha and row["sentiment_share"] > 0
        )
    n_raw = sum(r["task_related_uncorrected"] for r in rows)
    n_kept = sum(r["task_related"] for r in rows)
    logger.info(
        "task-related test: %d of %d features at p < %g, %d after %s correction",
        n_raw,
        len(rows),
        config.alpha,
        n_kept,
        config.correction,
    )


def _llm_client(config: AutointerpConfig, client: LLMClient | None) -> LLMClient | None:
    """``client``, else one from the environment per ``config.use_llm`` (None: offline only)."""
    if client is None and config.use_llm != "never":
        client = LLMClient.from_env()
        if client is None and config.use_llm == "always":
            raise ConfigError(f"use_llm='always' but {ENV_BASE_URL} / {ENV_MODEL} are not set")
    if config.label_source == "llm" and client is None:
        raise ConfigError("label_source='llm' needs an LLM endpoint (LFP_MECH_LLM_* variables)")
    return client


def _strong_tokens(
    corpus: Corpus, lexicon: Mapping[str, float], threshold: float
) -> Bool[Tensor, "n_texts max_pos"]:
    """Tokens of words whose |valence| is at least ``threshold`` (Table 7's fallback inputs)."""
    width = max(len(t) for t in corpus.tokens)
    mask = torch.zeros((len(corpus.tokens), width), dtype=torch.bool)
    for i, words in enumerate(corpus.words):
        for p, w in enumerate(words):
            if w and abs(lexicon.get(w, 0.0)) >= threshold:
                mask[i, p] = True
    return mask


def _null_statistics(
    scan: FeatureScan, nulls: Sequence[int], corpus: Corpus, lexicon: Mapping[str, float]
) -> list[float]:
    """The offline statistic of the live null features (the test's null distribution)."""
    stats = [
        valence_statistics(_top_words(scan, f, corpus), lexicon)[0]
        for f in nulls
        if scan.frequency[f] > 0
    ]
    if len(stats) < 20:
        logger.warning(
            "%s: only %d live null features; p-values are coarse", scan.hook_name, len(stats)
        )
    return stats


def _top_words(scan: FeatureScan, feature: int, corpus: Corpus) -> list[str]:
    j = int((scan.feature_ids == feature).nonzero()[0, 0])
    return [
        corpus.words[int(i)][int(p)]
        for v, i, p in zip(scan.values[j], scan.text_index[j], scan.position[j], strict=True)
        if math.isfinite(float(v)) and float(v) > 0
    ]


def _row(
    hook: str,
    feature: int,
    scan: FeatureScan,
    examples: list[ActivatingExample],
    null_stats: list[float],
    lexicon: Mapping[str, float],
    config: AutointerpConfig,
    client: LLMClient | None,
) -> dict[str, Any]:
    """One row of the description table (with the LLM's columns when ``client`` is given)."""
    words = [e.word for e in examples if e.activation > 0]
    label = label_feature(words, null_stats, lexicon, alpha=config.alpha) if words else DEAD_LABEL
    row = {
        "hook": hook,
        "layer": layer_of_hook(hook),
        "feature": feature,
        "description": label.description,
        "task_related": label.task_related,
        "p_value": label.p_value,
        "z_score": label.z_score,
        "mean_abs_valence": label.statistic,
        "mean_valence": label.mean_valence,
        "sentiment_share": label.sentiment_share,
        "max_activation": examples[0].activation if examples else 0.0,
        "frequency": float(scan.frequency[feature]),
        "top_tokens": " | ".join(e.token.strip() or repr(e.token) for e in examples[:5]),
    }
    if client is None:
        return row
    live = [e for e in examples if e.activation > 0]
    if not live:
        return row | {"llm_explanation": "", "llm_score": math.nan, "llm_task_related": False}
    llm = describe_with_llm(
        live, client, task_description=config.task_description, label=str(feature)
    )
    return row | {
        "llm_explanation": llm.explanation,
        "llm_score": llm.score,
        "llm_task_related": llm.task_related,
    }
