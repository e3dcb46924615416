"""Sparse autoencoders (SAE-Lens) on the most divergent layers' MLP outputs.

The LFP paper (section 3.1, appendix A.2) learns, for each of the 5 most divergent layers, two
dictionaries of the fine-tuned model's MLP output ``x ∈ R^n``: a small one with ``n`` features
and a big one with ``2n``::

    f = ReLU(W_E x + b_E),   x̂ = W_D f (+ b_D),   loss = mean ||x − x̂||² + α ||f||₁

with a tied decoder (``W_D = W_Eᵀ``), α = 1e-3, lr 1e-3, 75,000 training examples. Features that
the two dictionaries share (high max cosine similarity, MMCS) are taken as real directions of
the model and are the ones later explained.

How this maps to SAE-Lens (used for the SAE classes, the trainer, saving and loading):

* Untied SAEs are SAE-Lens ``StandardTrainingSAE`` trained by ``SAETrainer`` on batches streamed
  from an :class:`~lfp_mech.activations.ActivationStore` (no hub, no wandb).
* SAE-Lens has no tied ReLU SAE: :class:`TiedStandardTrainingSAE` subclasses
  ``StandardTrainingSAE`` with ``W_enc`` a property returning ``W_dec.T`` (trainable:
  ``W_dec``, ``b_enc``, ``b_dec``) and saves ``W_enc = W_dec.T`` explicitly, so the result is a
  plain standard SAE: ``sae_lens.SAE.load_from_disk(path)`` loads it with no registration.
* **What α means here.** SAE-Lens's loss is ``Σ_d (x − x̂)_d²`` (summed over the ``d_in``
  dimensions, averaged over the batch) ``+ c · Σ_i f_i ||W_D[i]||`` (each feature's L1 weighted by
  its decoder row norm), with activations rescaled so their mean norm is ``sqrt(d_in)`` during
  training (``normalize_activations="expected_average_only_in"``, folded into the weights
  afterwards). Dividing by ``d_in`` gives the paper's form: *per-element* mean squared error plus
  ``α · Σ_i f_i ||W_D[i]||`` with ``α = c / d_in``. :class:`SAEConfig` takes α in those units and
  hands SAE-Lens ``l1_coefficient = α · d_in``. The paper's α = 1e-3 was tuned on unnormalised
  Pythia activations; on SmolLM2 (normalised) it leaves the dictionaries dense (L0 in the
  hundreds), so the default α was calibrated with :func:`l1_sweep` (see ``DEFAULT_ALPHA``).
* Metrics on held-out activations: MSE, normalised reconstruction loss
  ``Σ||x − x̂||² / Σ||x||²``, fraction of variance unexplained ``Σ||x − x̂||² / Σ||x − x̄||²``, L0
  (active features per token), dead-feature fraction (never active on the held-out tokens), and
  the CE loss recovered when the SAE replaces the hook in the model:
  ``(CE_zero − CE_sae) / (CE_zero − CE_clean)``.
"""

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Bool, Float, Int
from sae_lens import SAE
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer
from torch import Tensor
from tqdm.auto import tqdm

from lfp_mech._io import atomic_dir, write_json, write_text
from lfp_mech.activations import ActivationStore, tokenize_for_model
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.saes.config import DEFAULT_ALPHA, PAPER_ALPHA, SIZES, SAEConfig

logger = logging.getLogger(__name__)

os.environ.setdefault("WANDB_MODE", "disabled")


# --------------------------------------------------------------------------- the tied SAE


