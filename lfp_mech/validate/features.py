"""Which features to validate: per hook, the dictionary's most robust features (highest MMCS
between the small and the big SAE) and the features the probe weighs most.

"Weighs most" is measured on standardised weights by default
([`standardized_weights`][lfp_mech.validate.features.standardized_weights]: coefficient × the
feature's standard deviation over the probe's inputs, i.e. how far the feature moves the
prediction). The raw coefficient of a probe fitted on standardised features is coefficient / std,
which ranks rarely active features (tiny std) first."""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lfp_mech.errors import LfpMechError
from lfp_mech.hooks import sort_hooks

__all__ = ["choose_features", "high_mmcs_by_hook", "standardized_weights"]


def choose_features(
    high_mmcs: Mapping[str, Sequence[int]],
    probe_weight: Float[Tensor, " n_features"],
    widths: Mapping[str, int],
    n_per_hook: int,
) -> dict[str, list[int]]:
    """Per hook: the ``n_per_hook`` highest-MMCS features and the ``n_per_hook`` features with
    the largest absolute probe weight.

    Args:
        high_mmcs: ``{hook: feature ids, highest MMCS first}``
            ([`high_mmcs_by_hook`][lfp_mech.validate.features.high_mmcs_by_hook]).
        probe_weight: the probe's weights over the concatenated SAE features (``A_concat``: the
            hooks in model order, [`lfp_mech.hooks.sort_hooks`][lfp_mech.hooks.sort_hooks]).
        widths: ``{hook: d_sae}`` of every SAE the probe reads.

    Returns:
        ``{hook: feature ids}``: the high-MMCS hooks first (in ``high_mmcs`` order), each list
        the highest-MMCS ones alone or, when the hook has probe weights, the sorted union.
    """
    choice = {hook: list(top[:n_per_hook]) for hook, top in high_mmcs.items()}
    offset = 0
    for hook in sort_hooks(widths):  # the probe's concatenation order
        width = int(widths[hook])
        top = probe_weight[offset : offset + width].abs().argsort(descending=True)[:n_per_hook]
        offset += width
        choice[hook] = sorted(set(choice.get(hook, [])) | {int(i) for i in top})
    if offset != probe_weight.numel():
        raise LfpMechError(
            f"probe has {probe_weight.numel()} weights but the SAEs have {offset} features: "
            "were the probes trained on other SAEs? rerun the probes stage (--force probes)"
        )
    return choice


def standardized_weights(
    probe_weight: Float[Tensor, " n_features"], probe_features: Mapping[str, Tensor]
) -> Float[Tensor, " n_features"]:
    """``coefficient × std`` per feature: the probe's raw weights times each feature's standard
    deviation over the probe's inputs (``{hook: Float[n_inputs, d_sae]}``, concatenated in model
    order like ``A_concat``). A feature that never varies on the inputs gets 0."""
    stds = [probe_features[h].detach().double().std(dim=0) for h in sort_hooks(probe_features)]
    std = torch.cat(stds).to(probe_weight.device) if stds else torch.zeros(0)
    if std.numel() != probe_weight.numel():
        raise LfpMechError(
            f"probe has {probe_weight.numel()} weights but its inputs have {std.numel()} features: "
            "rerun the probes stage (--force probes)"
        )
    return probe_weight.double() * torch.nan_to_num(std, nan=0.0)


def high_mmcs_by_hook(high_mmcs_features: Mapping[str, Mapping[str, Any]]) -> dict[str, list[int]]:
    """``{hook: top_features}`` of the saes stage's ``high_mmcs_features.json`` (per layer: the
    hook name and the features with the highest MMCS, highest first), in the file's order."""
    return {
        entry["hook_name"]: [int(f) for f in entry["top_features"]]
        for entry in high_mmcs_features.values()
    }
