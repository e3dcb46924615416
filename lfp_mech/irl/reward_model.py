"""The reward model: a decoder LM with a linear head on pooled readouts, ``R(text) -> scalar``.

The IRL paper puts ``nn.Linear(d_model, 1)`` on the last non-padding token of the base model
(inputs are right-padded, so that token is at ``attention_mask.sum() - 1`` and positions are
``0..len-1`` whatever the batch). Here the head can also read the sum (``pooling="sum"``, the CPU
default) or mean of the token states — a per-token reward added up, as a lexicon reward is — and a
second, sentence-level readout (``context_layer``). ``n_layers`` keeps only the first blocks, so
the head reads an earlier residual stream.

Training modes: ``mode="full"`` fine-tunes the whole LM (the paper). ``mode="cached"`` freezes the
first ``K = n_layers - n_trainable_blocks`` blocks, runs them once per text
([`RewardModel.encode`][lfp_mech.irl.reward_model.RewardModel.encode]) and trains the top blocks,
the final norm and the head on the cache; the rewards of the two paths are identical for the same
weights (checked on the first batch of every encode). ``n_trainable_blocks=0`` caches the pooled
readouts and trains the linear head alone."""

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from einops import einsum, rearrange
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.irl.config import POOLINGS, Mode, Pooling, auto_context_layer
from lfp_mech.irl.inputs import RewardInputs
from lfp_mech.irl.readout import (
    bos_tokenize,
    capture_block_outputs,
    decoder_blocks,
    frozen_below,
    keep_first_blocks,
    length_sorted_batches,
    pool,
    run_top_blocks,
)
from lfp_mech.models.coerce import ModelLike, as_hf_model
from lfp_mech.models.conversion import model_depth

__all__ = ["RewardModel"]


