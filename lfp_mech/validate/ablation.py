"""Validate learned feedback patterns by switching SAE features off while the model runs.

The LFP paper's last check (section 4, Table 6): if the features a probe relies on really carry
the learned feedback pattern, removing them while the fine-tuned model writes should change the
reward its completions earn. This module does that removal exactly and reversibly.

**What an ablation does.** An SAE at hook point ``h`` splits an activation ``x`` into features
``a(x) = sae.encode(x)`` (shape ``d_sae``), a reconstruction ``x̂ = a(x) @ W_dec + b_dec`` and an
error ``ε = x − x̂``. Ablating the feature set ``F`` replaces ``x`` by the reconstruction with
those features set to ``m_f`` *plus the error term*::

    x  ↦  x − Σ_{f∈F} (a_f(x) − m_f) · W_dec[f]

with ``m_f = 0`` (zero ablation, the paper's) or ``m_f`` = the feature's mean activation on a
corpus (mean ablation, :func:`feature_means`). Because the error term is kept, ablating no feature
leaves the model bit-for-bit unchanged, and ablating ``F`` removes exactly those features' decoder
contributions and nothing else — unlike splicing in the bare reconstruction, which also removes
everything the SAE fails to reconstruct. (The paper's released code zeroed residual-stream
*dimensions* instead of SAE features; see REFERENCE.md §C.) Only ``W_dec[F]`` is touched: the
update is one ``einsum`` over the selected features, never a full decode.

**How.** :func:`ablate_features` is a context manager that installs one TransformerLens forward
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

**The validation stage** (:func:`run_validate_stage`, paper section 4):

* feature descriptions with a "related to the fine-tuning task" label (:mod:`lfp_mech.validate.autointerp`);
* Table 7 — :func:`activation_frequency`: how often task-related features are active on the
  probe's inputs that it predicts with ``delta > 3`` (strong positive feedback, as in the
  paper), against the average feature;
* Table 6 — :func:`ablation_table`: mean reward of completions to (≤ 30-token) prefixes, for the
  base and the fine-tuned model, clean / task-related features ablated / the same number of random
  features with matched activation frequency (:func:`matched_random_features`) ablated, with 95%
  confidence intervals (Student t) and the paired difference to the clean run.
"""

import dataclasses
import difflib
import logging
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import einsum
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from lfp_mech._io import save_tensors, write_json
from lfp_mech.errors import ConfigError
from lfp_mech.validate.autointerp import (
    corpus_batches,
    describe_features,
    layer_of_hook,
    tokenize_corpus,
    write_table,
)
from lfp_mech.validate.config import ValidateConfig

logger = logging.getLogger(__name__)

__all__ = [
    "AblationResult",
    "ActivationFrequency",
    "ValidateConfig",
    "ablate_features",
    "ablation_table",
    "activation_frequency",
    "feature_means",
    "generate_with_ablation",
    "matched_random_features",
    "run_validate_stage",
]

FeatureIds = Sequence[int] | Tensor | np.ndarray
"""Feature indices of one SAE: a list/range of ints, a 1-D integer tensor or array."""
AblationSpec = Mapping[str, tuple[nn.Module, FeatureIds]]
"""``{hook_name: (sae, feature_ids)}``: which features of which SAE to ablate at which hook."""


# --------------------------------------------------------------------------- stage config


# --------------------------------------------------------------------------- ablate_features


