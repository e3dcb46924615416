"""[`diff_features`][lfp_mech.diff.build.diff_features]: the dictionary of what tuning changed,
from a base and a tuned model and some prompts (the core of the ``diff`` stage)."""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lfp_mech.diff.config import DiffConfig
from lfp_mech.diff.dictionary import DiffDictionary, TrainStats, train_dictionary
from lfp_mech.diff.residual import (
    EditFn,
    capture_resid,
    decoder_layers,
    residual_hooks,
    tokenize_texts,
)
from lfp_mech.diff.scoring import (
    LatentGroup,
    encode_all,
    group_latents,
    latent_stats,
    top_contexts,
)
from lfp_mech.errors import ConfigError
from lfp_mech.models.coerce import ModelLike, as_hf_model
from lfp_mech.models.generation import generate_texts

logger = logging.getLogger(__name__)

__all__ = [
    "CorpusTokens",
    "DiffFeatures",
    "block_features",
    "check_block",
    "corpus_from_prompts",
    "diff_features",
    "tokenize_corpus",
]


@dataclass
class DiffFeatures:
    """A trained diff dictionary and what it says about the corpus tokens."""

    dictionary: DiffDictionary
    """The dictionary (encoder on the tuned activation, decoder to ``x_tuned − x_base``; with
    ``upstream`` edits active on the tuned model)."""
    layer: int
    """Its block (``blocks.{layer}.hook_resid_post``)."""
    upstream: list[int | str]
    """Earlier blocks that were edited (their dictionaries ablated) while it was trained."""
    train: TrainStats
    """Fit statistics."""
    stats: dict[str, Tensor]
    """Per latent: score, mean_act, frequency, mean_when_active; and the ranking."""
    groups: list[LatentGroup]
    """Features (latents sharing a decoder direction), most tuned-specific first."""
    mean_diff: Float[Tensor, " d_model"]
    """Difference of means ``E[x_tuned − x_base]`` at ``layer`` over the corpus tokens (the
    baseline; the plain tuned model's, also when the dictionary was trained with edits
    upstream)."""
    z: Float[Tensor, "n d_dict"]
    """Latent activations of every corpus token."""
    token_ids: Int[Tensor, " n"]
    text_index: Int[Tensor, " n"]
    position: Int[Tensor, " n"]
    policy_tokens: Bool[Tensor, " n"]
    """Tokens the tuned policy wrote (not the prompt)."""
    corpus_ids: Int[Tensor, "texts pos"]
    """The corpus, right-padded token ids."""

    def top(self, k: int) -> list[int]:
        """The latents of the ``k`` most tuned-specific features."""
        return [f for group in self.groups[:k] for f in group.members]

    def group_activation(self, index: int) -> Float[Tensor, " n"]:
        """Activation of feature ``index`` (sum of its members) on every corpus token."""
        return self.z[:, list(self.groups[index].members)].sum(-1)

    def top_contexts(self, index: int, tokenizer, n: int) -> list[dict]:
        """The ``n`` corpus contexts where feature ``index`` is most active (see
        [`top_contexts`][lfp_mech.diff.scoring.top_contexts])."""
        return top_contexts(
            self.group_activation(index),
            self.token_ids,
            self.text_index,
            self.position,
            self.corpus_ids,
            tokenizer,
            n=n,
        )


def corpus_from_prompts(
    tuned: ModelLike, prompts: Sequence[str], config: DiffConfig, *, seed: int | None = None
) -> tuple[list[str], list[str]]:
    """``(prompts, completions)``: each prompt completed once by the tuned policy (sampling
    seed ``config.seed`` unless ``seed`` is given)."""
    hf, tokenizer = as_hf_model(tuned, device=config.device)
    completions, _ = generate_texts(
        hf,
        tokenizer,
        list(prompts),
        max_new_tokens=config.corpus_new_tokens,
        temperature=config.temperature if config.temperature > 0 else 1.0,
        do_sample=config.temperature > 0,
        seed=config.seed if seed is None else seed,
        device=config.device,
        desc="diff corpus",
    )
    return list(prompts), completions


def _fit(
    x_t: Float[Tensor, "n d_model"], delta: Float[Tensor, "n d_model"], config: DiffConfig
) -> tuple[DiffDictionary, TrainStats]:
    """The dictionary of ``delta`` from ``x_t``, trained with ``config``'s settings."""
    torch.manual_seed(config.seed)
    dictionary, train = train_dictionary(
        x_t,
        delta,
        d_dict=config.d_dict,
        k=config.top_k,
        n_epochs=config.n_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        aux_coef=config.aux_coef,
        heldout=config.heldout,
        seed=config.seed,
    )
    logger.info(
        "diff dictionary: held-out FVU %.3f (train %.3f), dead %.1f%%, L0 %.1f",
        train.fvu,
        train.train_fvu,
        100 * train.dead_fraction,
        train.l0,
    )
    return dictionary, train


@dataclass(frozen=True)
class CorpusTokens:
    """The corpus texts (prompt + completion), tokenized once for every block."""

    ids: Int[Tensor, "texts pos"]
    """Right-padded token ids."""
    mask: Bool[Tensor, "texts pos"]
    """Real (not padding) tokens."""
    policy: Bool[Tensor, "texts pos"]
    """Tokens the tuned policy wrote (not the prompt)."""


