"""One pass over the corpus: every feature's activation frequency and mean, and the chosen
features' top-``k`` activating tokens with the feature's activations in a window around each."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from lfp_mech.errors import ConfigError
from lfp_mech.validate.autointerp.corpus import Corpus, corpus_batches, tokenize_corpus

__all__ = ["ActivatingExample", "FeatureScan", "scan_features", "top_activating_contexts"]


@dataclass
class ActivatingExample:
    """One top-activating token of a feature and its context window."""

    text_index: int
    position: int
    """Token position in the TransformerLens input (BOS = 0)."""
    token: str
    word: str
    """Lower-cased word containing the token ("" for spaces/punctuation)."""
    activation: float
    context: list[str]
    """The window's tokens as text pieces (the top token included)."""
    context_acts: list[float]
    """The feature's activation on each window token."""


@dataclass
class FeatureScan:
    """Everything one corpus pass learned about one SAE's features."""

    hook_name: str
    feature_ids: Int[Tensor, " n_feat"]
    """Features whose top contexts were kept (chosen first, then null features)."""
    values: Float[Tensor, "n_feat k"]
    text_index: Int[Tensor, "n_feat k"]
    position: Int[Tensor, "n_feat k"]
    context_acts: Float[Tensor, "n_feat k window"]
    window: tuple[int, int]
    frequency: Float[Tensor, " d_sae"]
    """Share of corpus tokens on which each feature is active (> 0)."""
    frequency_selected: Float[Tensor, " d_sae"]
    """Same, over the selected ("strong feedback") tokens only."""
    mean_activation: Float[Tensor, " d_sae"]
    n_tokens: int
    n_selected: int

    def examples(self, feature: int, corpus: Corpus) -> list[ActivatingExample]:
        """Top-activating examples of ``feature`` (highest first), context cut to the text."""
        rows = (self.feature_ids == feature).nonzero()
        if rows.numel() == 0:
            raise ConfigError(f"feature {feature} was not scanned at {self.hook_name}")
        j = int(rows[0, 0])
        left, right = self.window
        out = []
        for r in range(self.values.shape[1]):
            value = float(self.values[j, r])
            if not math.isfinite(value):
                continue
            i, pos = int(self.text_index[j, r]), int(self.position[j, r])
            lo, hi = max(pos - left, 1), min(pos + right + 1, len(corpus.tokens[i]))
            acts = self.context_acts[j, r, lo - (pos - left) : hi - (pos - left)]
            out.append(
                ActivatingExample(
                    text_index=i,
                    position=pos,
                    token=corpus.token_text(i, pos),
                    word=corpus.words[i][pos],
                    activation=value,
                    context=[corpus.token_text(i, p) for p in range(lo, hi)],
                    context_acts=[float(a) for a in acts],
                )
            )
        return out


def scan_features(
    model: nn.Module,
    saes: Mapping[str, nn.Module],
    feature_ids: Mapping[str, Sequence[int]],
    corpus: Corpus,
    *,
    k: int = 10,
    window: tuple[int, int] = (12, 4),
    batch_size: int = 16,
    selected_tokens: Bool[Tensor, "n_texts max_pos"] | None = None,
    device: str = "cpu",
) -> dict[str, FeatureScan]:
    """Top-``k`` activations with context windows for the given features of every SAE, and
    activation frequencies / means of all features, in one pass over ``corpus``.

    ``selected_tokens[i, pos]`` marks tokens counted in ``frequency_selected`` (default: none).
    """
    _check_features(model, saes, feature_ids)
    left, right = window
    state = {
        hook: _empty_state(feature_ids.get(hook, []), int(sae.cfg.d_sae), k, left + right + 1)
        for hook, sae in saes.items()
    }
    n_tokens = n_selected = 0
    for idx, acts, valid in corpus_batches(
        model, corpus, list(saes), batch_size, device=device, progress="scan corpus"
    ):
        sel = torch.zeros_like(valid)
        if selected_tokens is not None:
            sub = selected_tokens[idx][:, : valid.shape[1]]
            sel[:, : sub.shape[1]] = sub
        sel &= valid
        n_tokens += int(valid.sum())
        n_selected += int(sel.sum())
        text_ids = torch.tensor(idx)
        for hook, sae in saes.items():
            with torch.inference_mode():
                z = sae.encode(acts[hook].to(sae.W_dec.device, sae.W_dec.dtype)).float().cpu()
            _update_scan(state[hook], z, valid, sel, text_ids, k, left, right)
    if n_tokens == 0:
        raise ConfigError("the corpus has no tokens besides BOS")
    return {hook: _finish(hook, s, window, n_tokens, n_selected) for hook, s in state.items()}