@dataclass(frozen=True)
class _Ablation:
    """One hook's ablation, validated and with the selected decoder rows gathered once."""

    hook_name: str
    sae: nn.Module
    feature_ids: Int[Tensor, " n_sel"]
    w_dec: Float[Tensor, "n_sel d_in"]
    offsets: Float[Tensor, " n_sel"]  # m_f: 0 (zero mode) or the features' mean activations
    scale: Callable[[Tensor], Tensor] | None  # input-space scale of SAEs that normalise inputs


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
            single-SAE form), e.g. from :func:`feature_means`.

    Yields:
        the model, with the hooks installed; they are removed on exit, also on exceptions.

    Raises:
        ConfigError: unknown hook name, feature id out of range, SAE ``d_in`` different from the
            hook's width, unsupported SAE, mean mode without means, bad mode. (``ConfigError``
            is a ``ValueError``.) All checks run before any hook is installed.
    """
    specs = _resolve(model, ablations, feature_ids, mode, means)
    fwd_hooks = [(spec.hook_name, _make_hook(spec)) for spec in specs]
    with model.hooks(fwd_hooks=fwd_hooks):
        yield model


def _make_hook(spec: _Ablation) -> Callable[[Tensor, Any], Tensor]:
    def hook(activation: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 - TL passes the HookPoint
        return _ablate(activation, spec)

    return hook


def _ablate(x: Float[Tensor, "*batch d_in"], spec: _Ablation) -> Float[Tensor, "*batch d_in"]:
    """``x − (z[..., F] − m_F) @ W_dec[F]`` with ``z = sae.encode(x)`` (F empty: ``x`` itself)."""
    if spec.feature_ids.numel() == 0:
        return x
    sae = spec.sae
    x_sae = x.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype)
    z = sae.encode(x_sae)
    idx = spec.feature_ids.to(z.device)
    acts = z.index_select(-1, idx) - spec.offsets.to(z.device, z.dtype)
    delta = einsum(acts, spec.w_dec.to(z.device, z.dtype), "... n_sel, n_sel d_in -> ... d_in")
    if spec.scale is not None:
        delta = delta * spec.scale(x_sae)
    return x - delta.to(device=x.device, dtype=x.dtype)


def _resolve(
    model: nn.Module,
    ablations: AblationSpec | nn.Module,
    feature_ids: FeatureIds | None,
    mode: str,
    means: Mapping[str, Tensor] | Tensor | None,
) -> list[_Ablation]:
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
            "(compute them with lfp_mech.validate.ablation.feature_means(model, sae, texts))"
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
) -> _Ablation:
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
    d_in, d_sae = int(sae.cfg.d_in), int(sae.cfg.d_sae)
    width = _hook_width(model, hook_name)
    if d_in != width:
        raise ConfigError(
            f"SAE d_in={d_in} does not match the width of {hook_name!r} ({width}); use an SAE "
            f"trained on this hook of this model"
        )
    if getattr(sae.cfg, "reshape_activations", "none") != "none":
        raise ConfigError(
            f"SAEs with reshape_activations={sae.cfg.reshape_activations!r} "
            "(attention hook_z SAEs) are not supported by ablate_features"
        )
    ids = _feature_tensor(raw_ids, d_sae, hook_name)
    w_dec = sae.W_dec.detach().index_select(0, ids.to(sae.W_dec.device))
    if mode == "zero":
        offsets = torch.zeros(ids.numel(), dtype=w_dec.dtype, device=w_dec.device)
    else:
        if mean is None:
            raise ConfigError(f"mode='mean' but means has no entry for hook {hook_name!r}")
        if tuple(mean.shape) != (d_sae,):
            raise ConfigError(
                f"means[{hook_name!r}] has shape {tuple(mean.shape)}; expected ({d_sae},) = d_sae"
            )
        offsets = mean.detach().to(w_dec.device, w_dec.dtype).index_select(0, ids.to(w_dec.device))
    return _Ablation(hook_name, sae, ids, w_dec, offsets, _input_scale(sae))


def _feature_tensor(raw_ids: FeatureIds, d_sae: int, hook_name: str) -> Int[Tensor, " n_sel"]:
    ids = torch.as_tensor(np.asarray(raw_ids.cpu() if isinstance(raw_ids, Tensor) else raw_ids))
    if ids.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.ndim > 1:
        raise ConfigError(f"feature ids for {hook_name!r} must be a 1-D list of integers")
    ids = ids.reshape(-1).long()
    bad = ids[(ids < 0) | (ids >= d_sae)]
    if bad.numel():
        raise ConfigError(
            f"feature id {int(bad[0])} out of range for the SAE at {hook_name!r}: "
            f"valid ids are 0..{d_sae - 1} (d_sae={d_sae})"
        )
    return torch.unique(ids)


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
    decodes ``… * std(x)``; with the default ``"none"`` (and the folded ``expected_average_only_in``)
    the decoder rows are already in input space.
    """
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


