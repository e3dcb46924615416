"""What the ``irl`` stage wrote, read back: per task the runs, summary, held-out scores, the reward
model, the IRL-RLHF tables; and the three-way comparison (true reward, IRL reward, probe).

Loaders and figures import what they need (models, pandas, matplotlib) when called.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfp_mech.errors import LfpMechError
from lfp_mech.irl import artifacts as files
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from lfp_mech.irl.reward_model import RewardModel
    from lfp_mech.models.coerce import ModelLike

__all__ = ["IRLResults", "IRLTaskResults"]

THREE_WAY_PAIRS = (
    ("IRL vs true", "irl_reward", "true_reward"),
    ("probe vs true", "probe", "true_reward"),
    ("IRL vs probe", "irl_reward", "probe"),
)
"""The pairs of the three-way comparison: (label, column, column of ``heldout_scores``)."""
TASK_NAMES = ("vader", "toxicity")


class IRLTaskResults(StageResults):
    """One IRL experiment (``irl/vader`` or ``irl/toxicity``): what
    [`run_task`][lfp_mech.irl.experiment.run_task] wrote.

    Example::

        vader = IRLResults("runs/default/irl").vader
        vader.runs[["seed", "epoch", "acc", "spearman"]]   # one row per seed × epoch
        vader.final_epoch                                  # mean/std/median/min/max per metric
        rm = vader.load_reward_model()                     # the best run's reward model
    """

    stage = "irl"

    def __init__(self, path: str | os.PathLike[str], task: str | None = None) -> None:
        super().__init__(path)
        self.task = task or self.path.name

    @property
    def runs(self) -> "pd.DataFrame":
        """One row per seed, at the epoch chosen on validation: held-out metrics (acc, f1,
        correlations, pair_acc, the ``*_demos`` metrics), the fitted threshold and the
        validation metrics (every seed × epoch on validation: ``epochs``)."""
        return self.table(files.RUNS_STEM)

    @property
    def final_epoch(self) -> "pd.DataFrame":
        """Over seeds, each at the epoch chosen on validation and scored once on the held-out
        texts: one row per metric, columns mean, std, median, min, max (the headline;
        ``summary["best_run"]`` is the run selected on validation)."""
        import pandas as pd

        return pd.DataFrame(self.summary["final_epoch"]).T

    @property
    def heldout_scores(self) -> "pd.DataFrame":
        """One row per held-out text: text, source (expert_test, non_expert_test, other),
        true_reward, irl_reward (best run), and the controls' scores where run (log_ratio,
        expressed_lexicon, probe)."""
        return self.jsonl(files.HELDOUT_STEM)

    @property
    def demonstrations(self) -> "pd.DataFrame":
        """One row per completion: split, role (expert / non_expert), index, prompt, completion."""
        return self.jsonl(files.DEMONSTRATIONS_FILE.removesuffix(".jsonl"))

    @property
    def epochs(self) -> "pd.DataFrame":
        """Validation metrics per seed × epoch (what the epochs were chosen on)."""
        return self.table(files.EPOCHS_STEM)

    @property
    def validation_grid(self) -> "pd.DataFrame | None":
        """The readout × lr grid on the validation split (None with a single candidate)."""
        if not (self.path / f"{files.GRID_STEM}.csv").exists():
            return None
        return self.table(files.GRID_STEM)

    def headline(self) -> dict[str, Any]:
        """Median accuracy, balanced accuracy, F1, AUROC and Spearman over seeds, the run
        selected on validation (its AUROC with a bootstrap CI and p-value against chance), the
        baselines and controls."""
        s = self.summary
        final = s["final_epoch"]
        nan = float("nan")
        selected = s.get("selected_run_auroc") or {}  # absent in runs before it was recorded
        return {
            "acc_median": final["acc"]["median"],
            "balanced_acc_median": final["balanced_acc"]["median"],
            "auroc_median": final["auroc"]["median"],
            "val_acc_median": s["validation"]["acc"]["median"],
            "f1_median": final["f1"]["median"],
            "spearman_median": final["spearman"]["median"],
            "best_acc": s["best_run"]["acc"],
            "best_auroc": selected.get("auroc", nan),
            "best_auroc_ci95": selected.get("auroc_ci95", [nan, nan]),
            "best_auroc_p_vs_chance": selected.get("auroc_p_vs_chance", nan),
            "majority_baseline_acc": s["majority_baseline_acc"],
            "heldout_positive_rate": s["heldout_positive_rate"],
            "supervised_ceiling_acc": s["supervised_ceiling"]["acc"],
            "log_ratio_acc": (s.get("log_ratio_control") or {}).get("acc"),
            "lexicon_bound_acc": ((s.get("lexicon_bound") or {}).get("expressed") or {}).get("acc"),
        }

    @property
    def reward_model_dir(self) -> Path:
        """The best run's saved reward model (``reward_model/``)."""
        return self.file(files.REWARD_MODEL_DIR)

    def load_reward_model(
        self, device: str = "cpu", base: "ModelLike | None" = None
    ) -> "RewardModel":
        """The best run's reward model
        ([`load_reward_model`][lfp_mech.irl.persistence.load_reward_model])."""
        from lfp_mech.irl.persistence import load_reward_model

        return load_reward_model(self.reward_model_dir, device=device, base=base)

    def three_way(self, source: str | None = None) -> "pd.DataFrame":
        """Pearson, Spearman and Kendall correlations on the held-out texts (or on those of one
        ``source``: expert_test, non_expert_test, other) between the true reward, the IRL reward
        and (VADER task) the probe's estimate: one row per pair."""
        import pandas as pd

        scores = self.heldout_scores
        if source is not None:
            scores = scores[scores["source"] == source]
        rows = []
        for label, a, b in THREE_WAY_PAIRS:
            if a not in scores or b not in scores:
                continue
            pair = scores[[a, b]].astype(float)
            constant = len(pair) < 2 or pair.nunique().min() < 2
            row: dict[str, Any] = {"pair": label, "n": len(pair)}
            for method in ("pearson", "spearman", "kendall"):
                row[method] = float("nan") if constant else pair[a].corr(pair[b], method=method)
            rows.append(row)
        return pd.DataFrame(rows, columns=["pair", "n", "pearson", "spearman", "kendall"])

    def accuracy_by_source(self) -> "pd.DataFrame":
        """Per source of held-out text (index): n, the share whose true reward is positive, and
        the accuracy of the best IRL run (at its fitted threshold) and, where run, of the
        log-ratio control (at its threshold) and of the expressed-lexicon bound (at 0)."""
        scores, summary = self.heldout_scores, self.summary
        truth = scores["true_reward"] > 0
        best = summary["best_run"]
        runs = self.runs
        row = runs[(runs["seed"] == best["seed"]) & (runs["epoch"] == best["epoch"])].iloc[0]
        correct = {"accuracy": truth == (scores["irl_reward"] > row["threshold"])}
        log_ratio = summary.get("log_ratio_control")
        if log_ratio is not None and "log_ratio" in scores:
            predicted = scores["log_ratio"] > log_ratio["threshold"]
            correct["log_ratio_accuracy"] = truth == predicted
        if summary.get("lexicon_bound") is not None and "expressed_lexicon" in scores:
            correct["expressed_lexicon_accuracy"] = truth == (scores["expressed_lexicon"] > 0)
        table = scores[["source"]].assign(n=1, true_positive_rate=truth, **correct)
        grouped = table.groupby("source")
        return grouped.mean().assign(n=grouped.size()).rename_axis("source")

    def controls(
        self, metrics: "tuple[str, ...]" = ("acc", "f1", "spearman", "kendall")
    ) -> "pd.DataFrame":
        """The IRL reward (median over seeds, last epoch) beside its controls, one row per metric:
        the supervised ceiling, the log-ratio control and the expressed-lexicon bound (each
        column only where the stage ran it)."""
        import pandas as pd

        summary = self.summary
        columns = {"IRL, median over seeds": self.final_epoch["median"]}
        if summary.get("supervised_ceiling"):
            columns["supervised ceiling"] = pd.Series(summary["supervised_ceiling"])
        if summary.get("log_ratio_control"):
            columns["log-ratio control"] = pd.Series(summary["log_ratio_control"])
        if (summary.get("lexicon_bound") or {}).get("expressed"):
            columns["expressed-lexicon bound"] = pd.Series(summary["lexicon_bound"]["expressed"])
        return pd.DataFrame(columns).loc[list(metrics)].astype(float)

    def protocol_table(
        self, metrics: "tuple[str, ...]" = ("acc", "balanced_acc", "f1", "auroc", "spearman")
    ) -> "pd.DataFrame":
        """The measurement table of the validation protocol, one row per metric: the validation
        median over seeds (what the choices were made on), the held-out median, mean ± sd and
        min–max over seeds, the run selected on validation (held-out), and the controls on the
        same held-out texts."""
        import pandas as pd

        s, final = self.summary, self.final_epoch
        validation = s.get("validation", {})
        rows = {}
        for m in metrics:
            row = {
                "validation median": validation.get(m, {}).get("median", float("nan")),
                "held-out median": final.loc[m, "median"],
                "held-out mean ± sd": f"{final.loc[m, 'mean']:.3f} ± {final.loc[m, 'std']:.3f}",
                "held-out min–max": f"{final.loc[m, 'min']:.3f}–{final.loc[m, 'max']:.3f}",
                "selected on validation": s["best_run"].get(m, float("nan")),
            }
            for label, key in (
                ("supervised ceiling", "supervised_ceiling"),
                ("log-ratio", "log_ratio_control"),
            ):
                row[label] = (s.get(key) or {}).get(m, float("nan"))
            row["lexicon bound"] = ((s.get("lexicon_bound") or {}).get("expressed") or {}).get(
                m, float("nan")
            )
            rows[m] = row
        return pd.DataFrame(rows).T

    def plot_seed_heatmaps(self) -> "Figure":
        """Accuracy and Spearman per seed × epoch (``irl_heatmaps.png``)."""
        from lfp_mech.irl.plots import plot_seed_heatmaps

        return plot_seed_heatmaps(self.runs, title=f"IRL ({self.task}): seeds × epochs")

    def plot_three_way(self) -> "Figure":
        """IRL reward (and probe estimate) against the true reward (``irl_vs_true.png``)."""
        from lfp_mech.irl.plots import plot_three_way

        scores = self.heldout_scores
        probe = scores["probe"] if "probe" in scores else None
        title = f"{self.task}: held-out texts (best IRL run)"
        return plot_three_way(scores["true_reward"], scores["irl_reward"], probe, title=title)


