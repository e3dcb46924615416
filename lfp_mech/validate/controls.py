"""The control of the ablation table: random features as often active as the ablated ones."""

import random

import numpy as np
from jaxtyping import Float
from torch import Tensor

from lfp_mech.errors import ConfigError
from lfp_mech.validate.feature_ids import FeatureIds, as_id_list, feature_tensor

__all__ = ["matched_random_features"]


def matched_random_features(
    freqs: Float[Tensor, " d_sae"],
    chosen: FeatureIds,
    seed: int = 0,
    *,
    exclude: FeatureIds = (),
) -> list[int]:
    """For each chosen feature, a random other feature with the nearest activation frequency.

    Ablating as many random features, each as often active as the feature it stands for,
    separates "these features matter" from "removing that much activation matters". Picks never
    repeat and never come from ``chosen`` or ``exclude``; ties in frequency are broken at random
    (``seed``), and chosen features are served in random order so none gets first pick
    systematically. Returned in the order of ``chosen``.
    """
    d_sae = freqs.numel()
    feature_tensor(chosen, d_sae, "freqs")  # range check
    chosen_list = as_id_list(chosen)
    banned = set(chosen_list) | set(as_id_list(exclude))
    available = np.array([i for i in range(d_sae) if i not in banned], dtype=np.int64)
    if len(available) < len(set(chosen_list)):
        raise ConfigError(
            f"cannot match {len(set(chosen_list))} features with distinct random features: only "
            f"{len(available)} of d_sae={d_sae} features are not chosen/excluded"
        )
    rng = random.Random(seed)
    f = freqs.detach().double().cpu().numpy()
    unused = np.ones(len(available), dtype=bool)
    picks: dict[int, int] = {}
    order = list(dict.fromkeys(chosen_list))
    rng.shuffle(order)
    for c in order:
        dist = np.abs(f[available] - f[c])
        dist[~unused] = np.inf
        best = np.flatnonzero(dist == dist.min())
        j = int(best[rng.randrange(len(best))])
        unused[j] = False
        picks[c] = int(available[j])
    return [picks[c] for c in chosen_list]