# --------------------------------------------------------------------------- helpers for users


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


def generate_with_ablation(
    model: nn.Module,
    prompts: Sequence[str],
    ablations: AblationSpec | None = None,
    *,
    mode: str = "zero",
    means: Mapping[str, Tensor] | None = None,
    max_new_tokens: int = 20,
    temperature: float | int = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    use_past_kv_cache: bool = True,
    stop_at_eos: bool = True,
) -> list[str]:
    """Completions (new text only, prompt excluded) of ``prompts`` with ``ablations`` active.

    ``ablations=None`` (or ``{}``) generates from the clean model. Sampling uses a seed per batch
    (``seed + batch index``) so clean and ablated runs of the same prompts share random numbers
    (common random numbers make their difference less noisy). ``temperature=0`` is greedy.
    Generation stops at EOS (its text is cut there).
    """
    prompts = list(prompts)
    if not prompts:
        raise ConfigError("generate_with_ablation: no prompts given")
    if batch_size < 1 or max_new_tokens < 1:
        raise ConfigError("batch_size and max_new_tokens must be >= 1")
    tokenizer = model.tokenizer
    eos = tokenizer.eos_token_id
    outputs: list[str] = []
    with ablate_features(model, ablations or {}, mode=mode, means=means):
        for b, start in enumerate(range(0, len(prompts), batch_size)):
            batch = prompts[start : start + batch_size]
            n_prompt = model.to_tokens(batch, padding_side="left").shape[1]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + b)
                tokens = model.generate(
                    batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else 1.0,
                    use_past_kv_cache=use_past_kv_cache,
                    stop_at_eos=stop_at_eos,
                    return_type="tokens",
                    verbose=False,
                )
            for row in tokens[:, n_prompt:].tolist():
                if stop_at_eos and eos is not None and eos in row:
                    row = row[: row.index(eos)]
                outputs.append(tokenizer.decode(row, skip_special_tokens=True))
    return outputs


def matched_random_features(
    freqs: Float[Tensor, " d_sae"],
    chosen: FeatureIds,
    seed: int = 0,
    *,
    exclude: FeatureIds = (),
) -> list[int]:
    """For each chosen feature, a random other feature with the nearest activation frequency.

    The control of the ablation table: ablating as many random features, each as often active as
    the feature it stands for, separates "these features matter" from "removing that much
    activation matters". Picks never repeat and never come from ``chosen`` or ``exclude``; ties in
    frequency are broken at random (``seed``), and chosen features are served in random order so
    none gets first pick systematically. Returned in the order of ``chosen``.
    """
    d_sae = freqs.numel()
    _feature_tensor(chosen, d_sae, "freqs")  # range check
    chosen_list = _as_list(chosen)
    banned = set(chosen_list) | set(_as_list(exclude))
    available = np.array([i for i in range(d_sae) if i not in banned], dtype=np.int64)
    if len(available) < len(set(chosen_list)):
        raise ConfigError(
            f"cannot match {len(set(chosen_list))} features with distinct random features: only "
            f"{len(available)} of d_sae={d_sae} features are not chosen/excluded"
        )
    rng = random.Random(seed)
    f = freqs.detach().double().cpu().numpy()
    unused = np.ones(len(available), dtype=bool)
    picks: dict[int, int] = {}
    order = list(dict.fromkeys(chosen_list))
    rng.shuffle(order)
    for c in order:
        dist = np.abs(f[available] - f[c])
        dist[~unused] = np.inf
        best = np.flatnonzero(dist == dist.min())
        j = int(best[rng.randrange(len(best))])
        unused[j] = False
        picks[c] = int(available[j])
    return [picks[c] for c in chosen_list]


# --------------------------------------------------------------------------- Table 7


