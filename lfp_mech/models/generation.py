"""The one batched generation path of lfp_mech (KV cache, optional activation hooks)."""

import logging
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lfp_mech.devices import seeded
from lfp_mech.models.completions import active_cache
from lfp_mech.models.hf_hooks import HookSpec, hf_hooks
from lfp_mech.models.sampling import sample_batch

logger = logging.getLogger(__name__)

__all__ = ["generate_texts", "hf_twin", "register_hf_twin"]

_TWINS: "weakref.WeakKeyDictionary[Any, tuple[PreTrainedModel, PreTrainedTokenizerBase]]" = (
    weakref.WeakKeyDictionary()
)


def register_hf_twin(
    hooked: Any, hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Remember the HF model a ``HookedTransformer`` was converted from (same weights), so code
    holding the hooked model can generate on the fast HF path
    ([`hf_twin`][lfp_mech.models.generation.hf_twin]). Held only as long as ``hooked`` lives."""
    _TWINS[hooked] = (hf_model, tokenizer)


def hf_twin(hooked: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase] | None:
    """``(hf_model, tokenizer)`` registered for ``hooked``, or None (a copy, a hand-built or a
    since-converted model has none)."""
    try:
        return _TWINS.get(hooked)
    except TypeError:  # not weak-referenceable: never registered
        return None


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    desc: str = "generate",
    hooks: HookSpec = (),
    hooks_id: str | None = None,
) -> tuple[list[str], list[int]]:
    """Complete each prompt with an HF causal LM: ``(completions, n_new_tokens_before_eos)``.

    The one generation loop of lfp_mech (RLHF evaluation, IRL demonstrations, activation
    corpus). Prompts are sorted by length and generated in left-padded batches with the KV
    cache; results come back in input order. Sampling is pure ancestral sampling (no top-k) at
    ``temperature``; each batch draws from its own RNG seeded with ``seed + batch start``, so a
    completion does not depend on what ran before, and the global RNG is left untouched.
    Completions hold only the new text, special tokens dropped. Each batch runs
    [`sample_batch`][lfp_mech.models.sampling.sample_batch]: HF ``generate``'s arithmetic without
    its per-step overhead, each token drawn from the same distribution by a keyed exponential race
    (clocks hashed from a per-row key and the token id, so paired runs with the same seed draw
    the same token unless their probabilities differ enough; see
    [`sampling`][lfp_mech.models.sampling]).

    ``hooks`` (``[(TransformerLens hook name, fn), ...]``, e.g. an SAE-feature ablation on
    ``blocks.3.hook_mlp_out`` or a steering vector added to ``blocks.3.hook_resid_post``) edit
    the activations of every forward while generating, KV cache on; they are removed afterwards,
    also on error (see [`hf_hooks`][lfp_mech.models.hf_hooks.hf_hooks]).

    While a completion cache is active (during a run's stages, see
    [`completions`][lfp_mech.models.completions]) an identical earlier request (same weights,
    prompts, settings, batch size, seed and ``hooks_id``) returns its stored completions;
    hooked generation is cached only when ``hooks_id`` names the hooks.
    """
    prompts = list(prompts)
    if not prompts:
        return [], []
    eos = tokenizer.eos_token_id
    config = dict(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )
    # hooks registered on the model by the caller (not through ``hooks=``) change the
    # completions without changing the key: such generation is never cached
    named = hooks_id is not None or (not hooks and not _has_registered_hooks(model))
    cache = active_cache() if named else None
    if cache is not None:
        settings = {**config, "batch_size": batch_size, "seed": seed, "hooks": hooks_id}
        settings["tokenizer"] = type(tokenizer).__name__ + str(len(tokenizer))
        key = cache.key(model, prompts, settings)
        stored = cache.get(key)
        if stored is not None:
            logger.info("%s: %d completions from the completion cache", desc, len(prompts))
            return stored
    texts, n_new = _sample_all(
        model, tokenizer, prompts, config, batch_size, seed, device, desc, hooks
    )
    if cache is not None:
        cache.put(key, texts, n_new, settings)
    return texts, n_new


def _sample_all(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: dict[str, Any],
    batch_size: int,
    seed: int,
    device: str | torch.device,
    desc: str,
    hooks: HookSpec,
) -> tuple[list[str], list[int]]:
    """Sample every prompt, in batches of similar length (see ``generate_texts``)."""
    eos = config["eos_token_id"]
    lengths = [len(ids) for ids in tokenizer(prompts).input_ids]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    texts, n_new = [""] * len(prompts), [0] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with hf_hooks(model, hooks), torch.inference_mode():
            for start in tqdm(
                range(0, len(order), batch_size), desc=desc, disable=None, leave=False
            ):
                index = order[start : start + batch_size]
                batch = tokenizer(
                    [prompts[i] for i in index],
                    return_tensors="pt",
                    padding=True,
                    padding_side="left",
                ).to(device)
                with seeded(seed + start):
                    new_tokens = sample_batch(
                        model, batch["input_ids"], batch["attention_mask"], **config
                    )
                if eos is None:
                    counts = [new_tokens.shape[1]] * len(index)
                else:
                    counts = ((new_tokens == eos).long().cumsum(-1) == 0).sum(-1).tolist()
                decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                for i, text, count in zip(index, decoded, counts, strict=True):
                    texts[i], n_new[i] = text, int(count)
    finally:
        model.train(was_training)
    return texts, n_new


def _has_registered_hooks(model: torch.nn.Module) -> bool:
    """Whether any forward (pre-)hook is registered on ``model``'s modules or globally."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
