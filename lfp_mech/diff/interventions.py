"""Edits of the residual stream, as pure functions ``activation -> activation``.

Each builder returns an [`EditFn`][lfp_mech.diff.residual.EditFn] for
[`residual_hooks`][lfp_mech.diff.residual.residual_hooks]:

* [`ablate_latents`][lfp_mech.diff.interventions.ablate_latents] — in the tuned policy,
  ``x ↦ x − Σ_{f∈F} z_f(x) W_dec[f]`` (error term kept: only those latents' contributions go);
* [`add_latents`][lfp_mech.diff.interventions.add_latents] — in the base model,
  ``x ↦ x + s Σ_{f∈F} m_f W_dec[f]`` with ``m_f`` the latent's mean activation on tuned-policy
  tokens (its average contribution to the tuned model);
* [`project_out`][lfp_mech.diff.interventions.project_out] — ``x ↦ x − (x·û) û`` (the
  difference-of-means baseline removed from the tuned policy);
* [`add_vector`][lfp_mech.diff.interventions.add_vector] — ``x ↦ x + s v`` (the difference of
  means added to the base model);
* [`ablate_sae_features`][lfp_mech.diff.interventions.ablate_sae_features] — an SAE-Lens SAE's
  features, ``x ↦ x − Σ_{f∈F} a_f(x) W_dec[f]`` (the LFP probe's features)."""

import copy
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from lfp_mech.diff.dictionary import DiffDictionary
from lfp_mech.diff.residual import EditFn
from lfp_mech.errors import ConfigError

__all__ = [
    "on_device",
    "ablate_latents",
    "ablate_sae_features",
    "add_latents",
    "add_vector",
    "latent_vector",
    "project_out",
]


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def on_device(module: ModuleT, device: torch.device) -> ModuleT:
    """``module`` itself when its weights are on ``device``, else a moved copy: the dictionaries
    train and are scored on the CPU, while the hooks that use them run on the model's device."""
    weights = next(module.parameters(), None)
    if weights is None or weights.device == device:
        return module
    return copy.deepcopy(module).to(device)


def _placed_rows(
    module: ModuleT, ids: Tensor
) -> Callable[[torch.device], tuple[ModuleT, Tensor, Tensor]]:
    """``at(device) -> (module, ids, W_dec[ids])`` on ``device``, moved there once per device."""
    placed: dict[torch.device, tuple[ModuleT, Tensor, Tensor]] = {}

    def at(device: torch.device) -> tuple[ModuleT, Tensor, Tensor]:
        if device not in placed:
            local, local_ids = on_device(module, device), ids.to(device)
            placed[device] = (local, local_ids, local.W_dec.detach().index_select(0, local_ids))
        return placed[device]

    return at


def _ids(latents: Sequence[int], d_dict: int) -> Tensor:
    ids = torch.as_tensor(sorted({int(f) for f in latents}), dtype=torch.long)
    if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < d_dict):
        raise ConfigError(f"latent ids must be in 0..{d_dict - 1}, got {list(latents)[:10]}")
    return ids


def ablate_latents(dictionary: DiffDictionary, latents: Sequence[int]) -> EditFn:
    """``x ↦ x − Σ_{f∈F} z_f(x) W_dec[f]`` (no latent: ``x`` unchanged)."""
    ids = _ids(latents, dictionary.d_dict)
    at = _placed_rows(dictionary, ids)

    def edit(x: Tensor) -> Tensor:
        if ids.numel() == 0:
            return x
        local, local_ids, w_dec = at(x.device)
        with torch.no_grad():
            z = local.encode(x.to(w_dec.dtype)).index_select(-1, local_ids)
            removed = (z @ w_dec).to(x.dtype)
        # subtracted outside no_grad: gradients flow through x (attribution with latents ablated)
        return x - removed

    return edit


def latent_vector(
    dictionary: DiffDictionary, latents: Sequence[int], mean_acts: Float[Tensor, " d_dict"]
) -> Float[Tensor, " d_model"]:
    """``Σ_{f∈F} m_f W_dec[f]``: the latents' average contribution to the tuned model."""
    ids = _ids(latents, dictionary.d_dict)
    return (mean_acts[ids].unsqueeze(-1) * dictionary.W_dec.detach()[ids]).sum(0)


def add_latents(
    dictionary: DiffDictionary,
    latents: Sequence[int],
    mean_acts: Float[Tensor, " d_dict"],
    scale: float = 1.0,
) -> EditFn:
    """``x ↦ x + scale · Σ_{f∈F} m_f W_dec[f]`` (steering the base model)."""
    return add_vector(latent_vector(dictionary, latents, mean_acts), scale)


def add_vector(vector: Float[Tensor, " d_model"], scale: float = 1.0) -> EditFn:
    """``x ↦ x + scale · v`` at every position."""
    v = vector.detach() * scale

    def edit(x: Tensor) -> Tensor:
        return x + v.to(x.device, x.dtype)

    return edit


def project_out(direction: Float[Tensor, " d_model"]) -> EditFn:
    """``x ↦ x − (x·û) û`` with ``û = direction / ||direction||``."""
    norm = float(direction.norm())
    if norm == 0:
        raise ConfigError("project_out: the direction is zero")
    unit = direction.detach() / norm

    def edit(x: Tensor) -> Tensor:
        u = unit.to(x.device, x.dtype)
        return x - (x @ u).unsqueeze(-1) * u

    return edit


def ablate_sae_features(sae: nn.Module, features: Sequence[int]) -> EditFn:
    """``x ↦ x − Σ_{f∈F} a_f(x) W_dec[f]`` for an SAE-Lens SAE (error term kept)."""
    ids = _ids(features, int(sae.W_dec.shape[0]))
    at = _placed_rows(sae, ids)

    def edit(x: Tensor) -> Tensor:
        if ids.numel() == 0:
            return x
        local, local_ids, w_dec = at(x.device)
        with torch.no_grad():
            a = local.encode(x.to(w_dec.dtype)).index_select(-1, local_ids)
            return x - (a @ w_dec).to(x.dtype)

    return edit