@dataclass(frozen=True)
class ActivationFrequency:
    """Table 7: how often features are active on the selected inputs."""

    per_feature: Float[Tensor, " d_sae"]
    """Share of the selected inputs on which each feature is active."""
    task_related: float
    """Mean share over the task-related (given) features."""
    all_features: float
    """Mean share over all features (the paper's "average feature")."""
    alive_features: float
    """Mean share over features active on at least one input (dead features excluded)."""
    n_selected: int
    """Number of selected inputs."""

    @property
    def ratio(self) -> float:
        """task_related / all_features (the paper saw 2–3x)."""
        return self.task_related / self.all_features if self.all_features > 0 else math.nan


def activation_frequency(
    feature_acts: Float[Tensor, "n_inputs d_sae"],
    feature_ids: FeatureIds,
    selected_inputs_mask: Bool[Tensor, " n_inputs"],
    *,
    threshold: float | int = 0.0,
) -> ActivationFrequency:
    """Share of the selected inputs on which each feature is active (activation > ``threshold``).

    The paper's inputs are the probe's inputs and the selection is "probe-predicted delta > 3"
    (``selected_inputs_mask = probe_predictions > 3``); ``feature_ids`` are the task-related
    features. Raises ``ConfigError`` if no input is selected.
    """
    n_inputs, d_sae = feature_acts.shape
    if selected_inputs_mask.shape[0] != n_inputs:
        raise ConfigError(
            f"selected_inputs_mask has {selected_inputs_mask.shape[0]} entries for {n_inputs} inputs"
        )
    n_selected = int(selected_inputs_mask.sum())
    if n_selected == 0:
        raise ConfigError(
            "activation_frequency: no input is selected (mask is all False); "
            "lower the delta threshold or pass more inputs"
        )
    ids = _feature_tensor(feature_ids, d_sae, "feature_acts")
    active = (feature_acts[selected_inputs_mask.to(feature_acts.device)] > threshold).float()
    share = active.mean(dim=0).cpu()
    alive = (feature_acts > threshold).any(dim=0).cpu()
    return ActivationFrequency(
        per_feature=share,
        task_related=float(share[ids].mean()) if ids.numel() else math.nan,
        all_features=float(share.mean()),
        alive_features=float(share[alive].mean()) if alive.any() else 0.0,
        n_selected=n_selected,
    )


# --------------------------------------------------------------------------- Table 6


@dataclass
class AblationResult:
    """Table 6: mean reward per (model, condition), with CIs, and what was ablated."""

    rows: list[dict[str, Any]]
    """One row per (model, condition): model, condition, n_features, n, mean_reward, ci_low,
    ci_high, delta_vs_clean, delta_ci_low, delta_ci_high."""
    features: dict[str, dict[str, list[int]]]
    """condition -> hook -> ablated feature ids."""
    completions: dict[str, dict[str, list[str]]]
    """model -> condition -> completions (in prompt order)."""
    rewards: dict[str, dict[str, list[float]]]
    """model -> condition -> rewards of the completions."""
    prompts: list[str]
    """The prompt of each completion (the same for every cell)."""


