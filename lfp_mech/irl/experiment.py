"""One IRL experiment on one task: demonstrations → reward models over seeds × epochs → controls.

[`run_task`][lfp_mech.irl.experiment.run_task] is what the stage runs per task (``irl/vader``,
``irl/toxicity``) and what a notebook calls to run IRL on any pair of models: it generates (or
reuses) the demonstrations, trains ``n_seeds`` × ``n_epochs`` reward models
([`run_seeds`][lfp_mech.irl.training.run_seeds]), saves the best, runs the controls and writes every
artifact (see [`lfp_mech.irl.artifacts`][lfp_mech.irl.artifacts])."""

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from lfp_mech._io import write_json, write_jsonl, write_table
from lfp_mech.irl import artifacts as files
from lfp_mech.irl.config import IRLConfig
from lfp_mech.irl.controls import expressed_lexicon_bound, log_ratio_control
from lfp_mech.irl.demonstrations import Demonstrations, generate_demonstrations
from lfp_mech.irl.evaluation import auroc_with_ci, summarize_runs
from lfp_mech.irl.persistence import save_reward_model
from lfp_mech.irl.selection import build_reward_model, inputs_cache, select_on_validation
from lfp_mech.irl.tasks import IRLTask, get_task, task_prompts, task_texts, validation_prompts
from lfp_mech.irl.training import VAL_METRICS, IRLRuns, run_seeds
from lfp_mech.models.coerce import ModelLike
from lfp_mech.tracking import tracker_name

__all__ = ["ProbeFn", "TaskTexts", "irl_prompts", "run_task"]

logger = logging.getLogger(__name__)

ProbeFn = Callable[[Sequence[str]], Float[Tensor, " text"]]
"""A second reward estimate to compare on the held-out texts (the probes stage's)."""


@dataclass
class _Controls:
    """The controls of one experiment (None where not run)."""

    log_ratio: Tensor | None = None
    log_ratio_eval: dict[str, float | int] | None = None
    lexicon_bound: dict[str, Any] | None = None
    probe: Tensor | None = None


