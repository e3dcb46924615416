"""Reward functions: the feedback signals the RLHF stage optimises and the probes try to recover.

* [`vader_reward`][lfp_mech.rewards.vader_reward] — the LFP paper's VADER task reward, exactly
  ``clip((1/5) * sum_{word in text} V(word), -10, 10)`` with ``V`` the mean valence of the word in
  ``vader_lexicon.txt`` (shipped inside the ``vaderSentiment`` package; words not in the lexicon
  score 0). The word tokenizer is documented in [`words`][lfp_mech.rewards.words].
* [`vader_compound`][lfp_mech.rewards.vader_compound] — VADER's own ``SentimentIntensityAnalyzer``
  compound score in [-1, 1] (negation, intensifiers, ...), a smoother sentiment signal for analyses.
* [`toxicity_reward`][lfp_mech.rewards.toxicity_reward] — "be less toxic" (the IRL paper's task).
  The offline default is the scikit-learn offensive-language classifier of ``alt-profanity-check``;
  the paper's ``s-nlp/roberta_toxicity_classifier`` is used when asked for and the hub is reachable.

Every reward maps a batch of texts to a float32 tensor of shape ``[batch]``
([`RewardFn`][lfp_mech.rewards.RewardFn]); [`get_reward`][lfp_mech.rewards.get_reward] looks them up
by name and [`as_reward_fn`][lfp_mech.rewards.as_reward_fn] adapts any user callable."""

import functools
import importlib.resources
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from lfp_mech.errors import HubUnavailableError

logger = logging.getLogger(__name__)

__all__ = [
    "REWARD_SCALE",
    "REWARD_CLIP",
    "ROBERTA_TOXICITY_MODEL",
    "RewardFn",
    "as_reward_fn",
    "available_rewards",
    "get_reward",
    "toxicity_prob",
    "toxicity_reward",
    "vader_compound",
    "vader_lexicon",
    "vader_reward",
    "word_valences",
    "words",
]

REWARD_SCALE = 1.0 / 5.0
"""The paper's factor in front of the summed valences."""
REWARD_CLIP = 10.0
"""The paper clips the scaled sum to [-REWARD_CLIP, REWARD_CLIP]."""
ROBERTA_TOXICITY_MODEL = "s-nlp/roberta_toxicity_classifier"
"""The IRL paper's ground-truth toxicity classifier (hub only)."""

ToxicityBackend = Literal["auto", "profanity_check", "roberta"]


@runtime_checkable
class RewardFn(Protocol):
    """Anything that scores a batch of texts: ``texts -> Float[Tensor, "batch"]`` (higher = better)."""

    def __call__(self, texts: Sequence[str]) -> Float[Tensor, "batch"]: ...  # noqa: F821


def as_reward_fn(fn: Callable[[Sequence[str]], Any]) -> RewardFn:
    """Wrap a callable returning a list, ndarray or tensor of scores into a
    [`RewardFn`][lfp_mech.rewards.RewardFn].

    The wrapped function returns a float32 1-D CPU tensor and checks that it got one score per
    text (``ValueError`` otherwise), so any user scorer can be plugged into the pipeline.
    """

    @functools.wraps(fn)
    def wrapped(texts: Sequence[str]) -> Float[Tensor, "batch"]:  # noqa: F821
        texts = list(texts)
        raw = fn(texts)
        if isinstance(raw, Tensor):
            scores = raw.detach().to(device="cpu", dtype=torch.float32)
        else:
            scores = torch.as_tensor(np.asarray(raw, dtype=np.float32))
        scores = scores.reshape(-1) if scores.ndim == 2 and 1 in scores.shape else scores
        if scores.ndim != 1 or scores.shape[0] != len(texts):
            raise ValueError(
                f"reward function {getattr(fn, '__name__', fn)!r} returned shape "
                f"{tuple(scores.shape)} for {len(texts)} texts; it must return one score per text"
            )
        return scores.contiguous()

    return wrapped


# --------------------------------------------------------------------------- VADER lexicon


@functools.lru_cache(maxsize=1)
def vader_lexicon() -> dict[str, float]:
    """The VADER lexicon as ``{lower-cased token: mean valence}`` (about 7,500 entries, valence
    -4..+4).

    Read from ``vader_lexicon.txt`` inside the installed ``vaderSentiment`` package (tab-separated:
    token, mean valence, std, ten ratings). Duplicated lines: the last one wins, as in VADER
    itself. Keys are lower-cased; when a mixed-case emoticon (":P") and its lower-case form
    (":p") both exist, the lower-case entry is kept.
    """
    text = (
        importlib.resources.files("vaderSentiment")
        .joinpath("vader_lexicon.txt")
        .read_text(encoding="utf-8")
    )
    exact: dict[str, float] = {}
    for line in text.splitlines():
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) >= 2 and cols[0]:
            exact[cols[0]] = float(cols[1])
    lexicon = {tok.lower(): v for tok, v in exact.items() if tok != tok.lower()}
    lexicon.update({tok: v for tok, v in exact.items() if tok == tok.lower()})
    return lexicon