def ablation_table(
    models: Mapping[str, nn.Module],
    saes: Mapping[str, nn.Module],
    task_features: Mapping[str, FeatureIds],
    reward: Callable[[Sequence[str]], Tensor] | str,
    prompts: Sequence[str],
    *,
    n_completions: int = 96,
    freqs: Mapping[str, Tensor] | None = None,
    random_features: Mapping[str, FeatureIds] | None = None,
    exclude: Mapping[str, FeatureIds] | None = None,
    mode: str = "zero",
    means: Mapping[str, Tensor] | None = None,
    max_new_tokens: int = 20,
    temperature: float | int = 1.0,
    batch_size: int = 16,
    confidence: float = 0.95,
    seed: int = 0,
) -> AblationResult:
    """Mean reward of completions, clean vs task features ablated vs matched random features ablated.

    Args:
        models: ``{"base": model, "tuned": model}`` (any names); the same SAE features are
            ablated in each (the SAEs were trained on the tuned model, as in the paper).
        saes: ``{hook_name: sae}``.
        task_features: ``{hook_name: feature ids}`` to ablate (the task-related features).
        reward: a reward function ``texts -> Float[Tensor, "batch"]`` or its name
            (:func:`lfp_mech.rewards.get_reward`). It scores the completion text only, so the
            prompt (identical in every cell) adds nothing.
        prompts: prefixes, cycled (after a seeded shuffle) to make ``n_completions``.
        freqs: ``{hook_name: activation frequency of every feature}`` to draw the matched random
            control with :func:`matched_random_features`; or give ``random_features`` directly.
        exclude: features never used as random controls (default: ``task_features``).
        mode: ``"zero"`` or ``"mean"``, as in :func:`ablate_features`.
        means: mean mode only: ``{hook_name: mean feature activations}``, as in
            :func:`ablate_features`.

    Returns:
        :class:`AblationResult`; conditions are ``"clean"``, ``"task"`` and ``"random"``.
        Intervals: Student t at ``confidence`` for the means, and for the paired difference to
        the clean completions of the same prompts and seeds.
    """
    if not models:
        raise ConfigError("ablation_table: no models given")
    if not prompts:
        raise ConfigError("ablation_table: no prompts given")
    unknown = set(task_features) - set(saes)
    if unknown:
        raise ConfigError(f"task_features names hooks without an SAE: {sorted(unknown)}")
    reward_fn = _reward_fn(reward)
    if random_features is None:
        if freqs is None:
            raise ConfigError(
                "ablation_table needs freqs={hook: per-feature activation frequency} to draw the "
                "matched random control (e.g. from autointerp.scan_features), or random_features="
            )
        random_features = {
            hook: matched_random_features(
                freqs[hook], ids, seed + i, exclude=(exclude or {}).get(hook, ())
            )
            for i, (hook, ids) in enumerate(task_features.items())
        }
    conditions: dict[str, dict[str, list[int]]] = {
        "clean": {},
        "task": {h: _as_list(ids) for h, ids in task_features.items()},
        "random": {h: _as_list(ids) for h, ids in random_features.items()},
    }
    order = list(prompts)
    random.Random(seed).shuffle(order)
    used = [order[i % len(order)] for i in range(n_completions)]
    rows: list[dict[str, Any]] = []
    completions: dict[str, dict[str, list[str]]] = {}
    rewards: dict[str, dict[str, list[float]]] = {}
    for model_name, model in models.items():
        completions[model_name], rewards[model_name] = {}, {}
        for condition, features in conditions.items():
            spec = {h: (saes[h], ids) for h, ids in features.items()}
            logger.info(
                "ablation table: %s / %s (%d completions)", model_name, condition, len(used)
            )
            texts = generate_with_ablation(
                model,
                used,
                spec,
                mode=mode,
                means=means,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
                batch_size=batch_size,
            )
            scores = reward_fn(texts).detach().double().cpu().numpy()
            completions[model_name][condition] = texts
            rewards[model_name][condition] = [float(s) for s in scores]
            clean = np.asarray(rewards[model_name]["clean"])
            mean, lo, hi = _t_interval(scores, confidence)
            d_mean, d_lo, d_hi = _t_interval(scores - clean, confidence)
            rows.append(
                {
                    "model": model_name,
                    "condition": condition,
                    "n_features": sum(len(v) for v in features.values()),
                    "n": len(scores),
                    "mean_reward": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "delta_vs_clean": d_mean,
                    "delta_ci_low": d_lo,
                    "delta_ci_high": d_hi,
                }
            )
    return AblationResult(rows, conditions, completions, rewards, used)


def _reward_fn(
    reward: Callable[[Sequence[str]], Tensor] | str,
) -> Callable[[Sequence[str]], Tensor]:
    if isinstance(reward, str):
        from lfp_mech.rewards import get_reward

        return get_reward(reward)
    return reward


def _as_list(ids: FeatureIds) -> list[int]:
    return [int(i) for i in (ids.tolist() if isinstance(ids, Tensor | np.ndarray) else ids)]