class RewardModel(nn.Module):
    """A decoder LM with a linear head on its pooled token states: ``R(text) -> scalar``.

    The head reads one or two *readouts*. One: the ``pooling`` ("last" token, "mean" or "sum") of
    the final-normed last hidden state. Two (``context_layer`` set): the ``pooling`` of the residual
    stream after block ``readout_layer`` and the mean of the residual stream after block
    ``context_layer`` (raw, as a probe reads it), each divided by its RMS over the training texts
    ([`fit_readout_scale`][lfp_mech.irl.reward_model.RewardModel.fit_readout_scale]) so neither
    dominates the head's updates by its magnitude.

    ``mode="full"``: every parameter trains. ``mode="cached"``: decoder blocks ``0..K-1``
    (``K = n_layers - n_trainable_blocks``) are frozen and their output is computed once per text
    ([`encode`][lfp_mech.irl.reward_model.RewardModel.encode]); blocks ``K..``, the final norm and
    the head train. Inputs get the tokenizer's BOS (or EOS) prepended, are right-padded and
    truncated to ``max_length``.

    Build it with [`from_base`][lfp_mech.irl.reward_model.RewardModel.from_base]; ``calibration``
    (``threshold``, ``scale``) maps raw rewards to ``(R - threshold) / scale`` in
    [`lfp_mech.irl.persistence.reward_model_fn`][lfp_mech.irl.persistence.reward_model_fn]."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        base_model: str,
        mode: Mode = "cached",
        n_trainable_blocks: int = 2,
        max_length: int = 192,
        pooling: Pooling = "last",
        readout_layer: int | None = None,
        context_layer: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling: Pooling = pooling
        self.backbone = backbone.eval()
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.mode: Mode = mode
        self.max_length = max_length
        d_model = int(backbone.config.get_text_config().hidden_size)
        self.n_layers = model_depth(backbone.config)
        if mode == "cached" and not 0 <= n_trainable_blocks <= self.n_layers:
            raise ConfigError(
                f"n_trainable_blocks={n_trainable_blocks} out of range: {base_model} has "
                f"{self.n_layers} decoder blocks (use 0..{self.n_layers})"
            )
        self.n_trainable_blocks = self.n_layers if mode == "full" else n_trainable_blocks
        self.readout_layer = self.n_layers if readout_layer is None else readout_layer
        self.context_layer = context_layer
        self._check_readouts()
        self.head = nn.Linear(len(self.readouts) * d_model, 1)
        self.register_buffer("readout_scale", torch.ones(len(self.readouts)), persistent=False)
        self.calibration: dict[str, float] = {"threshold": 0.0, "scale": 1.0}
        trainable = self._trainable_names()
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable)
        self._initial_state = self.trainable_state()

    def _check_readouts(self) -> None:
        """Both readout blocks exist, and a readout below the top needs the head-only mode."""
        for name, layer in (
            ("readout_layer", self.readout_layer),
            ("context_layer", self.context_layer),
        ):
            if layer is not None and not 1 <= layer <= self.n_layers:
                raise ConfigError(
                    f"{name}={layer} out of range: the backbone has {self.n_layers} decoder "
                    f"blocks (use 1..{self.n_layers})"
                )
        head_only = self.mode == "cached" and self.n_trainable_blocks == 0
        below_top = self.context_layer is not None or self.readout_layer != self.n_layers
        if below_top and not head_only:
            raise ConfigError(
                "a readout below the last kept block (context_layer, or n_layers with "
                "context_layer deeper) needs the head-only cached mode; use mode='cached', "
                "n_trainable_blocks=0, or context_layer=None"
            )

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_base(
        cls,
        base: ModelLike,
        *,
        mode: Mode = "cached",
        n_trainable_blocks: int = 2,
        max_length: int = 192,
        pooling: Pooling = "last",
        n_layers: int | None = None,
        context_layer: int | Literal["auto"] | None = None,
        device: str = "cpu",
    ) -> "RewardModel":
        """A reward model on ``base``'s decoder (its LM head is dropped; an in-memory model is
        deep-copied so training never changes the caller's model).

        ``n_layers``: the head reads the residual stream after this block, pooled by
        ``pooling``; None: after the last block. ``context_layer``: the head also reads the mean
        residual stream after that block (head-only cached mode; see the class docstring);
        "auto": [`auto_context_layer`][lfp_mech.irl.config.auto_context_layer] of the base's
        depth. Blocks above both are dropped.
        """
        model, tokenizer = as_hf_model(base, device=device, copy_model=True)
        if isinstance(base, tuple):
            name = str(getattr(model, "name_or_path", "") or model.config.model_type)
        else:
            name = str(base)
        backbone = model.base_model
        keep = n_layers
        if context_layer == "auto":
            context_layer = auto_context_layer(model_depth(backbone.config))
        if context_layer is not None:
            total = model_depth(backbone.config)
            for arg, layer in (("n_layers", n_layers), ("context_layer", context_layer)):
                if layer is not None and not 1 <= layer <= total:
                    raise ConfigError(
                        f"{arg}={layer} out of range: {name} has {total} decoder blocks "
                        f"(use 1..{total}, or None)"
                    )
            keep = max(n_layers or total, context_layer)
        if keep is not None:
            keep_first_blocks(backbone, keep, name)
        return cls(
            backbone,
            tokenizer,
            base_model=name,
            mode=mode,
            n_trainable_blocks=n_trainable_blocks,
            max_length=max_length,
            pooling=pooling,
            readout_layer=n_layers,
            context_layer=context_layer,
        ).to(device)

    @property
    def readouts(self) -> list[tuple[int, Pooling]]:
        """What the head reads, in order: (block whose output is read, pooling)."""
        out: list[tuple[int, Pooling]] = [(self.readout_layer, self.pooling)]
        if self.context_layer is not None:
            out.append((self.context_layer, "mean"))
        return out

    @property
    def first_trainable_layer(self) -> int:
        """``K``: blocks ``K..n_layers-1`` train (``n_layers`` = head only)."""
        return self.n_layers - self.n_trainable_blocks

    @property
    def device(self) -> torch.device:
        """Where the head (and the model) lives."""
        return self.head.weight.device

    def _trainable_names(self) -> set[str]:
        """Parameter names that train: all (full); head + everything of the decoder but its
        embeddings and the frozen blocks, i.e. top blocks + final norm (cached)."""
        names = {n for n, _ in self.named_parameters()}
        if self.mode == "full":
            return names
        keep = {n for n in names if n.startswith("head.")}
        if self.n_trainable_blocks > 0:
            frozen = frozen_below(self.backbone, self.first_trainable_layer)
            keep |= {
                n
                for n, p in self.named_parameters()
                if n.startswith("backbone.") and id(p) not in frozen
            }
        return keep

    # ---------------------------------------------------------------- state

    def trainable_state(self) -> dict[str, Tensor]:
        """A detached copy of every trainable tensor (what a seed run changes)."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: Mapping[str, Tensor]) -> None:
        """Copy ``state`` (at least every trainable tensor) into the parameters."""
        params = dict(self.named_parameters())
        missing = {n for n, p in params.items() if p.requires_grad} - set(state)
        if missing:
            raise LfpMechError(f"state misses trainable tensors: {sorted(missing)[:5]} ...")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def reset(self, seed: int) -> None:
        """Restore the trainable weights to the base model's and re-draw the head from ``seed``."""
        self.load_trainable_state(self._initial_state)
        gen = torch.Generator().manual_seed(seed)
        fan_in = self.head.weight.shape[1]
        with torch.no_grad():
            weight = torch.randn(self.head.weight.shape, generator=gen) / math.sqrt(fan_in)
            self.head.weight.copy_(weight)
            self.head.bias.zero_()

    def frozen_fingerprint(self) -> str:
        """sha256 of the frozen parameters: a saved reward model is only valid on the same base."""
        digest = hashlib.sha256()
        for name, param in sorted(self.named_parameters()):
            if not param.requires_grad:
                digest.update(name.encode())
                digest.update(param.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    # ---------------------------------------------------------------- forward

    def tokenize(
        self, texts: Sequence[str]
    ) -> tuple[Int[Tensor, "text pos"], Int[Tensor, "text pos"]]:
        """BOS-prefixed, right-padded token ids and attention mask (truncated to max_length)."""
        return bos_tokenize(self.tokenizer, texts, self.max_length)

    def forward(self, inputs: RewardInputs) -> Float[Tensor, " text"]:
        """Rewards from whatever [`encode`][lfp_mech.irl.reward_model.RewardModel.encode] produced
        (the trainable part only)."""
        inputs = inputs.to(self.device)
        if inputs.kind == "tokens":
            return self.reward_from_tokens(inputs.values, inputs.attention_mask)
        if inputs.kind == "hidden":
            return self.reward_from_hidden(inputs.values, inputs.attention_mask)
        return self.reward_from_pooled(inputs.values)

    def reward_from_tokens(
        self, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, " batch"]:
        """The whole model: decoder → pooled readouts → head."""
        return self.reward_from_pooled(self._pooled_readouts(input_ids, attention_mask))

    def reward_from_hidden(
        self,
        hidden: Float[Tensor, "batch pos d_model"],
        attention_mask: Int[Tensor, "batch pos"],
    ) -> Float[Tensor, " batch"]:
        """Blocks ``K..`` → final norm → head, from the residual stream entering block ``K``."""
        top = self._top_hidden(hidden, attention_mask)
        return self.reward_from_pooled(pool(top, attention_mask, self.pooling))

    def reward_from_pooled(self, pooled: Float[Tensor, "batch feature"]) -> Float[Tensor, " batch"]:
        """The head alone, on the pooled readouts (``feature = readout × d_model``, unscaled)."""
        per_readout = rearrange(
            pooled, "batch (readout d) -> batch readout d", readout=len(self.readout_scale)
        )
        scaled = einsum(
            per_readout, self.readout_scale, "batch readout d, readout -> batch readout d"
        )
        return rearrange(self.head(rearrange(scaled, "b r d -> b (r d)")), "batch 1 -> batch")

    @torch.no_grad()
    def fit_readout_scale(self, features: Float[Tensor, "text feature"]) -> None:
        """Divide each readout by its RMS over ``features`` (the training texts' pooled readouts).

        Only with two readouts: a summed readout is ~100x larger than a mean one, so with one
        Adam learning rate it would move the reward far more per step and the other would not
        be learnt. A single readout keeps scale 1.
        """
        if len(self.readouts) == 1:
            return
        per_readout = rearrange(
            features.float(), "text (readout d) -> readout (text d)", readout=len(self.readouts)
        )
        rms = per_readout.pow(2).mean(-1).sqrt().clamp_min(1e-6)
        self.readout_scale.copy_((1.0 / rms).to(self.readout_scale))

    def _pooled_readouts(
        self, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch feature"]:
        """The backbone's pooled readouts, concatenated (before readout scaling).

        One readout: the final-normed last hidden state (as HF sequence-classification heads
        read it). Two: the raw residual stream after each readout block, captured by forward
        hooks (the final norm belongs to the last block, not to either readout).
        """
        if len(self.readouts) == 1:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return pool(out.last_hidden_state, attention_mask, self.pooling)
        blocks = decoder_blocks(self.backbone, self.base_model)
        with capture_block_outputs(blocks, [layer for layer, _ in self.readouts]) as resid:
            self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        pooled = [pool(resid[layer], attention_mask, how) for layer, how in self.readouts]
        return torch.cat(pooled, dim=-1)

    def _top_hidden(
        self, hidden: Float[Tensor, "batch pos d_model"], attention_mask: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, "batch pos d_model"]:
        """Final normalised hidden states from the residual stream entering block ``K``."""
        return run_top_blocks(self.backbone, self.first_trainable_layer, hidden, attention_mask)

    # ---------------------------------------------------------------- encode, score

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, check_tol: float = 1e-3
    ) -> RewardInputs:
        """Run the frozen part once per text: the inputs of the trainable part for ``texts``.

        Texts are batched by length. In "cached" mode the first batch is also scored both ways
        (full model vs cached path); a mismatch above ``check_tol`` (relative) raises, so an
        architecture whose blocks we call wrongly cannot silently train on wrong features.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("encode needs at least one text")
        input_ids, mask = self.tokenize(texts)
        if self.mode == "full":
            return RewardInputs("tokens", input_ids, mask)
        n_features = self.head.weight.shape[1]
        head_only = self.n_trainable_blocks == 0
        shape = (len(texts), n_features) if head_only else (len(texts), mask.shape[1], n_features)
        values = torch.zeros(shape)
        batches = length_sorted_batches(mask, batch_size, desc="encode")
        for batch, (idx, width) in enumerate(batches):
            ids, m = input_ids[idx, :width].to(self.device), mask[idx, :width].to(self.device)
            if head_only:
                values[idx] = self._pooled_readouts(ids, m).cpu()
                continue
            out = self.backbone(
                input_ids=ids, attention_mask=m, use_cache=False, output_hidden_states=True
            )
            hidden = out.hidden_states[self.first_trainable_layer]
            values[idx, :width] = hidden.cpu()
            if batch == 0:
                self._check_cached_path(hidden, m, out.last_hidden_state, check_tol)
        if head_only:
            return RewardInputs("pooled", values, torch.ones(len(texts), 1, dtype=torch.long))
        return RewardInputs("hidden", values, mask)

    def _check_cached_path(
        self,
        hidden: Float[Tensor, "batch pos d_model"],
        mask: Int[Tensor, "batch pos"],
        final: Float[Tensor, "batch pos d_model"],
        tol: float,
    ) -> None:
        direct = pool(final, mask, self.pooling)
        via_cache = pool(self._top_hidden(hidden, mask), mask, self.pooling)
        err = float((direct - via_cache).abs().max() / direct.abs().max().clamp_min(1e-6))
        if err > tol:
            raise LfpMechError(
                f"cached-mode parity failed for {type(self.backbone).__name__} (relative error "
                f"{err:.2e} > {tol}): the top blocks are not called the way the HF model calls "
                "them. Use IRLConfig(mode='full') or n_trainable_blocks=0 for this architecture."
            )

    @torch.no_grad()
    def score(self, texts: Sequence[str], *, batch_size: int = 32) -> Float[Tensor, " text"]:
        """Raw rewards of ``texts`` through the whole model (no cache), in input order."""
        texts = list(texts)
        if not texts:
            return torch.zeros(0)
        input_ids, mask = self.tokenize(texts)
        scores = torch.zeros(len(texts))
        for idx, width in length_sorted_batches(mask, batch_size):
            ids, m = input_ids[idx, :width].to(self.device), mask[idx, :width].to(self.device)
            scores[idx] = self.reward_from_tokens(ids, m).float().cpu()
        return scores

    @torch.no_grad()
    def pooled_features(
        self, inputs: RewardInputs, *, batch_size: int = 32
    ) -> Float[Tensor, "text feature"]:
        """What the linear head reads for each encoded text: the pooled readouts, before
        [`fit_readout_scale`][lfp_mech.irl.reward_model.RewardModel.fit_readout_scale]'s scaling."""
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = inputs.select(torch.arange(start, min(start + batch_size, len(inputs))))
            batch = batch.to(self.device)
            if batch.kind == "pooled":
                out.append(batch.values.float().cpu())
                continue
            if batch.kind == "tokens":
                hidden = self.backbone(
                    input_ids=batch.values, attention_mask=batch.attention_mask, use_cache=False
                ).last_hidden_state
            else:
                hidden = self._top_hidden(batch.values, batch.attention_mask)
            out.append(pool(hidden, batch.attention_mask, self.pooling).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def score_inputs(self, inputs: RewardInputs, *, batch_size: int = 32) -> Float[Tensor, " text"]:
        """Raw rewards of encoded inputs (the cached path), in order."""
        out = [
            self(inputs.select(torch.arange(s, min(s + batch_size, len(inputs))))).float()
            for s in range(0, len(inputs), batch_size)
        ]
        return torch.cat(out).cpu()
