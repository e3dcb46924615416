"""Diff dictionaries at several blocks, ranked together.

A change removed from the residual stream at one block is largely rebuilt by the tuned model's
later blocks (their weights were tuned too), so the stage trains a dictionary at each of a few
blocks ([`diff_features_by_block`][lfp_mech.diff.blocks.diff_features_by_block]) and edits all of
them at once. Each block's dictionary is trained on the plain tuned model (``independent``, the
default) or, in order of depth, on the tuned model with every latent of the earlier ones
ablated (``sequential``): a later dictionary then learns the difference that is *left*, not the
earlier change the residual stream carries on (which an independent one can remove a second
time, e.g. a constant shift). The tutorial compares the two on validation prompts. "The top-k
features" are ranked across blocks by the greedy KL attribution of
[`attribution_ranking`][lfp_mech.diff.blocks.attribution_ranking] (which features, ablated, bring
the tuned model's next-token predictions closest to the base model's, each round given the
features already taken), or by one of the activation-based rules of
[`rank_across_blocks`][lfp_mech.diff.blocks.rank_across_blocks]; an edit is a mapping
``{block: edit}`` for [`residual_hooks`][lfp_mech.diff.residual.residual_hooks]."""

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lfp_mech.diff.attribution import base_targets, kl_attribution
from lfp_mech.diff.build import (
    CorpusTokens,
    DiffFeatures,
    block_features,
    check_block,
    corpus_from_prompts,
    tokenize_corpus,
)
from lfp_mech.diff.config import DiffConfig
from lfp_mech.diff.interventions import ablate_latents, add_latents
from lfp_mech.diff.residual import (
    EditFn,
    capture_resid,
    capture_resids,
    decoder_layers,
    residual_hooks,
)
from lfp_mech.diff.scoring import LatentGroup
from lfp_mech.models.coerce import ModelLike, as_hf_model

logger = logging.getLogger(__name__)

__all__ = [
    "RANK_RULES",
    "BlockDiff",
    "RankedFeature",
    "attribution_ranking",
    "diff_features_by_block",
    "rank_across_blocks",
]

RANK_RULES = ("relative", "score", "round_robin")


@dataclass(frozen=True)
class RankedFeature:
    """One feature of the cross-block ranking."""

    layer: int
    """Its block."""
    index: int
    """Its rank within the block (index into that block's ``groups``)."""


@dataclass
class BlockDiff:
    """One [`DiffFeatures`][lfp_mech.diff.build.DiffFeatures] per block and their joint ranking."""

    blocks: dict[int, DiffFeatures]
    """Each block's dictionary and statistics, by block index (ascending)."""
    ranking: list[RankedFeature]
    """Every live feature of every block, most tuned-specific first."""
    attribution: dict[RankedFeature, float] = field(default_factory=dict)
    """With the ``attribution`` rule: each feature's estimated decrease of ``Σ KL(p_base ‖
    p_tuned)`` on the corpus when it is ablated, given the features ranked before it in earlier
    rounds (see [`attribution_ranking`][lfp_mech.diff.blocks.attribution_ranking]), plus λ × its
    fluency attribution when ``attribution_fluency`` = λ > 0; else empty."""
    attribution_kl: dict[int, float] = field(default_factory=dict)
    """With the ``attribution`` rule: ``Σ KL(p_base ‖ p_tuned)`` on the corpus (teacher-forced)
    with the first ``n`` features ablated, by ``n`` (one entry per round); else empty."""

    @property
    def layers(self) -> list[int]:
        """The blocks, ascending."""
        return sorted(self.blocks)

    def group(self, feature: RankedFeature) -> LatentGroup:
        """The latents of a ranked feature."""
        return self.blocks[feature.layer].groups[feature.index]

    def top(self, k: int) -> dict[int, list[int]]:
        """Latents of the ``k`` first features of the ranking, by block (blocks without one are
        left out)."""
        return self.latents(self.ranking[:k])

    def latents(self, features: Sequence[RankedFeature]) -> dict[int, list[int]]:
        """Latents of ``features``, by block."""
        out: dict[int, list[int]] = {}
        for feature in features:
            out.setdefault(feature.layer, []).extend(self.group(feature).members)
        return out

    def ablation(self, latents: Mapping[int, Sequence[int]]) -> dict[int | str, EditFn]:
        """Edits that ablate ``latents`` (by block), error term kept."""
        return {
            layer: ablate_latents(self.blocks[layer].dictionary, ids)
            for layer, ids in latents.items()
        }

    def steering(
        self, latents: Mapping[int, Sequence[int]], scale: float = 1.0
    ) -> dict[int | str, EditFn]:
        """Edits that add ``latents``' decoder rows (by block), each scaled to its score."""
        return {
            layer: add_latents(
                self.blocks[layer].dictionary, ids, self.blocks[layer].stats["score"], scale
            )
            for layer, ids in latents.items()
        }


