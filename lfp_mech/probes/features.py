"""Probe features: SAE features (or raw hook activations) at a word of a text, ``A_concat``.

For a text and the character span of one word in it,
[`concat_features`][lfp_mech.probes.features.concat_features] runs the model once (TransformerLens
``run_with_cache`` with ``names_filter`` = the SAE hooks and ``stop_at_layer`` = last layer + 1),
encodes each hook's activations with its SAE and averages the feature activations over the word's
tokens (a word may split into several BPE tokens); the per-layer vectors are concatenated into
``A_concat`` in a fixed order: by layer index, then by hook name (``hook_embed`` first).
[`ordered_hooks`][lfp_mech.probes.features.ordered_hooks] gives that order. Passing ``None`` instead
of an SAE for a hook gives that hook's raw activations (the raw-MLP and ``hook_embed`` embedding
baselines); [`collect_feature_sets`][lfp_mech.probes.features.collect_feature_sets] computes several
feature sets in one forward pass.

Char spans become token positions through the fast tokenizer's ``offset_mapping``: a token
belongs to the word if its character range overlaps the span (tokens carry their leading space,
``" good"``). TransformerLens prepends BOS, so token ``j`` of the text is position ``j + 1`` of
the model input; BOS itself is never pooled. Because the models are causal, the activations at
the word only depend on the tokens up to it, so each sequence is cut after the word's last token
before the forward pass (exact, and ~5% cheaper on the shipped templates), and sequences are
sorted by length before batching to keep padding small.
"""

import logging
from collections.abc import Mapping, Sequence

import torch
from einops import einsum
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from lfp_mech.errors import ConfigError
from lfp_mech.hooks import layer_of_hook, sort_hooks

__all__ = [
    "HookSAEs",
    "check_hooks",
    "collect_feature_sets",
    "concat_activations",
    "concat_features",
    "encode_hook",
    "mean_pooled_features",
    "ordered_hooks",
    "pad_batch",
    "pad_token_id",
    "stop_layer",
    "token_positions",
]

logger = logging.getLogger(__name__)

HookSAEs = Mapping[str, SAE | None] | Sequence[SAE]
"""SAEs by hook: ``{hook_name: SAE or None}`` (None = the hook's raw activations) or a sequence
of SAEs with ``cfg.metadata.hook_name`` set."""

TokenSeq = tuple[list[int], list[int]]
"""(token ids with BOS, positions of the span's tokens in them)."""


def ordered_hooks(saes: HookSAEs) -> list[tuple[str, SAE | None]]:
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
    by_hook = dict(items)
    return [(hook, by_hook[hook]) for hook in sort_hooks(names)]