_PUNCT = "".join(sorted(set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…–—")))
WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
"""A word: a run of letters/digits with inner apostrophes (shared by every word-level analysis)."""


def _words(text: str, lexicon: dict[str, float]) -> Iterator[str]:
    for raw in text.replace("’", "'").lower().split():
        if raw in lexicon:
            yield raw
            continue
        core = raw.strip(_PUNCT)
        if core in lexicon:
            yield core
        else:
            yield from WORD_RE.findall(core)


def words(text: str) -> list[str]:
    """Split ``text`` into the lower-cased words the VADER reward looks up.

    The rule (deterministic, no model):

    1. lower-case the text, map the typographic apostrophe ``’`` to ``'``, split on whitespace;
    2. a whitespace token that is itself a lexicon entry is kept whole — this is how emoticons
       and other punctuation entries (``":)"``, ``"<3"``, ``"d:"``) are matched;
    3. otherwise surrounding punctuation is stripped (``"GOOD!"`` → ``"good"``,
       ``"(terrible),"`` → ``"terrible"``); if that is a lexicon entry it is kept;
    4. otherwise the stripped token is split into runs of letters/digits, keeping apostrophes
       inside words (``"don't"``, ``"well-made"`` → ``"well"``, ``"made"``;
       ``"good/bad"`` → ``"good"``, ``"bad"``), like spaCy splits infix hyphens and slashes.

    The lexicon's four multi-word entries ("can't stand", "fed up", ...) are never matched, as
    with the paper's per-token lookup.
    """
    return list(_words(text, vader_lexicon()))


def word_valences(text: str) -> list[tuple[str, float]]:
    """Each word of ``text`` (see [`words`][lfp_mech.rewards.words]) with its VADER valence (0.0 if
    not in the lexicon)."""
    lexicon = vader_lexicon()
    return [(w, lexicon.get(w, 0.0)) for w in _words(text, lexicon)]


def _vader_reward_one(text: str, lexicon: dict[str, float]) -> float:
    total = sum(lexicon.get(w, 0.0) for w in _words(text, lexicon))
    return min(max(REWARD_SCALE * total, -REWARD_CLIP), REWARD_CLIP)


def vader_reward(texts: Sequence[str]) -> Float[Tensor, "batch"]:  # noqa: F821
    """The LFP paper's VADER reward: ``clip((1/5) * Σ_{word ∈ text} V(word), -10, 10)``.

    ``V`` is [`vader_lexicon`][lfp_mech.rewards.vader_lexicon] (words not in it score 0) and the
    words are those of [`words`][lfp_mech.rewards.words]. Example: ``"a good film"`` → 1.9 / 5 =
    0.38; ``"excellent " * 40`` → 10.0."""
    lexicon = vader_lexicon()
    return torch.tensor([_vader_reward_one(t, lexicon) for t in texts], dtype=torch.float32)


@functools.lru_cache(maxsize=1)
def _vader_analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(texts: Sequence[str]) -> Float[Tensor, "batch"]:  # noqa: F821
    """VADER's ``SentimentIntensityAnalyzer().polarity_scores(text)["compound"]`` per text, in [-1,
    1]."""
    analyzer = _vader_analyzer()
    return torch.tensor(
        [analyzer.polarity_scores(t)["compound"] for t in texts], dtype=torch.float32
    )


# --------------------------------------------------------------------------- toxicity


def toxicity_prob(
    texts: Sequence[str], *, backend: ToxicityBackend = "auto", device: str = "cpu"
) -> Float[Tensor, "batch"]:  # noqa: F821
    """Probability that each text is toxic/offensive, in [0, 1] (on the CPU; ``device``: where
    the RoBERTa classifier runs).

    Backends:

    * ``"profanity_check"`` — ``profanity_check.predict_prob`` from ``alt-profanity-check``
      (a linear SVM on bag-of-words, trained on offensive-language data; offline, fast).
    * ``"roberta"`` — ``s-nlp/roberta_toxicity_classifier`` (the IRL paper's ground truth),
      softmax probability of its "toxic" class; needs the model from the hub or the local HF
      cache, otherwise [`HubUnavailableError`][lfp_mech.errors.HubUnavailableError].
    * ``"auto"`` (default) — ``"roberta"`` if the model is already in the local HF cache,
      else ``"profanity_check"``. The choice is logged; pass a backend explicitly for
      reproducible runs across machines.
    """
    texts = list(texts)
    chosen = _resolve_backend(backend)
    if not texts:
        return torch.zeros(0, dtype=torch.float32)
    if chosen == "roberta":
        return _roberta_toxicity(texts, device=device)
    from profanity_check import predict_prob

    return torch.as_tensor(np.asarray(predict_prob(texts), dtype=np.float32))


def toxicity_reward(
    texts: Sequence[str], *, backend: ToxicityBackend = "auto", device: str = "cpu"
) -> Float[Tensor, "batch"]:  # noqa: F821
    """Non-toxicity reward ``1 - 2 * p_toxic`` in [-1, 1]: +1 clearly harmless, -1 clearly toxic.

    ``p_toxic`` is [`toxicity_prob`][lfp_mech.rewards.toxicity_prob] with the same ``backend``
    (offline default: ``alt-profanity-check``). Centring at 0 makes "toxic" and "non-toxic" the two
    signs, as the IRL evaluation binarizes rewards at 0."""
    return 1.0 - 2.0 * toxicity_prob(texts, backend=backend, device=device)


def _resolve_backend(backend: str) -> str:
    if backend not in ("auto", "profanity_check", "roberta"):
        raise ValueError(
            f"unknown toxicity backend {backend!r}; use 'auto', 'profanity_check' or 'roberta'"
        )
    if backend != "auto":
        return backend
    chosen = "roberta" if _roberta_cached() else "profanity_check"
    _log_auto_choice(chosen)
    return chosen


@functools.cache
def _log_auto_choice(chosen: str) -> None:
    logger.info("toxicity backend 'auto' resolved to %r", chosen)


def _roberta_cached() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    found = try_to_load_from_cache(ROBERTA_TOXICITY_MODEL, "config.json")
    return isinstance(found, str)


@functools.lru_cache(maxsize=2)
def _roberta_classifier(device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local_only = _roberta_cached()
    if not local_only:
        from lfp_mech.hub import hub_reachable

        if not hub_reachable():
            raise HubUnavailableError(
                f"toxicity backend 'roberta' needs {ROBERTA_TOXICITY_MODEL!r} from the Hugging Face "
                "hub, which is unreachable (offline) and the model is not in the local cache. Use "
                "the offline default backend='profanity_check' (alt-profanity-check)."
            )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            ROBERTA_TOXICITY_MODEL, local_files_only=local_only
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            ROBERTA_TOXICITY_MODEL, local_files_only=local_only
        )
    except OSError as err:
        raise HubUnavailableError(
            f"could not load {ROBERTA_TOXICITY_MODEL!r} ({err}). Use the offline default "
            "backend='profanity_check' (alt-profanity-check)."
        ) from err
    model.eval()
    return tokenizer, model.to(device)


def _roberta_toxicity(
    texts: list[str], batch_size: int = 32, device: str = "cpu"
) -> Float[Tensor, "batch"]:  # noqa: F821
    tokenizer, model = _roberta_classifier(device)
    label2id = {k.lower(): v for k, v in model.config.label2id.items()}
    toxic_id = label2id.get("toxic", 1)
    probs = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[i : i + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=512,
            )
            logits = model(**enc.to(device)).logits
            probs.append(logits.float().softmax(dim=-1)[:, toxic_id].cpu())
    return torch.cat(probs).to(torch.float32)


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, RewardFn] = {
    "vader": vader_reward,
    "vader_compound": vader_compound,
    "toxicity": toxicity_reward,
}


_RUNS_A_MODEL = frozenset({"toxicity"})
"""Rewards that take ``device`` (their classifier may run on a GPU)."""


def available_rewards() -> list[str]:
    """Names accepted by [`get_reward`][lfp_mech.rewards.get_reward]."""
    return sorted(_REGISTRY)


def get_reward(name: str, *, device: str = "cpu") -> RewardFn:
    """The reward function registered under ``name``: "vader", "vader_compound" or "toxicity".
    ``device``: where a reward that runs a model (the toxicity task's RoBERTa classifier) runs
    it; the stages pass their own ``device``. Rewards are returned on the CPU either way.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    try:
        reward = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown reward {name!r}; valid names: {', '.join(available_rewards())}"
        ) from None
    if name in _RUNS_A_MODEL and device != "cpu":
        return functools.wraps(reward)(functools.partial(reward, device=device))
    return reward
