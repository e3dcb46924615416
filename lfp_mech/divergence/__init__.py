"""Which transformer blocks did RLHF change most? Per-layer parameter divergence.

The LFP paper (Marks et al. 2024, section 3.1 / appendix A.2) trains its sparse autoencoders
only on the MLP layers the fine-tuning moved the most. For each transformer block ``l``::

    div(l) = Σ_{parameters p of block l} || θ_base[p] − θ_tuned[p] ||_F

(the Frobenius norm of each parameter's difference, summed over the block's parameters), and
the ``k = 5`` blocks with the largest ``div`` are kept (paper: mostly deep layers — Pythia-70m
1–5, Pythia-160m 7–11, GPT-Neo-125m 7–11).

Why the unprocessed Hugging Face weights and not TransformerLens's: ``HookedTransformer``
folds every LayerNorm/RMSNorm scale into the next linear layer and centres the weights that
write to the residual stream. After folding, block ``l``'s ``W_Q``/``W_in`` carry the norm scale
that lives in block ``l``'s own norm module, the unembedding carries the final norm, and
centring subtracts a per-matrix mean. A change in one HF parameter (a norm weight) then shows up
in other matrices, and two models that differ only by a residual-direction shift can differ
after centring. The paper's definition is about the parameters that were trained, so we
compare exactly those: the checkpoints' own ``named_parameters()``.

Block indices are read from parameter names generically (``model.layers.3.mlp...`` for
Llama/Gemma, ``gpt_neox.layers.3...`` for Pythia, ``transformer.h.3...`` for GPT-2/GPT-Neo), so
any HF causal LM works. Parameters outside blocks (embeddings, final norm, unembedding) are not
part of any layer's divergence.

Typical use::

    div = layer_divergence("smollm2-135m", "runs/default/rlhf/policy")
    top_divergent_layers(div, k=5)   # -> e.g. [29, 28, 27, 26, 25]
"""

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import PreTrainedModel

from lfp_mech._io import save_tensors, write_json, write_text
from lfp_mech.divergence.config import DEFAULT_BLOCK_PATTERN, DivergenceConfig
from lfp_mech.errors import ConfigError, LfpMechError

logger = logging.getLogger(__name__)

ModelLike = PreTrainedModel | str | os.PathLike[str]


def layer_divergence(
    base: ModelLike, tuned: ModelLike, config: DivergenceConfig | None = None
) -> Float[Tensor, " n_layers"]:
    """Per block: the sum over its parameters of ``||θ_base − θ_tuned||_F`` (paper definition).

    Args:
        base: an HF causal LM, or a name/path that :func:`lfp_mech.models.load_hf_model`
            accepts (e.g. ``"smollm2-135m"``).
        tuned: the same for the tuned model (e.g. the RLHF stage's checkpoint directory).
        config: block-name pattern and parameter filter.

    Returns:
        A float64 tensor with one divergence per block, indexed by layer.

    Raises:
        LfpMechError: the two models have different parameter names or shapes (different
            architectures), or no parameter name matches the block pattern.
    """
    config = config or DivergenceConfig()
    base_params = _named_parameters(base)
    tuned_params = _named_parameters(tuned)
    _check_same_architecture(base_params, tuned_params)
    blocks = _block_index(list(base_params), config)
    n_layers = max(blocks.values()) + 1
    missing = sorted(set(range(n_layers)) - set(blocks.values()))
    if missing:
        raise LfpMechError(
            f"blocks {missing} have no parameters matching {config.block_pattern!r} (found "
            f"indices up to {n_layers - 1}): fix DivergenceConfig.block_pattern/param_filter"
        )
    divergence = torch.zeros(n_layers, dtype=torch.float64)
    with torch.no_grad():
        for name, layer in blocks.items():
            diff = base_params[name].to(config.device, torch.float64) - tuned_params[name].to(
                config.device, torch.float64
            )
            divergence[layer] += torch.linalg.vector_norm(diff).cpu()
    return divergence


def top_divergent_layers(divergence: Float[Tensor, " n_layers"], k: int = 5) -> list[int]:
    """The ``k`` most divergent layers, most divergent first (ties: lower layer first)."""
    n_layers = divergence.shape[0]
    if not 1 <= k <= n_layers:
        raise ConfigError(
            f"k={k} out of range: the model has {n_layers} layers (k in 1–{n_layers})"
        )
    values = divergence.tolist()
    return sorted(range(n_layers), key=lambda layer: (-values[layer], layer))[:k]


