"""Switch SAE features off while the model runs: exact, reversible ablation.

**What an ablation does.** An SAE at hook point ``h`` splits an activation ``x`` into features
``a(x) = sae.encode(x)`` (shape ``d_sae``), a reconstruction ``x̂ = a(x) @ W_dec + b_dec`` and an
error ``ε = x − x̂``. Ablating the feature set ``F`` replaces ``x`` by the reconstruction with
those features set to ``m_f`` *plus the error term*::

    x  ↦  x − Σ_{f∈F} (a_f(x) − m_f) · W_dec[f]

with ``m_f = 0`` (zero ablation, the paper's) or ``m_f`` = the feature's mean activation on a corpus
(mean ablation, [`feature_means`][lfp_mech.validate.ablation.feature_means]). Because the error term
is kept, ablating no feature leaves the model bit-for-bit unchanged, and ablating ``F`` removes
exactly those features' decoder contributions and nothing else — unlike splicing in the bare
reconstruction, which also removes everything the SAE fails to reconstruct. (The paper's released
code zeroed residual-stream *dimensions* instead of SAE features; see REFERENCE.md §C.) Only
``W_dec[F]`` is touched: the update is one ``einsum`` over the selected features, never a full
decode; and the encoder computes only what ``a_F`` needs
([`selected_encoder`][lfp_mech.validate.selected_encoder.selected_encoder]: the selected
encoder columns of ReLU and JumpReLU SAEs, the pre-activation's ``k``-th largest value of TopK
SAEs), not the dense code.

**How.** [`ablate_features`][lfp_mech.validate.ablation.ablate_features] is a context manager that installs one TransformerLens forward
hook per hook point through ``model.hooks(...)``, so hooks are removed on exit, also when the
block raises. Everything that runs the model inside the block is ablated: ``model(tokens)``,
``run_with_cache`` (the cache sees the *patched* activation at the ablated hook, since cache hooks
are added after ours), and ``model.generate`` with or without the KV cache (SAE features are
per-token, so each new token is ablated as it is computed and the cached keys/values of earlier
tokens already carry their ablation). Ablation applies at every position, BOS and padding
included (padding is masked by attention anyway)::

    from lfp_mech import ablate_features

    with ablate_features(model, sae, [12, 40]):                  # hook from sae.cfg.metadata
        text = model.generate("The film was", max_new_tokens=20)
    with ablate_features(model, {"blocks.25.hook_mlp_out": (sae25, [3, 7]),
                                 "blocks.27.hook_mlp_out": (sae27, [100])}, mode="mean",
                         means={"blocks.25.hook_mlp_out": m25, "blocks.27.hook_mlp_out": m27}):
        logits = model(tokens)

[`generate_with_ablation`][lfp_mech.validate.ablated_generation.generate_with_ablation] (in
[`ablated_generation`][lfp_mech.validate.ablated_generation]) samples completions with an
ablation active."""

import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor, nn

from lfp_mech.errors import ConfigError
from lfp_mech.hooks import layer_of_hook
from lfp_mech.models.completions import tensor_digest
from lfp_mech.validate.autointerp.corpus import corpus_batches, tokenize_corpus
from lfp_mech.validate.feature_ids import FeatureIds, feature_tensor
from lfp_mech.validate.selected_encoder import SelectedEncoder, selected_encoder

__all__ = [
    "AblationSpec",
    "ablate_features",
    "feature_means",
]

AblationSpec = Mapping[str, tuple[nn.Module, FeatureIds]]
"""``{hook_name: (sae, feature_ids)}``: which features of which SAE to ablate at which hook."""


@dataclass(frozen=True)
class ResolvedAblation:
    """One hook's ablation, validated and with the selected decoder rows gathered once."""

    hook_name: str
    sae: nn.Module
    feature_ids: Int[Tensor, " n_sel"]
    w_dec: Float[Tensor, "n_sel d_in"]
    offsets: Float[Tensor, " n_sel"]  # m_f: 0 (zero mode) or the features' mean activations
    scale: Callable[[Tensor], Tensor] | None  # input-space scale of SAEs that normalise inputs
    # a_F(x) without the other features' work; None: sae.encode(x)[..., F]
    encode_selected: SelectedEncoder | None = None


