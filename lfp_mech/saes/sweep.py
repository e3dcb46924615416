"""The L1-coefficient sweep (the paper's appendix figure): reconstruction and L0 against α."""

from collections.abc import Sequence
from typing import Any

from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from lfp_mech.activations.store import ActivationStore
from lfp_mech.errors import ConfigError
from lfp_mech.saes.config import SAEConfig
from lfp_mech.saes.metrics import sae_metrics
from lfp_mech.saes.training import store_batches, tensor_batches, train_sae

__all__ = ["SWEEP_COLUMNS", "l1_sweep"]

SWEEP_COLUMNS = ["alpha", "sae_lens_l1_coefficient", "nmse", "fvu", "l0", "dead_fraction"]
"""The columns of the stage's ``l1_sweep`` table."""


def l1_sweep(
    train: ActivationStore | Float[Tensor, "n d_in"],
    heldout_acts: Float[Tensor, "m d_in"],
    alphas: Sequence[float],
    config: SAEConfig | None = None,
    *,
    hook: str | None = None,
    tied: bool | None = None,
    expansion_factor: int | None = None,
) -> list[dict[str, Any]]:
    """Train one L1 SAE per α (whatever ``config.architecture``) and measure reconstruction and
    L0 on held-out activations.

    The paper's appendix figure (reconstruction loss and "true sparsity" vs α, Pythia-70m).

    Args:
        train: an activation store (with ``hook``) or a tensor of training activations.
        heldout_acts: activations to measure on.
        alphas: α values (per-element-MSE units, see [`lfp_mech.saes`][lfp_mech.saes]).
        config: training options (``sweep_tokens`` activations per SAE).
        hook: the store's hook to train on (required with a store).
        tied: tie the decoder (default: ``config.tied``).
        expansion_factor: ``d_sae / d_in`` (default: the small size,
            ``config.expansion_factors[0]``).

    Returns one row per α: the training statistics of
    [`train_sae`][lfp_mech.saes.training.train_sae] (``alpha``, ``sae_lens_l1_coefficient``, ...),
    ``d_sae`` and [`sae_metrics`][lfp_mech.saes.metrics.sae_metrics].
    """
    config = config or SAEConfig()
    if not alphas:
        raise ConfigError("no alphas to sweep")
    tied = config.tied if tied is None else tied
    factor = expansion_factor or config.expansion_factors[0]
    if isinstance(train, ActivationStore):
        if hook is None:
            raise ConfigError("l1_sweep on an ActivationStore needs hook=")
        batches, d_in = store_batches(train, hook, config), train.d_in_of(hook)
    else:
        batches, d_in = tensor_batches(train, config), train.shape[1]
    rows = []
    for alpha in tqdm(alphas, desc="L1 sweep", disable=None):
        sae, stats = train_sae(
            batches,
            d_in,
            d_in * factor,
            config,
            tied=tied,
            alpha=alpha,
            n_samples=config.sweep_tokens,
            architecture="l1",
            track=f"l1_sweep/alpha_{alpha:g}",
        )
        rows.append({**stats, "d_sae": d_in * factor, **sae_metrics(sae, heldout_acts)})
    return rows
