"""The per-step training log (``train_log.csv``): its columns, and reading and writing it.

One row per optimizer step, written by
[`lfp_mech.rlhf.session.GuardCallback`][lfp_mech.rlhf.session.GuardCallback] during training. The
whole table is rewritten after every step (it is small) with `lfp_mech._io.write_table`, so a killed
run leaves the log of its last step, and a resumed run reads it back with
[`read_train_log`][lfp_mech.rlhf.logs.read_train_log] and drops the rows after its checkpoint."""

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lfp_mech._io import write_table

__all__ = [
    "DPO_LOG_COLUMNS",
    "DPO_LOG_KEYS",
    "RL_LOG_COLUMNS",
    "RL_LOG_KEYS",
    "as_float",
    "read_train_log",
    "write_train_log",
]

RL_LOG_COLUMNS = (
    "step",
    "reward_mean",
    "reward_std",
    "kl",
    "completion_length",
    "distinct_2",
    "loss",
    "learning_rate",
    "elapsed_s",
)
"""Columns of ``train_log.csv`` for GRPO/RLOO (one row per optimizer step)."""
DPO_LOG_COLUMNS = (
    "step",
    "loss",
    "reward_margin",
    "reward_accuracy",
    "chosen_reward",
    "rejected_reward",
    "learning_rate",
    "elapsed_s",
)
"""Columns of ``train_log.csv`` for DPO (the "rewards" are DPO's implicit rewards)."""

RL_LOG_KEYS = {
    "reward_mean": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completion_length": "completions/mean_length",
    "loss": "loss",
    "learning_rate": "learning_rate",
}
"""Log column -> the key of TRL's GRPO/RLOO logs it is read from."""
DPO_LOG_KEYS = {
    "loss": "loss",
    "reward_margin": "rewards/margins",
    "reward_accuracy": "rewards/accuracies",
    "chosen_reward": "rewards/chosen",
    "rejected_reward": "rewards/rejected",
    "learning_rate": "learning_rate",
}
"""Log column -> the key of TRL's DPO logs it is read from."""


def as_float(value: Any) -> float:
    """``float(value)``, or NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_train_log(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """Rows of a ``train_log.csv`` as dicts of floats (``[]`` if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: as_float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_train_log(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, float | int]],
    columns: Sequence[str],
) -> Path:
    """Write the training log (``path`` with suffixes .csv, .md, .json); returns the CSV path.

    Missing cells are NaN; ``step`` is written as an integer.
    """
    table = [
        {c: int(row["step"]) if c == "step" else row.get(c, math.nan) for c in columns}
        for row in rows
    ]
    return write_table(path, table, columns)
