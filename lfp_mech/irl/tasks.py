"""The IRL tasks: which true reward, which prompts, which extra held-out texts.

* ``"vader"`` — true reward [`lfp_mech.rewards.vader_reward`][lfp_mech.rewards.vader_reward],
  prompts "reviews", extra held-out texts: contrastive review sentences (positive / neutral /
  negative variants).
* ``"toxicity"`` — true reward
  [`lfp_mech.rewards.toxicity_reward`][lfp_mech.rewards.toxicity_reward] (offline ground truth
  ``alt-profanity-check``), prompts "toxicity", extra held-out texts: unused prompts."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lfp_mech.errors import ConfigError

__all__ = [
    "TASKS",
    "IRLTask",
    "TextSplit",
    "get_task",
    "policy_eval_prompts",
    "sampled_prompts",
    "split_triples",
    "task_prompts",
    "task_texts",
    "triple_vocabulary",
    "validation_prompts",
]

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
    sampled_extra_texts: bool = False
    """The extra held-out / validation texts are sampled base completions with a negative true
    reward (with ``IRLConfig.toxicity_balanced``): the toxicity task, whose greedy
    demonstrations are almost all non-toxic."""


TASKS: dict[str, IRLTask] = {
    "vader": IRLTask("vader", reward="vader", prompt_set="reviews", other_texts="triples"),
    "toxicity": IRLTask(
        "toxicity",
        reward="toxicity",
        prompt_set="toxicity",
        other_texts="prompts",
        report_toxicity=True,
        sampled_extra_texts=True,
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


TextSplit = Literal["validation", "test"]


def triple_vocabulary(split: TextSplit, seed: int = 0) -> dict[str, list[str]]:
    """The templates and words the VADER task's extra texts of ``split`` are built from.

    Lexicon (positive / negative) words: the held-out words of
    [`lfp_mech.data.heldout_words`][lfp_mech.data.heldout_words] for "test", its training words
    for "validation". Templates and neutral words: each shuffled with ``seed`` and halved, the
    first half for "test", the second for "validation". The two splits share no template and no
    word."""
    from lfp_mech import data

    train_words, test_words = data.heldout_words(seed)
    lexicon = sorted(test_words if split == "test" else train_words)
    out: dict[str, list[str]] = {"lexicon": lexicon}
    for kind, items in (
        ("templates", data.triple_templates()),
        ("neutral", data.word_pool("neutral")),
    ):
        order = np.random.default_rng([seed, len(items)]).permutation(len(items))
        half = len(items) // 2
        picked = order[:half] if split == "test" else order[half:]
        out[kind] = [items[i] for i in sorted(picked)]
    return out


def split_triples(split: TextSplit, n: int, seed: int = 0) -> list[str]:
    """``n`` contrastive review sentences of ``split`` (positive, neutral and negative variants
    of the same sentence, in turn) from [`triple_vocabulary`][lfp_mech.irl.tasks.triple_vocabulary]:
    texts whose true reward spans both signs."""
    from lfp_mech.rewards import vader_lexicon

    vocab = triple_vocabulary(split, seed)
    lexicon = vader_lexicon()
    pos = [w for w in vocab["lexicon"] if lexicon[w] > 0]
    neg = [w for w in vocab["lexicon"] if lexicon[w] < 0]
    rng = np.random.default_rng([seed, 1 if split == "test" else 2])
    texts: list[str] = []
    while len(texts) < n:
        template = vocab["templates"][int(rng.integers(len(vocab["templates"])))]
        for pool in (pos, vocab["neutral"], neg):
            texts.append(template.replace("{}", pool[int(rng.integers(len(pool)))], 1))
    return texts[:n]


def task_texts(
    task: str | IRLTask,
    n: int,
    *,
    exclude: Sequence[str] = (),
    seed: int = 0,
    split: TextSplit = "test",
) -> list[str]:
    """``n`` extra texts of ``task`` for ``split`` ("test": held out; "validation").

    VADER: contrastive review sentences ([`split_triples`][lfp_mech.irl.tasks.split_triples]).
    Toxicity: prompts of the task not in ``exclude`` — test-split prompts for "test", train-split
    ones for "validation"."""
    from lfp_mech import data

    spec = get_task(task)
    if n <= 0:
        return []
    if spec.other_texts == "triples":
        return split_triples(split, n, seed)
    used = set(exclude)
    source = "test" if split == "test" else "train"
    pool = [p for p in data.load_prompts(spec.prompt_set, source) if p not in used]  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(pool))[:n] if pool else []
    return [pool[i] for i in sorted(picked)]


def validation_prompts(prompt_set: str, n: int, exclude: Sequence[str], seed: int) -> list[str]:
    """``n`` train-split prompts of ``prompt_set`` not in ``exclude`` (the training prompts),
    drawn with ``seed``: the validation prompts (never a test-split prompt)."""
    from lfp_mech.data import load_prompts

    if n <= 0:
        return []
    used = set(exclude)
    pool = [p for p in load_prompts(prompt_set, "train") if p not in used]  # type: ignore[arg-type]
    order = np.random.default_rng([seed, 7]).permutation(len(pool))[:n]
    return [pool[i] for i in sorted(order)]


def policy_eval_prompts(prompt_set: str, n: int, exclude: Sequence[str], seed: int) -> list[str]:
    """Up to ``n`` test-split prompts of ``prompt_set`` not in ``exclude`` (every prompt that
    produced an IRL text), drawn with ``seed``: where the IRL-RLHF policies are compared."""
    from lfp_mech.data import load_prompts

    used = set(exclude)
    pool = [p for p in load_prompts(prompt_set, "test") if p not in used]  # type: ignore[arg-type]
    if not pool:
        raise ConfigError(
            f"every test prompt of {prompt_set!r} produced an IRL text: no prompt is left to "
            "compare policies on; lower irl.n_test_prompts / irl.n_other_texts"
        )
    if len(pool) < n:
        logger.warning("only %d unused test prompts of %r (< %d)", len(pool), prompt_set, n)
    order = np.random.default_rng([seed, 11]).permutation(len(pool))[:n]
    return [pool[i] for i in sorted(order)]


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