def _t_interval(values: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval (nan bounds with fewer than 2 values)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    sem = float(stats.sem(values))
    if sem == 0.0:
        return mean, mean, mean
    lo, hi = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return mean, float(lo), float(hi)


# --------------------------------------------------------------------------- the stage


def run_validate_stage(
    base_model_path: str | os.PathLike[str] | nn.Module,
    tuned_model_path: str | os.PathLike[str] | nn.Module,
    sae_dirs: Mapping[str, str | os.PathLike[str] | nn.Module]
    | Sequence[str | os.PathLike[str] | nn.Module],
    feature_choice: Mapping[str, FeatureIds],
    corpus_texts: Sequence[str],
    prompts: Sequence[str],
    out_dir: str | os.PathLike[str],
    config: ValidateConfig,
    *,
    probe_acts: Mapping[str, Tensor] | None = None,
    probe_predictions: Float[Tensor, " n_inputs"] | None = None,
) -> dict[str, Any]:
    """The ``validate`` stage: feature descriptions, Table 7 and Table 6, written to ``out_dir``.

    Args:
        base_model_path: the base model: a model name / local checkpoint dir (anything
            :func:`lfp_mech.models.load_model` takes), or a loaded ``HookedTransformer``.
        tuned_model_path: the fine-tuned model, in the same forms.
        sae_dirs: SAE-Lens SAE folders (or SAE objects), as ``{hook_name: dir}`` or a list (hook
            names from each SAE's ``cfg.metadata.hook_name``).
        feature_choice: ``{hook_name: feature ids}`` to explain and validate (high-MMCS features
            and/or the probe's top-weighted features).
        corpus_texts: texts for top-activating contexts and activation frequencies.
        prompts: prefixes for the ablation table (cut to ``config.prefix_tokens`` tokens).
        probe_acts: the probe's inputs ``{hook: Float[n_inputs, d_sae]}`` (one entry per SAE
            hook; the pipeline passes :func:`lfp_mech.probes.load_probe_inputs` ``.features``).
            With ``probe_predictions``, Table 7 uses the inputs with predicted ``delta >
            config.delta_threshold`` (the paper). If none passes, Table 7 says so (0 selected
            inputs, NaN shares, a warning); it does not fall back to other inputs. Without probe
            inputs Table 7 uses corpus tokens that are VADER words with ``|valence| >=
            config.autointerp.sentiment_word_threshold``.
        probe_predictions: the probe's predicted delta (normalised to [-4, 4]) of each of
            ``probe_acts``' inputs.

    Writes: ``descriptions.{csv,md}``, ``top_contexts.json``, ``activation_frequency.{csv,md}``,
    ``ablation.{csv,md,png}``, ``completions.json``, ``features.json``,
    ``feature_frequencies.safetensors``, ``summary.json``. Returns the summary dict.
    """
    from lfp_mech.plots import save_figure
    from lfp_mech.plots.validate import ablation_figure, activation_frequency_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (probe_acts is None) != (probe_predictions is None):
        raise ConfigError("pass probe_acts and probe_predictions together (or neither)")
    tuned = _load(tuned_model_path, config)
    base = _load(base_model_path, config)
    saes = _load_saes(sae_dirs, config.device)
    missing = set(feature_choice) - set(saes)
    if missing:
        raise ConfigError(
            f"feature_choice names hooks without an SAE: {sorted(missing)}; "
            f"SAEs are at {sorted(saes)}"
        )
    choice = {h: _as_list(ids) for h, ids in feature_choice.items()}

    # 1. descriptions (on the tuned model, whose activations the SAEs were trained on)
    described = describe_features(tuned, saes, choice, corpus_texts, config.autointerp)
    write_table(described.rows, out / "descriptions")
    write_json(out / "top_contexts.json", described.contexts_json())
    task_related = {h: ids for h, ids in described.task_related().items() if ids}
    if config.ablate == "chosen" or not task_related:
        if config.ablate == "task_related":
            logger.warning("no chosen feature is labelled task-related; ablating all chosen ones")
        ablated, ablated_set = choice, "chosen"
    else:
        ablated, ablated_set = task_related, "task_related"

    # 2. Table 7
    freq_rows = _frequency_rows(
        described, choice, task_related, config, probe_acts, probe_predictions
    )
    write_table(freq_rows, out / "activation_frequency")
    save_figure(activation_frequency_figure(freq_rows), out / "activation_frequency.png")

    # 3. Table 6
    means = None
    if config.mode == "mean":
        means = {h: described.scans[h].mean_activation for h in ablated}
    short_prompts = _truncate_prompts(tuned, prompts, config.prefix_tokens)
    result = ablation_table(
        {"base": base, "tuned": tuned},
        saes,
        ablated,
        config.reward,
        short_prompts,
        n_completions=config.n_completions,
        freqs={h: described.scans[h].frequency for h in ablated},
        exclude=choice,
        mode=config.mode,
        means=means,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        batch_size=config.gen_batch_size,
        confidence=config.confidence,
        seed=config.seed,
    )
    write_table(result.rows, out / "ablation")
    save_figure(ablation_figure(result.rows, confidence=config.confidence), out / "ablation.png")
    n_keep = config.n_examples_saved
    write_json(
        out / "completions.json",
        {
            "prompts": result.prompts[:n_keep],
            "completions": {
                m: {c: t[:n_keep] for c, t in cs.items()} for m, cs in result.completions.items()
            },
            "rewards": result.rewards,
        },
    )
    write_json(
        out / "features.json",
        {"chosen": choice, "ablated_set": ablated_set, "ablated": result.features},
    )
    save_tensors(
        out / "feature_frequencies.safetensors",
        {h: s.frequency for h, s in described.scans.items()},
        {"what": "share of corpus tokens (BOS excluded) on which each feature is active"},
    )
    summary = _summary(described, result, freq_rows, ablated_set, config)
    write_json(out / "summary.json", summary)
    return summary


def _load(model: str | os.PathLike[str] | nn.Module, config: ValidateConfig) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    from lfp_mech.models import load_model

    return load_model(model, device=config.device, seed=config.seed)


def _load_saes(
    sae_dirs: Mapping[str, str | os.PathLike[str] | nn.Module]
    | Sequence[str | os.PathLike[str] | nn.Module],
    device: str,
) -> dict[str, nn.Module]:
    items = (
        list(sae_dirs.items()) if isinstance(sae_dirs, Mapping) else [(None, d) for d in sae_dirs]
    )
    saes: dict[str, nn.Module] = {}
    for hook, source in items:
        if isinstance(source, nn.Module):
            sae = source
        else:
            from sae_lens import SAE

            if not Path(source).is_dir():
                raise ConfigError(
                    f"SAE folder {source} does not exist (expected cfg.json and "
                    "sae_weights.safetensors from the SAE stage)"
                )
            sae = SAE.load_from_disk(str(source), device=device)
        name = hook or sae.cfg.metadata.hook_name
        if not name:
            raise ConfigError(
                f"SAE {source} has no cfg.metadata.hook_name; pass sae_dirs as {{hook_name: dir}}"
            )
        saes[name] = sae.eval()
    if not saes:
        raise ConfigError("run_validate_stage: no SAE given")
    return saes


def _truncate_prompts(model: nn.Module, prompts: Sequence[str], n_tokens: int) -> list[str]:
    tokenizer = model.tokenizer
    out = []
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False).input_ids
        out.append(p if len(ids) <= n_tokens else tokenizer.decode(ids[:n_tokens]))
    return out


