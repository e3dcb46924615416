"""Save and load SAEs: the one SAE loader of lfp_mech (SAE-Lens folders, never pickle).

Every SAE is a folder SAE-Lens reads with ``sae_lens.SAE.load_from_disk``: ``cfg.json`` (with
``metadata.hook_name``, so it splices into a ``HookedSAETransformer``) and
``sae_weights.safetensors``, plus our ``training.json``.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sae_lens import SAE
from sae_lens.saes.matching_pursuit_sae import MatchingPursuitSAE
from torch import nn

from lfp_mech._io import atomic_dir, write_json
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.saes.matching_pursuit import GramMatchingPursuitSAE

__all__ = ["SAELike", "load_sae", "load_saes", "save_sae"]

SAELike = str | os.PathLike[str] | nn.Module
"""An SAE: a folder written by [`save_sae`][lfp_mech.saes.io.save_sae] (or any SAE-Lens SAE folder),
or an SAE object."""


def save_sae(sae: Any, path: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """Save ``sae`` for inference in SAE-Lens format (atomically) plus ``training.json``
    (a training SAE through ``save_inference_model``, an inference SAE through ``save_model``)."""
    with atomic_dir(path) as tmp:
        save = getattr(sae, "save_inference_model", None) or sae.save_model
        save(tmp)
        write_json(tmp / "training.json", dict(info))
    return Path(path)


def load_sae(path: str | os.PathLike[str], device: str = "cpu") -> SAE:
    """Load an SAE folder (eval mode) with ``sae_lens.SAE.load_from_disk``; a matching-pursuit
    dictionary comes back as [`GramMatchingPursuitSAE`][lfp_mech.saes.matching_pursuit.GramMatchingPursuitSAE]
    (the same weights, SAE-Lens's encoding up to float near-ties, without recomputing every
    match at every step)."""
    path = Path(path)
    if not (path / "cfg.json").is_file():
        raise LfpMechError(
            f"{path} is not an SAE folder (no cfg.json): run the saes stage, or pass the folder "
            "of an SAE-Lens SAE"
        )
    sae = SAE.load_from_disk(str(path), device=device).eval()
    if type(sae) is MatchingPursuitSAE:
        return GramMatchingPursuitSAE.from_sae(sae)
    return sae


def load_saes(
    saes: Mapping[str, SAELike] | Sequence[SAELike], *, device: str = "cpu"
) -> dict[str, SAE]:
    """``{hook_name: SAE}`` from folders or SAE objects, keyed by the hook each one reads.

    With a mapping, its keys are the hooks: an SAE whose ``cfg.metadata.hook_name`` names another
    hook is an error, and one with no hook name gets it. With a sequence, each SAE's own
    ``cfg.metadata.hook_name`` is used.
    """
    items = list(saes.items()) if isinstance(saes, Mapping) else [(None, s) for s in saes]
    loaded: dict[str, SAE] = {}
    for hook, source in items:
        sae = source.eval() if isinstance(source, nn.Module) else load_sae(source, device)
        stored = sae.cfg.metadata.hook_name
        if hook is not None and stored and stored != hook:
            raise ConfigError(f"the SAE {source} was trained on {stored!r}, not on {hook!r}")
        name = hook or stored
        if not name:
            raise ConfigError(
                f"the SAE {source} has no cfg.metadata.hook_name: pass {{hook_name: sae}}"
            )
        sae.cfg.metadata.hook_name = name
        loaded[name] = sae
    if not loaded:
        raise ConfigError("no SAE given")
    return loaded
