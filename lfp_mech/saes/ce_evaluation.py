"""The saes stage's CE-loss-recovered evaluation: each dictionary spliced into its model on the
held-out store's first texts, the loss it recovers with a bootstrap CI over those texts, and the
detail a failed CE check reports."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sae_lens import SAE

from lfp_mech.activations.store import ActivationStore
from lfp_mech.errors import LfpMechError
from lfp_mech.saes.artifacts import variant_name
from lfp_mech.saes.config import SAEConfig
from lfp_mech.saes.metrics import (
    SameNormRandomError,
    Splice,
    ce_loss_recovered,
    ce_recovered_ci,
    ce_recovered_difference_ci,
    text_ce_losses,
)

__all__ = ["MEASURED_KEYS", "SAEKey", "add_ce_losses", "ce_check_detail", "ce_evaluation"]

MEASURED_KEYS = (
    "ce_clean", "ce_sae", "ce_zero", "ce_recovered", "ce_recovered_ci_low",
    "ce_recovered_ci_high", "ce_random_error", "ce_recovered_minus_random_error_ci_low",
    "ce_recovered_minus_random_error_ci_high",
)  # fmt: skip
"""What [`ce_evaluation`][lfp_mech.saes.ce_evaluation.ce_evaluation] measures per dictionary
(the other CE columns are computed from them)."""

SAEKey = tuple[tuple[int, str], bool]
"""``((layer, size), tied)``: one trained dictionary of the stage."""


def add_ce_losses(
    rows: list[dict[str, Any]],
    model: Any,
    heldout: ActivationStore,
    hooks: Mapping[int, str],
    saes: Mapping[SAEKey, SAE],
    config: SAEConfig,
) -> None:
    """Add ``ce_clean``, ``ce_sae``, ``ce_zero``, ``ce_recovered`` and its 95% bootstrap CI over
    the texts, ``delta_lm_loss``, and the same-norm random-error control's ``ce_random_error``,
    ``ce_recovered_random_error`` and ``delta_lm_loss_random_error``, and the dictionary's
    ``ce_recovered_minus_random_error`` with its paired 95% bootstrap CI to every row (NaN when
    there is no model to evaluate them with)."""
    ce = ce_evaluation(model, heldout, hooks, saes, config) if model is not None else None
    for row in rows:
        if ce is not None:
            row.update(ce[(row["layer"], row["size"], row["variant"])])
        else:
            row.update({key: math.nan for key in MEASURED_KEYS})
        row["delta_lm_loss"] = row["ce_sae"] - row["ce_clean"]
        row["ce_recovered_random_error"] = ce_loss_recovered(
            row["ce_clean"], row["ce_random_error"], row["ce_zero"]
        )
        row["delta_lm_loss_random_error"] = row["ce_random_error"] - row["ce_clean"]
        row["ce_recovered_minus_random_error"] = (
            row["ce_recovered"] - row["ce_recovered_random_error"]
        )


def ce_evaluation(
    model: Any,
    heldout: ActivationStore,
    hooks: Mapping[int, str],
    saes: Mapping[SAEKey, SAE],
    config: SAEConfig,
) -> dict[tuple[int, str, str], dict[str, float]]:
    """CE losses on the first ``ce_texts`` held-out texts, per ``(layer, size, variant)``: clean,
    zero-ablated, with the SAE spliced in, and with its
    [`SameNormRandomError`][lfp_mech.saes.metrics.SameNormRandomError] control (seeded with the
    run's seed) spliced in."""
    from lfp_mech.models.coerce import as_hooked_model

    texts = heldout.texts()[: config.ce_texts]
    if not texts:
        raise LfpMechError("no held-out texts for the CE-loss evaluation; set ce_texts > 0")
    # the model in the run's dtype; the SAEs stay float32 (SAE-Lens casts their input)
    hooked = as_hooked_model(model, device=config.device, dtype=config.dtype, seed=config.seed)
    by_hook: dict[str, list[SAEKey]] = {}
    for key in sorted(saes):
        by_hook.setdefault(hooks[key[0][0]], []).append(key)
    spliced: dict[str, list[Splice]] = {
        hook: [saes[key] for key in keys]
        + [SameNormRandomError(saes[key], seed=config.seed) for key in keys]
        for hook, keys in by_hook.items()
    }
    losses = text_ce_losses(
        hooked,
        texts,
        spliced,
        context_length=config.context_length,
        batch_size=config.ce_batch_size,
    )
    result = {}
    per_text = losses["per_text"]
    for hook, keys in by_hook.items():
        clean, zero = losses["clean"], losses["zero"][hook]
        texts_sae = per_text["sae"][hook]
        for i, ((layer, size), tied) in enumerate(keys):
            ce_sae = losses["sae"][hook][i]
            control = len(keys) + i  # the SAE's SameNormRandomError, spliced after all SAEs
            low, high = ce_recovered_ci(
                per_text["clean"], texts_sae[i], per_text["zero"][hook], seed=config.seed
            )
            gain_low, gain_high = ce_recovered_difference_ci(
                per_text["clean"],
                texts_sae[i],
                texts_sae[control],
                per_text["zero"][hook],
                seed=config.seed,
            )
            result[(layer, size, variant_name(tied))] = {
                "ce_clean": clean,
                "ce_sae": ce_sae,
                "ce_zero": zero,
                "ce_recovered": ce_loss_recovered(clean, ce_sae, zero),
                "ce_recovered_ci_low": low,
                "ce_recovered_ci_high": high,
                "ce_random_error": losses["sae"][hook][control],
                "ce_recovered_minus_random_error_ci_low": gain_low,
                "ce_recovered_minus_random_error_ci_high": gain_high,
            }
    return result


def ce_check_detail(rows: Sequence[Mapping[str, Any]], config: SAEConfig, target: float) -> str:
    """The main small dictionaries below ``target`` with their CIs, and whether more texts
    could decide (an upper bound at or above ``target``), for the failed check's warning:
    `` (L21: 0.870 [0.780, 0.956]; saes.ce_texts = 64; a CI contains 0.9: ...)``."""
    below = [
        r
        for r in rows
        if r["size"] == "small"
        and r["variant"] == variant_name(config.tied)
        and not r["ce_recovered"] >= target
    ]
    parts = [
        f"L{r['layer']}: {r['ce_recovered']:.3f} "
        f"[{r.get('ce_recovered_ci_low', math.nan):.3f}, "
        f"{r.get('ce_recovered_ci_high', math.nan):.3f}]"
        for r in below
    ]
    undecided = any(r.get("ce_recovered_ci_high", math.nan) >= target for r in below)
    hint = (
        f"; a CI contains {target:g}: more texts (saes.ce_texts) would decide" if undecided else ""
    )
    return f" ({', '.join(parts)}; saes.ce_texts = {config.ce_texts}{hint})"
