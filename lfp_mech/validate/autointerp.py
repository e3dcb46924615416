"""Describe SAE features and decide whether they are related to the fine-tuning task.

The LFP paper (section 4, Tables 1 and 8–10) had GPT-4 describe the features its probes rely on
and label each one "related to the fine-tuning task" or not, in the style of Bills et al. (2023).
This module does that with two labelers, both built on the same corpus scan:

1. **Top-activating contexts** (:func:`scan_features`, :func:`top_activating_contexts`): one
   batched TransformerLens forward per batch of corpus texts, stopped after the deepest SAE
   layer (``stop_at_layer``); every SAE encodes its hook's activations; per feature we keep the
   top-``k`` tokens (text, position, activation) and the feature's activations in a window of
   tokens around each, plus every feature's activation frequency (share of tokens where it is
   > 0) and mean activation. BOS and padding positions are excluded.
2. **Offline labeler** (:func:`label_feature`, default): a lexicon statistic of the words a
   feature fires on. For the VADER task: the words containing the top-``k`` tokens are looked up
   in the VADER lexicon and the statistic is their mean *absolute* valence ("how sentiment-laden
   are the words this feature fires on"). The null distribution is the same statistic for random
   features of the same SAE (dead ones excluded): ``p = (1 + #{null ≥ stat}) / (1 + n_null)``
   (a one-sided permutation-style test) and a z-score against the null's mean and spread. A
   feature is task-related when ``p < alpha``. Its description names the polarity (mean signed
   valence) and the most frequent top words, e.g. ``"fires on positive-sentiment words: great,
   love, ..."`` or ``"no clear sentiment: the, of, ..."``.
3. **LLM labeler** (:func:`describe_with_llm`, when an OpenAI-compatible chat endpoint is
   configured through ``LFP_MECH_LLM_BASE_URL``, ``LFP_MECH_LLM_MODEL`` and optionally
   ``LFP_MECH_LLM_API_KEY``): Bills et al.'s explain–simulate–score loop. Activations are
   discretized to 0–10 per token (relative to the feature's top activation); the model writes a
   one-sentence explanation from half of the top contexts, then simulates the activations of the
   other half from the explanation alone; the score is the Pearson correlation of simulated and
   true activations. A third prompt asks whether the explanation is related to the task. The
   client is stdlib ``urllib`` (no extra dependency).

:func:`describe_features` runs it all for ``{hook: feature ids}`` and returns rows in the paper's
table format (layer, feature index, description, task-related, p-value), written by
:func:`write_table` as CSV and Markdown.
"""

import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import re
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from lfp_mech._io import write_text
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.rewards import WORD_RE
from lfp_mech.validate.config import DEFAULT_TASK, AutointerpConfig

logger = logging.getLogger(__name__)

__all__ = [
    "ActivatingExample",
    "AutointerpConfig",
    "Corpus",
    "Descriptions",
    "FeatureScan",
    "LLMClient",
    "LLMDescription",
    "OfflineLabel",
    "corpus_batches",
    "describe_features",
    "describe_with_llm",
    "discretize",
    "label_feature",
    "layer_of_hook",
    "scan_features",
    "tokenize_corpus",
    "top_activating_contexts",
    "valence_statistics",
    "write_table",
]

ENV_BASE_URL = "LFP_MECH_LLM_BASE_URL"
ENV_MODEL = "LFP_MECH_LLM_MODEL"
ENV_API_KEY = "LFP_MECH_LLM_API_KEY"


# --------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    """Tokenized texts: ids with BOS at position 0, and the word each token belongs to."""

    texts: list[str]
    tokens: list[list[int]]
    spans: list[list[tuple[int, int]]]
    """Character span of each token in its text ((0, 0) for BOS)."""
    words: list[list[str]]
    """Lower-cased word containing each token ("" for BOS, spaces and punctuation)."""

    def token_text(self, i: int, pos: int) -> str:
        s, e = self.spans[i][pos]
        return self.texts[i][s:e] if pos > 0 else "<bos>"