class TiedStandardTrainingSAE(StandardTrainingSAE):
    """SAE-Lens's standard ReLU training SAE with a tied decoder: ``W_enc`` is ``W_dec.T``.

    Trainable parameters: ``W_dec`` (``[d_sae, d_in]``), ``b_enc``, ``b_dec``. Saved for
    inference as a plain standard SAE with ``W_enc = W_dec.T``, so ``sae_lens.SAE.load_from_disk``
    loads it without registering this class.
    """

    @property
    def W_enc(self) -> Tensor:  # noqa: N802 (SAE-Lens's name)
        return self.W_dec.T

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "W_enc":
            return  # tied: SAE-Lens's initialisation assigns W_enc; the encoder is W_dec.T
        super().__setattr__(name, value)

    def process_state_dict_for_saving_inference(self, state_dict: dict[str, Any]) -> None:
        super().process_state_dict_for_saving_inference(state_dict)
        state_dict["W_enc"] = self.W_dec.detach().T.contiguous().clone()

    @torch.no_grad()
    def fold_activation_norm_scaling_factor(self, scaling_factor: float) -> None:
        """Fold the training-time input scale ``s`` into the biases, keeping the tie.

        With ``x' = s·x``: ``f(x') = s·ReLU((x − b_dec/s) W_decᵀ + b_enc/s)`` and the decoded
        ``x̂' = s·x̂``, so dividing both biases by ``s`` gives the same SAE on raw activations (its
        feature activations are ``1/s`` of the training-time ones). SAE-Lens's own folding
        rescales ``W_enc`` and ``W_dec`` in opposite directions, which would break the tie.
        """
        self.b_dec.data /= scaling_factor
        self.b_enc.data /= scaling_factor
        self.cfg.normalize_activations = "none"


# --------------------------------------------------------------------------- training


def build_training_sae(
    d_in: int,
    d_sae: int,
    *,
    tied: bool,
    alpha: float,
    config: SAEConfig,
    n_steps: int,
    metadata: Mapping[str, Any] | None = None,
) -> StandardTrainingSAE:
    """A fresh SAE-Lens training SAE (tied or untied) with α converted to SAE-Lens units."""
    sae_cfg = StandardTrainingSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        l1_coefficient=alpha * d_in,
        l1_warm_up_steps=int(config.l1_warm_up_fraction * n_steps),
        dtype="float32",
        device=config.device,
        normalize_activations="expected_average_only_in"
        if config.normalize_activations
        else "none",
        decoder_init_norm=config.decoder_init_norm,
        metadata=SAEMetadata(**dict(metadata or {})),
    )
    cls = TiedStandardTrainingSAE if tied else StandardTrainingSAE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return cls(sae_cfg)


