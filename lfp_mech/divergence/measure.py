"""Per-block parameter divergence between a base and a tuned checkpoint, and the top blocks.

For each transformer block ``l``: ``div(l) = Σ_{parameters p of block l} ||θ_base[p] −
θ_tuned[p]||_F``, computed on the checkpoints' own (Hugging Face) ``named_parameters()``; see
the package docstring for why not on TransformerLens's processed weights.
"""

import re
from collections.abc import Mapping

import torch
from jaxtyping import Float
from torch import Tensor

from lfp_mech.divergence.config import DivergenceConfig
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.models.coerce import ModelLike, as_hf_model

__all__ = ["layer_divergence", "parameter_measures", "top_divergent_layers"]


def layer_divergence(
    base: ModelLike,
    tuned: ModelLike,
    config: DivergenceConfig | None = None,
    *,
    seed: int = 0,
) -> Float[Tensor, " n_layers"]:
    """Per block: the sum over its parameters of ``||θ_base − θ_tuned||_F`` (paper definition).

    Args:
        base: an HF causal LM (or ``(hf_model, tokenizer)``), or a name/path that
            [`lfp_mech.models.load_hf_model`][lfp_mech.models.loading.load_hf_model] accepts (e.g.
            ``"smollm2-135m"``).
        tuned: the same for the tuned model (e.g. the RLHF stage's checkpoint directory).
        config: block-name pattern and parameter filter.
        seed: seed of a tiny random test model given by name (the one the tuning started from).

    Returns:
        A float64 tensor with one divergence per block, indexed by layer.

    Raises:
        LfpMechError: the two models have different parameter names or shapes (different
            architectures), or no parameter name matches the block pattern.
    """
    return parameter_measures(base, tuned, config, seed=seed)["parameter"]


def parameter_measures(
    base: ModelLike,
    tuned: ModelLike,
    config: DivergenceConfig | None = None,
    *,
    seed: int = 0,
) -> dict[str, Float[Tensor, " n_layers"]]:
    """Per block: ``"parameter"`` (the paper's Σ_p ||θ_base − θ_tuned||_F, as
    [`layer_divergence`][lfp_mech.divergence.measure.layer_divergence]) and ``"relative"`` (that
    over Σ_p ||θ_base||_F, the block's weight norm), float64. Arguments as for
    ``layer_divergence``."""
    config = config or DivergenceConfig()
    base_params = _named_parameters(base, seed)
    tuned_params = _named_parameters(tuned, seed)
    _check_same_architecture(base_params, tuned_params)
    blocks = _block_index(list(base_params), config)
    n_layers = max(blocks.values()) + 1
    missing = sorted(set(range(n_layers)) - set(blocks.values()))
    if missing:
        raise LfpMechError(
            f"blocks {missing} have no parameters matching {config.block_pattern!r} (found "
            f"indices up to {n_layers - 1}): fix divergence.block_pattern / param_filter"
        )
    divergence = torch.zeros(n_layers, dtype=torch.float64)
    norm = torch.zeros(n_layers, dtype=torch.float64)
    with torch.no_grad():
        for name, layer in blocks.items():
            before = base_params[name].to(config.device, torch.float64)
            diff = before - tuned_params[name].to(config.device, torch.float64)
            divergence[layer] += torch.linalg.vector_norm(diff).cpu()
            norm[layer] += torch.linalg.vector_norm(before).cpu()
    return {"parameter": divergence, "relative": divergence / norm.clamp_min(1e-30)}


def top_divergent_layers(divergence: Float[Tensor, " n_layers"], k: int = 5) -> list[int]:
    """The ``k`` most divergent layers, most divergent first (ties: lower layer first)."""
    n_layers = divergence.shape[0]
    if not 1 <= k <= n_layers:
        raise ConfigError(
            f"k={k} out of range: the model has {n_layers} layers (k in 1–{n_layers})"
        )
    values = divergence.tolist()
    return sorted(range(n_layers), key=lambda layer: (-values[layer], layer))[:k]


def _named_parameters(model: ModelLike, seed: int) -> dict[str, Tensor]:
    hf_model, _ = as_hf_model(model, device=None, seed=seed, need_tokenizer=False)
    return {name: param.detach() for name, param in hf_model.named_parameters()}


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
            f"{names[:3]}): set divergence.block_pattern to a regex whose group 1 is the "
            "block index"
        )
    return blocks