def tokenize_corpus(model: nn.Module, texts: Sequence[str], *, max_len: int = 64) -> Corpus:
    """Tokenize like TransformerLens (BOS prepended) and keep each token's span and word.

    Empty and duplicate texts are dropped (a repeated text would fill a feature's top-k with
    copies of one context and bias frequencies).
    """
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("autointerp needs a fast tokenizer (character offsets per token)")
    texts = list(dict.fromkeys(t for t in texts if t and t.strip()))
    if not texts:
        raise ConfigError("the corpus is empty: pass at least one non-empty text")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prepend = bool(getattr(model.cfg, "default_prepend_bos", True))
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    tokens, spans, words = [], [], []
    for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"], strict=True):
        head = [bos] if prepend else []
        n = max_len - len(head)
        ids, offsets = list(ids[:n]), [tuple(o) for o in offsets[:n]]
        tokens.append(head + ids)
        spans.append([(0, 0)] * len(head) + offsets)
        words.append([""] * len(head) + _token_words(text, offsets))
    return Corpus(list(texts), tokens, spans, words)


def _token_words(text: str, offsets: Sequence[tuple[int, int]]) -> list[str]:
    """The word (letters/digits, inner apostrophes) under each token's first word character."""
    owner = [-1] * len(text)
    found = [m for m in WORD_RE.finditer(text.replace("’", "'"))]
    for w, m in enumerate(found):
        owner[m.start() : m.end()] = [w] * (m.end() - m.start())
    out = []
    for s, e in offsets:
        hit = next((owner[c] for c in range(s, min(e, len(text))) if owner[c] >= 0), -1)
        out.append(found[hit].group().lower() if hit >= 0 else "")
    return out


def layer_of_hook(hook_name: str) -> int | None:
    """Block index of a hook name (``blocks.7.hook_mlp_out`` → 7), None outside blocks."""
    m = re.match(r"blocks\.(\d+)\.", hook_name)
    return int(m.group(1)) if m else None


def corpus_batches(
    model: nn.Module,
    corpus: Corpus,
    hook_names: Sequence[str],
    batch_size: int,
    *,
    device: str = "cpu",
    progress: str | None = None,
) -> Iterator[tuple[list[int], dict[str, Tensor], Bool[Tensor, "batch pos"]]]:
    """Yield (text indices, {hook: activations [batch, pos, d]}, valid-token mask) per batch.

    One ``run_with_cache`` per batch, restricted to ``hook_names`` and stopped after the deepest
    of their layers. Texts are right-padded; the mask is False on BOS and padding.
    """
    layers = [layer_of_hook(h) for h in hook_names]
    stop = None if any(x is None for x in layers) else max(layers) + 1
    names = set(hook_names)
    pad = model.tokenizer.pad_token_id
    pad = pad if pad is not None else 0
    prepend = bool(getattr(model.cfg, "default_prepend_bos", True))
    starts = range(0, len(corpus.tokens), batch_size)
    for start in tqdm(
        starts, desc=progress, disable=True if progress is None else None, leave=False
    ):
        idx = list(range(start, min(start + batch_size, len(corpus.tokens))))
        rows = [corpus.tokens[i] for i in idx]
        width = max(len(r) for r in rows)
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        valid = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, ids in enumerate(rows):
            tokens[r, : len(ids)] = torch.tensor(ids)
            valid[r, int(prepend) : len(ids)] = True
        with torch.inference_mode():
            _, cache = model.run_with_cache(
                tokens.to(device), names_filter=lambda n: n in names, stop_at_layer=stop
            )
        yield idx, {h: cache[h] for h in hook_names}, valid


# --------------------------------------------------------------------------- scan


@dataclass
class ActivatingExample:
    """One top-activating token of a feature and its context window."""

    text_index: int
    position: int
    """Token position in the TransformerLens input (BOS = 0)."""
    token: str
    word: str
    """Lower-cased word containing the token ("" for spaces/punctuation)."""
    activation: float
    context: list[str]
    """The window's tokens as text pieces (the top token included)."""
    context_acts: list[float]
    """The feature's activation on each window token."""