def run_task(
    base: ModelLike,
    expert: ModelLike,
    task: str | IRLTask,
    out_dir: str | os.PathLike[str],
    config: IRLConfig,
    *,
    probe_fn: ProbeFn | None = None,
) -> dict[str, Any]:
    """IRL on one task: recover the reward ``expert`` was trained on from its behaviour.

    ``base`` is the non-expert (the model RLHF started from). Writes into ``out_dir``:
    ``demonstrations.jsonl`` (+ ``.meta.json``), ``reward_inputs.safetensors`` (cached mode),
    ``irl_runs.csv`` / ``.md`` / ``.json`` (one row per seed × epoch), ``heldout_scores.jsonl``
    (text, source, true reward, best IRL reward, the controls, the ``probe_fn`` estimate),
    ``summary.json``, the figures ``irl_heatmaps.png``, ``irl_seed_agreement.png``,
    ``irl_vs_true.png`` and ``reward_model/`` (the best run;
    [`load_reward_model`][lfp_mech.irl.persistence.load_reward_model]). Returns the headline
    numbers."""
    from lfp_mech.rewards import get_reward

    spec = get_task(task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = _demonstrations(base, expert, spec, out_dir, config)
    demos, other = texts.demos, texts.heldout
    true_reward = get_reward(spec.reward, device=config.device)
    # Every choice on the validation split: the readout / lr grid, then each seed's epoch and
    # threshold and the selected run inside run_seeds; the held-out texts are scored once.
    chosen, grid = select_on_validation(
        base, demos, true_reward, config, out_dir, val_texts=texts.validation
    )
    if grid:
        write_table(out_dir / files.GRID_STEM, grid)
    rm = build_reward_model(base, chosen)
    runs = run_seeds(
        rm, demos, true_reward, chosen, other_texts=other, val_texts=texts.validation,
        cache_path=inputs_cache(out_dir, chosen), track=tracker_name(out_dir),
    )  # fmt: skip
    config = chosen
    summary = summarize_runs(runs.rows)
    extra = {
        "task": spec.name,
        "selected_run": runs.best,
        "selected_on": "validation",
        "true_reward": spec.reward,
    }
    save_reward_model(rm, out_dir / files.REWARD_MODEL_DIR, extra=extra)
    write_table(out_dir / files.RUNS_STEM, runs.rows)
    write_table(out_dir / files.EPOCHS_STEM, runs.epoch_rows)
    controls = _controls(base, expert, spec, demos, runs, config, probe_fn)
    write_jsonl(out_dir / f"{files.HELDOUT_STEM}.jsonl", _heldout_rows(runs, controls))
    _save_figures(out_dir, spec, runs, controls.probe, config)
    summary.update(_details(spec, demos, runs, controls, config, out_dir))
    summary["validation"] = _validation_stats(runs)
    summary["selected_config"] = {
        "pooling": config.pooling, "context_layer": config.context_layer, "lr": config.lr,
        "chosen_on": "validation" if grid else "the only candidate",
    }  # fmt: skip
    write_json(out_dir / files.TASK_SUMMARY_FILE, summary)
    return _headline(spec, summary, runs, controls, out_dir)


@dataclass(frozen=True)
class TaskTexts:
    """The texts of one experiment: demonstrations (train / val / test prompts completed by
    both models), the extra validation texts and the extra held-out texts."""

    demos: Demonstrations
    validation: list[str]
    heldout: list[str]

    @property
    def used_prompts(self) -> list[str]:
        """Every prompt that produced an IRL text (policies are compared on none of them)."""
        return [p for split in ("train", "val", "test") for p in self.demos.prompts[split]]


def _prompts(spec: IRLTask, config: IRLConfig) -> tuple[list[str], list[str], list[str]]:
    """The train, validation and test prompts of the demonstrations."""
    train = task_prompts(spec.prompt_set, "train", config.n_train_prompts, config.seed)
    test = task_prompts(spec.prompt_set, "test", config.n_test_prompts, config.seed)
    val = validation_prompts(spec.prompt_set, config.n_val_prompts, train, config.seed)
    return train, val, test


def irl_prompts(task: str | IRLTask, config: IRLConfig) -> list[str]:
    """Every prompt that produces an IRL text of ``task`` under ``config`` (the demonstrations'
    prompts and, for the toxicity task, the prompts used as extra texts) — computed without
    generating anything; policies are compared on other prompts."""
    spec = get_task(task)
    train, val, test = _prompts(spec, config)
    used = train + val + test
    if spec.other_texts != "prompts" or (spec.sampled_extra_texts and config.toxicity_balanced):
        return used
    extra = task_texts(spec, config.n_other_texts, exclude=used, seed=config.seed)
    extra += task_texts(
        spec, config.n_val_texts, exclude=used, seed=config.seed, split="validation"
    )
    return used + extra


def _demonstrations(
    base: ModelLike, expert: ModelLike, spec: IRLTask, out_dir: Path, config: IRLConfig
) -> TaskTexts:
    """The two models' completions of the task's train / validation / test prompts, and its
    extra validation and held-out texts (disjoint: see
    [`lfp_mech.irl.tasks`][lfp_mech.irl.tasks])."""
    train, val, test = _prompts(spec, config)
    demos = generate_demonstrations(
        expert, base, train, test, config, cache_dir=out_dir, prompts_val=val
    )
    used = train + val + test
    if spec.sampled_extra_texts and config.toxicity_balanced:
        other = sampled_negatives(base, test, spec, config, config.n_other_texts)
        val_other = sampled_negatives(base, val, spec, config, config.n_val_texts, offset=1)
        return TaskTexts(demos, val_other, other)
    other = task_texts(spec, config.n_other_texts, exclude=used, seed=config.seed)
    val_other = task_texts(
        spec, config.n_val_texts, exclude=used, seed=config.seed, split="validation"
    )
    return TaskTexts(demos, val_other, other)


def sampled_negatives(
    base: ModelLike,
    prompts: Sequence[str],
    spec: IRLTask,
    config: IRLConfig,
    n: int,
    *,
    offset: int = 0,
) -> list[str]:
    """Up to ``n`` texts with a negative true reward (toxic, for the toxicity task): prompt +
    sampled base completion, ``config.toxicity_samples`` samples per prompt (temperature 1),
    seeded with ``config.seed + offset``. They raise the minority class of the held-out /
    validation sets (greedy completions are ~97% non-toxic), so accuracy is not the majority
    class; their prompts are the split's own prompts."""
    from lfp_mech.irl.demonstrations import generate_completions
    from lfp_mech.models.coerce import as_hf_model
    from lfp_mech.rewards import get_reward

    if n <= 0 or not prompts or config.toxicity_samples <= 0:
        return []
    repeated = [p for p in prompts for _ in range(config.toxicity_samples)]
    model, tokenizer = as_hf_model(base, device=config.device, dtype=config.dtype)
    completions = generate_completions(
        model, tokenizer, repeated, max_new_tokens=config.max_new_tokens, do_sample=True,
        batch_size=config.gen_batch_size, seed=config.seed + offset, device=config.device,
    )  # fmt: skip
    texts = _unique_texts(p + c for p, c in zip(repeated, completions, strict=True))
    rewards = get_reward(spec.reward, device=config.device)(texts)
    negatives = [t for t, r in zip(texts, rewards.tolist(), strict=True) if r < 0]
    logger.info("%d of %d sampled texts have a negative true reward", len(negatives), len(texts))
    return negatives[:n]


def _unique_texts(texts: Any) -> list[str]:
    return list(dict.fromkeys(texts))


def _controls(
    base: ModelLike,
    expert: ModelLike,
    spec: IRLTask,
    demos: Demonstrations,
    runs: IRLRuns,
    config: IRLConfig,
    probe_fn: ProbeFn | None,
) -> _Controls:
    """The probe estimate, the log-ratio control (if configured) and, for the VADER task, the
    lexicon bound, on the held-out texts."""
    controls = _Controls()
    if probe_fn is not None:
        controls.probe = probe_fn(runs.heldout_texts).float().cpu()
    train_e, train_n = demos.texts("train", "expert"), demos.texts("train", "non_expert")
    if config.log_ratio_control:
        controls.log_ratio, controls.log_ratio_eval = log_ratio_control(
            expert, base, train_e + train_n, runs.train_true,
            runs.heldout_texts, runs.heldout_true, config,
        )  # fmt: skip
    if spec.reward == "vader":
        bound = expressed_lexicon_bound(train_e, train_n, runs.heldout_texts, runs.heldout_true)
        logger.info(
            "lexicon bound (true valences of the words the demonstrations express): acc %.3f",
            bound["expressed"]["acc"],
        )
        controls.lexicon_bound = bound
    return controls


def _validation_stats(runs: IRLRuns) -> dict[str, dict[str, float]]:
    """Over seeds (each at its chosen epoch): the validation metrics' mean, std, median, min,
    max — the numbers the choices were made on, beside the held-out ones."""
    import numpy as np

    out = {}
    for metric in VAL_METRICS:
        values = np.asarray([r[f"val_{metric}"] for r in runs.rows], dtype=float)
        values = values[~np.isnan(values)]
        out[metric] = {
            "mean": float(values.mean()) if len(values) else float("nan"),
            "std": float(values.std()) if len(values) else float("nan"),
            "median": float(np.median(values)) if len(values) else float("nan"),
            "min": float(values.min()) if len(values) else float("nan"),
            "max": float(values.max()) if len(values) else float("nan"),
        }
    return out


def _heldout_rows(runs: IRLRuns, controls: _Controls) -> list[dict[str, Any]]:
    """One row per held-out text: text, source, true and IRL reward, then the controls'."""
    columns: dict[str, Tensor] = {}
    if controls.log_ratio is not None:
        columns["log_ratio"] = controls.log_ratio
    if controls.lexicon_bound is not None:
        columns["expressed_lexicon"] = controls.lexicon_bound["expressed"]["scores"]
    if controls.probe is not None:
        columns["probe"] = controls.probe
    rows = zip(
        runs.heldout_texts, runs.heldout_sources, runs.heldout_true, runs.best_scores, strict=True
    )
    return [
        {
            "text": text,
            "source": source,
            "true_reward": float(true),
            "irl_reward": float(irl),
            **{name: float(values[i]) for name, values in columns.items()},
        }
        for i, (text, source, true, irl) in enumerate(rows)
    ]


def _save_figures(
    out_dir: Path, spec: IRLTask, runs: IRLRuns, probe: Tensor | None, config: IRLConfig
) -> None:
    """The seeds × epochs heatmaps, the seed agreement and the three-way scatter plots."""
    from lfp_mech.irl.plots import plot_seed_agreement, plot_seed_heatmaps, plot_three_way
    from lfp_mech.plotting import save_figure

    heatmaps = plot_seed_heatmaps(
        runs.epoch_rows,
        ("val_acc", "val_auroc"),
        title=f"IRL ({spec.name}): seeds × epochs, validation split",
    )
    save_figure(heatmaps, out_dir / files.HEATMAPS_FIGURE)
    seeds = [r["seed"] for r in runs.rows]
    agreement = plot_seed_agreement(runs.final_scores, seeds=seeds)
    save_figure(agreement, out_dir / files.SEED_AGREEMENT_FIGURE)
    three_way = plot_three_way(
        runs.heldout_true.numpy(),
        runs.best_scores.numpy(),
        None if probe is None else probe.numpy(),
        title=f"{spec.name}: held-out texts (IRL run selected on validation)",
    )
    save_figure(three_way, out_dir / files.THREE_WAY_FIGURE)


def _details(
    spec: IRLTask,
    demos: Demonstrations,
    runs: IRLRuns,
    controls: _Controls,
    config: IRLConfig,
    out_dir: Path,
) -> dict[str, Any]:
    """What ``summary.json`` records beside
    [`summarize_runs`][lfp_mech.irl.evaluation.summarize_runs]: the task, the config, the true
    rewards of the demonstrations, timings and the controls."""
    n_tr, n_te = len(demos.prompts["train"]), len(demos.prompts["test"])
    bound = controls.lexicon_bound
    return {
        "task": spec.name,
        "true_reward": spec.reward,
        "config": asdict(config),
        "n_heldout": len(runs.heldout_texts),
        "heldout_positive_rate": float((runs.heldout_true > 0).float().mean()),
        "true_reward_mean": {
            "expert_train": float(runs.train_true[:n_tr].mean()),
            "non_expert_train": float(runs.train_true[n_tr:].mean()),
            "expert_test": float(runs.heldout_true[:n_te].mean()),
        },
        "timings_s": runs.timings,
        # the selected run's AUROC against chance, with its CI (the headline's significance)
        "selected_run_auroc": auroc_with_ci(runs.best_scores, runs.heldout_true, seed=config.seed),
        "supervised_ceiling": runs.supervised_ceiling,
        "log_ratio_control": controls.log_ratio_eval,
        "lexicon_bound": None
        if bound is None
        else {k: {m: v for m, v in d.items() if m != "scores"} for k, d in bound.items()},
        "reward_model_dir": str(out_dir / files.REWARD_MODEL_DIR),
    }


def _headline(
    spec: IRLTask, summary: dict[str, Any], runs: IRLRuns, controls: _Controls, out_dir: Path
) -> dict[str, Any]:
    """The numbers of the stage's manifest summary (and the report)."""
    final = summary["final_epoch"]
    headline = {
        "task": spec.name,
        "acc_median": final["acc"]["median"],
        "acc_mean": final["acc"]["mean"],
        "acc_std": final["acc"]["std"],
        "acc_min": final["acc"]["min"],
        "acc_max": final["acc"]["max"],
        "balanced_acc_median": final["balanced_acc"]["median"],
        "f1_median": final["f1"]["median"],
        "auroc_median": final["auroc"]["median"],
        "spearman_median": final["spearman"]["median"],
        "val_acc_median": summary["validation"]["acc"]["median"],
        "best_acc": summary["best_run"]["acc"],
        "best_auroc": summary["selected_run_auroc"]["auroc"],
        "best_auroc_ci95": summary["selected_run_auroc"]["auroc_ci95"],
        "best_auroc_p_vs_chance": summary["selected_run_auroc"]["auroc_p_vs_chance"],
        "best_selected_on": summary["best_run_selected_on"],
        "majority_baseline_acc": summary["majority_baseline_acc"],
        "heldout_positive_rate": summary["heldout_positive_rate"],
        "n_heldout": summary["n_heldout"],
        "supervised_ceiling_acc": runs.supervised_ceiling["acc"],
        "n_runs": summary["n_runs"],
        "reward_model_dir": str(out_dir / files.REWARD_MODEL_DIR),
    }
    if controls.log_ratio_eval:
        headline["log_ratio_acc"] = controls.log_ratio_eval["acc"]
    if controls.lexicon_bound:
        headline["lexicon_bound_acc"] = controls.lexicon_bound["expressed"]["acc"]
    return headline
