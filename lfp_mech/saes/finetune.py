"""KL fine-tuning of a dictionary's decoder: make the model's next-token distribution with the
SAE spliced in match the clean one.

A dictionary trained on MSE spends its capacity on the directions with the most variance, not
on those the model's loss depends on. Fine-tuning on the model's own output (Braun et al. 2024,
end-to-end SAEs; the "KL fine-tune" of public SAE suites) minimises
``KL(p_clean ‖ p_spliced)`` over the next-token distributions instead. Only the decoder
(``W_dec``, ``b_dec``) learns; the latents are those of the trained encoder, and where SAE-Lens's
encoder reads the decoder (``b_dec`` subtracted from the input, TopK's decoder-norm rescale) the
move is folded back into ``W_enc`` / ``b_enc``. So which latents fire on a token — L0, dead and
dense latents, every feature's activation pattern — stays that of the trained dictionary (up to
rounding at a threshold); what changes is what each active latent writes back.

[`kl_finetune_decoders`][lfp_mech.saes.finetune.kl_finetune_decoders] is the core (several
dictionaries of one model at once, on different hooks);
[`finetune_on_validation`][lfp_mech.saes.finetune.finetune_on_validation] is what the saes stage
runs: fine-tune on the training texts less the last ``kl_finetune_val_texts``, and keep the new
decoder only if the CE loss recovered on those validation texts rose (the held-out CE texts
play no part in the choice).
"""

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from einops import einsum
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from torch import Tensor
from tqdm.auto import tqdm

from lfp_mech._io import json_safe, read_json
from lfp_mech.activations.store import ActivationStore
from lfp_mech.activations.tokenization import tokenize_for_model
from lfp_mech.errors import ConfigError
from lfp_mech.hooks import block_of_hook
from lfp_mech.saes.artifacts import TRAINING_FILE
from lfp_mech.saes.config import SAEConfig
from lfp_mech.saes.io import load_sae, save_sae
from lfp_mech.saes.metrics import _run_from_block, ce_loss_recovered, text_ce_losses

__all__ = [
    "finetune_dictionaries",
    "finetune_on_validation",
    "kl_finetune_decoder",
    "kl_finetune_decoders",
    "split_finetune_texts",
]

logger = logging.getLogger(__name__)


def kl_finetune_decoder(
    model: Any,
    hook: str,
    sae: SAE,
    texts: Sequence[str],
    *,
    lr: float = 1e-4,
    batch_size: int = 16,
    epochs: int = 1,
    context_length: int = 128,
    seed: int = 0,
) -> list[float]:
    """Fine-tune ``sae``'s decoder in place so that ``model`` with the SAE's reconstruction at
    ``hook`` predicts the next token as the clean model does: one dictionary of
    [`kl_finetune_decoders`][lfp_mech.saes.finetune.kl_finetune_decoders]. Returns the loss of
    each step (nats)."""
    return kl_finetune_decoders(
        model, {hook: sae}, texts,
        lr=lr, batch_size=batch_size, epochs=epochs, context_length=context_length, seed=seed,
    )[hook]  # fmt: skip