def run_divergence_stage(
    base: ModelLike, tuned: ModelLike, out_dir: Path, config: DivergenceConfig | None = None
) -> dict[str, Any]:
    """Compute the divergence, select the top layers and write the stage's artifacts.

    Writes to ``out_dir``: ``divergence.safetensors`` (tensor ``divergence``),
    ``divergence.csv`` / ``divergence.md`` (layer, divergence, rank), ``divergence.png``,
    ``summary.json`` (top layers, most divergent first and sorted).

    Returns the summary dict.
    """
    from lfp_mech.plots import save_figure
    from lfp_mech.plots.divergence import plot_layer_divergence

    config = config or DivergenceConfig()
    out_dir = Path(out_dir)
    divergence = layer_divergence(base, tuned, config)
    top = top_divergent_layers(divergence, min(config.top_k, divergence.shape[0]))
    if float(divergence.max()) == 0.0:
        logger.warning("the two models are identical: every layer has divergence 0")
    save_tensors(out_dir / "divergence.safetensors", {"divergence": divergence})
    rank = {
        layer: i + 1 for i, layer in enumerate(top_divergent_layers(divergence, len(divergence)))
    }
    rows = [(layer, float(value), rank[layer]) for layer, value in enumerate(divergence.tolist())]
    write_text(
        out_dir / "divergence.csv",
        "layer,divergence,rank\n" + "".join(f"{layer},{v:.6g},{r}\n" for layer, v, r in rows),
    )
    write_text(
        out_dir / "divergence.md",
        "| layer | divergence | rank |\n|---:|---:|---:|\n"
        + "".join(
            f"| {layer} | {v:.4g} | {r}{' *' if layer in top else ''} |\n" for layer, v, r in rows
        ),
    )
    figure = plot_layer_divergence({"tuned vs base": divergence}, top_layers=top)
    save_figure(figure, out_dir / "divergence.png")
    summary = {
        "top_layers": top,
        "top_layers_sorted": sorted(top),
        "n_layers": int(divergence.shape[0]),
        "max_divergence": float(divergence.max()),
        "total_divergence": float(divergence.sum()),
        "top_divergence": [float(divergence[layer]) for layer in top],
        "config": asdict(config),
    }
    write_json(out_dir / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------- helpers


def _named_parameters(model: ModelLike) -> dict[str, Tensor]:
    if not isinstance(model, PreTrainedModel):
        from lfp_mech.models import load_hf_model

        model, _ = load_hf_model(model)
    return {name: param.detach() for name, param in model.named_parameters()}


def _check_same_architecture(base: Mapping[str, Tensor], tuned: Mapping[str, Tensor]) -> None:
    only_base = sorted(set(base) - set(tuned))
    only_tuned = sorted(set(tuned) - set(base))
    if only_base or only_tuned:
        raise LfpMechError(
            "the two models have different architectures: parameters only in base "
            f"{only_base[:5]}{'...' if len(only_base) > 5 else ''}, only in tuned "
            f"{only_tuned[:5]}{'...' if len(only_tuned) > 5 else ''}. Compare a tuned model "
            "with the base model it was fine-tuned from."
        )
    shapes = [
        f"{name}: {tuple(base[name].shape)} vs {tuple(tuned[name].shape)}"
        for name in base
        if base[name].shape != tuned[name].shape
    ]
    if shapes:
        raise LfpMechError(
            f"the two models have different parameter shapes ({'; '.join(shapes[:3])}): "
            "compare a tuned model with the base model it was fine-tuned from."
        )


def _block_index(names: list[str], config: DivergenceConfig) -> dict[str, int]:
    pattern = re.compile(config.block_pattern)
    keep = re.compile(config.param_filter) if config.param_filter else None
    blocks = {}
    for name in names:
        match = pattern.search(name)
        if match and (keep is None or keep.search(name)):
            blocks[name] = int(match.group(1))
    if not blocks:
        raise LfpMechError(
            f"no parameter name matches block_pattern {config.block_pattern!r}"
            f"{f' and param_filter {config.param_filter!r}' if keep else ''} (e.g. "
            f"{names[:3]}): set DivergenceConfig.block_pattern to a regex whose group 1 is the "
            "block index"
        )
    return blocks
