"""The corpus the features are read on: tokenized like TransformerLens, with each token's word,
and batched forward passes that return the SAE hooks' activations."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from lfp_mech.errors import ConfigError
from lfp_mech.hooks import layer_of_hook
from lfp_mech.rewards import WORD_RE

__all__ = ["Corpus", "corpus_batches", "tokenize_corpus"]


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
        """The text of token ``pos`` of text ``i`` (``"<bos>"`` at position 0)."""
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
    found = list(WORD_RE.finditer(text.replace("’", "'")))
    for w, m in enumerate(found):
        owner[m.start() : m.end()] = [w] * (m.end() - m.start())
    out = []
    for s, e in offsets:
        hit = next((owner[c] for c in range(s, min(e, len(text))) if owner[c] >= 0), -1)
        out.append(found[hit].group().lower() if hit >= 0 else "")
    return out


def corpus_batches(
    model: nn.Module,
    corpus: Corpus,
    hook_names: Sequence[str],
    batch_size: int,
    *,
    device: str = "cpu",
    progress: str | None = None,
) -> Iterator[
    tuple[list[int], dict[str, Float[Tensor, "batch pos d_in"]], Bool[Tensor, "batch pos"]]
]:
    """Yield (text indices, {hook: activations}, valid-token mask) per batch of texts.

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