def _check_features(
    model: nn.Module, saes: Mapping[str, nn.Module], feature_ids: Mapping[str, Sequence[int]]
) -> None:
    for hook, sae in saes.items():
        if hook not in model.hook_dict:
            raise ConfigError(f"unknown hook name {hook!r}; e.g. 'blocks.0.hook_mlp_out'")
        ids = list(feature_ids.get(hook, []))
        if ids and (min(ids) < 0 or max(ids) >= int(sae.cfg.d_sae)):
            raise ConfigError(
                f"feature ids for {hook!r} must be in 0..{int(sae.cfg.d_sae) - 1} (d_sae)"
            )


def _empty_state(ids: Sequence[int], d_sae: int, k: int, width: int) -> dict[str, Tensor]:
    """Running top-k of the scanned features and activity counts of all features."""
    n = len(ids)
    return {
        "ids": torch.tensor(list(ids), dtype=torch.long),
        "values": torch.full((n, k), -math.inf),
        "text": torch.full((n, k), -1, dtype=torch.long),
        "pos": torch.full((n, k), -1, dtype=torch.long),
        "ctx": torch.zeros((n, k, width)),
        "active": torch.zeros(d_sae, dtype=torch.float64),
        "active_sel": torch.zeros(d_sae, dtype=torch.float64),
        "sum": torch.zeros(d_sae, dtype=torch.float64),
    }


def _update_scan(
    s: dict[str, Any],
    z: Float[Tensor, "batch pos d_sae"],
    valid: Bool[Tensor, "batch pos"],
    sel: Bool[Tensor, "batch pos"],
    text_ids: Int[Tensor, " batch"],
    k: int,
    left: int,
    right: int,
) -> None:
    """Add one batch of feature activations to the running counts and top-k of ``s``."""
    active = (z > 0) & valid[..., None]
    s["active"] += active.sum(dim=(0, 1)).double()
    s["active_sel"] += (active & sel[..., None]).sum(dim=(0, 1)).double()
    s["sum"] += (z * valid[..., None]).sum(dim=(0, 1)).double()
    if s["ids"].numel() == 0:
        return
    zs = z.index_select(-1, s["ids"]).masked_fill(~valid[..., None], 0.0)
    n_pos = zs.shape[1]
    scores = rearrange(zs.masked_fill(~valid[..., None], -math.inf), "b p n -> n (b p)")
    vals, flat = scores.topk(min(k, scores.shape[1]), dim=1)
    b_idx, p_idx = flat // n_pos, flat % n_pos
    windows = F.pad(zs, (0, 0, left, right)).unfold(1, left + right + 1, 1)  # b p n w
    feat = torch.arange(zs.shape[-1])[:, None].expand_as(b_idx)
    ctx = windows[b_idx, p_idx, feat]  # n kk w
    all_vals = torch.cat([s["values"], vals], dim=1)
    all_text = torch.cat([s["text"], text_ids[b_idx]], dim=1)
    all_pos = torch.cat([s["pos"], p_idx], dim=1)
    all_ctx = torch.cat([s["ctx"], ctx], dim=1)
    s["values"], keep = all_vals.topk(k, dim=1)
    s["text"] = all_text.gather(1, keep)
    s["pos"] = all_pos.gather(1, keep)
    s["ctx"] = all_ctx[torch.arange(keep.shape[0])[:, None], keep]


def _finish(
    hook: str, s: dict[str, Tensor], window: tuple[int, int], n_tokens: int, n_selected: int
) -> FeatureScan:
    return FeatureScan(
        hook_name=hook,
        feature_ids=s["ids"],
        values=s["values"],
        text_index=s["text"],
        position=s["pos"],
        context_acts=s["ctx"],
        window=(window[0], window[1]),
        frequency=(s["active"] / n_tokens).float(),
        frequency_selected=(s["active_sel"] / max(n_selected, 1)).float(),
        mean_activation=(s["sum"] / n_tokens).float(),
        n_tokens=n_tokens,
        n_selected=n_selected,
    )


def top_activating_contexts(
    model: nn.Module,
    sae: nn.Module,
    texts: Sequence[str],
    feature_ids: Sequence[int],
    k: int = 10,
    window: tuple[int, int] = (12, 4),
    *,
    hook_name: str | None = None,
    batch_size: int = 16,
    max_len: int = 64,
    device: str = "cpu",
) -> dict[int, list[ActivatingExample]]:
    """Per feature, its ``k`` highest activations on ``texts`` with context windows.

    The hook is ``sae.cfg.metadata.hook_name`` unless ``hook_name`` is given.
    """
    hook = hook_name or sae.cfg.metadata.hook_name
    if not hook:
        raise ConfigError("the SAE has no cfg.metadata.hook_name; pass hook_name=")
    corpus = tokenize_corpus(model, texts, max_len=max_len)
    ids = [int(f) for f in feature_ids]
    scan = scan_features(
        model,
        {hook: sae},
        {hook: ids},
        corpus,
        k=k,
        window=window,
        batch_size=batch_size,
        device=device,
    )[hook]
    return {f: scan.examples(f, corpus) for f in ids}