def rank_across_blocks(
    groups: Mapping[int, Sequence[LatentGroup]], rule: str
) -> list[RankedFeature]:
    """Every block's features (``groups``: each block's, most tuned-specific first) in one
    ranking.

    ``round_robin``: each block's best, then each block's second best, ... (blocks ascending);
    ``score``: by feature score (the mean length of its contribution to ``x_tuned − x_base`` on
    the policy's tokens; the residual stream, and so the scores, grow with depth);
    ``relative``: by score over the sum of the scores of the block's features (its share of the
    block's change)."""
    if rule not in RANK_RULES:
        raise ValueError(
            f"unknown cross-block rule {rule!r}: use one of {RANK_RULES} (the attribution rule "
            "needs the models: attribution_ranking)"
        )
    layers = sorted(groups)
    if rule == "round_robin":
        depth = max((len(groups[layer]) for layer in layers), default=0)
        return [
            RankedFeature(layer, i)
            for i in range(depth)
            for layer in layers
            if i < len(groups[layer])
        ]
    keyed = []
    for layer in layers:
        total = sum(max(g.score, 0.0) for g in groups[layer]) or 1.0
        for i, g in enumerate(groups[layer]):
            keyed.append((g.score / total if rule == "relative" else g.score, layer, i))
    keyed.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [RankedFeature(layer, i) for _, layer, i in keyed]


def attribution_ranking(
    base: nn.Module,
    tuned: nn.Module,
    corpus: CorpusTokens,
    blocks: Mapping[int, DiffFeatures],
    rounds: Sequence[int],
    *,
    fluency: float = 0.0,
    own_texts: Callable[[dict[int, list[int]]], CorpusTokens] | None = None,
) -> tuple[list[RankedFeature], dict[RankedFeature, float], dict[int, float]]:
    """Every feature of every block, ranked greedily by
    [`kl_attribution`][lfp_mech.diff.attribution.kl_attribution] (a feature's ``a`` is the sum of
    its latents'): each round takes the ``rounds[i]`` features that lower ``Σ KL(p_base ‖
    p_tuned)`` most given every feature taken before is ablated, then the attributions are
    measured again; after the last round the rest follow in the last measurement's order. One
    measurement per round plus one; ``rounds = ()``: a single measurement. With ``fluency`` λ > 0,
    ``own_texts(ablated)`` (the policy's texts sampled with those latents ablated) is measured
    too and a feature's ``a`` adds λ × its attribution of the base-model cross-entropy there.
    Returns the ranking, each feature's ``a`` when it was taken, and ``Σ KL`` by number of
    features ablated."""
    if fluency > 0 and own_texts is None:
        raise ValueError("a fluency term needs own_texts (the ablated policy's texts)")
    chosen: list[RankedFeature] = []
    value: dict[RankedFeature, float] = {}
    kl: dict[int, float] = {}
    dictionaries = {layer: block.dictionary for layer, block in blocks.items()}
    n_features = sum(len(block.groups) for block in blocks.values())
    targets = base_targets(base, corpus)
    for picks in [*rounds, None]:
        ablated = BlockDiff(dict(blocks), []).latents(chosen)
        attribution = kl_attribution(
            base, tuned, corpus, dictionaries, ablated=ablated, base_targets=targets
        )
        scores = attribution.latents
        if fluency > 0 and own_texts is not None:
            fluent = kl_attribution(
                base, tuned, own_texts(ablated), dictionaries, ablated=ablated,
                measure="base_cross_entropy",
            )  # fmt: skip
            scores = {layer: a + fluency * fluent.latents[layer] for layer, a in scores.items()}
            logger.info(
                "diff attribution: base-model cross-entropy of the policy's own texts %.1f",
                fluent.kl,
            )
        taken = set(chosen)
        kl[len(taken)] = attribution.kl
        keyed = sorted(
            (
                (float(scores[layer][list(group.members)].sum()), layer, i)
                for layer in sorted(blocks)
                for i, group in enumerate(blocks[layer].groups)
                if RankedFeature(layer, i) not in taken
            ),
            key=lambda t: (-t[0], t[1], t[2]),
        )
        for a, layer, i in keyed if picks is None else keyed[:picks]:
            chosen.append(RankedFeature(layer, i))
            value[chosen[-1]] = a
        logger.info(
            "diff attribution: KL %.1f with %d features ablated; next %s",
            attribution.kl,
            len(taken),
            [round(a, 1) for a, _, _ in keyed[:5]],
        )
        if len(chosen) >= n_features:
            break
    return chosen, value, kl