@dataclass
class FeatureScan:
    """Everything one corpus pass learned about one SAE's features."""

    hook_name: str
    feature_ids: Int[Tensor, " n_feat"]
    """Features whose top contexts were kept (chosen first, then null features)."""
    values: Float[Tensor, "n_feat k"]
    text_index: Int[Tensor, "n_feat k"]
    position: Int[Tensor, "n_feat k"]
    context_acts: Float[Tensor, "n_feat k window"]
    window: tuple[int, int]
    frequency: Float[Tensor, " d_sae"]
    """Share of corpus tokens on which each feature is active (> 0)."""
    frequency_selected: Float[Tensor, " d_sae"]
    """Same, over the selected ("strong feedback") tokens only."""
    mean_activation: Float[Tensor, " d_sae"]
    n_tokens: int
    n_selected: int

    def examples(self, feature: int, corpus: Corpus) -> list[ActivatingExample]:
        """Top-activating examples of ``feature`` (highest first), context cut to the text."""
        rows = (self.feature_ids == feature).nonzero()
        if rows.numel() == 0:
            raise ConfigError(f"feature {feature} was not scanned at {self.hook_name}")
        j = int(rows[0, 0])
        left, _ = self.window
        out = []
        for r in range(self.values.shape[1]):
            value = float(self.values[j, r])
            if not math.isfinite(value):
                continue
            i, pos = int(self.text_index[j, r]), int(self.position[j, r])
            lo, hi = max(pos - left, 1), min(pos + self.window[1] + 1, len(corpus.tokens[i]))
            acts = self.context_acts[j, r, lo - (pos - left) : hi - (pos - left)]
            out.append(
                ActivatingExample(
                    text_index=i,
                    position=pos,
                    token=corpus.token_text(i, pos),
                    word=corpus.words[i][pos],
                    activation=value,
                    context=[corpus.token_text(i, p) for p in range(lo, hi)],
                    context_acts=[float(a) for a in acts],
                )
            )
        return out


def scan_features(
    model: nn.Module,
    saes: Mapping[str, nn.Module],
    feature_ids: Mapping[str, Sequence[int]],
    corpus: Corpus,
    *,
    k: int = 10,
    window: tuple[int, int] = (12, 4),
    batch_size: int = 16,
    selected_tokens: Bool[Tensor, "n_texts max_pos"] | None = None,
    device: str = "cpu",
) -> dict[str, FeatureScan]:
    """Top-``k`` activations with context windows for the given features of every SAE, and
    activation frequencies / means of all features, in one pass over ``corpus``.

    ``selected_tokens[i, pos]`` marks tokens counted in ``frequency_selected`` (default: none).
    """
    for hook, sae in saes.items():
        if hook not in model.hook_dict:
            raise ConfigError(f"unknown hook name {hook!r}; e.g. 'blocks.0.hook_mlp_out'")
        ids = list(feature_ids.get(hook, []))
        if ids and (min(ids) < 0 or max(ids) >= int(sae.cfg.d_sae)):
            raise ConfigError(
                f"feature ids for {hook!r} must be in 0..{int(sae.cfg.d_sae) - 1} (d_sae)"
            )
    left, right = window
    width = left + right + 1
    state: dict[str, dict[str, Any]] = {}
    for hook, sae in saes.items():
        n, d_sae = len(feature_ids.get(hook, [])), int(sae.cfg.d_sae)
        state[hook] = {
            "ids": torch.tensor(list(feature_ids.get(hook, [])), dtype=torch.long),
            "values": torch.full((n, k), -math.inf),
            "text": torch.full((n, k), -1, dtype=torch.long),
            "pos": torch.full((n, k), -1, dtype=torch.long),
            "ctx": torch.zeros((n, k, width)),
            "active": torch.zeros(d_sae, dtype=torch.float64),
            "active_sel": torch.zeros(d_sae, dtype=torch.float64),
            "sum": torch.zeros(d_sae, dtype=torch.float64),
        }
    n_tokens = n_selected = 0
    for idx, acts, valid in corpus_batches(
        model, corpus, list(saes), batch_size, device=device, progress="scan corpus"
    ):
        sel = torch.zeros_like(valid)
        if selected_tokens is not None:
            sub = selected_tokens[idx][:, : valid.shape[1]]
            sel[:, : sub.shape[1]] = sub
        sel &= valid
        n_tokens += int(valid.sum())
        n_selected += int(sel.sum())
        text_ids = torch.tensor(idx)
        for hook, sae in saes.items():
            with torch.inference_mode():
                z = sae.encode(acts[hook].to(sae.W_dec.device, sae.W_dec.dtype)).float().cpu()
            _update_scan(state[hook], z, valid, sel, text_ids, k, left, right)
    if n_tokens == 0:
        raise ConfigError("the corpus has no tokens besides BOS")
    return {
        hook: FeatureScan(
            hook_name=hook,
            feature_ids=s["ids"],
            values=s["values"],
            text_index=s["text"],
            position=s["pos"],
            context_acts=s["ctx"],
            window=(left, right),
            frequency=(s["active"] / n_tokens).float(),
            frequency_selected=(s["active_sel"] / max(n_selected, 1)).float(),
            mean_activation=(s["sum"] / n_tokens).float(),
            n_tokens=n_tokens,
            n_selected=n_selected,
        )
        for hook, s in state.items()
    }


