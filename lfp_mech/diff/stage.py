"""The ``diff`` stage: what did RLHF change, causally?

Inputs: the run's base model and the RLHF stage's policy; the dictionary's texts are train-split
review prompts completed by the policy, the causal tests use test-split prompts (held out). If the
``saes`` and ``validate`` stages have run, the LFP probe's chosen features are ablated as one more
control (read at run time, not part of this stage's fingerprint); otherwise that control is
skipped with a logged note. Writes ``dictionary_block{L}.safetensors`` per block, the
``latents`` and ``interventions`` tables, ``completions.jsonl``, ``controls.json``,
``dose_response.png``, ``dashboards/`` (offline HTML) and ``summary.json``; read them with
[`DiffResults`][lfp_mech.diff.results.DiffResults]."""

import logging
from typing import Any

from lfp_mech.diff.config import DiffConfig
from lfp_mech.diff.residual import EditFn
from lfp_mech.diff.study import run_diff
from lfp_mech.errors import LfpMechError
from lfp_mech.stage_api import StageContext

logger = logging.getLogger(__name__)

__all__ = ["PROMPT_SET", "probe_edits", "run"]

PROMPT_SET = "reviews"
"""Train split: the dictionary's prompts; test split: the causal tests' prompts."""


def probe_edits(ctx: StageContext) -> dict[int | str, EditFn] | None:
    """Ablations of the LFP probe's features (validate stage), or None if it has not run.

    The features the validate stage ablated in its ``task`` condition (the task-related ones,
    Table 6) when it wrote them, else every feature it chose (highest MMCS, largest probe
    weights)."""
    from lfp_mech.diff.interventions import ablate_sae_features
    from lfp_mech.saes.results import SAEsResults
    from lfp_mech.validate.results import ValidateResults

    validate = ValidateResults(ctx.stage_dir("validate"))
    saes = SAEsResults(ctx.stage_dir("saes"))
    if not (validate.exists and saes.exists):
        logger.info("diff: no validate/saes results in this run; LFP-probe control skipped")
        return None
    loaded = saes.load_saes("small", device=ctx.options.device)
    try:
        chosen = validate.ablated_features.get("task") or validate.feature_choice
    except (KeyError, LfpMechError) as err:
        logger.info("diff: no task-related feature list in validate (%s): all chosen features", err)
        chosen = validate.feature_choice
    logger.info("diff: LFP-probe control ablates %s", {h: len(i) for h, i in chosen.items()})
    return {
        hook: ablate_sae_features(loaded[hook], ids)
        for hook, ids in chosen.items()
        if hook in loaded and ids
    } or None


def run(ctx: StageContext) -> dict[str, Any]:
    """[`run_diff`][lfp_mech.diff.study.run_diff] on the run's base model and RLHF policy."""
    from lfp_mech.data import load_prompts
    from lfp_mech.rlhf.results import RLHFResults

    config: DiffConfig = ctx.options
    train = load_prompts(PROMPT_SET, "train")
    test = load_prompts(PROMPT_SET, "test")
    summary = run_diff(
        ctx.config.model,
        RLHFResults(ctx.stage_dir("rlhf")).policy_dir,
        train[: min(config.n_corpus_prompts, len(train))],
        test[: min(config.n_eval_prompts, len(test))],
        ctx.dir,
        config,
        probe_edits=probe_edits(ctx),
    )
    return summary
