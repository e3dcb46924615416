"""The ``irl`` stage: recover the reward from behaviour, compare it, re-train a policy on it.

1. VADER task (``irl/vader``): IRL from the RLHF stage's tuned policy (expert) and the base model
   ([`run_task`][lfp_mech.irl.experiment.run_task]), with the probes stage's reward estimate on the
   same held-out texts (the three-way comparison).
2. IRL-RLHF (``irl/irl_rlhf``, ``rlhf_steps > 0``): a policy trained on the recovered reward,
   compared with base and the true-reward policy
   ([`run_irl_rlhf`][lfp_mech.irl.policies.run_irl_rlhf]).
3. Toxicity task (``irl/toxicity``, ``toxicity_rlhf_steps > 0``): detoxified expert, IRL,
   policy table ([`run_toxicity_task`][lfp_mech.irl.toxicity.run_toxicity_task]).

Reads the rlhf, saes and probes stages through their results classes; writes ``summary.json``
(the manifest summary) beside the task folders. Read it back with
[`lfp_mech.irl.results.IRLResults`][lfp_mech.irl.results.IRLResults].
"""

import logging
from collections.abc import Sequence
from typing import Any

from jaxtyping import Float
from torch import Tensor

from lfp_mech._io import write_json
from lfp_mech.irl import artifacts as files
from lfp_mech.irl.experiment import irl_prompts, run_task
from lfp_mech.irl.policies import run_irl_rlhf
from lfp_mech.irl.toxicity import check_prompts_reachable, run_toxicity_task
from lfp_mech.probes.results import ProbesResults
from lfp_mech.rlhf.results import RLHFResults
from lfp_mech.saes.results import SAEsResults
from lfp_mech.stage_api import SUMMARY_FILE, StageContext

__all__ = ["ProbeEstimate", "run"]

logger = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict[str, Any]:
    """IRL on the VADER task, IRL-RLHF on its reward, then the toxicity task; the summary."""
    options, model = ctx.options, ctx.config.model
    check_prompts_reachable(options)  # the hub's Jigsaw prompts, before any training
    expert = RLHFResults(ctx.stage_dir("rlhf")).policy_dir
    vader_dir = ctx.dir / "vader"
    probes_ran = (
        ProbesResults(ctx.stage_dir("probes")).exists and SAEsResults(ctx.stage_dir("saes")).exists
    )
    if not probes_ran:
        logger.info("no probes stage in this run: the three-way comparison has no probe column")
    probe_fn = ProbeEstimate(ctx) if probes_ran else None
    summary = run_task(model, expert, "vader", vader_dir, options, probe_fn=probe_fn)
    rlhf_options = getattr(ctx.config.stages, "rlhf", None)
    # the steps the expert actually trained (a budget stop ends before max_steps); a DPO expert
    # is no GRPO run of equal steps, so the true-reward policy is then always a matched re-run
    rlhf_results = RLHFResults(ctx.stage_dir("rlhf"))
    expert_steps = rlhf_results.summary.get("steps") if rlhf_results.exists else None
    expert_steps = expert_steps or getattr(rlhf_options, "max_steps", None)
    online = getattr(rlhf_options, "method", "grpo") in ("grpo", "rloo")
    steps = options.rlhf_steps if options.rlhf_steps is not None else expert_steps
    if steps:
        table = run_irl_rlhf(
            model,
            "vader",
            vader_dir / files.REWARD_MODEL_DIR,
            ctx.dir / files.IRL_RLHF_DIR,
            expert,
            steps,
            options,
            rlhf_config=rlhf_options,
            true_policy_steps=expert_steps if online else None,
            exclude=irl_prompts("vader", options),
        )
        summary["irl_rlhf_true_reward"] = {row["policy"]: row["mean_reward"] for row in table}
        summary["irl_rlhf_steps"] = steps
        summary["irl_rlhf_gain_ratio"] = table[-1].get("gain_ratio")
        summary["irl_rlhf_gain_ratio_ci95"] = table[-1].get("gain_ratio_ci95")
    if options.toxicity_rlhf_steps > 0:
        toxicity = run_toxicity_task(model, ctx.dir / "toxicity", options)
        skip = ("task", "reward_model_dir")
        summary |= {f"toxicity_{k}": v for k, v in toxicity.items() if k not in skip}
    write_json(ctx.dir / SUMMARY_FILE, summary)
    return summary


class ProbeEstimate:
    """texts → the probes stage's reward estimate (its tuned SAE probe on the tuned policy's
    small SAEs), the models loaded on first use."""

    def __init__(self, ctx: StageContext) -> None:
        self.rlhf = RLHFResults(ctx.stage_dir("rlhf"))
        self.saes = SAEsResults(ctx.stage_dir("saes"))
        self.probes = ProbesResults(ctx.stage_dir("probes"))
        self.device, self.dtype = ctx.device, ctx.dtype
        self._loaded: dict[str, Any] = {}

    def __call__(self, texts: Sequence[str]) -> Float[Tensor, " text"]:
        from lfp_mech.probes import probe_reward

        if not self._loaded:
            self._loaded = {
                "model": self.rlhf.load_policy(hooked=True, device=self.device, dtype=self.dtype),
                "saes": self.saes.load_saes("small", device=self.device),
                "probe": self.probes.load_probe(),
            }
        loaded = self._loaded
        return probe_reward(
            loaded["model"], loaded["saes"], loaded["probe"], texts, device=self.device
        )