def tokenize_corpus(
    tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], max_len: int
) -> CorpusTokens:
    """``prompt + completion`` texts tokenized (truncated to ``max_len``), with the mask of the
    completions' tokens."""
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    ids, mask = tokenize_texts(tokenizer, texts, max_len)
    prompt_len = torch.tensor([len(tokenizer(p).input_ids) for p in prompts])
    policy = torch.arange(ids.shape[1]).expand_as(ids) >= prompt_len.unsqueeze(-1)
    return CorpusTokens(ids=ids, mask=mask, policy=policy)


def check_block(layer: int, n_layers: int) -> None:
    """A one-line error if ``layer`` is not a block of a model with ``n_layers`` blocks."""
    if not 0 <= layer < n_layers:
        raise ConfigError(
            f"diff: block {layer} does not exist: the model has {n_layers} blocks "
            f"(0..{n_layers - 1}); set diff.layers"
        )


def block_features(
    corpus: CorpusTokens,
    layer: int,
    x_tuned: Float[Tensor, "texts pos d_model"],
    x_base: Float[Tensor, "texts pos d_model"],
    config: DiffConfig,
    *,
    x_edited: Float[Tensor, "texts pos d_model"] | None = None,
    upstream: Sequence[int | str] = (),
) -> DiffFeatures:
    """Train and score block ``layer``'s dictionary from the two models' activations there.

    ``x_edited``: the tuned model's activations with the ``upstream`` blocks' edits active (the
    dictionary then reads and learns from them); None: ``x_tuned``. The difference of means is
    always the plain tuned model's."""
    ids, mask = corpus.ids, corpus.mask
    x_t = x_tuned if x_edited is None else x_edited
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    text_index = torch.arange(ids.shape[0]).unsqueeze(-1).expand_as(ids)
    x_t, delta, mean_diff = x_t[mask], (x_t - x_base)[mask], (x_tuned - x_base)[mask].mean(0)
    logger.info(
        "diff: %d corpus tokens at block %d%s",
        len(x_t),
        layer,
        f" (earlier blocks {list(upstream)} ablated)" if upstream else "",
    )
    dictionary, train = _fit(x_t, delta, config)
    z = encode_all(dictionary, x_t)
    policy_tokens = corpus.policy[mask]
    stats = latent_stats(z, policy_tokens)
    return DiffFeatures(
        dictionary=dictionary,
        layer=layer,
        upstream=list(upstream),
        train=train,
        stats=stats,
        groups=group_latents(dictionary.W_dec, z, stats["score"], config.group_cos),
        mean_diff=mean_diff,
        z=z,
        token_ids=ids[mask],
        text_index=text_index[mask],
        position=positions[mask],
        policy_tokens=policy_tokens,
        corpus_ids=ids,
    )


def diff_features(
    base: ModelLike,
    tuned: ModelLike,
    prompts: Sequence[str],
    config: DiffConfig | None = None,
    *,
    completions: Sequence[str] | None = None,
    layer: int | None = None,
    upstream: Mapping[int | str, EditFn] | None = None,
) -> DiffFeatures:
    """Train the diff dictionary of one block on ``prompt + completion`` texts and score its
    latents (every block of the config:
    [`diff_features_by_block`][lfp_mech.diff.blocks.diff_features_by_block]).

    Args:
        base: the base model (a name, a checkpoint folder or an ``(hf_model, tokenizer)`` pair).
        tuned: the tuned model fine-tuned from it (same kinds).
        prompts: training prompts (not the ones the causal tests use).
        config: sizes.
        completions: the tuned policy's completions of ``prompts``; None samples them.
        layer: the block; None: the first of ``config``'s blocks.
        upstream: edits of earlier blocks active on the tuned model while its activations
            are read (the earlier blocks' dictionaries ablated): the dictionary then learns the
            difference that is left once they are removed, and reads the activations it will
            see when they are ablated too. None: the plain tuned model.
    """
    config = config or DiffConfig()
    base_hf, tokenizer = as_hf_model(base, device=config.device)
    tuned_hf, _ = as_hf_model(tuned, device=config.device)
    n_layers = len(decoder_layers(tuned_hf))
    layer = config.resolved_layers(n_layers)[0] if layer is None else layer
    check_block(layer, n_layers)
    if completions is None:
        _, completions = corpus_from_prompts((tuned_hf, tokenizer), prompts, config)
    corpus = tokenize_corpus(tokenizer, prompts, completions, config.max_len)
    x_edited = None
    if upstream:
        with residual_hooks(tuned_hf, upstream):
            x_edited = capture_resid(tuned_hf, corpus.ids, corpus.mask, layer)
    return block_features(
        corpus,
        layer,
        capture_resid(tuned_hf, corpus.ids, corpus.mask, layer),
        capture_resid(base_hf, corpus.ids, corpus.mask, layer),
        config,
        x_edited=x_edited,
        upstream=list(upstream or ()),
    )
