"""What the ``rlhf`` stage wrote, read back: the tuned policy, its evaluation, its training log."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfp_mech._io import read_json, read_jsonl
from lfp_mech.errors import LfpMechError
from lfp_mech.rlhf.artifacts import (
    COMPLETIONS_FILE,
    EVAL_TABLE,
    HELDOUT_PAIRS_FILE,
    PAIRS_FILE,
    POLICY_DIR,
    POLICY_METADATA,
    TRAIN_LOG,
)
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["RLHFResults"]


class RLHFResults(StageResults):
    """The RLHF stage's folder: ``policy/``, ``eval``, ``train_log``, ``completions.jsonl``, ...

    Example::

        rlhf = RLHFResults("runs/default/rlhf")
        rlhf.eval                          # base vs tuned: mean reward, 95% CI, distinct-2, ...
        texts = rlhf.completion_texts()    # the tuned policy's held-out prompt + completion
        model = rlhf.load_policy()         # a HookedTransformer
    """

    stage = "rlhf"

    @property
    def policy_dir(self) -> Path:
        """The tuned policy, an HF checkpoint folder (``rlhf/policy``)."""
        return self.file(POLICY_DIR)

    @property
    def training(self) -> dict[str, Any]:
        """The policy's training record: base, kind, steps, stop_reason, train_seconds, config."""
        return read_json(self.file(f"{POLICY_DIR}/{POLICY_METADATA}"))

    @property
    def eval(self) -> "pd.DataFrame":
        """Base vs tuned on the held-out prompts: one row per policy (``eval.csv``)."""
        return self.table(EVAL_TABLE)

    @property
    def train_log(self) -> "pd.DataFrame":
        """One row per optimizer step (``train_log.csv``; columns in
        [`lfp_mech.rlhf.logs`][lfp_mech.rlhf.logs])."""
        return self.table(TRAIN_LOG)

    @property
    def completions(self) -> "pd.DataFrame":
        """Held-out samples of both policies: policy, prompt, completion, reward, length."""
        return self.jsonl(COMPLETIONS_FILE.removesuffix(".jsonl"))

    @property
    def pairs(self) -> "pd.DataFrame":
        """The DPO preference pairs (``method="dpo"`` only)."""
        return self.jsonl(PAIRS_FILE.removesuffix(".jsonl"))

    @property
    def heldout_pairs(self) -> "pd.DataFrame":
        """DPO preference pairs on the held-out prompts (``method="dpo"`` only): prompt, chosen,
        rejected (and their rewards when made offline)."""
        return self.jsonl(HELDOUT_PAIRS_FILE.removesuffix(".jsonl"))

    def completion_pairs(self) -> "pd.DataFrame":
        """Preference pairs from the held-out completions, the task's reward as the preference: for
        each prompt both policies completed, the higher-reward completion is ``chosen`` (ties
        dropped). Columns: prompt, chosen, rejected, chosen_reward, rejected_reward (as
        [`make_preference_pairs`][lfp_mech.rlhf.dpo.make_preference_pairs] returns them) and
        chosen_policy."""
        import pandas as pd

        completions, columns = self.completions, ["prompt", "completion", "reward"]
        base, tuned = (
            completions.loc[completions["policy"] == name, columns].drop_duplicates("prompt")
            for name in ("base", "tuned")
        )
        pairs = base.merge(tuned, on="prompt", suffixes=("_base", "_tuned"))
        pairs = pairs[pairs["reward_base"] != pairs["reward_tuned"]].reset_index(drop=True)
        tuned_wins = pairs["reward_tuned"] > pairs["reward_base"]

        def pick(column: str, winner: bool) -> "pd.Series":
            first, second = pairs[f"{column}_tuned"], pairs[f"{column}_base"]
            return first.where(tuned_wins, second) if winner else second.where(tuned_wins, first)

        return pd.DataFrame(
            {
                "prompt": pairs["prompt"],
                "chosen": pick("completion", True),
                "rejected": pick("completion", False),
                "chosen_reward": pick("reward", True),
                "rejected_reward": pick("reward", False),
                "chosen_policy": tuned_wins.map({True: "tuned", False: "base"}),
            }
        )

    def completion_texts(self, policy: str = "tuned") -> list[str]:
        """``prompt + completion`` of ``policy``'s ("tuned" or "base") held-out completions."""
        rows = read_jsonl(self.file(COMPLETIONS_FILE))
        texts = [r["prompt"] + r["completion"] for r in rows if r["policy"] == policy]
        if not texts:
            names = sorted({r["policy"] for r in rows})
            raise LfpMechError(
                f"no completions of policy {policy!r} in {self.path / COMPLETIONS_FILE}; "
                f"policies there: {', '.join(names)}"
            )
        return texts

    def load_policy(self, hooked: bool = True, device: str = "cpu", dtype: str = "float32") -> Any:
        """The tuned policy: a ``HookedTransformer`` (``hooked``) or an ``(hf_model, tokenizer)``,
        on ``device`` in ``dtype`` ("float32", "bfloat16", "float16")."""
        from lfp_mech.devices import torch_dtype
        from lfp_mech.models.loading import load_hf_model, load_model

        if hooked:
            return load_model(self.policy_dir, device=device, dtype=torch_dtype(dtype))
        return load_hf_model(self.policy_dir, device=device, dtype=torch_dtype(dtype))

    def reward_curve_figure(self) -> "Figure":
        """The training curve (reward and distinct-2 per step, or DPO's loss and margins)."""
        from lfp_mech.rlhf.plots import dpo_curve_figure, reward_curve_figure

        if self.summary["method"] == "dpo":
            return dpo_curve_figure(self.train_log)
        threshold = self.summary.get("config", {}).get("distinct2_threshold")
        return reward_curve_figure(self.train_log, distinct2_threshold=threshold)