def kl_finetune_decoders(
    model: Any,
    saes: Mapping[str, SAE],
    texts: Sequence[str],
    *,
    lr: float = 1e-4,
    batch_size: int = 16,
    epochs: int = 1,
    context_length: int = 128,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Fine-tune each dictionary's decoder in place (``saes``: ``{hook: SAE}``, one per hook)
    so that ``model`` with that SAE's reconstruction at its hook, the others left clean,
    predicts the next token as the clean model does.

    Loss per dictionary: the mean over real next-token positions of ``KL(p_clean ‖ p_spliced)``.
    Adam on ``W_dec`` and ``b_dec`` only, decoding the latents of a frozen copy of the trained
    SAE; at the end ``W_enc`` / ``b_enc`` absorb the decoder's move, so each SAE encodes as it
    did before. Texts are tokenised as the capture does (``[BOS] + tokens``,
    ``context_length``), sorted by length into batches (little padding), and the batches are
    visited in a seeded random order each epoch. The dictionaries share each batch's clean
    forward pass (~40% of a one-dictionary step on SmolLM2-135M), and each one's step is the
    same as alone. The model's weights are not changed.

    Returns each hook's loss per step (nats)."""
    if not texts:
        raise ConfigError("no texts to fine-tune the SAE on: set saes.kl_finetune_texts > 0")
    tokens, mask = tokenize_for_model(model.tokenizer, texts, context_length)
    batches = _length_sorted_batches(mask, batch_size)
    resid_names = {hook: f"blocks.{block_of_hook(hook)}.hook_resid_pre" for hook in saes}
    trained = {hook: copy.deepcopy(sae).eval().requires_grad_(False) for hook, sae in saes.items()}
    optimizers = {
        hook: torch.optim.Adam([sae.W_dec, sae.b_dec], lr=lr) for hook, sae in saes.items()
    }
    generator = torch.Generator().manual_seed(seed)
    losses: dict[str, list[float]] = {hook: [] for hook in saes}
    with contextlib.ExitStack() as frozen:
        for sae in saes.values():
            frozen.enter_context(_frozen_except(sae, [sae.W_dec, sae.b_dec]))
        frozen.enter_context(_frozen_except(model, []))
        steps = tqdm(
            total=epochs * len(batches), desc=f"KL fine-tune {', '.join(saes)}", leave=False
        )
        for _ in range(epochs):
            for index in torch.randperm(len(batches), generator=generator).tolist():
                rows = batches[index]
                toks, attn = tokens[rows].to(model.cfg.device), mask[rows].to(model.cfg.device)
                targets = attn[:, 1:] & attn[:, :-1]
                with torch.no_grad():
                    logits, cache = model.run_with_cache(
                        toks, attention_mask=attn.long(), names_filter=list(resid_names.values())
                    )
                    clean = _next_token_log_probs(logits, targets)
                    del logits
                    clean_probs = clean.exp()
                    entropy = -(clean_probs * clean).sum(dim=-1)
                for hook, sae in saes.items():
                    spliced = _spliced_logits(
                        model, sae, trained[hook], cache[resid_names[hook]], hook, attn
                    )
                    cross_entropy = -(clean_probs * _next_token_log_probs(spliced, targets)).sum(-1)
                    loss = (cross_entropy - entropy).mean()  # KL(clean ‖ spliced)
                    optimizers[hook].zero_grad(set_to_none=True)
                    loss.backward()
                    optimizers[hook].step()
                    losses[hook].append(loss.item())
                steps.update()
                steps.set_postfix(kl=" ".join(f"{values[-1]:.4f}" for values in losses.values()))
        steps.close()
        for hook, sae in saes.items():
            _keep_encoding(sae, trained[hook])
    for sae in saes.values():
        sae.eval()
    return losses


def split_finetune_texts(
    texts: Sequence[str], n_texts: int, n_val: int
) -> tuple[list[str], list[str]]:
    """``(fine-tune texts, validation texts)`` from a store's training texts: the last ``n_val``
    validate, at most ``n_texts`` of the rest (from the start) fine-tune."""
    if n_val >= len(texts):
        raise ConfigError(
            f"saes.kl_finetune_val_texts = {n_val} leaves none of the {len(texts)} training texts "
            "to fine-tune on: lower it"
        )
    return list(texts[: len(texts) - n_val][:n_texts]), list(texts[len(texts) - n_val :])


def finetune_on_validation(
    model: Any,
    saes: Mapping[str, SAE],
    finetune_texts: Sequence[str],
    val_texts: Sequence[str],
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    context_length: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Fine-tune the decoders of ``saes`` (``{hook: SAE}``,
    [`kl_finetune_decoders`][lfp_mech.saes.finetune.kl_finetune_decoders]) and keep each
    dictionary's result only if its CE loss recovered on ``val_texts`` rose; otherwise its
    decoder is restored.

    Returns per dictionary ``hook``, ``ce_val_before``, ``ce_val_after``, ``kept``, ``steps``,
    ``final_kl`` and ``seconds`` (the wall time of the group split evenly: the dictionaries
    share each batch's clean forward pass)."""
    start = time.perf_counter()
    before_state = {
        hook: {name: p.detach().clone() for name, p in _changed_params(sae).items()}
        for hook, sae in saes.items()
    }
    before = _val_ce_recovered(model, saes, val_texts, context_length)
    losses = kl_finetune_decoders(
        model, saes, finetune_texts,
        lr=lr, batch_size=batch_size, epochs=epochs, context_length=context_length, seed=seed,
    )  # fmt: skip
    after = _val_ce_recovered(model, saes, val_texts, context_length)
    seconds = (time.perf_counter() - start) / max(len(saes), 1)
    records = []
    for hook, sae in saes.items():
        kept = bool(after[hook] > before[hook])
        if not kept:
            with torch.no_grad():
                for name, param in _changed_params(sae).items():
                    param.copy_(before_state[hook][name])
        logger.info(
            "KL fine-tune %s: CE loss recovered on %d validation texts %.3f -> %.3f (%s)",
            hook, len(val_texts), before[hook], after[hook], "kept" if kept else "discarded",
        )  # fmt: skip
        records.append(
            {
                "hook": hook,
                "ce_val_before": before[hook],
                "ce_val_after": after[hook],
                "kept": kept,
                "steps": len(losses[hook]),
                "final_kl": losses[hook][-1] if losses[hook] else math.nan,
                "seconds": seconds,
            }
        )
    return records


def _val_ce_recovered(
    model: Any, saes: Mapping[str, SAE], texts: Sequence[str], context_length: int
) -> dict[str, float]:
    """Each hook's CE loss recovered by its SAE on ``texts`` (one clean pass for all)."""
    losses = text_ce_losses(
        model, texts, {hook: [sae] for hook, sae in saes.items()}, context_length=context_length
    )
    return {
        hook: ce_loss_recovered(losses["clean"], losses["sae"][hook][0], losses["zero"][hook])
        for hook in saes
    }


def _spliced_logits(
    model: Any,
    sae: SAE,
    trained: SAE,
    resid: Float[Tensor, "batch pos d_model"],
    hook: str,
    attention_mask: Bool[Tensor, "batch pos"],
) -> Float[Tensor, "batch pos d_vocab"]:
    """The model's logits from ``hook``'s block on (``resid`` is its residual input), with
    ``hook`` replaced by ``sae``'s decoding of the ``trained`` dictionary's latents (no gradient
    into those)."""
    device = sae.W_dec.device

    def reconstruct(act: Tensor) -> Tensor:
        with torch.no_grad():
            latents = trained.encode(act.to(device, torch.float32))
        return sae.decode(latents).to(act.dtype)

    return _run_from_block(model, resid, block_of_hook(hook), hook, attention_mask, reconstruct)


def _next_token_log_probs(
    logits: Float[Tensor, "batch pos d_vocab"], targets: Bool[Tensor, "batch pos_1"]
) -> Float[Tensor, "n_targets d_vocab"]:
    """float32 log-probabilities at the positions that predict a real next token
    (``targets[b, t]``: position ``t`` of text ``b`` does), padding dropped before the softmax."""
    return logits[:, :-1][targets].float().log_softmax(dim=-1)


@torch.no_grad()
def _keep_encoding(sae: SAE, trained: SAE) -> None:
    """Make ``sae`` encode exactly as ``trained`` after its decoder moved. SAE-Lens's encoder
    reads the decoder twice: it subtracts ``b_dec`` from the input (``apply_b_dec_to_input``),
    undone by adding the shift Δ times ``W_enc`` to ``b_enc``; and TopK SAEs with
    ``rescale_acts_by_decoder_norm`` scale each pre-activation by its decoder row's norm, undone
    by scaling that latent's ``W_enc`` column and ``b_enc`` by old norm / new norm."""
    if getattr(sae.cfg, "apply_b_dec_to_input", False):
        shift = sae.b_dec - trained.b_dec
        sae.b_enc.add_(einsum(shift, sae.W_enc, "d_in, d_in d_sae -> d_sae"))
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        ratio = trained.W_dec.norm(dim=-1) / sae.W_dec.norm(dim=-1).clamp_min(1e-12)
        sae.W_enc.mul_(ratio)
        sae.b_enc.mul_(ratio)


def _length_sorted_batches(
    mask: Bool[Tensor, "text pos"], batch_size: int
) -> list[Int[Tensor, " batch"]]:
    """Text indices in batches of similar length (longest first)."""
    order = torch.argsort(mask.sum(dim=1), descending=True, stable=True)
    return list(torch.split(order, batch_size))


def _changed_params(sae: SAE) -> dict[str, Tensor]:
    """What the fine-tune changes: the decoder, and the encoder's ``W_enc`` and ``b_enc`` only
    as far as keeping its latents those of the trained dictionary needs."""
    return {"W_dec": sae.W_dec, "b_dec": sae.b_dec, "W_enc": sae.W_enc, "b_enc": sae.b_enc}


@contextlib.contextmanager
def _frozen_except(module: torch.nn.Module, trainable: Sequence[Tensor]) -> Iterator[None]:
    """Only ``trainable`` of ``module``'s parameters take gradients inside the block, which runs
    in eval mode (flags and mode restored after)."""
    flags = {param: param.requires_grad for param in module.parameters()}
    keep = {id(param) for param in trainable}
    training = module.training
    try:
        for param in module.parameters():
            param.requires_grad_(id(param) in keep)
        module.train(False)
        yield
    finally:
        for param, flag in flags.items():
            param.requires_grad_(flag)
        module.train(training)


def finetune_dictionaries(
    paths: Mapping[tuple[int, str], Path],
    model: Any,
    train: ActivationStore,
    hooks: Mapping[int, str],
    config: SAEConfig,
    *,
    model_label: str = "tuned",
) -> list[dict[str, Any]]:
    """The saes stage's step: [`finetune_on_validation`][lfp_mech.saes.finetune.finetune_on_validation]
    for every dictionary in ``paths`` (``{(layer, size): folder}``) on ``model`` (a
    [`ModelLike`][lfp_mech.models.coerce.ModelLike]) and ``train``'s texts, the dictionaries of
    one size together (one per layer, sharing each batch's clean pass), each saved back in
    place (atomically, its ``training.json`` gaining a ``kl_finetune`` record). Returns one row
    per dictionary for the ``kl_finetune`` table."""
    from lfp_mech.models.coerce import as_hooked_model

    finetune_texts, val_texts = split_finetune_texts(
        train.texts(), config.kl_finetune_texts, config.kl_finetune_val_texts
    )
    hooked = as_hooked_model(model, device=config.device, dtype=config.dtype, seed=config.seed)
    groups: dict[str, dict[int, Path]] = {}  # one dictionary per hook in a group: by size
    for (layer, size), path in sorted(paths.items()):
        groups.setdefault(size, {})[layer] = path
    rows = []
    for size, group in groups.items():
        saes = {hooks[layer]: load_sae(path, config.device) for layer, path in group.items()}
        records = finetune_on_validation(
            hooked, saes, finetune_texts, val_texts,
            lr=config.kl_finetune_lr, batch_size=config.kl_finetune_batch_size,
            epochs=config.kl_finetune_epochs, context_length=config.context_length,
            seed=config.seed,
        )  # fmt: skip
        for (layer, path), record in zip(group.items(), records, strict=True):
            record = {
                "model": model_label, "layer": layer, "size": size,
                "finetune_texts": len(finetune_texts), "val_texts": len(val_texts), **record,
            }  # fmt: skip
            info = read_json(path / TRAINING_FILE) if (path / TRAINING_FILE).is_file() else {}
            if record["kept"]:
                save_sae(saes[hooks[layer]], path, {**info, "kl_finetune": json_safe(record)})
            rows.append(record)
    return rows
