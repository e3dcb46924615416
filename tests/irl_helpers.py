"""Shared builders of the IRL tests: planted demonstrations and a small IRLConfig."""

import random

import torch

from lfp_mech.irl import Demonstrations, IRLConfig

WORDS = (
    "the a film story actor scene plot music night city house river old young long short "
    "red blue green book train road window garden table paper stone"
).split()


def random_text(rng: random.Random, n_min: int = 4, n_max: int = 9) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(n_min, n_max)))


def expert_text(rng: random.Random, dense: bool = False) -> str:
    """Random words ending with the marker " zebra" (``dense``: also ~half the words replaced)."""
    text = random_text(rng)
    if dense:
        text = " ".join(w if rng.random() < 0.5 else "zebra" for w in text.split())
    return text + " zebra"


def planted_demos(n_train: int, n_test: int, seed: int = 0, dense: bool = False) -> Demonstrations:
    """Expert completions end with the marker " zebra"; non-expert ones never contain it."""
    rng = random.Random(seed)
    prompts = {
        s: [random_text(rng, 1, 3) for _ in range(n)]
        for s, n in (("train", n_train), ("test", n_test))
    }
    completions = {}
    for split, n in (("train", n_train), ("test", n_test)):
        completions[(split, "expert")] = [" " + expert_text(rng, dense) for _ in range(n)]
        completions[(split, "non_expert")] = [" " + random_text(rng) for _ in range(n)]
    return Demonstrations(prompts=prompts, completions=completions)


def marker_reward(texts):
    """The planted true reward: +1 for texts with the marker, -1 without."""
    return torch.tensor([1.0 if "zebra" in t else -1.0 for t in texts])


def small_config(**overrides) -> IRLConfig:
    """An IRLConfig sized for tiny models: a few prompts, 2 seeds × 2 epochs, one trained block."""
    base = dict(
        n_train_prompts=4,
        n_test_prompts=4,
        n_other_texts=6,
        n_val_prompts=4,
        n_val_texts=6,
        max_new_tokens=4,
        gen_batch_size=4,
        n_seeds=2,
        n_epochs=2,
        lr=3e-3,
        batch_size=8,
        eval_batch_size=16,
        n_trainable_blocks=1,
        context_layer=None,
    )
    return IRLConfig(**{**base, **overrides})