def _frequency_rows(
    described: Any,
    choice: Mapping[str, list[int]],
    task_related: Mapping[str, list[int]],
    config: ValidateConfig,
    probe_acts: Mapping[str, Tensor] | None,
    probe_predictions: Tensor | None,
) -> list[dict[str, Any]]:
    """Table 7 rows: per hook and feature group, mean share of the selected inputs where active.

    With probe inputs: those with ``predicted delta > delta_threshold`` (the paper); if none
    passes, the shares are NaN and ``n_inputs`` is 0 (with a warning), never other inputs.
    Without: corpus tokens of VADER words with ``|valence| >= sentiment_word_threshold``.
    ``source``/``inputs`` say which inputs were used, ``n_inputs`` how many were selected out of
    ``n_inputs_total``; ``active_share_all_inputs`` is the share over all of them.
    """
    use_probe = probe_acts is not None and probe_predictions is not None
    if use_probe:
        predictions = probe_predictions.detach().float().cpu().reshape(-1)
        mask = predictions > config.delta_threshold
        n_selected, n_total = int(mask.sum()), int(predictions.numel())
        inputs = (
            f"probe inputs with predicted delta > {config.delta_threshold:g}: "
            f"{n_selected} of {n_total}"
        )
        if n_selected == 0:
            logger.warning(
                "Table 7: none of the %d probe inputs has predicted delta > %g (max %.3g); "
                "its active shares are NaN",
                n_total,
                config.delta_threshold,
                float(predictions.max()) if n_total else math.nan,
            )
        else:
            logger.info("Table 7: %s", inputs)
    rows = []
    for hook, scan in described.scans.items():
        d_sae = scan.frequency.numel()
        if use_probe:
            if hook not in probe_acts:
                raise ConfigError(
                    f"probe_acts has no features for {hook!r} (has {sorted(probe_acts)}); "
                    "Table 7 needs the probe inputs of every SAE hook"
                )
            acts = probe_acts[hook].detach().float().cpu()
            if tuple(acts.shape) != (n_total, d_sae):
                raise ConfigError(
                    f"probe_acts[{hook!r}] has shape {tuple(acts.shape)}; expected "
                    f"({n_total}, {d_sae}) = (inputs with a prediction, d_sae)"
                )
            source = "probe inputs"
            everything = torch.ones(n_total, dtype=torch.bool)
            overall = activation_frequency(acts, [], everything).per_feature
            if n_selected:
                share = activation_frequency(acts, [], mask).per_feature
            else:
                share = torch.full((d_sae,), math.nan)
            n_inputs, n_all = n_selected, n_total
        else:
            threshold = config.autointerp.sentiment_word_threshold
            source = "corpus tokens"
            inputs = f"corpus tokens of VADER words with |valence| >= {threshold:g}"
            share, overall = scan.frequency_selected, scan.frequency
            n_inputs, n_all = scan.n_selected, scan.n_tokens
        average = float(share.mean())
        groups = [
            ("task-related", task_related.get(hook, [])),
            ("chosen", choice.get(hook, [])),
            ("all features", list(range(d_sae))),
        ]
        for group, ids in groups:
            if not ids:
                continue
            value = float(share[ids].mean())
            rows.append(
                {
                    "hook": hook,
                    "layer": layer_of_hook(hook),
                    "group": group,
                    "n_features": len(ids),
                    "source": source,
                    "inputs": inputs,
                    "n_inputs": n_inputs,
                    "n_inputs_total": n_all,
                    "active_share": value,
                    "ratio_to_average": value / average if average > 0 else math.nan,
                    "active_share_all_inputs": float(overall[ids].mean()),
                }
            )
    return rows


