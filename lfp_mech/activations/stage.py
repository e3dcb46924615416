"""The ``activations`` stage: capture the tuned policy's MLP outputs on its most divergent layers.

Reads the divergence stage's top layers and the RLHF stage's policy; writes ``train/`` and
``heldout/`` (activation stores; held-out texts come from prompts no training text comes from),
with ``base_model`` also ``base_train/`` and ``base_heldout/`` (the base model on the same
tokens), and ``summary.json``.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lfp_mech._io import write_json
from lfp_mech.activations.capture import capture_activations
from lfp_mech.activations.config import PAPER_EXAMPLES_PER_LAYER, ActivationConfig
from lfp_mech.activations.corpus import CorpusSplit, activation_corpus, split_corpus
from lfp_mech.activations.results import HELDOUT_DIR, TRAIN_DIR, store_dir
from lfp_mech.data import load_prompts
from lfp_mech.divergence.results import DivergenceResults
from lfp_mech.errors import LfpMechError
from lfp_mech.rlhf.results import RLHFResults
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

__all__ = ["capture_train_heldout", "run"]

logger = logging.getLogger(__name__)

PROMPT_SET = "reviews"
"""The prompts the policy was tuned on (training split): the corpus and the top-up prompts."""


def run(ctx: StageContext) -> dict[str, Any]:
    """Capture train and held-out activations of the top divergent layers of the tuned policy
    (and, with ``base_model``, of the run's base model on the same tokens)."""
    config: ActivationConfig = ctx.options
    prompts = load_prompts(PROMPT_SET, "train")
    texts = activation_corpus([], prompts, seed=config.seed)
    layers = DivergenceResults(ctx.stage_dir("divergence")).top_layers_sorted
    policy = RLHFResults(ctx.stage_dir("rlhf")).policy_dir
    base = ctx.config.model if config.base_model else None
    summary = capture_train_heldout(
        policy, texts, layers, ctx.dir, config, prompts=prompts, base_model=base
    )
    write_json(ctx.dir / SUMMARY_FILE, summary)
    return summary


def capture_train_heldout(
    model_path: str | os.PathLike[str],
    texts: Sequence[str],
    layers: Sequence[int],
    out_dir: str | os.PathLike[str],
    config: ActivationConfig,
    *,
    prompts: Sequence[str] = (),
    base_model: Any = None,
) -> dict[str, Any]:
    """Capture train and held-out activations of ``layers`` of the model at ``model_path``.

    Texts are split by source prompt and topped up
    ([`split_corpus`][lfp_mech.activations.corpus.split_corpus]: completions to ``prompts``
    sampled from the model when they hold too few tokens). Writes ``out_dir/train/`` and
    ``out_dir/heldout/`` (activation stores); with ``base_model`` (a model name or folder,
    loaded with ``config.seed``), also ``base_train/`` and ``base_heldout/``: the base model's
    activations on exactly the same tokens. Returns the summary."""
    from lfp_mech.devices import torch_dtype
    from lfp_mech.models.loading import hooked_from_hf, load_hf_model

    out_dir = Path(out_dir)
    dtype = torch_dtype(config.dtype)
    hf_model, tokenizer = load_hf_model(model_path, seed=config.seed, dtype=dtype)
    corpus = split_corpus(texts, hf_model, tokenizer, config, prompts=prompts)
    model = hooked_from_hf(hf_model, tokenizer, device=config.device, dtype=dtype)
    del hf_model
    summary = _capture_both(model, corpus, layers, out_dir, config, "tuned")
    summary |= {
        "layers": list(layers),
        "n_sampled_completions": corpus.n_sampled,
        "n_train_prompts": len(corpus.train_prompts),
        "n_heldout_prompts": len(corpus.heldout_prompts),
        "heldout_prompts_disjoint": not set(corpus.train_prompts) & set(corpus.heldout_prompts),
        "target_train_tokens": config.n_tokens,
        "paper_examples_per_layer": PAPER_EXAMPLES_PER_LAYER,
        "base_model": None if base_model is None else str(base_model),
        "config": asdict(config),
    }
    if base_model is not None:
        del model
        base_hf, base_tokenizer = load_hf_model(base_model, seed=config.seed, dtype=dtype)
        base = hooked_from_hf(base_hf, base_tokenizer, device=config.device, dtype=dtype)
        del base_hf
        base_summary = _capture_both(base, corpus, layers, out_dir, config, "base")
        for key in ("n_train_tokens", "n_heldout_tokens"):
            if base_summary.get(key) != summary.get(key):
                raise LfpMechError(
                    f"the base model's capture has {base_summary.get(key)} {key[2:]}, the tuned "
                    f"model's {summary.get(key)}: base and tuned tokenizers differ; set "
                    "activations.base_model = false"
                )
    if summary["n_train_tokens"] < config.n_tokens:
        logger.warning(
            "captured %d training tokens, fewer than the %d asked for: pass more texts or "
            "prompts (top_up samples completions from them)",
            summary["n_train_tokens"],
            config.n_tokens,
        )
    return summary


def _capture_both(
    model: Any,
    corpus: CorpusSplit,
    layers: Sequence[int],
    out_dir: Path,
    config: ActivationConfig,
    which: str,
) -> dict[str, Any]:
    """Capture ``corpus``'s train and held-out texts with ``model`` into ``which``'s stores."""
    train = capture_activations(
        model, corpus.train, layers, out_dir / store_dir(TRAIN_DIR, which), config
    )
    summary: dict[str, Any] = {
        "hook_names": train.hook_names,
        "n_train_tokens": train.n_tokens,
        "n_train_texts": train.meta["n_texts"],
        "model_dtype": train.meta["model_dtype"],
        "store_dtype": train.meta["dtype"],
    }
    if corpus.heldout:
        heldout = capture_activations(
            model,
            corpus.heldout,
            layers,
            out_dir / store_dir(HELDOUT_DIR, which),
            config,
            max_tokens=config.heldout_tokens,
        )
        summary |= {
            "n_heldout_tokens": heldout.n_tokens,
            "n_heldout_texts": heldout.meta["n_texts"],
        }
    return summary
