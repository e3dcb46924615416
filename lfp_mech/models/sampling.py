"""A minimal sampling loop over an HF causal LM: HF ``generate``'s arithmetic, less overhead.

[`sample_batch`][lfp_mech.models.sampling.sample_batch] runs the prefill and one forward per new
token with a ``DynamicCache``, and applies exactly the logits processors HF ``generate`` applies
for lfp_mech's sampling settings, in HF's order (repetition penalty, minimum new tokens,
temperature, top-p), then draws the token (or takes the ``argmax``), without ``generate``'s
per-step bookkeeping (stopping criteria objects, cache-position and mask preparation, input
validation). Finished rows are padded, like ``generate``.

The draw (``sampler``), each exact: the token comes from ``softmax(scores)``.

* ``"keyed_race"`` (default): an exponential race, ``argmax_i p_i / E_i`` with one clock
  ``E_i ~ Exp(1)`` per token, whose clocks are a hash of (a per-row key, the token id): one key
  per row and step comes from the global torch generator, and only the clocks of the *head*
  (tokens with ``p_i >= 1e-5``: a median of ~1,500 of SmolLM2's 49,152, 98.4% of the mass) are
  computed. The rest of the vocabulary races as one group: the first of independent exponential
  clocks with rates ``p_i`` is itself exponential with rate ``sum p_i`` and falls on token ``i``
  with probability ``p_i / sum p_i``, independently of when — so one clock for the tail group and,
  when the tail wins (~1.6% of SmolLM2's draws; more on flatter distributions), the same keyed
  race among the tail's tokens alone give exactly the full race's distribution. Keying every
  clock by token id couples paired runs (an ablated and a clean policy, the same seed): they draw
  the same token unless the difference in probabilities matters, which the paired comparisons
  (validation's Table 6, the diff stage) rely on. It skips the float64 uniforms over the whole
  vocabulary, which on a 2-core CPU measured 10-14% of a sampled generation's time at batch 64
  (``benchmarks/bench_generation.py``).
* ``"exponential_race"``: ``torch.multinomial``'s own algorithm for one sample, the clocks
  ``E_i = -log(1 - U_i)`` from float64 uniforms over the whole vocabulary (the probabilities'
  dtype, as ``Tensor.exponential_``), in vectorised passes; on a CPU exactly
  ``torch.multinomial``'s token for the same seed, so HF ``model.generate``'s completions
  (tested). It couples paired runs the same way (a clock per vocabulary entry).
* ``"multinomial"``: ``torch.multinomial(softmax)``, as HF does.

An inverse-CDF draw over the whole vocabulary (one uniform per row) would be cheaper still but
couples poorly: a small change to many probabilities shifts the whole cumulative sum.
"""

from typing import Any, Literal, get_args

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel

__all__ = ["SAMPLERS", "Sampler", "fast_generate", "sample_batch"]

Sampler = Literal["keyed_race", "exponential_race", "multinomial"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)
"""How a token is drawn from the processed scores (see the module docstring)."""


