"""Prompt sets for the RLHF stage and contrastive triples for the probes.

Prompt sets ([`load_prompts`][lfp_mech.data.load_prompts]):

* ``"reviews"`` (offline default) — 1,054 neutral movie-review openings of 2–10 words written
  for this project (790 train / 264 test), standing in for the LFP paper's IMDB prefixes. No
  prompt contains a VADER lexicon word, so every bit of reward comes from the completion.
* ``"toxicity"`` (offline default) — 463 openings of online comments and replies that invite a
  continuation which may or may not be rude (347 train / 116 test), standing in for the IRL
  paper's Jigsaw prompts. The prompts themselves contain no slurs or explicit content.
* ``"imdb"`` / ``"jigsaw"`` — the papers' hub datasets; they need the Hugging Face hub and raise
  [`HubUnavailableError`][lfp_mech.errors.HubUnavailableError] (naming the offline alternative)
  without it.

Contrastive triples (LFP paper, section 3 / appendix A.3): the same sentence with a positive, a
neutral and a negative word in one adjective slot, plus the character span of that word in each
variant, so the probe stage can read activations at exactly the substituted token(s)
([`char_span_to_token_span`][lfp_mech.data.char_span_to_token_span]).
[`make_triples`][lfp_mech.data.make_triples] builds them offline from review templates and curated
word pools shipped with the package; positive and negative words are split into train and held-out
sets ([`heldout_words`][lfp_mech.data.heldout_words]) so the probe is evaluated on words it never
saw. [`imdb_triples`][lfp_mech.data.imdb_triples] is the paper's IMDB version (hub only)."""

import functools
import importlib.resources
import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lfp_mech.errors import HubUnavailableError
from lfp_mech.rewards import vader_lexicon

logger = logging.getLogger(__name__)

__all__ = [
    "HUB_PROMPT_SETS",
    "OFFLINE_PROMPT_SETS",
    "ContrastiveTriple",
    "char_span_to_token_span",
    "heldout_words",
    "imdb_triples",
    "lexicon_words",
    "load_prompts",
    "make_triples",
    "prompt_sets",
    "triple_templates",
    "word_pool",
]

OFFLINE_PROMPT_SETS = ("reviews", "toxicity")
"""Prompt sets shipped in ``lfp_mech/assets/prompts`` (no network needed)."""
HUB_PROMPT_SETS = {
    "imdb": ("stanfordnlp/imdb", "reviews"),
    "jigsaw": ("thesofakillers/jigsaw-toxic-comment-classification-challenge", "toxicity"),
}
"""Hub prompt sets: name -> (hub dataset id, offline alternative)."""

IMDB_DATASET = HUB_PROMPT_SETS["imdb"][0]
PREFIX_WORDS = (2, 10)
"""IMDB prompts are review prefixes of 2–10 whitespace words (the paper: 2–10 tokens)."""

Split = Literal["train", "test"]
_ASSETS = ("assets", "prompts")


# --------------------------------------------------------------------------- prompt sets


def prompt_sets() -> list[str]:
    """Every name [`load_prompts`][lfp_mech.data.load_prompts] accepts (offline ones first)."""
    return [*OFFLINE_PROMPT_SETS, *HUB_PROMPT_SETS]


def load_prompts(
    name: str, split: Split = "train", *, n: int | None = None, seed: int = 0
) -> list[str]:
    """The prompts of set ``name`` and ``split``; with ``n``, a subsample of ``n`` drawn with
    ``seed``.

    Offline sets ("reviews", "toxicity") come in a fixed file order; the subsample is
    ``random.Random(seed).sample(prompts, n)`` (deterministic, without replacement). Hub sets
    ("imdb", "jigsaw") need the Hugging Face hub.

    Raises:
        ValueError: unknown ``name`` (the message lists valid names) or ``n`` larger than the set.
        HubUnavailableError: a hub set was asked for and the hub cannot be reached
            (``HF_HUB_OFFLINE=1`` or no connection); the message names the offline alternative.
    """
    if name in OFFLINE_PROMPT_SETS:
        return _subsample(list(_asset_lines(f"{name}_{split}.txt")), n, seed)
    if name == "imdb":
        return _imdb_prompts(split, n, seed)
    if name == "jigsaw":
        return _jigsaw_prompts(split, n, seed)
    raise ValueError(f"unknown prompt set {name!r}; valid names: {', '.join(prompt_sets())}")