def _summary(
    described: Any,
    result: AblationResult,
    freq_rows: list[dict[str, Any]],
    ablated_set: str,
    config: ValidateConfig,
) -> dict[str, Any]:
    cells = {f"{r['model']}/{r['condition']}": round(r["mean_reward"], 4) for r in result.rows}
    deltas = {
        f"{r['model']}/{r['condition']}": [
            round(r["delta_ci_low"], 4),
            round(r["delta_ci_high"], 4),
        ]
        for r in result.rows
        if r["condition"] != "clean"
    }
    ratios = {
        f"{r['hook']}/{r['group']}": round(r["ratio_to_average"], 3)
        for r in freq_rows
        if r["group"] != "all features"
    }
    first = freq_rows[0] if freq_rows else {}
    return {
        "n_features_described": len(described.rows),
        "n_task_related": sum(bool(r["task_related"]) for r in described.rows),
        "llm_descriptions": described.used_llm,
        "ablated_set": ablated_set,
        "n_ablated": sum(len(v) for v in result.features["task"].values()),
        "mode": config.mode,
        "reward": config.reward,
        "n_completions": config.n_completions,
        "mean_reward": cells,
        "delta_vs_clean_ci": deltas,
        "activation_frequency_ratio": ratios,
        "activation_frequency_inputs": {
            "source": first.get("source"),
            "inputs": first.get("inputs"),
            "n_selected": first.get("n_inputs"),
            "n_total": first.get("n_inputs_total"),
        },
        "config": dataclasses.asdict(config),
    }
