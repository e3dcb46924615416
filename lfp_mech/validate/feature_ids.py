"""Feature ids of one SAE: the forms every validate function accepts, checked and converted."""

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from lfp_mech.errors import ConfigError

__all__ = ["FeatureIds", "as_id_list", "feature_tensor"]

FeatureIds = Sequence[int] | Tensor | np.ndarray
"""Feature indices of one SAE: a list/range of ints, a 1-D integer tensor or array."""


def feature_tensor(raw_ids: FeatureIds, d_sae: int, where: str) -> Int[Tensor, " n_sel"]:
    """The distinct ids of ``raw_ids`` (sorted) as a long tensor, each checked to be in
    ``0..d_sae-1``; ``where`` names the SAE in the error."""
    ids = torch.as_tensor(np.asarray(raw_ids.cpu() if isinstance(raw_ids, Tensor) else raw_ids))
    if ids.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.ndim > 1:
        raise ConfigError(f"feature ids for {where!r} must be a 1-D list of integers")
    ids = ids.reshape(-1).long()
    bad = ids[(ids < 0) | (ids >= d_sae)]
    if bad.numel():
        raise ConfigError(
            f"feature id {int(bad[0])} out of range for the SAE at {where!r}: "
            f"valid ids are 0..{d_sae - 1} (d_sae={d_sae})"
        )
    return torch.unique(ids)


def as_id_list(ids: FeatureIds) -> list[int]:
    """``ids`` as a list of Python ints, in their order (duplicates kept)."""
    return [int(i) for i in (ids.tolist() if isinstance(ids, Tensor | np.ndarray) else ids)]