def _subsample(items: list[str], n: int | None, seed: int) -> list[str]:
    if n is None:
        return items
    if not 0 <= n <= len(items):
        raise ValueError(f"asked for n={n} prompts but the set has {len(items)}")
    return random.Random(seed).sample(items, n)


@functools.cache
def _asset_lines(filename: str) -> tuple[str, ...]:
    resource = importlib.resources.files("lfp_mech").joinpath(*_ASSETS, filename)
    lines = resource.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip())


def _load_hub_dataset(dataset_id: str, split: str, alternative: str) -> Any:
    """``datasets.load_dataset(dataset_id, split=split)``, or a HubUnavailableError naming
    ``alternative``."""
    from lfp_mech.hub import hub_reachable

    hint = f"use {alternative} instead, which works offline"
    if not hub_reachable():
        raise HubUnavailableError(
            f"hub dataset {dataset_id!r} is unavailable offline (HF_HUB_OFFLINE is set or the "
            f"Hugging Face hub is unreachable); {hint}"
        )
    import datasets

    try:
        return datasets.load_dataset(dataset_id, split=split)
    except _network_errors() as err:
        raise HubUnavailableError(
            f"could not load hub dataset {dataset_id!r} ({err}); {hint}"
        ) from err


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    for module, attr in (("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _offline_hint(name: str) -> str:
    return f"the prompt set {name!r} shipped with lfp_mech (load_prompts({name!r}, ...))"


def _prefix(text: str, rng: random.Random, lo: int, hi: int) -> str:
    tokens = text.replace("<br />", " ").split()
    return " ".join(tokens[: rng.randint(lo, hi)])


def _imdb_prompts(split: str, n: int | None, seed: int) -> list[str]:
    ds = _load_hub_dataset(IMDB_DATASET, split, _offline_hint("reviews"))
    rng = random.Random(seed)
    rows = range(len(ds)) if n is None else rng.sample(range(len(ds)), n)
    return [_prefix(ds[i]["text"], rng, *PREFIX_WORDS) for i in rows]


def _jigsaw_prompts(split: str, n: int | None, seed: int) -> list[str]:
    """Prefixes (4–12 words) of the comments labelled toxic in the Jigsaw toxic-comment data."""
    dataset_id = HUB_PROMPT_SETS["jigsaw"][0]
    ds = _load_hub_dataset(dataset_id, split, _offline_hint("toxicity"))
    column = next((c for c in ("comment_text", "text") if c in ds.column_names), None)
    if column is None:
        raise ValueError(f"{dataset_id!r} has no comment_text/text column: {ds.column_names}")
    if "toxic" in ds.column_names:
        ds = ds.filter(lambda row: bool(row["toxic"]))
    rng = random.Random(seed)
    rows = range(len(ds)) if n is None else rng.sample(range(len(ds)), n)
    return [_prefix(ds[i][column], rng, 4, 12) for i in rows]


# --------------------------------------------------------------------------- word pools


def lexicon_words(
    kind: Literal["positive", "negative", "all"] = "all", min_abs: float = 0.0
) -> list[str]:
    """Alphabetic single-word VADER lexicon entries of a sign with ``|valence| >= min_abs``, sorted.

    Emoticons, acronyms with digits and multi-word entries are left out; the result is the
    natural word list for evaluating a probe against the lexicon (Kendall τ, sign accuracy).
    """
    out = []
    for word, valence in vader_lexicon().items():
        if not word.isalpha() or abs(valence) < min_abs:
            continue
        if kind == "all" or (valence > 0 if kind == "positive" else valence < 0):
            out.append(word)
    return sorted(out)


def word_pool(kind: Literal["positive", "negative", "neutral"]) -> list[str]:
    """The curated adjectives shipped for substitution (``{kind}_words.txt``), sorted.

    Positive/negative words are VADER lexicon entries with valence >= 1 / <= -1 that read as
    adjectives in the templates; neutral words are adjectives absent from the lexicon.
    """
    return sorted(_asset_lines(f"{kind}_words.txt"))


def triple_templates() -> list[str]:
    """Review sentences with one adjective slot ``{}``; their line number is the ``template_id``."""
    return list(_asset_lines("triple_templates.txt"))


def heldout_words(seed: int = 0, heldout_fraction: float = 0.25) -> tuple[set[str], set[str]]:
    """Split the positive and negative pools into (train words, held-out test words).

    Each pool is shuffled with its own seeded RNG and ``round(heldout_fraction * len(pool))``
    words go to the test set, so both sets hold positive and negative words in the same ratio.
    The split depends only on ``seed`` and ``heldout_fraction``.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    train: set[str] = set()
    test: set[str] = set()
    for kind in ("positive", "negative"):
        pool = word_pool(kind)
        random.Random(f"heldout-{seed}-{kind}").shuffle(pool)
        n_test = round(heldout_fraction * len(pool))
        test.update(pool[:n_test])
        train.update(pool[n_test:])
    return train, test


# --------------------------------------------------------------------------- contrastive triples


@dataclass(frozen=True)
class ContrastiveTriple:
    """One sentence in three variants that differ only in one word (positive, neutral, negative).

    ``span_*`` are ``(start, end)`` character spans of the substituted word in each text
    (``text[start:end] == word``); ``valences`` are VADER lexicon valences (neutral: 0.0).
    """

    positive: str
    neutral: str
    negative: str
    span_positive: tuple[int, int]
    span_neutral: tuple[int, int]
    span_negative: tuple[int, int]
    words: tuple[str, str, str]
    valences: tuple[float, float, float]
    template_id: int

    def __post_init__(self) -> None:
        for text, (start, end), word in zip(self.texts, self.spans, self.words, strict=True):
            if text[start:end] != word:
                raise ValueError(f"span {(start, end)} of {text!r} is not the word {word!r}")

    @property
    def texts(self) -> tuple[str, str, str]:
        """``(positive, neutral, negative)``."""
        return (self.positive, self.neutral, self.negative)

    @property
    def spans(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """``(span_positive, span_neutral, span_negative)``."""
        return (self.span_positive, self.span_neutral, self.span_negative)


def _fill(template: str, words: tuple[str, str, str], template_id: int) -> ContrastiveTriple:
    start = template.index("{}")
    head, tail = template[:start], template[start + 2 :]
    lexicon = vader_lexicon()
    texts = [head + w + tail for w in words]
    spans = [(start, start + len(w)) for w in words]
    return ContrastiveTriple(
        positive=texts[0],
        neutral=texts[1],
        negative=texts[2],
        span_positive=spans[0],
        span_neutral=spans[1],
        span_negative=spans[2],
        words=words,
        valences=(lexicon[words[0]], lexicon.get(words[1], 0.0), lexicon[words[2]]),
        template_id=template_id,
    )


def _deck(items: Sequence[Any], rng: random.Random) -> Iterator[Any]:
    """Endless stream of ``items``, reshuffled on every pass (balanced use of every item)."""
    items = list(items)
    while True:
        rng.shuffle(items)
        yield from items


def _split_pools(
    split: Literal["train", "test", "all"], seed: int, heldout_fraction: float
) -> tuple[list[str], list[str]]:
    train, test = heldout_words(seed, heldout_fraction)
    allowed = {"train": train, "test": test, "all": train | test}[split]
    pos = [w for w in word_pool("positive") if w in allowed]
    neg = [w for w in word_pool("negative") if w in allowed]
    if not pos or not neg:
        raise ValueError(
            f"split {split!r} has no positive or negative words "
            f"(heldout_fraction={heldout_fraction}); use 0 < heldout_fraction < 1"
        )
    return pos, neg


def make_triples(
    n: int = 4000,
    *,
    seed: int = 0,
    heldout_fraction: float = 0.25,
    split: Literal["train", "test", "all"] = "train",
) -> list[ContrastiveTriple]:
    """``n`` distinct contrastive triples from the shipped templates and word pools (offline).

    Templates, positive, neutral and negative words are each drawn from a reshuffled deck, so every
    word and template is used about equally often. ``split="train"`` uses only the training words of
    [`heldout_words`][lfp_mech.data.heldout_words] ``(seed, heldout_fraction)``, ``"test"`` only the
    held-out words, ``"all"`` both; neutral words and templates are shared. Deterministic in
    ``(n, seed, heldout_fraction, split)``."""
    pos, neg = _split_pools(split, seed, heldout_fraction)
    neu = word_pool("neutral")
    templates = triple_templates()
    capacity = len(templates) * len(pos) * len(neu) * len(neg)
    if n > capacity:
        raise ValueError(f"n={n} exceeds the {capacity} distinct triples of split {split!r}")
    rng = random.Random(f"triples-{seed}-{split}")
    decks = [_deck(range(len(templates)), rng), _deck(pos, rng), _deck(neu, rng), _deck(neg, rng)]
    seen: set[tuple[int, str, str, str]] = set()
    triples: list[ContrastiveTriple] = []
    while len(triples) < n:
        key = tuple(next(d) for d in decks)
        if key in seen:
            continue
        seen.add(key)
        tid, p, u, g = key
        triples.append(_fill(templates[tid], (p, u, g), tid))
    return triples


def imdb_triples(
    n: int = 1000,
    *,
    seed: int = 0,
    heldout_fraction: float = 0.25,
    split: Literal["train", "test", "all"] = "test",
    max_chars: int = 400,
) -> list[ContrastiveTriple]:
    """The paper's triples: IMDB test sentences containing a pool adjective, that word substituted.

    For each IMDB test review (in seeded random order) the first sentence of at most ``max_chars``
    characters containing a word of the positive/negative pools becomes a template with that word as
    the slot; replacements come from the ``split`` words as in
    [`make_triples`][lfp_mech.data.make_triples]. ``template_id`` is the review's row in the IMDB
    test split.

    Raises:
        HubUnavailableError: the hub is unreachable; use
    [`make_triples`][lfp_mech.data.make_triples] offline."""
    ds = _load_hub_dataset(IMDB_DATASET, "test", "make_triples() (templates shipped with lfp_mech)")
    pos, neg = _split_pools(split, seed, heldout_fraction)
    neu = word_pool("neutral")
    slot = re.compile(
        r"\b(" + "|".join(word_pool("positive") + word_pool("negative")) + r")\b", re.IGNORECASE
    )
    rng = random.Random(f"imdb-triples-{seed}-{split}")
    rows = list(range(len(ds)))
    rng.shuffle(rows)
    triples: list[ContrastiveTriple] = []
    for row in rows:
        text = ds[row]["text"].replace("<br />", " ")
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            match = slot.search(sentence) if len(sentence) <= max_chars else None
            if match:
                template = sentence[: match.start()] + "{}" + sentence[match.end() :]
                if template.count("{}") == 1:
                    words = (rng.choice(pos), rng.choice(neu), rng.choice(neg))
                    triples.append(_fill(template, words, row))
                break
        if len(triples) >= n:
            break
    return triples


def char_span_to_token_span(
    tokenizer: Any,
    text: str,
    span: tuple[int, int],
    *,
    offset: int = 0,
    add_special_tokens: bool = False,
) -> tuple[int, int]:
    """Token indices ``[start, end)`` of the tokens of ``text`` overlapping the character ``span``.

    Uses a Hugging Face *fast* tokenizer's ``return_offsets_mapping=True``; a word split into
    several tokens gives all of them, and a token that also carries a leading space (" good")
    counts. Indices refer to ``tokenizer(text, add_special_tokens=add_special_tokens)``. If the
    model's input has extra tokens in front — e.g. the BOS TransformerLens prepends — pass
    ``offset=1`` (the number of prepended tokens) to shift the result.

    Raises:
        TypeError: ``tokenizer`` is not a fast tokenizer (no offset mapping).
        ValueError: no token overlaps ``span``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("char_span_to_token_span needs a fast (Rust) Hugging Face tokenizer")
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    start, end = span
    hits = [
        i
        for i, (a, b) in enumerate(enc["offset_mapping"])
        if b > a and a < end and b > start  # overlapping, non-empty (special tokens are (0, 0))
    ]
    if not hits:
        raise ValueError(f"no token of {text!r} overlaps characters {span}")
    return hits[0] + offset, hits[-1] + 1 + offset
