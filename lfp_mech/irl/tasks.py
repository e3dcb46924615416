"""The IRL tasks: which true reward, which prompts, which extra held-out texts.

* ``"vader"`` — true reward [`lfp_mech.rewards.vader_reward`][lfp_mech.rewards.vader_reward],
  prompts "reviews", extra held-out texts: contrastive review sentences (positive / neutral /
  negative variants).
* ``"toxicity"`` — true reward
  [`lfp_mech.rewards.toxicity_reward`][lfp_mech.rewards.toxicity_reward] (offline ground truth
  ``alt-profanity-check``), prompts "toxicity", extra held-out texts: unused prompts."""

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lfp_mech.errors import ConfigError

__all__ = ["TASKS", "IRLTask", "get_task", "sampled_prompts", "task_prompts", "task_texts"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IRLTask:
    """A task: the true reward (name for
    [`lfp_mech.rewards.get_reward`][lfp_mech.rewards.get_reward]) and its prompts."""

    name: str
    reward: str
    prompt_set: str
    other_texts: Literal["triples", "prompts"]
    """Where the extra held-out texts come from (see [`task_texts`][lfp_mech.irl.tasks.task_texts]).
    """
    report_toxicity: bool = False
    """Add the toxicity probability to the policy table (toxicity task)."""


TASKS: dict[str, IRLTask] = {
    "vader": IRLTask("vader", reward="vader", prompt_set="reviews", other_texts="triples"),
    "toxicity": IRLTask(
        "toxicity",
        reward="toxicity",
        prompt_set="toxicity",
        other_texts="prompts",
        report_toxicity=True,
    ),
}
"""The IRL tasks by name: ``"vader"`` (the RLHF stage's reward and review prompts) and
``"toxicity"`` (the IRL paper's task: the offline toxicity reward and toxicity prompts)."""


def get_task(task: str | IRLTask) -> IRLTask:
    """The [`IRLTask`][lfp_mech.irl.tasks.IRLTask] named ``task`` (a task passes through); unknown
    names raise."""
    if isinstance(task, IRLTask):
        return task
    if task not in TASKS:
        raise ConfigError(f"unknown IRL task {task!r}; tasks: {', '.join(TASKS)}")
    return TASKS[task]


def task_texts(
    task: str | IRLTask, n: int, *, exclude: Sequence[str] = (), seed: int = 0
) -> list[str]:
    """``n`` extra held-out texts of ``task`` (fewer if the offline set is smaller).

    VADER: the positive, neutral and negative variants of held-out contrastive review sentences
    ([`lfp_mech.data.make_triples`][lfp_mech.data.make_triples], ``split="test"``) — texts whose
    true reward spans both signs. Toxicity: prompts of the task not in ``exclude`` (test split
    first)."""
    from lfp_mech import data

    spec = get_task(task)
    if n <= 0:
        return []
    if spec.other_texts == "triples":
        triples = data.make_triples(math.ceil(n / 3), seed=seed, split="test")
        return [t for triple in triples for t in triple.texts][:n]
    used = set(exclude)
    pool = [
        p
        for split in ("test", "train")
        for p in data.load_prompts(spec.prompt_set, split)
        if p not in used
    ]
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(pool))[:n] if pool else []
    return [pool[i] for i in sorted(picked)]


def task_prompts(prompt_set: str, split: str, n: int, seed: int) -> list[str]:
    """``n`` prompts of ``prompt_set``/``split`` drawn with ``seed`` — the demonstrations' prompts.

    If the set is smaller than ``n``: all of them, in file order, with a warning.
    """
    from lfp_mech.data import load_prompts

    available = load_prompts(prompt_set, split)  # type: ignore[arg-type]
    if n > len(available):
        logger.warning(
            "prompt set %r/%s has %d prompts < %d asked: using all of them",
            prompt_set,
            split,
            len(available),
            n,
        )
        return list(available)
    return load_prompts(prompt_set, split, n=n, seed=seed)  # type: ignore[arg-type]


def sampled_prompts(prompt_set: str, n: int, seed: int) -> list[str]:
    """``min(n, size)`` held-out (test) prompts of ``prompt_set``, drawn with ``seed`` — the
    prompts the IRL-RLHF policies are compared on.

    Unlike [`task_prompts`][lfp_mech.irl.tasks.task_prompts], a set smaller than ``n`` comes back
    shuffled (a sample of all of it), as the stage has always drawn its evaluation prompts."""
    from lfp_mech.data import load_prompts

    available = len(load_prompts(prompt_set, "test"))  # type: ignore[arg-type]
    return load_prompts(prompt_set, "test", n=min(n, available), seed=seed)  # type: ignore[arg-type]
