"""[`diff_features`][lfp_mech.diff.build.diff_features]: the dictionary of what tuning changed,
from a base and a tuned model and some prompts (the core of the ``diff`` stage)."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lfp_mech.diff.config import DiffConfig
from lfp_mech.diff.dictionary import DiffDictionary, TrainStats, train_dictionary
from lfp_mech.diff.residual import capture_resid, decoder_layers, tokenize_texts
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

__all__ = ["DiffFeatures", "corpus_from_prompts", "diff_features"]


@dataclass
class DiffFeatures:
    """A trained diff dictionary and what it says about the corpus tokens."""

    dictionary: DiffDictionary
    """The dictionary (encoder on the tuned activation, decoder to ``x_tuned − x_base``)."""
    layer: int
    """Its block (``blocks.{layer}.hook_resid_post``)."""
    train: TrainStats
    """Fit statistics."""
    stats: dict[str, Tensor]
    """Per latent: score, mean_act, frequency, mean_when_active; and the ranking."""
    groups: list[LatentGroup]
    """Features (latents sharing a decoder direction), most tuned-specific first."""
    mean_diff: Float[Tensor, " d_model"]
    """Difference of means ``E[x_tuned − x_base]`` over the corpus tokens (the baseline)."""
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
    tuned: ModelLike, prompts: Sequence[str], config: DiffConfig
) -> tuple[list[str], list[str]]:
    """``(prompts, completions)``: each prompt completed once by the tuned policy."""
    hf, tokenizer = as_hf_model(tuned, device=config.device)
    completions, _ = generate_texts(
        hf,
        tokenizer,
        list(prompts),
        max_new_tokens=config.corpus_new_tokens,
        temperature=config.temperature if config.temperature > 0 else 1.0,
        do_sample=config.temperature > 0,
        seed=config.seed,
        device=config.device,
        desc="diff corpus",
    )
    return list(prompts), completions


def diff_features(
    base: ModelLike,
    tuned: ModelLike,
    prompts: Sequence[str],
    config: DiffConfig | None = None,
    *,
    completions: Sequence[str] | None = None,
) -> DiffFeatures:
    """Train the diff dictionary on ``prompt + completion`` texts and score its latents.

    Args:
        base: the base model (a name, a checkpoint folder or an ``(hf_model, tokenizer)`` pair).
        tuned: the tuned model fine-tuned from it (same kinds).
        prompts: training prompts (not the ones the causal tests use).
        config: sizes; ``config.layer`` None picks the depth-relative default block.
        completions: the tuned policy's completions of ``prompts``; None samples them.
    """
    config = config or DiffConfig()
    base_hf, tokenizer = as_hf_model(base, device=config.device)
    tuned_hf, _ = as_hf_model(tuned, device=config.device)
    n_layers = len(decoder_layers(tuned_hf))
    layer = config.resolved_layer(n_layers)
    if layer >= n_layers:
        raise ConfigError(
            f"diff.layer = {layer}: the model has {n_layers} blocks (0..{n_layers - 1})"
        )
    if completions is None:
        _, completions = corpus_from_prompts((tuned_hf, tokenizer), prompts, config)
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    ids, mask = tokenize_texts(tokenizer, texts, config.max_len)
    prompt_len = [len(tokenizer(p).input_ids) for p in prompts]
    x_t = capture_resid(tuned_hf, ids, mask, layer)
    x_b = capture_resid(base_hf, ids, mask, layer)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    text_index = torch.arange(ids.shape[0]).unsqueeze(-1).expand_as(ids)
    policy = positions >= torch.tensor(prompt_len).unsqueeze(-1)
    x_t, delta = x_t[mask], (x_t - x_b)[mask]
    logger.info("diff: %d corpus tokens at block %d", len(x_t), layer)
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
    z = encode_all(dictionary, x_t)
    policy_tokens = policy[mask]
    stats = latent_stats(z, policy_tokens)
    return DiffFeatures(
        dictionary=dictionary,
        layer=layer,
        train=train,
        stats=stats,
        groups=group_latents(dictionary.W_dec, z, stats["score"], config.group_cos),
        mean_diff=delta.mean(0),
        z=z,
        token_ids=ids[mask],
        text_index=text_index[mask],
        position=positions[mask],
        policy_tokens=policy_tokens,
        corpus_ids=ids,
    )