@contextmanager
def ablate_features(
    model: nn.Module,
    ablations: AblationSpec | nn.Module,
    feature_ids: FeatureIds | None = None,
    *,
    mode: str = "zero",
    means: Mapping[str, Tensor] | Tensor | None = None,
) -> Iterator[nn.Module]:
    """Ablate SAE features inside a ``with`` block: ``x ↦ x − Σ_{f∈F} (a_f(x) − m_f) · W_dec[f]``.

    Args:
        model: a TransformerLens ``HookedTransformer``.
        ablations: ``{hook_name: (sae, feature_ids)}``, or a single SAE-Lens SAE (then pass
            ``feature_ids``; the hook is ``sae.cfg.metadata.hook_name``).
        feature_ids: the features to ablate, with the single-SAE form. Duplicates are ignored;
            an empty set leaves the model unchanged.
        mode: ``"zero"`` (``m_f = 0``, the paper) or ``"mean"`` (``m_f`` = mean activation).
        means: mean mode only: ``{hook_name: Float[Tensor, "d_sae"]}`` (a bare tensor with the
            single-SAE form), e.g. from [`feature_means`][lfp_mech.validate.ablation.feature_means].

    Yields:
        the model, with the hooks installed; they are removed on exit, also on exceptions.

    Raises:
        ConfigError: unknown hook name, feature id out of range, SAE ``d_in`` different from the
            hook's width, unsupported SAE, mean mode without means, bad mode. (``ConfigError``
            is a ``ValueError``.) All checks run before any hook is installed.
    """
    specs = resolve_ablations(model, ablations, feature_ids, mode, means)
    fwd_hooks = [(spec.hook_name, _make_hook(spec)) for spec in specs]
    with model.hooks(fwd_hooks=fwd_hooks):
        yield model