def _update_scan(
    s: dict[str, Any],
    z: Float[Tensor, "batch pos d_sae"],
    valid: Bool[Tensor, "batch pos"],
    sel: Bool[Tensor, "batch pos"],
    text_ids: Int[Tensor, " batch"],
    k: int,
    left: int,
    right: int,
) -> None:
    active = (z > 0) & valid[..., None]
    s["active"] += active.sum(dim=(0, 1)).double()
    s["active_sel"] += (active & sel[..., None]).sum(dim=(0, 1)).double()
    s["sum"] += (z * valid[..., None]).sum(dim=(0, 1)).double()
    if s["ids"].numel() == 0:
        return
    zs = z.index_select(-1, s["ids"]).masked_fill(~valid[..., None], 0.0)
    n_pos = zs.shape[1]
    scores = rearrange(zs.masked_fill(~valid[..., None], -math.inf), "b p n -> n (b p)")
    vals, flat = scores.topk(min(k, scores.shape[1]), dim=1)
    b_idx, p_idx = flat // n_pos, flat % n_pos
    windows = F.pad(zs, (0, 0, left, right)).unfold(1, left + right + 1, 1)  # b p n w
    feat = torch.arange(zs.shape[-1])[:, None].expand_as(b_idx)
    ctx = windows[b_idx, p_idx, feat]  # n kk w
    all_vals = torch.cat([s["values"], vals], dim=1)
    all_text = torch.cat([s["text"], text_ids[b_idx]], dim=1)
    all_pos = torch.cat([s["pos"], p_idx], dim=1)
    all_ctx = torch.cat([s["ctx"], ctx], dim=1)
    s["values"], keep = all_vals.topk(k, dim=1)
    s["text"] = all_text.gather(1, keep)
    s["pos"] = all_pos.gather(1, keep)
    s["ctx"] = all_ctx[torch.arange(keep.shape[0])[:, None], keep]


def top_activating_contexts(
    model: nn.Module,
    sae: nn.Module,
    texts: Sequence[str],
    feature_ids: Sequence[int],
    k: int = 10,
    window: tuple[int, int] = (12, 4),
    *,
    hook_name: str | None = None,
    batch_size: int = 16,
    max_len: int = 64,
    device: str = "cpu",
) -> dict[int, list[ActivatingExample]]:
    """Per feature, its ``k`` highest activations on ``texts`` with context windows.

    The hook is ``sae.cfg.metadata.hook_name`` unless ``hook_name`` is given.
    """
    hook = hook_name or sae.cfg.metadata.hook_name
    if not hook:
        raise ConfigError("the SAE has no cfg.metadata.hook_name; pass hook_name=")
    corpus = tokenize_corpus(model, texts, max_len=max_len)
    ids = [int(f) for f in feature_ids]
    scan = scan_features(
        model,
        {hook: sae},
        {hook: ids},
        corpus,
        k=k,
        window=window,
        batch_size=batch_size,
        device=device,
    )[hook]
    return {f: scan.examples(f, corpus) for f in ids}


# --------------------------------------------------------------------------- offline labeler


@dataclass(frozen=True)
class OfflineLabel:
    """The offline labeler's verdict on one feature."""

    description: str
    task_related: bool
    p_value: float
    z_score: float
    statistic: float
    """Mean |valence| of the words under the top tokens."""
    mean_valence: float
    """Mean signed valence of those words (the polarity)."""
    sentiment_share: float
    """Share of those words that are in the lexicon with non-zero valence."""
    top_words: list[str]


