"""Capture MLP activations of the chosen layers with TransformerLens hooks, streamed to disk.

The LFP paper trains its sparse autoencoders on the MLP outputs of the fine-tuned model's most
divergent layers (section 3.1; 75,000 training examples per layer). This module produces that
training data:

* **what**: ``blocks.{l}.hook_mlp_out`` (the MLP's output, ``d_model`` wide; default, what the
  paper's SAEs reconstruct) or ``blocks.{l}.mlp.hook_post`` (the MLP's hidden neurons after the
  nonlinearity, ``d_mlp`` wide), for every chosen layer at once.
* **how**: :func:`capture_activations` runs ``model.run_with_cache`` on batches of texts with
  ``names_filter`` restricted to exactly those hooks and ``stop_at_layer = max(layer) + 1``, so
  nothing after the last needed block is computed (TransformerLens has a fixed cost of ~0.2 s
  per call: texts are batched). Each text is tokenised as ``[BOS] + tokens`` (what
  TransformerLens does with a string), right-padded, and run with an explicit attention mask.
  The BOS position and the padding positions are dropped: BOS activations are huge outliers that
  carry no information about the text, and padding is not text.
* **where**: activations stream to sharded safetensors files (one shard per ``shard_tokens``
  tokens; every layer's activations in the same shard, keyed by hook name, plus ``text_index``
  and ``position`` of each token), so memory stays bounded by one shard whatever the token count
  (plus the texts' token ids, 4 bytes a token, ~0.2% of a 576-wide float32 activation).
  ``store.json`` (written last) describes the store; ``texts.json`` keeps the captured texts.
* **reading**: :class:`ActivationStore` streams shuffled ``[batch, d_in]`` batches of one hook
  (shard order shuffled, tokens shuffled within each shard), every token exactly once per epoch.

Text source (:func:`activation_corpus`): the fine-tuned policy's completions to its training
prompts (the text the RLHF'd model actually produces, where learned feedback patterns should be
active) mixed with the prompt corpus itself (inputs the policy was trained on). The paper used
75,000 examples per layer; the default here is 75,000 training tokens (one activation vector
per non-BOS token and layer) plus 8,192 held-out tokens for the SAE metrics. When the given texts
hold fewer tokens, :func:`run_activations_stage` samples more completions from the tuned policy
(:func:`sample_completions`).
"""

import itertools
import json
import logging
import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from safetensors import safe_open
from torch import Tensor
from tqdm.auto import tqdm

from lfp_mech._io import atomic_dir, read_json, save_tensors, write_json
from lfp_mech.activations.config import PAPER_EXAMPLES_PER_LAYER, ActivationConfig
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.hooks import HOOK_TEMPLATES, hook_name
from lfp_mech.models import generate_texts

logger = logging.getLogger(__name__)

HookKind = Literal["mlp_out", "mlp_post"]
STORE_FILE = "store.json"
TEXTS_FILE = "texts.json"
STORE_VERSION = 1
_MAX_TOP_UP_ROUNDS = 5