class IRLResults(StageResults):
    """The IRL stage's folder: the VADER and toxicity experiments and the IRL-RLHF tables.

    Example::

        irl = IRLResults("runs/default/irl")
        irl.vader.headline()          # median accuracy over seeds, baselines, controls
        irl.three_way()               # true reward vs IRL reward vs probe, correlations
        irl.irl_rlhf()                # base / RLHF (true reward) / RLHF (IRL reward)
        irl.policy_table("toxicity")  # the detoxification table (toxicity_mean per policy)
    """

    stage = "irl"

    @property
    def tasks(self) -> list[str]:
        """The tasks the stage ran (folders with a summary), VADER first."""
        return [t for t in TASK_NAMES if (self.path / t / files.TASK_SUMMARY_FILE).is_file()]

    def task(self, name: str) -> IRLTaskResults:
        """The experiment of task ``name`` ("vader" or "toxicity")."""
        if name not in TASK_NAMES:
            raise LfpMechError(f"unknown IRL task {name!r}; tasks: {', '.join(TASK_NAMES)}")
        return IRLTaskResults(self.file(name), name)

    @property
    def vader(self) -> IRLTaskResults:
        """The VADER task (IRL from the RLHF stage's policy)."""
        return self.task("vader")

    @property
    def toxicity(self) -> IRLTaskResults:
        """The toxicity task (IRL from the GRPO-detoxified expert)."""
        return self.task("toxicity")

    def three_way(self, task: str = "vader") -> "pd.DataFrame":
        """The three-way comparison of ``task`` (see
        [`IRLTaskResults.three_way`][lfp_mech.irl.results.IRLTaskResults.three_way])."""
        return self.task(task).three_way()

    def irl_rlhf_dir(self, task: str = "vader") -> Path:
        """The IRL-RLHF folder of ``task`` (its ``policy/`` and table)."""
        base = self.path if task == "vader" else self.task(task).path
        return base / files.IRL_RLHF_DIR

    def irl_rlhf(self, task: str = "vader") -> "pd.DataFrame | None":
        """base / RLHF (true reward) / RLHF (IRL reward) under the true reward: mean reward,
        95% CI, distinct-2, Welch's p, ``irl_reward_mean`` (and ``toxicity_mean``); None if
        IRL-RLHF did not run for ``task``."""
        import pandas as pd

        path = self.irl_rlhf_dir(task) / f"{files.IRL_RLHF_STEM}.csv"
        return pd.read_csv(path) if path.is_file() else None

    def irl_rlhf_train_log(self, task: str = "vader") -> "pd.DataFrame | None":
        """The IRL-RLHF policy's training log (one row per GRPO step; its reward is the
        *recovered* reward it was trained on), or None if IRL-RLHF did not run for ``task``."""
        import pandas as pd

        from lfp_mech.rlhf.artifacts import TRAIN_LOG

        path = self.irl_rlhf_dir(task) / f"{TRAIN_LOG}.csv"
        return pd.read_csv(path) if path.is_file() else None

    def irl_rlhf_curve_figure(self, task: str = "vader") -> "Figure | None":
        """The IRL-RLHF policy's training curve (recovered reward and distinct-2 per step), or
        None if IRL-RLHF did not run for ``task``."""
        from lfp_mech.rlhf.config import RLHFConfig
        from lfp_mech.rlhf.plots import reward_curve_figure

        log = self.irl_rlhf_train_log(task)
        if log is None:
            return None
        # IRL-RLHF runs with the RLHF defaults (lfp_mech.irl.policies.irl_rlhf_config)
        threshold = RLHFConfig().distinct2_threshold
        return reward_curve_figure(log, distinct2_threshold=threshold)

    def policy_table(self, task: str = "toxicity") -> "pd.DataFrame":
        """The policies of ``task`` under its true reward: the IRL-RLHF table, or (toxicity task
        without IRL-RLHF) base vs the detoxified expert."""
        import pandas as pd

        table = self.irl_rlhf(task)
        if table is not None:
            return table
        path = self.task(task).path / files.POLICIES_DIR / f"{files.POLICIES_STEM}.csv"
        if not path.is_file():
            raise LfpMechError(f"no policy table for task {task!r} in {self.path}")
        return pd.read_csv(path)

    @property
    def toxicity_expert_dir(self) -> Path:
        """The GRPO-detoxified expert of the toxicity task (an HF checkpoint folder)."""
        return self.toxicity.file(f"{files.EXPERT_DIR}/{files.POLICY_DIR}")