def train_sae(
    batches: Callable[[int], Iterator[Tensor]],
    d_in: int,
    d_sae: int,
    config: SAEConfig,
    *,
    tied: bool,
    alpha: float | None = None,
    n_samples: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[StandardTrainingSAE, dict[str, Any]]:
    """Train one SAE with SAE-Lens's ``SAETrainer`` on ``batches(epoch)`` (one epoch each).

    Returns the trained SAE (activation normalisation folded in: it takes raw activations) and
    training statistics (steps, seconds, samples/s).
    """
    alpha = config.l1_coefficient if alpha is None else alpha
    n_samples = n_samples or config.training_tokens
    n_steps = n_samples // config.batch_size
    sae = build_training_sae(
        d_in, d_sae, tied=tied, alpha=alpha, config=config, n_steps=n_steps, metadata=metadata
    )
    trainer_cfg = SAETrainerConfig(
        total_training_samples=n_steps * config.batch_size,
        train_batch_size_samples=config.batch_size,
        lr=config.lr,
        lr_end=config.lr,
        lr_decay_steps=int(config.lr_decay_fraction * n_steps),
        lr_scheduler_name="constant",
        device=config.device,
        n_batches_for_norm_estimate=max(1, min(20, n_steps)),
        dead_feature_window=max(1, n_steps),
        feature_sampling_window=10 * max(1, n_steps),
        logger=LoggingConfig(log_to_wandb=False),
    )
    provider = _endless(batches, config.batch_size)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        trained = SAETrainer(trainer_cfg, sae, provider).fit()
    seconds = time.perf_counter() - start
    stats = {
        "steps": n_steps,
        "samples": n_steps * config.batch_size,
        "seconds": round(seconds, 2),
        "samples_per_second": round(n_steps * config.batch_size / max(seconds, 1e-9), 1),
        "alpha": alpha,
        "sae_lens_l1_coefficient": alpha * d_in,
        "tied": tied,
    }
    return trained, stats


def train_saes(
    store: ActivationStore,
    layers: Sequence[int],
    out_dir: str | os.PathLike[str],
    config: SAEConfig | None = None,
    *,
    sizes: Sequence[str] = SIZES,
    model_name: str = "",
) -> dict[tuple[int, str], Path]:
    """Train and save an SAE per (layer, size) on ``store``'s activations of each layer.

    Each SAE is saved (atomically) in SAE-Lens format in ``out_dir/L{layer}_{size}/``
    (``cfg.json``, ``sae_weights.safetensors``, plus our ``training.json``), with
    ``cfg.metadata.hook_name`` set so it splices into a ``HookedSAETransformer``.

    Returns ``{(layer, size): path}``.
    """
    config = config or SAEConfig()
    hooks = _hooks_for_layers(store, layers)
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        raise ConfigError(f"unknown SAE size(s) {bad}; sizes: {SIZES}")
    out_dir = Path(out_dir)
    paths = {}
    for layer, hook in hooks.items():
        d_in = store.d_in_of(hook)
        for size in sizes:
            d_sae = d_in * config.expansion_factors[SIZES.index(size)]
            metadata = _metadata(hook, layer, size, config.tied, store, model_name)
            logger.info("training %s SAE %s -> %d (%s)", size, hook, d_sae, _variant(config.tied))
            sae, stats = train_sae(
                _store_batches(store, hook, config),
                d_in,
                d_sae,
                config,
                tied=config.tied,
                metadata=metadata,
            )
            path = out_dir / f"L{layer}_{size}"
            save_sae(sae, path, {**stats, "layer": layer, "size": size, "hook_name": hook})
            paths[(layer, size)] = path
    return paths


def save_sae(
    sae: StandardTrainingSAE, path: str | os.PathLike[str], info: Mapping[str, Any]
) -> Path:
    """Save ``sae`` for inference in SAE-Lens format (atomically) plus ``training.json``."""
    with atomic_dir(path) as tmp:
        sae.save_inference_model(tmp)
        write_json(tmp / "training.json", dict(info))
    return Path(path)


def load_sae(path: str | os.PathLike[str], device: str = "cpu") -> SAE:
    """Load an SAE saved by this module (or any SAE-Lens SAE folder)."""
    path = Path(path)
    if not (path / "cfg.json").exists():
        raise LfpMechError(f"{path} is not an SAE folder (no cfg.json); train one with train_saes")
    return SAE.load_from_disk(path, device=device)


# --------------------------------------------------------------------------- metrics


def mmcs(sae_small: SAE, sae_big: SAE) -> Float[Tensor, " d_sae_small"]:
    """Max cosine similarity of each small-dictionary decoder direction with any big one."""
    return mmcs_with_index(sae_small, sae_big)[0]


def mmcs_with_index(
    sae_small: SAE, sae_big: SAE
) -> tuple[Float[Tensor, " d_sae_small"], Int[Tensor, " d_sae_small"]]:
    """MMCS of each small feature and the index of the big feature that attains it."""
    small, big = sae_small.W_dec.detach().float(), sae_big.W_dec.detach().float()
    if small.shape[1] != big.shape[1]:
        raise ConfigError(
            f"the SAEs read different widths (d_in {small.shape[1]} vs {big.shape[1]}): MMCS "
            "compares dictionaries of the same layer"
        )
    small = small / small.norm(dim=1, keepdim=True).clamp_min(1e-12)
    big = big / big.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cosine = einsum(small, big, "small d_in, big d_in -> small big")
    values, index = cosine.max(dim=1)
    return values, index


@torch.no_grad()
def sae_metrics(
    sae: SAE, acts: Float[Tensor, "n d_in"], *, batch_size: int = 4096
) -> dict[str, float]:
    """Reconstruction and sparsity of ``sae`` on (held-out) activations ``acts``.

    Returns ``mse`` (per element), ``nmse`` (``Σ||x−x̂||²/Σ||x||²``, the paper's normalised
    reconstruction loss), ``fvu`` (``Σ||x−x̂||²/Σ||x−x̄||²``), ``l0`` (mean active features per
    token), ``l0_scaled`` (``l0 / d_sae``) and ``dead_fraction`` (never active on ``acts``).
    """
    if acts.shape[0] == 0:
        raise ConfigError("no activations to evaluate the SAE on")
    if acts.shape[1] != sae.cfg.d_in:
        raise ConfigError(
            f"activations have width {acts.shape[1]} but the SAE reads {sae.cfg.d_in}"
        )
    sae.eval()
    acts = acts.to(sae.device, torch.float32)
    mean = reduce(acts, "n d_in -> d_in", "mean")
    sq_err = sq_norm = sq_dev = l0 = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=sae.device)
    for start in range(0, acts.shape[0], batch_size):
        x = acts[start : start + batch_size]
        features = sae.encode(x)
        x_hat = sae.decode(features)
        sq_err += float(((x - x_hat) ** 2).sum())
        sq_norm += float((x**2).sum())
        sq_dev += float(((x - mean) ** 2).sum())
        active = features > 0
        l0 += float(active.sum())
        fired |= active.any(dim=0)
    n = acts.shape[0]
    return {
        "mse": sq_err / (n * acts.shape[1]),
        "nmse": sq_err / max(sq_norm, 1e-12),
        "fvu": sq_err / max(sq_dev, 1e-12),
        "l0": l0 / n,
        "l0_scaled": l0 / n / sae.cfg.d_sae,
        "dead_fraction": 1.0 - float(fired.float().mean()),
    }