def valence_statistics(
    words: Sequence[str], lexicon: Mapping[str, float]
) -> tuple[float, float, float]:
    """(mean |valence|, mean valence, share of lexicon words) of ``words`` (0s when empty).

    Words not in the lexicon, and empty words (spaces, punctuation), count as valence 0.
    """
    if not words:
        return 0.0, 0.0, 0.0
    vals = np.array([lexicon.get(w.lower(), 0.0) if w else 0.0 for w in words], dtype=np.float64)
    return float(np.abs(vals).mean()), float(vals.mean()), float((vals != 0).mean())


def label_feature(
    words: Sequence[str],
    null_statistics: Sequence[float],
    lexicon: Mapping[str, float],
    *,
    alpha: float = 0.05,
    n_words: int = 5,
) -> OfflineLabel:
    """Describe a feature from the words of its top-activating tokens, and test it.

    ``null_statistics`` are :func:`valence_statistics`'s first value for random features of the
    same SAE. ``p = (1 + #{null ≥ stat}) / (1 + len(null))``; ``task_related = p < alpha`` (and
    the feature fires on at least one sentiment word). With no null, ``p = 1``.
    """
    stat, mean_val, share = valence_statistics(words, lexicon)
    null = np.asarray(list(null_statistics), dtype=np.float64)
    if len(null):
        p = float((1 + (null >= stat - 1e-12).sum()) / (1 + len(null)))
        sd = float(null.std(ddof=1)) if len(null) > 1 else 0.0
        z = (
            (stat - float(null.mean())) / sd
            if sd > 0
            else (math.inf if stat > null.mean() else 0.0)
        )
    else:
        p, z = 1.0, 0.0
    related = p < alpha and share > 0
    shown = [w for w in words if w]
    sentiment_words = [w for w in shown if lexicon.get(w, 0.0) != 0.0]
    if related:
        signs = [lexicon[w] for w in sentiment_words]
        pos_share = sum(v > 0 for v in signs) / len(signs)
        kind = (
            "positive"
            if pos_share >= 0.75
            else "negative"
            if pos_share <= 0.25
            else "positive and negative"
        )
        top = _most_common(sentiment_words, n_words)
        description = f"fires on {kind}-sentiment words: {', '.join(top)}"
    elif not shown:
        top = []
        description = "fires on punctuation/whitespace tokens (no words)"
    else:
        top = _most_common(shown, n_words)
        description = f"no clear sentiment: {', '.join(top)}"
    return OfflineLabel(description, related, p, z, stat, mean_val, share, top)


def _most_common(words: Sequence[str], n: int) -> list[str]:
    return [w for w, _ in Counter(words).most_common(n)]


def _lexicon(name: str) -> dict[str, float]:
    if name != "vader":
        raise ConfigError(f"unknown lexicon {name!r}; available: 'vader'")
    try:
        from lfp_mech.rewards import vader_lexicon
    except ImportError:  # pragma: no cover - rewards ships with the package
        import importlib.resources

        text = importlib.resources.files("vaderSentiment").joinpath("vader_lexicon.txt")
        out: dict[str, float] = {}
        for line in text.read_text(encoding="utf-8").splitlines():
            cols = line.split("\t")
            if len(cols) >= 2 and cols[0]:
                out[cols[0].lower()] = float(cols[1])
        return out
    return vader_lexicon()


# --------------------------------------------------------------------------- LLM labeler