def capture_activations(
    model,
    texts: Sequence[str],
    layers: Sequence[int],
    out_dir: str | os.PathLike[str],
    config: ActivationConfig | None = None,
    *,
    max_tokens: int | None = None,
) -> "ActivationStore":
    """Run ``model`` on ``texts`` and stream the chosen layers' activations to ``out_dir``.

    Args:
        model (HookedTransformer): the model (e.g. from :func:`lfp_mech.models.load_model`).
        texts: the texts; each becomes ``[BOS] + tokens`` truncated to ``context_length``.
        layers: block indices to capture (all in one pass).
        out_dir: the store directory (replaced atomically when the capture completes).
        config: hook kind, batch size, shard size, dtype.
        max_tokens: stop after the text that reaches this many tokens (default
            ``config.n_tokens``); ``0`` or less means no limit.

    Returns:
        The :class:`ActivationStore` of ``out_dir``. Token ``i`` of the store is position
        ``position[i]`` (>= 1) of text ``text_index[i]``, in the order of ``texts``.

    Raises:
        ConfigError: no texts, no layers, or a layer out of range.
    """
    config = config or ActivationConfig()
    layers = _check_layers(model, layers)
    texts = list(texts)
    if not texts:
        raise ConfigError("no texts to capture activations from: pass at least one text")
    limit = config.n_tokens if max_tokens is None else max_tokens
    names = [hook_name(layer, config.hook) for layer in layers]
    # All token ids stay in memory (the texts are sorted by length), so they are kept compact:
    # one int32 tensor, not lists of Python ints (~9x smaller).
    token_ids = _TokenIds(model.tokenizer, texts, config.context_length)
    selected = _take_until(token_ids.lengths, limit)
    # Long texts first: fewer padded positions per batch. Store order stays recoverable from
    # text_index/position; shards are written in capture order.
    order = sorted(selected, key=lambda i: -token_ids.lengths[i])
    bos = _bos_id(model.tokenizer)
    pad = _pad_id(model.tokenizer)
    dtype = getattr(torch, config.dtype)
    total = sum(token_ids.lengths[i] for i in selected)
    writer = _ShardWriter(names, config.shard_tokens, dtype)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        writer.directory = tmp
        progress = tqdm(total=total, desc="capture", unit="tok", disable=None)
        with torch.inference_mode():
            for start in range(0, len(order), config.batch_size):
                batch = order[start : start + config.batch_size]
                tokens, mask = _pad_batch([token_ids[i] for i in batch], bos, pad)
                _, cache = model.run_with_cache(
                    tokens.to(config.device),
                    attention_mask=mask.long().to(config.device),
                    names_filter=names,
                    stop_at_layer=max(layers) + 1,
                )
                keep = mask.clone()
                keep[:, 0] = False  # BOS
                text_index = torch.tensor(batch).unsqueeze(1).expand_as(tokens)[keep]
                position = torch.arange(tokens.shape[1]).expand_as(tokens)[keep]
                writer.add(
                    {name: cache[name][keep.to(config.device)].cpu() for name in names},
                    text_index,
                    position,
                )
                progress.update(int(keep.sum()))
        progress.close()
        writer.close()
        with open(tmp / TEXTS_FILE, "w", encoding="utf-8") as f:
            json.dump(texts, f)  # streamed: no second copy of every text in one string
        write_json(
            tmp / STORE_FILE,
            {
                "version": STORE_VERSION,
                "hook_names": names,
                "layers": list(layers),
                "hook_kind": config.hook,
                "d_in": {name: writer.widths[name] for name in names},
                "n_tokens": writer.n_written,
                "n_texts": len(selected),
                "shards": writer.shards,
                "dtype": config.dtype,
                "context_length": config.context_length,
                "model": str(getattr(model.cfg, "model_name", "")),
                "bos_excluded": True,
            },
        )
    logger.info("captured %d tokens x %d hooks into %s", writer.n_written, len(names), out_dir)
    return ActivationStore(out_dir)


