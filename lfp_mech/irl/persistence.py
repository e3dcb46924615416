"""Save, load and use a trained reward model.

A saved reward model is a folder: ``reward_model.safetensors`` (the trainable tensors, or every
tensor in full mode) and ``config.json`` (base model, mode, blocks, readouts, calibration and the
fingerprint of the frozen weights it was trained on).
[`reward_model_fn`][lfp_mech.irl.persistence.reward_model_fn] turns a reward model into a
``RewardFn`` (texts → rewards), e.g. for IRL-RLHF."""

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lfp_mech._io import atomic_dir, load_tensors, read_json, save_tensors, write_json
from lfp_mech.errors import LfpMechError
from lfp_mech.irl.artifacts import CONFIG_FILE, WEIGHTS_FILE
from lfp_mech.irl.reward_model import RewardModel
from lfp_mech.models.coerce import ModelLike

__all__ = [
    "FORMAT",
    "load_reward_model",
    "reward_model_fn",
    "save_reward_model",
]

FORMAT = "lfp_mech.irl.RewardModel/1"
"""The ``format`` recorded in a saved reward model's ``config.json``."""


def save_reward_model(
    rm: RewardModel, out_dir: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``reward_model.safetensors`` (trainable tensors, or everything in full mode) and
    ``config.json`` (base model, mode, blocks, calibration, frozen-weights fingerprint)."""
    state = {n: p.detach() for n, p in rm.named_parameters() if p.requires_grad}
    cfg = {
        "format": FORMAT,
        "base_model": rm.base_model,
        "architecture": type(rm.backbone).__name__,
        "mode": rm.mode,
        "n_trainable_blocks": rm.n_trainable_blocks,
        "first_trainable_layer": rm.first_trainable_layer,
        "n_layers": rm.readout_layer,
        "context_layer": rm.context_layer,
        "readout_scale": rm.readout_scale.tolist(),
        "d_model": int(rm.backbone.config.hidden_size),
        "max_length": rm.max_length,
        "pooling": rm.pooling,
        "calibration": dict(rm.calibration),
        "frozen_sha256": rm.frozen_fingerprint() if rm.mode == "cached" else None,
        "saved_tensors": sorted(state),
        **dict(extra or {}),
    }
    with atomic_dir(out_dir) as tmp:
        save_tensors(tmp / WEIGHTS_FILE, state, metadata={"format": FORMAT})
        write_json(tmp / CONFIG_FILE, cfg)
    return Path(out_dir)


def load_reward_model(
    path: str | os.PathLike[str], *, device: str = "cpu", base: "ModelLike | None" = None
) -> RewardModel:
    """Rebuild a reward model saved by
    [`save_reward_model`][lfp_mech.irl.persistence.save_reward_model].

    The base model is loaded from the recorded name/path (or ``base`` if given); in cached mode
    its frozen weights must hash to the recorded fingerprint, else this raises
    ([`LfpMechError`][lfp_mech.errors.LfpMechError]) instead of returning a different reward.
    """
    path = Path(path)
    if not (path / CONFIG_FILE).exists() or not (path / WEIGHTS_FILE).exists():
        raise LfpMechError(
            f"{path} is not a saved reward model (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "write one with lfp_mech.irl.save_reward_model"
        )
    cfg = read_json(path / CONFIG_FILE)
    if cfg.get("format") != FORMAT:
        raise LfpMechError(f"{path}/{CONFIG_FILE} has format {cfg.get('format')!r}, not {FORMAT}")
    rm = RewardModel.from_base(
        base if base is not None else cfg["base_model"],
        mode=cfg["mode"],
        n_trainable_blocks=cfg["n_trainable_blocks"],
        max_length=cfg["max_length"],
        pooling=cfg.get("pooling", "last"),
        n_layers=cfg.get("n_layers"),
        context_layer=cfg.get("context_layer"),
        device=device,
    )
    if cfg["mode"] == "cached" and rm.frozen_fingerprint() != cfg["frozen_sha256"]:
        raise LfpMechError(
            f"the frozen weights of base model {cfg['base_model']!r} differ from those the reward "
            f"model in {path} was trained on; pass the original base with load_reward_model("
            "path, base=...)"
        )
    rm.load_trainable_state(load_tensors(path / WEIGHTS_FILE, device=device))
    rm.calibration = {k: float(v) for k, v in cfg["calibration"].items()}
    if "readout_scale" in cfg:
        rm.readout_scale.copy_(torch.tensor(cfg["readout_scale"], dtype=rm.readout_scale.dtype))
    return rm.eval()


def reward_model_fn(
    rm: RewardModel, *, normalize: bool = True, batch_size: int = 16
) -> Callable[[Sequence[str]], Float[Tensor, " batch"]]:
    """The recovered reward as a ``RewardFn`` (texts → float32 CPU tensor), e.g. for RLHF.

    With ``normalize``, rewards are ``(R - threshold) / scale`` (``rm.calibration``: the
    threshold fitted on the training texts and the spread of their rewards), so 0 is the
    fitted decision boundary and the scale is O(1) — the raw max-margin reward has none.
    """
    threshold, scale = rm.calibration["threshold"], rm.calibration["scale"]

    def irl_reward(texts: Sequence[str]) -> Float[Tensor, " batch"]:
        scores = rm.score(list(texts), batch_size=batch_size)
        if normalize:
            scores = (scores - threshold) / scale
        return scores.float().cpu()

    return irl_reward