class LLMClient:
    """A minimal client of an OpenAI-compatible ``/chat/completions`` endpoint (stdlib urllib).

    Example: ``LLMClient("http://localhost:8000/v1", "my-model").chat([{"role": "user",
    "content": "hi"}])``. Local hosts bypass any HTTP proxy of the environment.
    """

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, *, timeout: float | int = 60.0
    ) -> None:
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                f"LLM base URL {base_url!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/v1)"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        local = parsed.hostname in ("127.0.0.1", "localhost", "::1")
        handlers = [urllib.request.ProxyHandler({})] if local else []
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_env(cls) -> "LLMClient | None":
        """A client from ``LFP_MECH_LLM_BASE_URL`` / ``_MODEL`` / ``_API_KEY``; None if unset."""
        base, model = os.environ.get(ENV_BASE_URL), os.environ.get(ENV_MODEL)
        if not base and not model:
            return None
        if not (base and model):
            raise ConfigError(f"set both {ENV_BASE_URL} and {ENV_MODEL} (or neither) to use an LLM")
        return cls(base, model, os.environ.get(ENV_API_KEY))

    def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float | int = 0.0,
        max_tokens: int = 512,
    ) -> str:
        """The assistant's reply text to ``messages``."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": list(messages),
                "temperature": temperature,
                "max_tokens": max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                data = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:300]
            raise LfpMechError(
                f"LLM endpoint {self.url} answered HTTP {err.code}: {detail}. "
                f"Check {ENV_MODEL} and {ENV_API_KEY}."
            ) from err
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise LfpMechError(
                f"cannot reach the LLM endpoint {self.url} ({err}); check "
                f"{ENV_BASE_URL} or unset it to use the offline labeler"
            ) from err
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as err:
            raise LfpMechError(
                f"LLM endpoint {self.url} returned no choices[0].message.content: {str(data)[:300]}"
            ) from err


@dataclass(frozen=True)
class LLMDescription:
    """Bills et al. (2023) style explanation of one feature."""

    explanation: str
    score: float
    """Pearson correlation of simulated and true activations on held-out contexts."""
    task_related: bool
    n_tokens_scored: int


_EXPLAIN_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in "
    "a short document. Look at the parts of the document the neuron activates for and summarize "
    "in a single sentence what the neuron is looking for. Don't list examples of words.\n\n"
    "The activation format is token<tab>activation. Activation values range from 0 to 10. A "
    "neuron finding what it's looking for is represented by a non-zero activation value. The "
    "higher the activation value, the stronger the match."
)
_SIMULATE_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron looks for some particular thing in "
    "a short document. Look at an explanation of what the neuron does, and try to predict its "
    "activations on each token.\n\nThe activation format is token<tab>activation, activations go "
    'from 0 to 10, "unknown" indicates an unknown activation. Most activations will be 0.'
)
_LEAD = "the main thing this neuron does is find"


def discretize(acts: Sequence[float], max_activation: float | int) -> list[int]:
    """Activations as integers 0–10 relative to ``max_activation`` (Bills et al.'s format)."""
    if max_activation <= 0:
        return [0 for _ in acts]
    return [int(min(10, max(0, round(10 * a / max_activation)))) for a in acts]


def _escape(token: str) -> str:
    return token.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _block(tokens: Sequence[str], values: Sequence[int | str]) -> str:
    lines = [f"{_escape(t)}\t{v}" for t, v in zip(tokens, values, strict=True)]
    return "<start>\n" + "\n".join(lines) + "\n<end>"


def _parse_simulation(reply: str, n: int) -> list[float]:
    values = []
    for line in reply.splitlines():
        if "\t" not in line:
            continue
        try:
            values.append(float(line.rsplit("\t", 1)[1].strip()))
        except ValueError:
            continue
    if len(values) != n:
        logger.warning(
            "LLM simulation returned %d values for %d tokens; padding/truncating", len(values), n
        )
    return (values + [0.0] * n)[:n]


def describe_with_llm(
    examples: Sequence[ActivatingExample],
    client: LLMClient,
    *,
    task_description: str = DEFAULT_TASK,
    label: str = "1",
) -> LLMDescription:
    """Explain a feature from half of its top contexts; simulate and score on the other half.

    Even-ranked examples go to the explanation prompt, odd-ranked ones are simulated (with a
    single example, it is used for both). The score is Pearson's r between the simulated 0–10
    values and the true activations over all simulated tokens (0 when either is constant).
    """
    if not examples:
        raise ConfigError("describe_with_llm: no activating examples given")
    max_act = max(max(e.context_acts, default=0.0) for e in examples)
    shown = list(examples[0::2])
    held = list(examples[1::2]) or shown
    blocks = "\n".join(_block(e.context, discretize(e.context_acts, max_act)) for e in shown)
    explanation = (
        client.chat(
            [
                {"role": "system", "content": _EXPLAIN_SYSTEM},
                {
                    "role": "user",
                    "content": f"Neuron {label}\nActivations:\n{blocks}\n\n"
                    f"Explanation of neuron {label} behavior: {_LEAD}",
                },
            ]
        )
        .strip()
        .rstrip(".")
    )
    simulated, true = [], []
    for e in held:
        reply = client.chat(
            [
                {"role": "system", "content": _SIMULATE_SYSTEM},
                {
                    "role": "user",
                    "content": (
                        f"Neuron {label}\nExplanation of neuron {label} behavior: {_LEAD} "
                        f"{explanation}.\nActivations:\n{_block(e.context, ['unknown'] * len(e.context))}"
                        '\n\nReply with the same lines, replacing each "unknown" with a number from '
                        "0 to 10."
                    ),
                },
            ]
        )
        simulated += _parse_simulation(reply, len(e.context))
        true += list(e.context_acts)
    score = _pearson(simulated, true)
    verdict = client.chat(
        [
            {
                "role": "user",
                "content": (
                    f"A language model was fine-tuned for this task: {task_description}.\n"
                    f"One of its features is explained as: the main thing this feature does is find "
                    f"{explanation}.\nIs this feature related to the fine-tuning task? Answer with one "
                    "word: yes or no."
                ),
            },
        ],
        max_tokens=5,
    )
    related = verdict.strip().lower().startswith("yes")
    return LLMDescription(explanation, score, related, len(true))


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


# --------------------------------------------------------------------------- all together


@dataclass
class Descriptions:
    """The description table and what it was computed from."""

    rows: list[dict[str, Any]]
    """One row per chosen feature: hook, layer, feature, description, task_related, p_value, ..."""
    scans: dict[str, FeatureScan]
    examples: dict[str, dict[int, list[ActivatingExample]]]
    used_llm: bool
    label_source: str = "offline"
    null_features: dict[str, list[int]] = field(default_factory=dict)

    def task_related(self) -> dict[str, list[int]]:
        """``{hook: task-related feature ids}`` by the configured labeler."""
        out: dict[str, list[int]] = {h: [] for h in self.scans}
        key = "llm_task_related" if self.label_source == "llm" else "task_related"
        for row in self.rows:
            if row.get(key):
                out[row["hook"]].append(int(row["feature"]))
        return out

    def contexts_json(self) -> dict[str, Any]:
        """Top contexts of the chosen features, JSON-ready."""
        return {
            hook: {str(f): [dataclasses.asdict(ex) for ex in exs] for f, exs in feats.items()}
            for hook, feats in self.examples.items()
        }


def describe_features(
    model: nn.Module,
    saes: Mapping[str, nn.Module],
    feature_choice: Mapping[str, Sequence[int]],
    texts: Sequence[str],
    config: AutointerpConfig | None = None,
    *,
    lexicon: Mapping[str, float] | None = None,
    client: LLMClient | None = None,
) -> Descriptions:
    """Describe and label the chosen features of every SAE (the paper's Tables 1, 8–10).

    One corpus pass scans the chosen features plus ``config.n_null`` random features per SAE
    (the null of the offline test). The LLM labeler runs when ``client`` is given, or per
    ``config.use_llm`` from the environment.
    """
    config = config or AutointerpConfig()
    lexicon = lexicon if lexicon is not None else _lexicon(config.lexicon)
    if client is None and config.use_llm != "never":
        client = LLMClient.from_env()
        if client is None and config.use_llm == "always":
            raise ConfigError(f"use_llm='always' but {ENV_BASE_URL} / {ENV_MODEL} are not set")
    if config.label_source == "llm" and client is None:
        raise ConfigError("label_source='llm' needs an LLM endpoint (LFP_MECH_LLM_* variables)")
    corpus = tokenize_corpus(model, texts, max_len=config.max_len)
    rng = random.Random(config.seed)
    scanned, nulls = {}, {}
    for hook, sae in saes.items():
        chosen = [int(f) for f in feature_choice.get(hook, [])]
        others = [f for f in range(int(sae.cfg.d_sae)) if f not in set(chosen)]
        nulls[hook] = sorted(rng.sample(others, min(config.n_null, len(others))))
        scanned[hook] = list(dict.fromkeys(chosen)) + nulls[hook]
    selected = _strong_tokens(corpus, lexicon, config.sentiment_word_threshold)
    scans = scan_features(
        model,
        saes,
        scanned,
        corpus,
        k=config.k,
        window=config.window,
        batch_size=config.batch_size,
        selected_tokens=selected,
        device=config.device,
    )
    rows, examples = [], {}
    for hook, scan in scans.items():
        null_stats = [
            valence_statistics(_top_words(scan, f, corpus), lexicon)[0]
            for f in nulls[hook]
            if scan.frequency[f] > 0
        ]
        if len(null_stats) < 20:
            logger.warning(
                "%s: only %d live null features; p-values are coarse", hook, len(null_stats)
            )
        examples[hook] = {}
        for f in dict.fromkeys(int(x) for x in feature_choice.get(hook, [])):
            exs = scan.examples(f, corpus)
            examples[hook][f] = exs
            rows.append(_row(hook, f, scan, exs, null_stats, lexicon, config, client))
    return Descriptions(rows, scans, examples, client is not None, config.label_source, nulls)


def _strong_tokens(
    corpus: Corpus, lexicon: Mapping[str, float], threshold: float
) -> Bool[Tensor, "n_texts max_pos"]:
    width = max(len(t) for t in corpus.tokens)
    mask = torch.zeros((len(corpus.tokens), width), dtype=torch.bool)
    for i, words in enumerate(corpus.words):
        for p, w in enumerate(words):
            if w and abs(lexicon.get(w, 0.0)) >= threshold:
                mask[i, p] = True
    return mask


def _top_words(scan: FeatureScan, feature: int, corpus: Corpus) -> list[str]:
    j = int((scan.feature_ids == feature).nonzero()[0, 0])
    return [
        corpus.words[int(i)][int(p)]
        for v, i, p in zip(scan.values[j], scan.text_index[j], scan.position[j], strict=True)
        if math.isfinite(float(v)) and float(v) > 0
    ]


def _row(
    hook: str,
    feature: int,
    scan: FeatureScan,
    examples: list[ActivatingExample],
    null_stats: list[float],
    lexicon: Mapping[str, float],
    config: AutointerpConfig,
    client: LLMClient | None,
) -> dict[str, Any]:
    words = [e.word for e in examples if e.activation > 0]
    if not words:
        label = OfflineLabel(
            "dead feature (never active on the corpus)", False, 1.0, 0.0, 0.0, 0.0, 0.0, []
        )
    else:
        label = label_feature(words, null_stats, lexicon, alpha=config.alpha)
    row = {
        "hook": hook,
        "layer": layer_of_hook(hook),
        "feature": feature,
        "description": label.description,
        "task_related": label.task_related,
        "p_value": label.p_value,
        "z_score": label.z_score,
        "mean_abs_valence": label.statistic,
        "mean_valence": label.mean_valence,
        "sentiment_share": label.sentiment_share,
        "max_activation": examples[0].activation if examples else 0.0,
        "frequency": float(scan.frequency[feature]),
        "top_tokens": " | ".join(e.token.strip() or repr(e.token) for e in examples[:5]),
    }
    if client is not None:
        live = [e for e in examples if e.activation > 0]
        if live:
            llm = describe_with_llm(
                live, client, task_description=config.task_description, label=str(feature)
            )
            row |= {
                "llm_explanation": llm.explanation,
                "llm_score": llm.score,
                "llm_task_related": llm.task_related,
            }
        else:
            row |= {"llm_explanation": "", "llm_score": math.nan, "llm_task_related": False}
    return row


# --------------------------------------------------------------------------- tables


def write_table(rows: Sequence[Mapping[str, Any]], stem: str | os.PathLike[str]) -> list[Path]:
    """Write ``rows`` as ``<stem>.csv`` and ``<stem>.md`` (atomically); returns both paths."""
    stem = Path(stem)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(_md_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return [
        write_text(stem.with_suffix(".csv"), buf.getvalue()),
        write_text(stem.with_suffix(".md"), "\n".join(md) + "\n"),
    ]


def _md_cell(value: Any) -> str:
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.4g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")