def _own_texts(
    tuned: tuple[nn.Module, Any], prompts: Sequence[str], blocks: Mapping[int, DiffFeatures],
    config: DiffConfig,
) -> Callable[[dict[int, list[int]]], CorpusTokens]:  # fmt: skip
    """The fluency term's texts: the policy's completions of ``prompts`` sampled with the given
    latents ablated (seed ``config.seed + 1``: other samples than the corpus's)."""

    def sample(ablated: dict[int, list[int]]) -> CorpusTokens:
        with residual_hooks(tuned[0], BlockDiff(dict(blocks), []).ablation(ablated)):
            _, texts = corpus_from_prompts(tuned, prompts, config, seed=config.seed + 1)
        return tokenize_corpus(tuned[1], prompts, texts, config.max_len)

    return sample


def diff_features_by_block(
    base: ModelLike,
    tuned: ModelLike,
    prompts: Sequence[str],
    config: DiffConfig | None = None,
    *,
    completions: Sequence[str] | None = None,
) -> BlockDiff:
    """What [`diff_features`][lfp_mech.diff.build.diff_features] gives at one block, at each of
    ``config``'s blocks, on one corpus (the tuned policy's completions of ``prompts``, sampled once), in order of depth,
    each trained with the earlier ones' latents all ablated (``config.block_training`` =
    ``sequential``) or on the plain tuned model; ranked together by ``config.cross_block_rank``."""
    config = config or DiffConfig()
    base_hf, tokenizer = as_hf_model(base, device=config.device)
    tuned_hf, _ = as_hf_model(tuned, device=config.device)
    n_layers = len(decoder_layers(tuned_hf))
    layers = config.resolved_layers(n_layers)
    for layer in layers:
        check_block(layer, n_layers)
    if completions is None:
        _, completions = corpus_from_prompts((tuned_hf, tokenizer), prompts, config)
    corpus = tokenize_corpus(tokenizer, prompts, completions, config.max_len)
    # every block's activations from one pass per model; only sequential training needs more
    x_tuned = capture_resids(tuned_hf, corpus.ids, corpus.mask, layers)
    x_base = capture_resids(base_hf, corpus.ids, corpus.mask, layers)
    blocks: dict[int, DiffFeatures] = {}
    upstream: dict[int | str, EditFn] = {}
    for layer in layers:
        x_edited = None
        if upstream:
            with residual_hooks(tuned_hf, upstream):
                x_edited = capture_resid(tuned_hf, corpus.ids, corpus.mask, layer)
        blocks[layer] = block = block_features(
            corpus,
            layer,
            x_tuned[layer],
            x_base[layer],
            config,
            x_edited=x_edited,
            upstream=list(upstream),
        )
        if config.block_training == "sequential":
            everything = list(range(block.dictionary.d_dict))
            upstream[layer] = ablate_latents(block.dictionary, everything)
    attribution: dict[RankedFeature, float] = {}
    kl: dict[int, float] = {}
    if config.cross_block_rank == "attribution":
        ranking, attribution, kl = attribution_ranking(
            base_hf, tuned_hf, corpus, blocks, config.attribution_rounds,
            fluency=config.attribution_fluency,
            own_texts=_own_texts((tuned_hf, tokenizer), prompts, blocks, config),
        )  # fmt: skip
    else:
        ranking = rank_across_blocks(
            {layer: block.groups for layer, block in blocks.items()}, config.cross_block_rank
        )
    logger.info(
        "diff: blocks %s; blocks of the top %d features (%s): %s",
        layers,
        config.control_k,
        config.cross_block_rank,
        dict(Counter(f.layer for f in ranking[: config.control_k])),
    )
    return BlockDiff(blocks=blocks, ranking=ranking, attribution=attribution, attribution_kl=kl)