def sample_batch(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "batch prompt"],
    attention_mask: Int[Tensor, "batch prompt"],
    *,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    sampler: Sampler = "keyed_race",
) -> Int[Tensor, "batch new"]:
    """The new tokens of a left-padded batch (``[batch, <= max_new_tokens]``, stopping early when
    every row has produced EOS; rows that finished hold ``pad_token_id``). Call under
    ``torch.inference_mode()``; randomness from the global torch RNG, as ``generate``.
    ``"exponential_race"`` and ``"multinomial"`` draw HF ``generate``'s tokens for the same seed
    on a CPU; the default ``"keyed_race"`` draws from the same distribution, faster (see the
    module docstring)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    pad = pad_token_id if pad_token_id is not None else eos_token_id
    cache = DynamicCache(config=model.config)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    sequences = input_ids
    n_pad = (mask != 0).int().argmax(dim=1)  # left padding of each row
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    new: list[Tensor] = []
    for step in range(max_new_tokens):
        scores = out.logits[:, -1, :].to(dtype=torch.float32)
        scores = _process(
            scores,
            sequences,
            n_pad,
            step,
            min_new_tokens,
            temperature,
            top_p,
            repetition_penalty,
            eos_token_id,
            do_sample,
        )
        if do_sample and sampler == "keyed_race":
            keys = torch.randint(0, _KEY_RANGE, scores.shape[:1], device=scores.device)
            token = _keyed_race(scores, keys)
        elif do_sample and sampler == "exponential_race":
            token = _exponential_race(scores)
        elif do_sample:
            token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            token = scores.argmax(dim=-1)
        if pad is not None:
            token = torch.where(unfinished, token, torch.full_like(token, pad))
        new.append(token)
        sequences = torch.cat([sequences, token[:, None]], dim=-1)
        if eos_token_id is not None:
            unfinished &= token != eos_token_id
        if step == max_new_tokens - 1 or not bool(unfinished.any()):
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
    return torch.stack(new, dim=1)


_KEY_RANGE = 2**62  # per-row keys of the keyed race
HEAD_MIN = 1e-5
"""The keyed race computes a clock for each token with at least this probability; the rest of
the vocabulary races as one group (exact either way; the threshold only sets the cost)."""
# splitmix64's constants as signed int64 (torch has no uint64 arithmetic; products wrap)
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def _keyed_race(
    scores: Float[Tensor, "batch vocab"], keys: Int[Tensor, " batch"], head_min: float = HEAD_MIN
) -> Int[Tensor, " batch"]:
    """One token per row drawn from ``softmax(scores)`` by an exponential race whose clocks are
    ``-log(1 - U)``, ``U = hash(key, token id)``, computed for the head (``p >= head_min``); the
    tail races as one clock of rate ``sum p_tail`` (id ``vocab``) and, if it wins, its token is
    the winner of the same keyed race among the tail's tokens alone (see the module docstring).
    ``-inf`` scores have probability 0, never drawn."""
    probs = scores.softmax(dim=-1)
    n_rows, vocab = probs.shape
    head = probs >= head_min
    rows, cols = head.nonzero(as_tuple=True)
    race = probs[rows, cols].double() / _keyed_clocks(keys[rows], cols)
    best = race.new_zeros(n_rows).scatter_reduce(0, rows, race, "amax")
    winners = torch.where(race == best[rows], cols, vocab)
    token = torch.full_like(keys, vocab).scatter_reduce(0, rows, winners, "amin")
    # the tail's own sum, not 1 - the head's: an all-zero tail (top-p, underflow) must have no
    # mass at all, where the difference would leave float rounding that could win. In place and
    # summed in float32 (relative error ~1e-7, below the float32 probabilities' own): a copy and
    # a float64 conversion of the [batch, vocab] probabilities cost ~2x the rest of the draw.
    tail_probs = probs.masked_fill_(head, 0)
    tail_mass = tail_probs.sum(dim=-1).double()
    tail_race = tail_mass / _keyed_clocks(keys, torch.full_like(keys, vocab))
    tail_rows = (tail_race > best).nonzero(as_tuple=True)[0]
    if tail_rows.numel():  # the tail's group clock came first: a race inside the tail
        tail = tail_probs[tail_rows].double()
        ids = torch.arange(vocab, device=keys.device).expand(len(tail_rows), -1)
        clocks = _keyed_clocks(keys[tail_rows, None].expand(-1, vocab), ids)
        token[tail_rows] = (tail / clocks).argmax(dim=-1)
    return token


def _keyed_uniforms(keys: Int[Tensor, "*n"], ids: Int[Tensor, "*n"]) -> Float[Tensor, "*n"]:
    """Uniforms in (0, 1), 53 bits: output ``id`` of splitmix64 seeded with ``key`` (its state
    after ``id + 1`` steps, mixed), a counter-based stream: a token's clock depends only on its
    row's key and its id."""
    z = keys + (ids + 1) * _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    z = z ^ _shift_right(z, 31)
    return (_shift_right(z, 11).double() + 0.5) * 2.0**-53


def _keyed_clocks(keys: Int[Tensor, "*n"], ids: Int[Tensor, "*n"]) -> Float[Tensor, "*n"]:
    """``Exp(1)`` clocks ``-log(1 - U)`` of ``_keyed_uniforms`` (float64)."""
    return _keyed_uniforms(keys, ids).neg_().log1p_().neg_()


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (``>>`` is arithmetic on signed integers)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _exponential_race(scores: Float[Tensor, "batch vocab"]) -> Int[Tensor, " batch"]:
    """One token per row drawn from ``softmax(scores)``: ``argmax_i p_i / E_i`` with clocks
    ``E_i = -log(1 - U_i) ~ Exp(1)`` from float64 uniforms, the arithmetic and random stream of
    ``torch.multinomial(p, 1)`` on a CPU (``-inf`` scores have probability 0, never drawn)."""
    probs = scores.softmax(dim=-1)
    uniforms = torch.rand(probs.shape, dtype=torch.float64, device=probs.device)
    return _race_winners(probs, uniforms)


def _race_winners(
    probs: Float[Tensor, "batch vocab"], uniforms: Float[Tensor, "batch vocab"]
) -> Int[Tensor, " batch"]:
    """``argmax_i p_i / E_i`` per row, ``E_i = -log(1 - U_i)`` rounded to ``probs``' dtype (ties
    to the lowest index, as ``argmax``), computing the clocks only where they can matter:
    ``E_i >= U_i``, so ``p_i / U_i`` bounds ``p_i / E_i`` from above, and only entries whose bound
    reaches the exact ratio of the bound's own argmax can win (about one per row; the 1e-5 slack
    covers float rounding). That skips the ``log1p`` over the whole vocabulary, about half of the
    draw's arithmetic after the uniforms themselves."""
    bound = probs / uniforms.to(probs.dtype)
    leader = bound.argmax(dim=-1, keepdim=True)
    floor = probs.gather(1, leader) / _clocks(uniforms.gather(1, leader), probs.dtype)
    if not bool(floor.isfinite().all()):  # a uniform of exactly 0 (p ~ 1e-16): the plain race
        return (probs / _clocks(uniforms, probs.dtype)).argmax(dim=-1)
    rows, cols = (bound >= floor * (1 - 1e-5)).nonzero(as_tuple=True)
    ratios = probs[rows, cols] / _clocks(uniforms[rows, cols], probs.dtype)
    best = torch.full_like(floor[:, 0], -float("inf")).scatter_reduce(0, rows, ratios, "amax")
    vocab = probs.shape[-1]
    winners = torch.where(ratios == best[rows], cols, vocab)
    return torch.full_like(leader[:, 0], vocab).scatter_reduce(0, rows, winners, "amin")