class ActivationStore:
    """Read a capture directory: hook names, sizes, and streamed batches of one hook.

    Example::

        store = ActivationStore("runs/default/activations/train")
        for batch in store.iter_batches("blocks.27.hook_mlp_out", 512, seed=0):
            ...  # batch: Float[Tensor, "batch d_in"]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        meta_path = self.path / STORE_FILE
        if not meta_path.exists():
            raise LfpMechError(
                f"{self.path} is not an activation store (no {STORE_FILE}); capture one with "
                "capture_activations(...) or the `activations` stage"
            )
        self.meta: dict[str, Any] = read_json(meta_path)

    @property
    def hook_names(self) -> list[str]:
        return list(self.meta["hook_names"])

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def d_in(self) -> int:
        """The activation width (the same for every hook of one kind)."""
        widths = set(self.meta["d_in"].values())
        if len(widths) != 1:
            raise LfpMechError(f"hooks have different widths {self.meta['d_in']}: use d_in_of()")
        return widths.pop()

    def d_in_of(self, hook: str) -> int:
        self._check_hook(hook)
        return int(self.meta["d_in"][hook])

    def texts(self) -> list[str]:
        """The texts the activations were captured from (indexed by ``text_index``)."""
        return json.loads((self.path / TEXTS_FILE).read_text(encoding="utf-8"))

    def iter_batches(
        self,
        hook: str,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> Iterator[Float[Tensor, "batch d_in"]]:
        """One epoch of ``[batch_size, d_in]`` float32 batches of ``hook``.

        Every token appears exactly once (the last batch is smaller unless ``drop_last``).
        With ``shuffle``, shards are visited in a random order and tokens are permuted within
        each shard (remainders carry over to the next shard); memory is about one shard.
        """
        self._check_hook(hook)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        generator = torch.Generator().manual_seed(seed)
        n_shards = len(self.meta["shards"])
        order = torch.randperm(n_shards, generator=generator) if shuffle else range(n_shards)
        carry: Tensor | None = None
        for shard in order:
            acts = self._read(int(shard), hook)
            if shuffle:
                acts = acts[torch.randperm(acts.shape[0], generator=generator)]
            if carry is not None and carry.shape[0]:
                acts = torch.cat([carry, acts])
            n_full = acts.shape[0] - acts.shape[0] % batch_size
            for start in range(0, n_full, batch_size):
                yield acts[start : start + batch_size]
            carry = acts[n_full:]
        if carry is not None and carry.shape[0] and not drop_last:
            yield carry

    def load_all(self, hook: str, max_tokens: int | None = None) -> Float[Tensor, "n d_in"]:
        """The first ``max_tokens`` activations of ``hook`` in store order (all by default)."""
        self._check_hook(hook)
        parts, n = [], 0
        for shard in range(len(self.meta["shards"])):
            if max_tokens is not None and n >= max_tokens:
                break
            part = self._read(shard, hook)
            if max_tokens is not None:
                part = part[: max_tokens - n]
            parts.append(part)
            n += part.shape[0]
        return torch.cat(parts) if parts else torch.empty(0, self.d_in_of(hook))

    def token_index(self) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"]]:
        """``(text_index, position)`` of every stored token, in store order."""
        text, position = [], []
        for shard in self.meta["shards"]:
            with safe_open(self.path / shard["file"], framework="pt") as f:
                text.append(f.get_tensor("text_index"))
                position.append(f.get_tensor("position"))
        return torch.cat(text), torch.cat(position)

    def _read(self, shard: int, hook: str) -> Float[Tensor, "n d_in"]:
        with safe_open(self.path / self.meta["shards"][shard]["file"], framework="pt") as f:
            return f.get_tensor(hook).float()

    def _check_hook(self, hook: str) -> None:
        if hook not in self.meta["hook_names"]:
            raise ConfigError(f"hook {hook!r} is not in {self.path}; stored: {self.hook_names}")

    def __repr__(self) -> str:
        return f"ActivationStore({str(self.path)!r}, hooks={self.hook_names}, n={self.n_tokens})"


def activation_corpus(
    policy_completions: Sequence[str], prompts: Sequence[str], *, seed: int = 0
) -> list[str]:
    """The SAE training texts: the tuned policy's completions plus the prompt corpus, shuffled.

    ``policy_completions`` are full texts (prompt followed by the policy's completion), the
    behaviour RLHF shaped; ``prompts`` are the training prompts alone, the inputs it was shaped
    on. Both are kept (duplicates and empty strings removed) and shuffled with ``seed``. With
    the offline reviews set (790 prompts of ~8 tokens) the prompts give ~6k tokens; the rest
    of the 75k-token target comes from completions (~30–55 tokens each).
    """
    seen: set[str] = set()
    corpus = []
    for text in [*policy_completions, *prompts]:
        if text.strip() and text not in seen:
            seen.add(text)
            corpus.append(text)
    if not corpus:
        raise ConfigError("activation corpus is empty: pass policy completions and/or prompts")
    random.Random(seed).shuffle(corpus)
    return corpus


def sample_completions(
    hf_model,
    tokenizer,
    prompts: Sequence[str],
    n_texts: int,
    *,
    max_new_tokens: int = 48,
    batch_size: int = 64,
    seed: int = 0,
) -> list[str]:
    """``n_texts`` texts ``prompt + sampled completion`` from an HF causal LM (temperature 1).

    Prompts are cycled in a seeded random order; sampling is seeded. Used to top up the
    activation corpus with the tuned policy's own text.
    """
    if not prompts:
        raise ConfigError("no prompts to sample completions from")
    rng = random.Random(seed)
    chosen = [prompts[rng.randrange(len(prompts))] for _ in range(n_texts)]
    completions, _ = generate_texts(
        hf_model,
        tokenizer,
        chosen,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
        device=hf_model.device,
        desc="sample",
    )
    return [p + c for p, c in zip(chosen, completions, strict=True)]


def run_activations_stage(
    model_path: str | os.PathLike[str],
    texts: Sequence[str],
    layers: Sequence[int],
    out_dir: Path,
    config: ActivationConfig | None = None,
    *,
    prompts: Sequence[str] = (),
) -> dict[str, Any]:
    """Capture train and held-out activations of ``layers`` of the tuned model.

    Texts are shuffled (seed) and split: held-out texts first until ``heldout_tokens``, then
    training texts until ``n_tokens``. If ``texts`` hold too few tokens and ``config.top_up``,
    completions to ``prompts`` are sampled from the model to fill the gap.

    Writes ``out_dir/train/`` and ``out_dir/heldout/`` (activation stores: sharded
    safetensors, ``store.json``, ``texts.json``) and ``out_dir/summary.json``.
    """
    from lfp_mech.models import hooked_from_hf, load_hf_model

    config = config or ActivationConfig()
    out_dir = Path(out_dir)
    hf_model, tokenizer = load_hf_model(model_path, seed=config.seed)
    corpus = [t for t in texts if t.strip()]
    random.Random(config.seed).shuffle(corpus)
    # a text's worth of margin: the held-out split ends on a text boundary
    needed = config.n_tokens + config.heldout_tokens + config.context_length
    lengths = _token_counts(tokenizer, corpus, config.context_length)
    have = sum(lengths)
    n_sampled = sampled_tokens = 0
    for round_ in range(_MAX_TOP_UP_ROUNDS if config.top_up and prompts else 0):
        if have >= needed:
            break
        per_text = sampled_tokens / n_sampled if n_sampled else config.max_new_tokens + 8
        per_text = max(per_text, 1.0)
        n_new = math.ceil((needed - have) * 1.1 / per_text)
        logger.info("texts hold %d of %d tokens: sampling %d completions", have, needed, n_new)
        sampled = sample_completions(
            hf_model.to(config.device),
            tokenizer,
            list(prompts),
            n_new,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.generation_batch_size,
            seed=config.seed + round_,
        )
        new_lengths = _token_counts(tokenizer, sampled, config.context_length)
        sampled_tokens += sum(new_lengths)
        n_sampled += n_new
        corpus += sampled
        lengths += new_lengths
        have = sum(lengths)
    if n_sampled:
        order = list(range(len(corpus)))
        random.Random(config.seed + 1).shuffle(order)
        corpus, lengths = [corpus[i] for i in order], [lengths[i] for i in order]
    split = len(_take_until(lengths, config.heldout_tokens)) if config.heldout_tokens else 0
    heldout_texts, train_texts = corpus[:split], corpus[split:]
    if not train_texts:
        raise ConfigError(
            f"all {len(corpus)} texts went to the held-out split: lower heldout_tokens "
            f"({config.heldout_tokens}) or pass more texts"
        )
    model = hooked_from_hf(hf_model, tokenizer, device=config.device)
    train = capture_activations(model, train_texts, layers, out_dir / "train", config)
    summary: dict[str, Any] = {
        "hook_names": train.hook_names,
        "layers": list(layers),
        "n_train_tokens": train.n_tokens,
        "n_train_texts": train.meta["n_texts"],
        "n_sampled_completions": n_sampled,
        "target_train_tokens": config.n_tokens,
        "paper_examples_per_layer": PAPER_EXAMPLES_PER_LAYER,
        "config": asdict(config),
    }
    if heldout_texts:
        heldout = capture_activations(
            model,
            heldout_texts,
            layers,
            out_dir / "heldout",
            config,
            max_tokens=config.heldout_tokens,
        )
        summary |= {
            "n_heldout_tokens": heldout.n_tokens,
            "n_heldout_texts": heldout.meta["n_texts"],
        }
    if train.n_tokens < config.n_tokens:
        logger.warning(
            "captured %d training tokens, fewer than the %d asked for: pass more texts or "
            "prompts (top_up samples completions from them)",
            train.n_tokens,
            config.n_tokens,
        )
    write_json(out_dir / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------- helpers


class _ShardWriter:
    """Buffers captured activations and writes a shard every ``shard_tokens`` tokens."""

    def __init__(self, names: list[str], shard_tokens: int, dtype: torch.dtype) -> None:
        self.names = names
        self.shard_tokens = shard_tokens
        self.dtype = dtype
        self.directory: Path | None = None
        self.buffer: dict[str, list[Tensor]] = {name: [] for name in [*names, "_text", "_pos"]}
        self.buffered = 0
        self.n_written = 0
        self.shards: list[dict[str, Any]] = []
        self.widths: dict[str, int] = {}

    def add(
        self,
        acts: dict[str, Float[Tensor, "n d_in"]],
        text_index: Int[Tensor, " n"],
        position: Int[Tensor, " n"],
    ) -> None:
        for name in self.names:
            self.buffer[name].append(acts[name].to(self.dtype))
            self.widths[name] = acts[name].shape[-1]
        self.buffer["_text"].append(text_index.to(torch.int64))
        self.buffer["_pos"].append(position.to(torch.int64))
        self.buffered += text_index.shape[0]
        while self.buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def close(self) -> None:
        if self.buffered:
            self._flush(self.buffered)

    def _flush(self, n: int) -> None:
        assert self.directory is not None
        tensors, rest = {}, {}
        for key, parts in self.buffer.items():
            full = torch.cat(parts)
            tensors[key], rest[key] = full[:n], full[n:]
        self.buffer = {key: [value] for key, value in rest.items()}
        self.buffered -= n
        name = f"shard_{len(self.shards):05d}.safetensors"
        tensors["text_index"] = tensors.pop("_text")
        tensors["position"] = tensors.pop("_pos")
        save_tensors(self.directory / name, tensors)
        self.shards.append({"file": name, "n_tokens": n})
        self.n_written += n


def _check_layers(model, layers: Sequence[int]) -> list[int]:
    n_layers = model.cfg.n_layers
    layers = [int(layer) for layer in layers]
    if not layers:
        raise ConfigError("no layers to capture: pass at least one block index")
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ConfigError(
            f"layer(s) {bad} out of range: {getattr(model.cfg, 'model_name', 'the model')} has "
            f"layers 0–{n_layers - 1}"
        )
    if len(set(layers)) != len(layers):
        raise ConfigError(f"duplicate layers in {layers}")
    return layers


def _tokenize(tokenizer, texts: Sequence[str], context_length: int) -> list[list[int]]:
    """Token ids of each text without special tokens, truncated to leave room for BOS."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [ids[: context_length - 1] for ids in encoded]


_TOKENIZE_CHUNK = 256
"""Texts per tokenizer call when tokenizing a whole corpus: bounds the tokenizer's temporary
objects (lists of Python ints, ~0.2 kB a token) to one chunk."""


def _token_counts(tokenizer, texts: Sequence[str], context_length: int) -> list[int]:
    """Token count of each text as :func:`_tokenize` cuts it, tokenizing chunk by chunk."""
    return [
        len(ids)
        for start in range(0, len(texts), _TOKENIZE_CHUNK)
        for ids in _tokenize(tokenizer, texts[start : start + _TOKENIZE_CHUNK], context_length)
    ]


class _TokenIds:
    """The :func:`_tokenize` ids of many texts, held compactly: one flat int32 tensor.

    Lists of Python ints cost ~36 bytes a token (and the tokenizer's temporaries more); this costs
    4, and the texts are tokenized :data:`_TOKENIZE_CHUNK` at a time.
    """

    def __init__(self, tokenizer, texts: Sequence[str], context_length: int) -> None:
        parts, self.lengths = [], []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = _tokenize(tokenizer, texts[start : start + _TOKENIZE_CHUNK], context_length)
            parts.append(torch.tensor([i for ids in chunk for i in ids], dtype=torch.int32))
            self.lengths += [len(ids) for ids in chunk]
        self.flat = torch.cat(parts) if parts else torch.empty(0, dtype=torch.int32)
        self.starts = list(itertools.accumulate(self.lengths, initial=0))

    def __getitem__(self, index: int) -> list[int]:
        start = self.starts[index]
        return self.flat[start : start + self.lengths[index]].tolist()


def _take_until(lengths: Sequence[int], limit: int) -> list[int]:
    """Indices of the first texts whose token counts reach ``limit`` (all if ``limit <= 0``).

    Empty texts (count 0) are skipped.
    """
    chosen, total = [], 0
    for index, length in enumerate(lengths):
        if limit > 0 and total >= limit:
            break
        if length:
            chosen.append(index)
            total += length
    return chosen


def _bos_id(tokenizer) -> int:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise LfpMechError("the tokenizer has neither a BOS nor an EOS token to prepend")
    return int(bos)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _bos_id(tokenizer)
    return int(pad)


def _pad_batch(
    token_ids: Sequence[Sequence[int]], bos: int, pad: int
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """``[BOS] + ids`` right-padded to the longest row, and the mask of real positions."""
    length = 1 + max(len(ids) for ids in token_ids)
    tokens = torch.full((len(token_ids), length), pad, dtype=torch.long)
    mask = torch.zeros((len(token_ids), length), dtype=torch.bool)
    for row, ids in enumerate(token_ids):
        tokens[row, : len(ids) + 1] = torch.tensor([bos, *ids], dtype=torch.long)
        mask[row, : len(ids) + 1] = True
    return tokens, mask


def tokenize_for_model(
    tokenizer, texts: Sequence[str], context_length: int = 128
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """``[BOS] + tokens`` of each text, right-padded, and the mask of real (non-pad) positions.

    The same tokenisation the capture uses; the SAE stage uses it for its held-out CE loss.
    """
    ids = [i for i in _tokenize(tokenizer, texts, context_length) if i]
    if not ids:
        raise ConfigError("no non-empty texts to tokenize")
    return _pad_batch(ids, _bos_id(tokenizer), _pad_id(tokenizer))
