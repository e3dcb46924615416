"""The preference probe (paper Table 3, Figure 5) as a step of the ``probes`` stage of a DPO run.

When the run's policy was tuned with DPO (``--set rlhf.method=dpo``), the probes stage also fits
the paper's logistic probe on the tuned policy's mean-pooled SAE features of the *held-out*
preference pairs the rlhf stage wrote
([`RLHFResults.heldout_pairs`][lfp_mech.rlhf.results.RLHFResults.heldout_pairs]: pairs made like
the training pairs, on prompts DPO never saw; offline, the base model's samples ranked by the
reward, so "chosen" is the true preference), split by pair into the probe's train and test sets.

Written into the probes folder:

* ``preference_probe.{csv,md,json}`` (Table 3): one row per label mode — ``preference`` (chosen
  = 1, the true preference) and ``delta`` (the paper's labels from the averaged chosen − rejected
  delta) — with train / held-out accuracy against the probe's own labels and, for both, the
  held-out accuracy against the *true preference* (``test_accuracy_vs_preference``);
* ``preference_pca.png`` (Figure 5) and ``preference_summary.json``.
"""

import logging
from typing import Any

import numpy as np

from lfp_mech._io import json_safe, write_json, write_table
from lfp_mech.models.coerce import as_hooked_model
from lfp_mech.plotting import save_figure
from lfp_mech.probes.artifacts import PREFERENCE_SUMMARY_FILE, PREFERENCE_TABLE
from lfp_mech.probes.features import mean_pooled_features
from lfp_mech.probes.plots import pca_figure
from lfp_mech.probes.preference import (
    LogisticProbeResult,
    PreferenceProbeConfig,
    fit_preference_probes,
    pca_explained,
)
from lfp_mech.saes.io import load_saes
from lfp_mech.stage_api import StageContext

logger = logging.getLogger(__name__)

__all__ = ["PREFERENCE_FIGURE", "preference_accuracy", "run_preference_step"]

PREFERENCE_FIGURE = "preference_pca.png"
"""Figure 5: the probe inputs on their first two principal components, coloured by preference."""
MIN_PAIRS = 6
"""Fewest held-out pairs the probe's own train/test split can use."""


def preference_accuracy(result: LogisticProbeResult, test_fraction: float, seed: int) -> float:
    """Held-out accuracy of ``result``'s probe against the *true preference* (chosen = 1).

    The held-out pairs are those of
    [`fit_logistic_probe`][lfp_mech.probes.preference.fit_logistic_probe]'s split (the same seeded
    permutation, both texts of a pair on one side)."""
    n_pairs = result.inputs.shape[0] // 2
    n_test = max(1, round(test_fraction * n_pairs))
    test_pairs = np.random.default_rng(seed).permutation(n_pairs)[:n_test]
    test_idx = np.concatenate([test_pairs, test_pairs + n_pairs])
    preference = np.concatenate([np.ones(n_pairs, np.int64), np.zeros(n_pairs, np.int64)])
    predicted = (result.inputs @ result.probe.weight + result.probe.bias) > 0
    return float((predicted.astype(np.int64) == preference)[test_idx].mean())


def run_preference_step(ctx: StageContext) -> dict[str, Any]:
    """Table 3 and Figure 5 into the probes folder if the run's policy was tuned with DPO;
    returns ``{"preference": summary}`` (``{}`` for GRPO/RLOO runs)."""
    from lfp_mech.rlhf.results import RLHFResults
    from lfp_mech.saes.results import SAEsResults

    if ctx.config.stages.rlhf.method != "dpo":
        return {}
    rlhf = RLHFResults(ctx.stage_dir("rlhf"))
    pairs = rlhf.heldout_pairs
    if len(pairs) < MIN_PAIRS:
        logger.warning(
            "only %d held-out preference pairs (need %d): no preference probe; raise "
            "rlhf.n_eval_prompts / rlhf.pair_samples",
            len(pairs),
            MIN_PAIRS,
        )
        return {"preference": {"n_pairs": len(pairs), "skipped": "too few held-out pairs"}}
    config = PreferenceProbeConfig(seed=ctx.config.seed, device=ctx.device, dtype=ctx.dtype)
    chosen = list(pairs["prompt"] + pairs["chosen"])
    rejected = list(pairs["prompt"] + pairs["rejected"])
    model = as_hooked_model(rlhf.policy_dir, device=config.device, dtype=config.dtype)
    saes = load_saes(SAEsResults(ctx.stage_dir("saes")).small_sae_dirs(), device=config.device)
    features = mean_pooled_features(
        model, saes, chosen + rejected, batch_size=config.batch_size, device=config.device
    )
    n = len(chosen)
    results, unfit = fit_preference_probes(features[:n], features[n:], config)
    if "preference" not in results:
        return {"preference": {"n_pairs": n, "skipped": unfit["preference"]}}
    vs_preference = {
        mode: preference_accuracy(r, config.test_fraction, config.seed)
        for mode, r in results.items()
    }
    rows = [
        r.row() | {"test_accuracy_vs_preference": vs_preference[mode]}
        for mode, r in results.items()
    ]
    write_table(ctx.dir / PREFERENCE_TABLE, rows)
    pca = pca_explained(features, config.n_pca_components)
    figure = pca_figure(pca.projected, results["preference"].targets, pca.explained_variance_ratio)
    save_figure(figure, ctx.dir / PREFERENCE_FIGURE)
    summary = json_safe(
        {
            "n_pairs": n,
            "pairs": "held-out prompts (rlhf heldout_pairs.jsonl)",
            "test_accuracy": {m: r.test_accuracy for m, r in results.items()},
            "test_accuracy_vs_preference": vs_preference,
            "train_accuracy": {m: r.train_accuracy for m, r in results.items()},
            "delta_label_agreement": results["delta"].label_agreement
            if "delta" in results
            else None,
            "not_fitted": unfit,
            "pca_explained_variance_ratio": pca.explained_variance_ratio.tolist(),
        }
    )
    write_json(ctx.dir / PREFERENCE_SUMMARY_FILE, summary)
    return {"preference": summary}