def concat_features(
    model: HookedTransformer,
    saes: HookSAEs,
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
            [`ordered_hooks`][lfp_mech.probes.features.ordered_hooks] (by layer).
        texts: the sentences.
        spans: one ``(start, end)`` character span per text (end exclusive), e.g. the
            substituted word of a triple; features are averaged over the tokens it overlaps.
        batch_size: sequences per forward pass.
        device: torch device for the forward pass (a model elsewhere is moved there, in
            place: it stays there afterwards).

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
    saes: HookSAEs,
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
        [`ordered_hooks`][lfp_mech.probes.features.ordered_hooks] order.
    """
    texts = list(texts)
    spans = [(int(s), int(e)) for s, e in spans]
    _check_texts_spans(texts, spans)
    ordered = {name: ordered_hooks(hooks) for name, hooks in feature_sets.items()}
    if not ordered:
        raise ConfigError("feature_sets is empty")
    hook_names = sort_hooks({h for hooks in ordered.values() for h, _ in hooks})
    check_hooks(model, hook_names)
    seqs = _tokenize_to_spans(model, texts, spans)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    pooled: dict[str, list[Tensor]] = {name: [] for name in ordered}
    if torch.device(device) != torch.device(model.cfg.device):
        logger.info("probe features: moving the model from %s to %s", model.cfg.device, device)
        model.to(device)
    pad_id = pad_token_id(model)
    batches = range(0, len(order), batch_size)
    with torch.no_grad():
        for start in tqdm(batches, desc="probe features", disable=None, leave=False):
            idx = order[start : start + batch_size]
            tokens, attention, span_mask = pad_batch([seqs[i] for i in idx], pad_id)
            _, cache = model.run_with_cache(
                tokens.to(device),
                attention_mask=attention.to(device),
                names_filter=hook_names,
                stop_at_layer=stop_layer(hook_names),
            )
            mask = span_mask.to(device)
            for name, hooks in ordered.items():
                parts = [_pool(encode_hook(cache[h], sae, h), mask) for h, sae in hooks]
                pooled[name].append(torch.cat(parts, dim=-1).cpu())
            del cache
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {name: torch.cat(chunks)[inverse].contiguous() for name, chunks in pooled.items()}


def stop_layer(hooks: Sequence[str]) -> int:
    """``stop_at_layer`` that computes every hook: last block + 1 (0 for ``hook_embed`` alone)."""
    return max(_layer_or_embed(h) for h in hooks) + 1


def check_hooks(model: HookedTransformer, hooks: Sequence[str]) -> None:
    """[`ConfigError`][lfp_mech.errors.ConfigError] unless every hook exists in ``model`` (layer in
    range, known name)."""
    n_layers = model.cfg.n_layers
    for hook in hooks:
        layer = _layer_or_embed(hook)
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


def pad_batch(
    seqs: Sequence[TokenSeq], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """Right-padded tokens, attention mask, and a span mask normalised to sum 1 per row.

    The sequences already hold their BOS (unlike ``lfp_mech.activations``' padding, which
    prepends it), and the span mask is specific to the probes.
    """
    length = max(len(ids) for ids, _ in seqs)
    tokens = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), length), dtype=torch.long)
    span_mask = torch.zeros((len(seqs), length), dtype=torch.float32)
    for row, (ids, positions) in enumerate(seqs):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        span_mask[row, positions] = 1.0 / max(len(positions), 1)
    return tokens, attention, span_mask


def pad_token_id(model: HookedTransformer) -> int:
    """The id right-padding uses: the tokenizer's pad token, else EOS, else 0 (masked anyway)."""
    tok = model.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0  # pragma: no cover


def encode_hook(acts: Float[Tensor, "batch pos d_in"], sae: SAE | None, hook: str) -> Tensor:
    """SAE features of a hook's activations (float32, on the activations' device); the raw
    activations when ``sae`` is None."""
    if sae is None:
        return acts
    if acts.shape[-1] != sae.cfg.d_in:
        raise ConfigError(
            f"SAE for {hook} expects d_in={sae.cfg.d_in} but the hook has width {acts.shape[-1]}; "
            "train/load the SAE for this model and hook"
        )
    device = sae.W_dec.device
    return sae.encode(acts.to(device=device, dtype=sae.W_dec.dtype)).to(acts.device, torch.float32)


def _layer_or_embed(hook: str) -> int:
    """The block of a hook, -1 outside the blocks (``hook_embed``)."""
    layer = layer_of_hook(hook)
    return -1 if layer is None else layer


def _pool(
    acts: Float[Tensor, "batch pos d"], span_mask: Float[Tensor, "batch pos"]
) -> Float[Tensor, "batch d"]:
    """Mean over the span's tokens (``span_mask`` rows sum to 1)."""
    return einsum(acts.float(), span_mask, "batch pos d, batch pos -> batch d")


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
) -> list[TokenSeq]:
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
        positions = token_positions(offsets, start, end)
        if not positions:
            raise ValueError(f"span ({start}, {end}) of {text!r} covers no token")
        last = positions[-1]
        offset = len(bos)  # token j of the text is position j + 1 after BOS
        seqs.append((bos + list(ids[: last + 1]), [j + offset for j in positions]))
    return seqs


def token_positions(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the (non-empty) tokens whose character range overlaps ``[start, end)``."""
    return [j for j, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
