"""Diff dictionaries at several blocks, ranked together.

A change removed from the residual stream at one block is largely rebuilt by the tuned model's
later blocks (their weights were tuned too), so the stage trains a dictionary at each of a few
blocks ([`diff_features_by_block`][lfp_mech.diff.blocks.diff_features_by_block]) and edits all of
them at once. Each block's dictionary is trained on the plain tuned model (``independent``, the
default) or, in order of depth, on the tuned model with every latent of the earlier ones
ablated (``sequential``): a later dictionary then learns the difference that is *left*, not the
earlier change the residual stream carries on (which an independent one can remove a second
time, e.g. a constant shift). The tutorial compares the two on validation prompts. "The top-k
features" are drawn from every block's ranking by one of the rules of
[`rank_across_blocks`][lfp_mech.diff.blocks.rank_across_blocks]; an edit is a mapping
``{block: edit}`` for [`residual_hooks`][lfp_mech.diff.residual.residual_hooks]."""

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lfp_mech.diff.build import (
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
        raise ValueError(f"unknown cross-block rule {rule!r}: use one of {RANK_RULES}")
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
    return BlockDiff(blocks=blocks, ranking=ranking)