@torch.no_grad()
def spliced_ce_losses(
    model,
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    saes: Mapping[str, Sequence[SAE]],
    *,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Next-token CE loss of ``model`` clean, with each hook zero-ablated, and with each SAE
    replacing its hook (the SAE's reconstruction, no error term).

    ``saes`` maps a hook name (``blocks.{l}.hook_mlp_out``) to the SAEs to splice there. The
    model runs once in full per batch (caching each hook's block input); the ablated and
    spliced runs restart from that block with ``start_at_layer``, which gives the same logits
    as a full run with the hook replaced and skips the unchanged early blocks.

    Returns ``{"clean": float, "zero": {hook: float}, "sae": {hook: [float, ...]}}`` (mean CE
    over the real next-token predictions; padding is ignored).
    """
    layer_of = {hook: _layer_of_hook(hook) for hook in saes}
    resid_names = {f"blocks.{layer}.hook_resid_pre" for layer in layer_of.values()}
    sums: dict[str, Any] = {
        "clean": 0.0,
        "zero": dict.fromkeys(saes, 0.0),
        "sae": {hook: [0.0] * len(s) for hook, s in saes.items()},
    }
    count = 0
    for start in range(0, tokens.shape[0], batch_size):
        toks = tokens[start : start + batch_size].to(model.cfg.device)
        attn = mask[start : start + batch_size].to(model.cfg.device)
        targets = attn[:, 1:] & attn[:, :-1]
        count += int(targets.sum())
        logits, cache = model.run_with_cache(
            toks, attention_mask=attn.long(), names_filter=lambda name: name in resid_names
        )
        sums["clean"] += _ce_sum(logits, toks, targets)
        for hook, hook_saes in saes.items():
            layer = layer_of[hook]
            resid = cache[f"blocks.{layer}.hook_resid_pre"]

            zero = _run_from_block(model, resid, layer, hook, attn, torch.zeros_like)
            sums["zero"][hook] += _ce_sum(zero, toks, targets)
            for i, sae in enumerate(hook_saes):
                spliced = _run_from_block(model, resid, layer, hook, attn, _reconstruct_with(sae))
                sums["sae"][hook][i] += _ce_sum(spliced, toks, targets)
    count = max(count, 1)
    return {
        "clean": sums["clean"] / count,
        "zero": {hook: value / count for hook, value in sums["zero"].items()},
        "sae": {hook: [value / count for value in values] for hook, values in sums["sae"].items()},
    }


def ce_loss_recovered(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """``(CE_zero − CE_sae) / (CE_zero − CE_clean)``: 1 = as good as the model, 0 = as bad as
    zero-ablating the hook (NaN if ablation does not hurt)."""
    gap = ce_zero - ce_clean
    return (ce_zero - ce_sae) / gap if abs(gap) > 1e-9 else math.nan


# --------------------------------------------------------------------------- L1 sweep


def l1_sweep(
    train: ActivationStore | Float[Tensor, "n d_in"],
    heldout_acts: Float[Tensor, "m d_in"],
    alphas: Sequence[float],
    config: SAEConfig | None = None,
    *,
    hook: str | None = None,
    tied: bool | None = None,
    expansion_factor: int | None = None,
) -> list[dict[str, Any]]:
    """Train one SAE per α and measure reconstruction and L0 on held-out activations.

    The paper's appendix figure (reconstruction loss and "true sparsity" vs α, Pythia-70m).

    Args:
        train: an activation store (with ``hook``) or a tensor of training activations.
        heldout_acts: activations to measure on.
        alphas: α values (per-element-MSE units, see the module docstring).
        config: training options (``sweep_tokens`` activations per SAE).
        tied: tie the decoder (default: ``config.tied``).
        expansion_factor: ``d_sae / d_in`` (default: the small size,
            ``config.expansion_factors[0]``).

    Returns one row per α: ``alpha``, ``sae_lens_l1_coefficient`` and :func:`sae_metrics`.
    """
    config = config or SAEConfig()
    if not alphas:
        raise ConfigError("no alphas to sweep")
    tied = config.tied if tied is None else tied
    factor = expansion_factor or config.expansion_factors[0]
    if isinstance(train, ActivationStore):
        if hook is None:
            raise ConfigError("l1_sweep on an ActivationStore needs hook=")
        batches, d_in = _store_batches(train, hook, config), train.d_in_of(hook)
    else:
        batches, d_in = _tensor_batches(train, config), train.shape[1]
    rows = []
    for alpha in tqdm(alphas, desc="L1 sweep", disable=None):
        sae, stats = train_sae(
            batches,
            d_in,
            d_in * factor,
            config,
            tied=tied,
            alpha=alpha,
            n_samples=config.sweep_tokens,
        )
        rows.append({**stats, "d_sae": d_in * factor, **sae_metrics(sae, heldout_acts)})
    return rows


# --------------------------------------------------------------------------- the stage


def run_saes_stage(
    store_dir: str | os.PathLike[str],
    model_path: str | os.PathLike[str] | None,
    out_dir: Path,
    config: SAEConfig | None = None,
) -> dict[str, Any]:
    """Train, save and evaluate the SAEs of every layer in an activation capture.

    Args:
        store_dir: the activations stage's folder (``train/`` and ``heldout/`` stores).
        model_path: the model the activations came from (the tuned policy) for the CE-loss
            evaluation; ``None`` skips it.
        out_dir: this stage's folder.

    Writes to ``out_dir``: ``L{layer}_{small|big}/`` (SAE-Lens format), ``untied/L{layer}_small/``
    (or ``tied/`` when ``config.tied`` is False), ``metrics.csv/.md``, ``mmcs_L{layer}.csv``,
    ``mmcs.png``, ``high_mmcs_features.json``, ``l1_sweep.csv/.md/.png``,
    ``tied_vs_untied.csv/.md``, ``summary.json``.
    """
    from lfp_mech.plots import save_figure
    from lfp_mech.plots.saes import plot_l1_sweep, plot_mmcs

    config = config or SAEConfig()
    out_dir = Path(out_dir)
    store_dir = Path(store_dir)
    train = ActivationStore(store_dir / "train")
    if not (store_dir / "heldout" / "store.json").exists():
        raise LfpMechError(
            f"{store_dir} has no held-out activations (heldout/): rerun the activations stage "
            "with heldout_tokens > 0"
        )
    heldout = ActivationStore(store_dir / "heldout")
    layers = train.layers
    hooks = _hooks_for_layers(train, layers)
    heldout_acts = {hook: heldout.load_all(hook, config.eval_tokens) for hook in hooks.values()}
    model_name = str(train.meta.get("model", ""))
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {}

    # 1. L1 sweep on one layer
    if config.sweep_alphas:
        sweep_layer = layers[0] if config.sweep_layer is None else config.sweep_layer
        if sweep_layer not in hooks:
            raise ConfigError(f"sweep_layer {sweep_layer} was not captured; captured: {layers}")
        start = time.perf_counter()
        rows = l1_sweep(
            train,
            heldout_acts[hooks[sweep_layer]],
            config.sweep_alphas,
            config,
            hook=hooks[sweep_layer],
        )
        timings["l1_sweep"] = time.perf_counter() - start
        columns = ["alpha", "sae_lens_l1_coefficient", "nmse", "fvu", "l0", "dead_fraction"]
        _write_table(out_dir / "l1_sweep", rows, columns)
        save_figure(
            plot_l1_sweep(rows, chosen=config.l1_coefficient, layer=sweep_layer),
            out_dir / "l1_sweep.png",
        )
        summary["l1_sweep"] = {"layer": sweep_layer, "rows": _round_rows(rows, columns)}

    # 2. the dictionaries
    start = time.perf_counter()
    paths = train_saes(train, layers, out_dir, config, model_name=model_name)
    timings["train_main"] = time.perf_counter() - start
    other: dict[tuple[int, str], Path] = {}
    if config.compare_untied:
        start = time.perf_counter()
        other_cfg = replace(config, tied=not config.tied)
        other = train_saes(
            train,
            layers,
            out_dir / _variant(other_cfg.tied),
            other_cfg,
            sizes=("small",),
            model_name=model_name,
        )
        timings["train_comparison"] = time.perf_counter() - start

    # 3. metrics
    start = time.perf_counter()
    entries = [(key, path, config.tied) for key, path in paths.items()]
    entries += [(key, path, not config.tied) for key, path in other.items()]
    saes = {(key, tied): load_sae(path, config.device) for key, path, tied in entries}
    rows = []
    for (layer, size), path, tied in entries:
        sae = saes[((layer, size), tied)]
        rows.append(
            {
                "layer": layer,
                "size": size,
                "variant": _variant(tied),
                "d_in": sae.cfg.d_in,
                "d_sae": sae.cfg.d_sae,
                "alpha": config.l1_coefficient,
                **sae_metrics(sae, heldout_acts[hooks[layer]]),
                "path": str(path.relative_to(out_dir)),
            }
        )
    ce = _ce_evaluation(model_path, heldout, hooks, saes, config) if model_path else None
    for row in rows:
        if ce is not None:
            values = ce[(row["layer"], row["size"], row["variant"])]
            row.update(values)
        else:
            row.update(ce_clean=math.nan, ce_sae=math.nan, ce_zero=math.nan, ce_recovered=math.nan)
    timings["evaluation"] = time.perf_counter() - start
    columns = [
        "layer", "size", "variant", "d_sae", "mse", "nmse", "fvu", "l0", "l0_scaled",
        "dead_fraction", "ce_clean", "ce_sae", "ce_zero", "ce_recovered",
    ]  # fmt: skip
    _write_table(out_dir / "metrics", rows, columns)

    # 4. tied vs untied (paper appendix): averaged over the layers
    if other:
        comparison = _tied_vs_untied(rows)
        _write_table(
            out_dir / "tied_vs_untied",
            comparison,
            ["variant", "n_layers", "nmse", "l0_scaled", "fvu", "dead_fraction", "ce_recovered"],
        )
        summary["tied_vs_untied"] = comparison

    # 5. MMCS small <-> big
    high: dict[str, Any] = {}
    mmcs_values = {}
    for layer in layers:
        small, big = saes[((layer, "small"), config.tied)], saes[((layer, "big"), config.tied)]
        values, index = mmcs_with_index(small, big)
        mmcs_values[layer] = values
        order = torch.argsort(values, descending=True)
        write_text(
            out_dir / f"mmcs_L{layer}.csv",
            "small_feature,mmcs,big_feature\n"
            + "".join(f"{int(i)},{values[i]:.6f},{int(index[i])}\n" for i in order),
        )
        top = order[: config.mmcs_top_k]
        high[str(layer)] = {
            "hook_name": hooks[layer],
            "mean_mmcs": float(values.mean()),
            "n_above_threshold": int((values >= config.mmcs_threshold).sum()),
            "threshold": config.mmcs_threshold,
            "top_features": [int(i) for i in top],
            "top_mmcs": [round(float(values[i]), 4) for i in top],
        }
    write_json(out_dir / "high_mmcs_features.json", high)
    save_figure(plot_mmcs(mmcs_values, threshold=config.mmcs_threshold), out_dir / "mmcs.png")

    small_rows = [r for r in rows if r["size"] == "small" and r["variant"] == _variant(config.tied)]
    checks = {
        "small_fvu_le_0.3": all(r["fvu"] <= 0.3 for r in small_rows),
        "small_ce_recovered_ge_0.7": all(r["ce_recovered"] >= 0.7 for r in small_rows),
        "small_dead_fraction_le_0.2": all(r["dead_fraction"] <= 0.2 for r in small_rows),
    }
    summary |= {
        "layers": layers,
        "hook_names": [hooks[layer] for layer in layers],
        "n_saes": len(paths),
        "saes": {
            f"L{layer}_{size}": str(p.relative_to(out_dir)) for (layer, size), p in paths.items()
        },
        "variant": _variant(config.tied),
        "alpha": config.l1_coefficient,
        "sae_lens_l1_coefficient": {
            hooks[layer]: config.l1_coefficient * train.d_in_of(hooks[layer]) for layer in layers
        },
        "alpha_meaning": (
            "loss = mean over elements of (x - x_hat)^2 + alpha * sum_i f_i * ||W_dec[i]||, "
            "activations rescaled to mean norm sqrt(d_in) while training; SAE-Lens "
            "l1_coefficient = alpha * d_in"
        ),
        "train_tokens_in_store": train.n_tokens,
        "training_tokens_per_sae": (config.training_tokens // config.batch_size)
        * config.batch_size,
        "heldout_tokens": {hook: int(a.shape[0]) for hook, a in heldout_acts.items()},
        "max_small_fvu": max(r["fvu"] for r in small_rows),
        "min_small_ce_recovered": min(r["ce_recovered"] for r in small_rows),
        "max_small_dead_fraction": max(r["dead_fraction"] for r in small_rows),
        "mean_small_l0": sum(r["l0"] for r in small_rows) / len(small_rows),
        "checks": checks,
        "mmcs": {
            layer: {k: v[k] for k in ("mean_mmcs", "n_above_threshold")}
            for layer, v in high.items()
        },
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "config": asdict(config),
    }
    for name, ok in checks.items():
        if not ok:
            logger.warning("SAE check failed: %s", name)
    write_json(out_dir / "summary.json", _json_safe(summary))
    return _json_safe({k: summary[k] for k in (
        "layers", "n_saes", "alpha", "max_small_fvu", "min_small_ce_recovered",
        "max_small_dead_fraction", "mean_small_l0", "checks",
    )})  # fmt: skip


# --------------------------------------------------------------------------- helpers


def _variant(tied: bool) -> str:
    return "tied" if tied else "untied"


def _metadata(
    hook: str, layer: int, size: str, tied: bool, store: ActivationStore, model_name: str
) -> dict[str, Any]:
    return {
        "model_name": model_name or str(store.meta.get("model", "")),
        "hook_name": hook,
        "hook_layer": layer,
        "context_size": int(store.meta.get("context_length", 128)),
        "prepend_bos": True,
        "lfp_mech": {"size": size, "tied": tied, "bos_excluded": True},
    }


def _hooks_for_layers(store: ActivationStore, layers: Sequence[int]) -> dict[int, str]:
    by_layer = dict(zip(store.layers, store.hook_names, strict=True))
    if not layers:
        raise ConfigError("no layers to train SAEs on")
    missing = [layer for layer in layers if layer not in by_layer]
    if missing:
        raise ConfigError(
            f"layer(s) {missing} are not in the activation store {store.path} (captured: "
            f"{store.layers}); capture them first"
        )
    return {layer: by_layer[layer] for layer in layers}


def _store_batches(
    store: ActivationStore, hook: str, config: SAEConfig
) -> Callable[[int], Iterator[Tensor]]:
    if store.n_tokens < config.batch_size:
        raise ConfigError(
            f"the store has {store.n_tokens} tokens, fewer than one batch ({config.batch_size}): "
            "capture more tokens or lower batch_size"
        )
    return lambda epoch: store.iter_batches(
        hook, config.batch_size, shuffle=True, seed=config.seed + epoch, drop_last=True
    )


def _tensor_batches(acts: Tensor, config: SAEConfig) -> Callable[[int], Iterator[Tensor]]:
    if acts.shape[0] < config.batch_size:
        raise ConfigError(
            f"{acts.shape[0]} training activations, fewer than one batch ({config.batch_size})"
        )

    def batches(epoch: int) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(config.seed + epoch)
        order = torch.randperm(acts.shape[0], generator=generator)
        n_full = acts.shape[0] - acts.shape[0] % config.batch_size
        for start in range(0, n_full, config.batch_size):
            yield acts[order[start : start + config.batch_size]].float()

    return batches


def _endless(batches: Callable[[int], Iterator[Tensor]], batch_size: int) -> Iterator[Tensor]:
    epoch = 0
    while True:
        produced = False
        for batch in batches(epoch):
            produced = True
            yield batch
        if not produced:
            raise LfpMechError(f"no full batch of {batch_size} activations: capture more tokens")
        epoch += 1


def _layer_of_hook(hook: str) -> int:
    parts = hook.split(".")
    if len(parts) < 2 or parts[0] != "blocks" or not parts[1].isdigit():
        raise ConfigError(f"hook {hook!r} is not inside a transformer block (blocks.{{l}}...)")
    return int(parts[1])


def _reconstruct_with(sae: SAE) -> Callable[[Tensor], Tensor]:
    return lambda act: sae.decode(sae.encode(act)).to(act.dtype)


def _run_from_block(
    model,
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    hook: str,
    attention_mask: Bool[Tensor, "batch pos"],
    replace_fn: Callable[[Tensor], Tensor],
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of ``model`` run from block ``layer`` on ``resid`` with ``hook`` replaced."""
    with model.hooks(fwd_hooks=[(hook, lambda act, hook: replace_fn(act))]):
        return model(resid, start_at_layer=layer, attention_mask=attention_mask.long())


def _ce_sum(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    targets: Bool[Tensor, "batch pos_minus_1"],
) -> float:
    log_probs = logits[:, :-1].float().log_softmax(dim=-1)
    next_tokens = rearrange(tokens[:, 1:], "batch pos -> batch pos 1")
    nll = -log_probs.gather(-1, next_tokens)[..., 0]
    return float(nll[targets].sum())


def _ce_evaluation(
    model_path: str | os.PathLike[str],
    heldout: ActivationStore,
    hooks: Mapping[int, str],
    saes: Mapping[tuple[tuple[int, str], bool], SAE],
    config: SAEConfig,
) -> dict[tuple[int, str, str], dict[str, float]]:
    from lfp_mech.models import load_model

    texts = heldout.texts()[: config.ce_texts]
    if not texts:
        raise LfpMechError("no held-out texts for the CE-loss evaluation; set ce_texts > 0")
    model = load_model(model_path, device=config.device)
    tokens, mask = tokenize_for_model(model.tokenizer, texts, config.context_length)
    keys = sorted(saes)
    by_hook: dict[str, list[tuple[tuple[int, str], bool]]] = {}
    for key in keys:
        by_hook.setdefault(hooks[key[0][0]], []).append(key)
    losses = spliced_ce_losses(
        model,
        tokens,
        mask,
        {hook: [saes[k] for k in ks] for hook, ks in by_hook.items()},
        batch_size=config.ce_batch_size,
    )
    result = {}
    for hook, ks in by_hook.items():
        for i, ((layer, size), tied) in enumerate(ks):
            ce_sae = losses["sae"][hook][i]
            result[(layer, size, _variant(tied))] = {
                "ce_clean": losses["clean"],
                "ce_sae": ce_sae,
                "ce_zero": losses["zero"][hook],
                "ce_recovered": ce_loss_recovered(losses["clean"], ce_sae, losses["zero"][hook]),
            }
    return result


def _tied_vs_untied(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for variant in ("tied", "untied"):
        chosen = [r for r in rows if r["size"] == "small" and r["variant"] == variant]
        if not chosen:
            continue
        entry: dict[str, Any] = {"variant": variant, "n_layers": len(chosen)}
        for key in ("nmse", "l0_scaled", "fvu", "dead_fraction", "ce_recovered"):
            entry[key] = sum(float(r[key]) for r in chosen) / len(chosen)
        table.append(entry)
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _write_table(stem: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    csv = (
        ",".join(columns)
        + "\n"
        + "".join(",".join(_fmt(row.get(c, "")) for c in columns) + "\n" for row in rows)
    )
    md = (
        "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        + "".join("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |\n" for row in rows)
    )  # fmt: skip
    write_text(stem.with_suffix(".csv"), csv)
    write_text(stem.with_suffix(".md"), md)


def _round_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    return [{c: row[c] for c in columns} for row in rows]


def _json_safe(obj: Any) -> Any:
    """NaN -> None, so summary.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj
