"""The ``activations`` stage: capture the tuned policy's MLP outputs on its most divergent layers.

Reads the divergence stage's top layers and the RLHF stage's policy; writes ``train/`` and
``heldout/`` (activation stores) and ``summary.json``.
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
from lfp_mech.activations.corpus import activation_corpus, split_corpus
from lfp_mech.activations.results import HELDOUT_DIR, TRAIN_DIR
from lfp_mech.data import load_prompts
from lfp_mech.divergence.results import DivergenceResults
from lfp_mech.rlhf.results import RLHFResults
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

__all__ = ["capture_train_heldout", "run"]

logger = logging.getLogger(__name__)

PROMPT_SET = "reviews"
"""The prompts the policy was tuned on (training split): the corpus and the top-up prompts."""


def run(ctx: StageContext) -> dict[str, Any]:
    """Capture train and held-out activations of the top divergent layers of the tuned policy."""
    config: ActivationConfig = ctx.options
    prompts = load_prompts(PROMPT_SET, "train")
    texts = activation_corpus([], prompts, seed=config.seed)
    layers = DivergenceResults(ctx.stage_dir("divergence")).top_layers_sorted
    policy = RLHFResults(ctx.stage_dir("rlhf")).policy_dir
    summary = capture_train_heldout(policy, texts, layers, ctx.dir, config, prompts=prompts)
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
) -> dict[str, Any]:
    """Capture train and held-out activations of ``layers`` of the model at ``model_path``.

    Texts are shuffled and split ([`split_corpus`][lfp_mech.activations.corpus.split_corpus]; topped
    up with completions to ``prompts`` sampled from the model if they hold too few tokens). Writes
    ``out_dir/train/`` and ``out_dir/heldout/`` (activation stores) and returns the summary."""
    from lfp_mech.devices import torch_dtype
    from lfp_mech.models.loading import hooked_from_hf, load_hf_model

    out_dir = Path(out_dir)
    dtype = torch_dtype(config.dtype)
    hf_model, tokenizer = load_hf_model(model_path, seed=config.seed, dtype=dtype)
    corpus = split_corpus(texts, hf_model, tokenizer, config, prompts=prompts)
    model = hooked_from_hf(hf_model, tokenizer, device=config.device, dtype=dtype)
    train = capture_activations(model, corpus.train, layers, out_dir / TRAIN_DIR, config)
    summary: dict[str, Any] = {
        "hook_names": train.hook_names,
        "layers": list(layers),
        "n_train_tokens": train.n_tokens,
        "n_train_texts": train.meta["n_texts"],
        "n_sampled_completions": corpus.n_sampled,
        "target_train_tokens": config.n_tokens,
        "model_dtype": train.meta["model_dtype"],
        "store_dtype": train.meta["dtype"],
        "paper_examples_per_layer": PAPER_EXAMPLES_PER_LAYER,
        "config": asdict(config),
    }
    if corpus.heldout:
        heldout = capture_activations(
            model,
            corpus.heldout,
            layers,
            out_dir / HELDOUT_DIR,
            config,
            max_tokens=config.heldout_tokens,
        )
        summary |= {
            "n_heldout_tokens": heldout.n_tokens,
            "n_heldout_texts": heldout.meta["n_texts"],
        }
    if train.n_tokens < config.n_tokens:
        logger.warning(
            "captured %d training tokens, fewer than the %d asked for: pass more texts or "
            "prompts (top_up samples completions from them)",
            train.n_tokens,
            config.n_tokens,
        )
    return summary