def _make_hook(spec: ResolvedAblation) -> Callable[[Tensor, Any], Tensor]:
    def hook(activation: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 - TL passes the HookPoint
        return ablate_activation(activation, spec)

    return hook


def ablate_activation(
    x: Float[Tensor, "*batch d_in"], spec: ResolvedAblation
) -> Float[Tensor, "*batch d_in"]:
    """``x − (z[..., F] − m_F) @ W_dec[F]`` with ``z = sae.encode(x)`` (F empty: ``x`` itself)."""
    if spec.feature_ids.numel() == 0:
        return x
    sae = spec.sae
    x_sae = x.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
    if spec.encode_selected is not None:
        selected = spec.encode_selected(x_sae)
    else:
        selected = sae.encode(x_sae).index_select(-1, spec.feature_ids.to(x_sae.device))
    acts = selected - spec.offsets
    delta = einsum(acts, spec.w_dec, "... n_sel, n_sel d_in -> ... d_in")
    if spec.scale is not None:
        delta = delta * spec.scale(x_sae)
    return x - delta.to(device=x.device, dtype=x.dtype)


def ablation_cache_id(specs: list[ResolvedAblation]) -> str:
    """What identifies an ablation for the completion cache: hook, SAE weights, features, m_f."""
    parts = [
        f"{spec.hook_name}:{tensor_digest(spec.sae.named_parameters())}:"
        f"{spec.feature_ids.tolist()}:{tensor_digest([('m', spec.offsets)])}:"
        f"{getattr(spec.sae.cfg, 'normalize_activations', 'none')}"
        for spec in specs
    ]
    return "sae_ablation|" + "|".join(parts)


def resolve_ablations(
    model: nn.Module,
    ablations: AblationSpec | nn.Module,
    feature_ids: FeatureIds | None,
    mode: str,
    means: Mapping[str, Tensor] | Tensor | None,
) -> list[ResolvedAblation]:
    """The arguments of [`ablate_features`][lfp_mech.validate.ablation.ablate_features] checked
    (every check before any hook exists) and resolved into one
    [`ResolvedAblation`][lfp_mech.validate.ablation.ResolvedAblation] per hook, which
    [`ablate_activation`][lfp_mech.validate.ablation.ablate_activation] applies."""
    if mode not in ("zero", "mean"):
        raise ConfigError(f"ablation mode must be 'zero' or 'mean', got {mode!r}")
    if isinstance(ablations, nn.Module):
        sae = ablations
        if feature_ids is None:
            raise ConfigError(
                "ablate_features(model, sae, feature_ids): feature_ids is missing; pass the "
                "features to ablate (an empty list ablates nothing)"
            )
        hook_name = getattr(sae.cfg.metadata, "hook_name", None)
        if not hook_name:
            raise ConfigError(
                "the SAE has no cfg.metadata.hook_name; set it (sae.cfg.metadata.hook_name = "
                "'blocks.L.hook_mlp_out') or use the form ablate_features(model, {hook: (sae, ids)})"
            )
        if means is not None and not isinstance(means, Mapping):
            means = {hook_name: means}
        table: dict[str, tuple[nn.Module, FeatureIds]] = {hook_name: (sae, feature_ids)}
    else:
        if feature_ids is not None:
            raise ConfigError(
                "feature_ids is only for the single-SAE form; with a {hook: (sae, ids)} mapping "
                "put the ids in the mapping"
            )
        table = dict(ablations)
    if mode == "mean" and means is None:
        raise ConfigError(
            "mode='mean' needs the features' mean activations: pass means={hook: tensor} "
            "(compute them with lfp_mech.validate.feature_means(model, sae, texts))"
        )
    if means is not None and not isinstance(means, Mapping):
        raise ConfigError("with a {hook: (sae, ids)} mapping, means must be {hook: tensor}")
    return [
        _validate_one(model, name, entry, mode, None if means is None else means.get(name))
        for name, entry in table.items()
    ]


def _validate_one(
    model: nn.Module,
    hook_name: str,
    entry: tuple[nn.Module, FeatureIds],
    mode: str,
    mean: Tensor | None,
) -> ResolvedAblation:
    hook_dict = model.hook_dict
    if hook_name not in hook_dict:
        close = difflib.get_close_matches(hook_name, list(hook_dict), n=3, cutoff=0.5)
        examples = close or [n for n in hook_dict if n.endswith("hook_mlp_out")][:3]
        raise ConfigError(
            f"unknown hook name {hook_name!r} for this model; valid names look like "
            f"{', '.join(repr(n) for n in examples)} (all names: model.hook_dict)"
        )
    if not (isinstance(entry, tuple | list) and len(entry) == 2):
        raise ConfigError(f"ablations[{hook_name!r}] must be a (sae, feature_ids) pair")
    sae, raw_ids = entry
    d_in, width = int(sae.cfg.d_in), _hook_width(model, hook_name)
    if d_in != width:
        raise ConfigError(
            f"SAE d_in={d_in} does not match the width of {hook_name!r} ({width}); use an SAE "
            "trained on this hook of this model"
        )
    return ablation_of(hook_name, sae, raw_ids, mode, mean)


def ablation_of(
    hook_name: str,
    sae: nn.Module,
    raw_ids: FeatureIds,
    mode: str = "zero",
    mean: Tensor | None = None,
) -> ResolvedAblation:
    """The ablation of ``raw_ids`` of ``sae`` at ``hook_name``, without a model: the checks of
    the SAE and the ids, and the decoder rows, offsets, input scale and selected encoder
    gathered once (the hook and its width are ``_validate_one``'s to check)."""
    d_sae = int(sae.cfg.d_sae)
    if getattr(sae.cfg, "reshape_activations", "none") != "none":
        raise ConfigError(
            f"SAEs with reshape_activations={sae.cfg.reshape_activations!r} "
            "(attention hook_z SAEs) are not supported by ablate_features"
        )
    ids = feature_tensor(raw_ids, d_sae, hook_name).to(sae.W_dec.device)
    w_dec = sae.W_dec.detach().index_select(0, ids)
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        # such TopK SAEs encode a_f·||W_dec[f]|| and decode with the unit rows W_dec[f]/||W_dec[f]||
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
    if mode == "zero":
        offsets = torch.zeros(ids.numel(), dtype=w_dec.dtype, device=w_dec.device)
    else:
        if mean is None:
            raise ConfigError(f"mode='mean' but means has no entry for hook {hook_name!r}")
        if tuple(mean.shape) != (d_sae,):
            raise ConfigError(
                f"means[{hook_name!r}] has shape {tuple(mean.shape)}; expected ({d_sae},) = d_sae"
            )
        offsets = mean.detach().to(w_dec.device, w_dec.dtype).index_select(0, ids)
    scale = _input_scale(sae)
    return ResolvedAblation(hook_name, sae, ids, w_dec, offsets, scale, selected_encoder(sae, ids))


_WIDTH_RULES: tuple[tuple[str, str], ...] = (
    (
        r"(hook_resid_(pre|mid|post)|hook_mlp_out|hook_attn_out|hook_embed|hook_pos_embed|"
        r"ln\w*\.hook_normalized)$",
        "d_model",
    ),
    (r"mlp\.hook_(pre|post|pre_linear)$", "d_mlp"),
)


def _hook_width(model: nn.Module, hook_name: str) -> int:
    """Last-dimension width of a hook point: from the name when standard, else one tiny forward."""
    for pattern, attr in _WIDTH_RULES:
        if re.search(pattern, hook_name) and getattr(model.cfg, attr, None):
            return int(getattr(model.cfg, attr))
    seen: dict[str, int] = {}

    def record(activation: Tensor, hook: Any) -> None:  # noqa: ARG001
        seen["width"] = int(activation.shape[-1])

    layer = layer_of_hook(hook_name)
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    tokens = torch.tensor([[bos if bos is not None else 0]], device=model.cfg.device)
    with torch.inference_mode():
        model.run_with_hooks(
            tokens,
            fwd_hooks=[(hook_name, record)],
            stop_at_layer=None if layer is None else layer + 1,
        )
    return seen["width"]


def _input_scale(sae: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """Factor mapping a decoder contribution back to input space for SAEs that normalise inputs.

    SAE-Lens's ``constant_norm_rescale`` decodes ``… / (sqrt(d_in)/||x||)`` and ``layer_norm``
    decodes ``… * std(x)``; with the default ``"none"`` (and the folded
    ``expected_average_only_in``) the decoder rows are already in input space."""
    norm = getattr(sae.cfg, "normalize_activations", "none")
    d_in = int(sae.cfg.d_in)
    if norm == "constant_norm_rescale":
        return lambda x: x.norm(dim=-1, keepdim=True) / math.sqrt(d_in)
    if norm == "layer_norm":
        return lambda x: x.std(dim=-1, keepdim=True)
    if norm in ("none", "expected_average_only_in"):
        return None
    raise ConfigError(
        f"SAE normalize_activations={norm!r} is not supported by ablate_features; fold it into "
        "the weights first (e.g. sae.fold_activation_norm_scaling_factor)"
    )


def feature_means(
    model: nn.Module,
    sae: nn.Module,
    texts: Sequence[str],
    *,
    hook_name: str | None = None,
    batch_size: int = 16,
    max_len: int = 64,
    device: str = "cpu",
) -> Float[Tensor, " d_sae"]:
    """Mean activation of every SAE feature over the tokens of ``texts`` (BOS and padding excluded).

    This is ``m`` of mean ablation. One batched forward per ``batch_size`` texts, stopped after
    the SAE's layer.
    """
    hook_name = hook_name or sae.cfg.metadata.hook_name
    if not hook_name:
        raise ConfigError("the SAE has no cfg.metadata.hook_name; pass hook_name=")
    corpus = tokenize_corpus(model, texts, max_len=max_len)
    total = torch.zeros(int(sae.cfg.d_sae), dtype=torch.float64)
    count = 0
    for _, acts, valid in corpus_batches(model, corpus, [hook_name], batch_size, device=device):
        z = sae.encode(acts[hook_name].to(sae.W_dec.device, sae.W_dec.dtype))
        total += z[valid.to(z.device)].sum(dim=0).double().cpu()
        count += int(valid.sum())
    if count == 0:
        raise ConfigError("feature_means: the texts have no tokens besides BOS; pass real texts")
    return (total / count).to(torch.float32)
