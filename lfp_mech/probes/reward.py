"""The probe as a reward model: the VADER formula with the fitted probe in place of the lexicon.

[`load_probe`][lfp_mech.probes.reward.load_probe] reads a probe the stage saved
(``probes.safetensors``); [`probe_reward`][lfp_mech.probes.reward.probe_reward] scores whole texts
with it (the ``irl`` stage compares the recovered reward with this estimate)."""

import os
from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from lfp_mech._io import load_tensors
from lfp_mech.errors import ConfigError
from lfp_mech.probes.artifacts import PRIMARY_PROBE
from lfp_mech.probes.features import (
    check_hooks,
    encode_hook,
    ordered_hooks,
    pad_batch,
    pad_token_id,
    stop_layer,
    token_positions,
)
from lfp_mech.probes.fit import LinearProbe
from lfp_mech.rewards import WORD_RE

__all__ = ["load_probe", "probe_reward"]

REWARD_DIVISOR = 5.0
"""The VADER reward's sum over words is divided by this and clipped (``REWARD_CLIP``)."""
REWARD_CLIP = 10.0


def load_probe(path: str | os.PathLike[str], name: str = PRIMARY_PROBE) -> LinearProbe:
    """A probe saved by the ``probes`` stage (``probes.safetensors``; default: the tuned one)."""
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

    Each word's ``A_concat`` is its SAE features averaged over its tokens, in context (one forward
    pass per batch of texts). Words are found like
    [`lfp_mech.rewards.words`][lfp_mech.rewards.words] does (runs of letters/digits with inner
    apostrophes)."""
    hooks = ordered_hooks(saes)
    hook_names = [h for h, _ in hooks]
    check_hooks(model, hook_names)
    tokenizer = model.tokenizer
    bos = [tokenizer.bos_token_id] if model.cfg.default_prepend_bos else []
    pad_id = pad_token_id(model)
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            enc = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True)
            seqs = [(bos + list(ids), []) for ids in enc["input_ids"]]
            tokens, attention, _ = pad_batch(seqs, pad_id)
            _, cache = model.run_with_cache(
                tokens.to(device),
                attention_mask=attention.to(device),
                names_filter=hook_names,
                stop_at_layer=stop_layer(hook_names),
            )
            features = torch.cat([encode_hook(cache[h], sae, h) for h, sae in hooks], dim=-1).cpu()
            for row, (text, offsets) in enumerate(zip(batch, enc["offset_mapping"], strict=True)):
                words = _word_features(features[row], text, offsets, len(bos))
                total = float(probe.predict(words).sum()) / REWARD_DIVISOR if len(words) else 0.0
                scores.append(min(max(total, -REWARD_CLIP), REWARD_CLIP))
    return torch.tensor(scores, dtype=torch.float32)


def _word_features(
    features: Float[Tensor, "pos d"], text: str, offsets: Sequence[tuple[int, int]], n_bos: int
) -> Float[Tensor, "word d"]:
    """Each word's features averaged over its tokens (words as
    [`lfp_mech.rewards.WORD_RE`][lfp_mech.rewards.WORD_RE])."""
    words = []
    for match in WORD_RE.finditer(text):
        positions = [j + n_bos for j in token_positions(offsets, *match.span())]
        if positions:
            words.append(features[positions].mean(dim=0))
    return torch.stack(words) if words else features[:0]