def _clocks(uniforms: Tensor, dtype: torch.dtype) -> Tensor:
    """``-log(1 - U)`` in float64, rounded to ``dtype`` (``Tensor.exponential_``'s arithmetic)."""
    return uniforms.neg().log1p_().neg_().to(dtype)


def _positions(sequences: Tensor) -> Tensor:
    return torch.arange(sequences.shape[1], device=sequences.device)[None, :]


def _process(
    scores: Tensor,
    sequences: Tensor,
    n_pad: Tensor,
    step: int,
    min_new_tokens: int,
    temperature: float,
    top_p: float,
    repetition_penalty: float,
    eos_token_id: int | None,
    do_sample: bool,
) -> Tensor:
    """HF's ``RepetitionPenalty``, ``MinNewTokensLength``, ``Temperature`` and ``TopP``
    processors, in the order ``generate`` applies them (the last two only when sampling).
    May write into ``scores`` (the step's logits, which nothing reads afterwards)."""
    if repetition_penalty != 1.0:  # over the prompt and the new tokens, left padding excluded
        vocab = scores.shape[-1]
        ids = sequences.masked_fill(_positions(sequences) < n_pad[:, None], vocab).clamp(max=vocab)
        padded = torch.nn.functional.pad(scores, (0, 1))
        seen = torch.gather(padded, 1, ids)
        seen = torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
        scores = padded.scatter(1, ids, seen)[..., :vocab]
    if eos_token_id is not None and step < min_new_tokens:
        scores[:, eos_token_id] = -float("inf")  # in place: the caller's logits, used once
    if not do_sample:
        return scores
    if temperature != 1.0:
        scores = scores / temperature
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[..., -1:] = 0
        scores = scores.masked_fill(remove.scatter(1, sorted_indices, remove), -float("inf"))
    return scores


_REPRODUCED = {  # GenerationConfig fields sample_batch reproduces, with their neutral values
    "num_beams": (None, 1),
    "num_return_sequences": (None, 1),
    "top_k": (None, 0),
    "min_p": (None,),
    "top_h": (None,),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_repetition_penalty": (None, 1.0),
    "length_penalty": (None, 1.0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "guidance_scale": (None, 1.0),
    "min_length": (None, 0),
    "max_length": (None, 20),  # HF's default; max_new_tokens wins over it
    "cache_implementation": (None, "dynamic"),
    "stop_strings": (None,),
    "watermarking_config": (None,),
    "assistant_model": (None,),
}


def fast_generate(model: PreTrainedModel, sampler: Sampler = "keyed_race") -> None:
    """Route ``model.generate(input_ids=, attention_mask=, generation_config=)`` through
    [`sample_batch`][lfp_mech.models.sampling.sample_batch] (on a CPU the same tokens for the same
    seed, less overhead) when the config
    uses only what it reproduces (sampling or greedy, temperature, top-p, repetition penalty,
    minimum new tokens, one EOS); any other call goes to HF's ``generate`` unchanged. Used for
    TRL's rollouts, which call ``generate`` that way."""
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        settings = None if args else _settings(kwargs)
        if settings is None:
            return original(*args, **kwargs)
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        new = sample_batch(model, ids, mask, **settings, sampler=sampler)
        return torch.cat([ids, new], dim=1)

    model.generate = generate


def _settings(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """``sample_batch`` keyword arguments equivalent to a ``generate`` call, or None."""
    config = kwargs.get("generation_config")
    if set(kwargs) != {"input_ids", "attention_mask", "generation_config"} or config is None:
        return None
    if any(getattr(config, f, None) not in ok for f, ok in _REPRODUCED.items()):
        return None
    if config.max_new_tokens is None or config.use_cache is False:
        return None
    eos = config.eos_token_id
    if isinstance(eos, list | tuple):
        if len(eos) != 1:
            return None
        eos = eos[0]
    return dict(
        max_new_tokens=int(config.max_new_tokens),
        min_new_tokens=int(config.min_new_tokens or 0),
        do_sample=bool(config.do_sample),
        temperature=float(config.temperature if config.temperature is not None else 1.0),
        top_p=float(config.top_p if config.top_p is not None else 1.0),
        repetition_penalty=float(config.repetition_penalty or 1.0),
        eos_token_id=eos,
        pad_token_id=config.pad_token_id,
    )
