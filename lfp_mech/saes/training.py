"""Training SAEs with SAE-Lens's ``SAETrainer`` on activations streamed from a store.

[`build_training_sae`][lfp_mech.saes.training.build_training_sae] makes a fresh (tied or untied)
training SAE with α converted to SAE-Lens units, [`train_sae`][lfp_mech.saes.training.train_sae]
trains one on any batch source, [`train_saes`][lfp_mech.saes.training.train_saes] trains and saves a
small and a big dictionary per layer of an
[`ActivationStore`][lfp_mech.activations.store.ActivationStore]. Batch sources are functions
``epoch -> iterator of [batch, d_in] tensors``
([`store_batches`][lfp_mech.saes.training.store_batches],
[`tensor_batches`][lfp_mech.saes.training.tensor_batches]); the trainer cycles epochs until it has
seen its samples."""

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sae_lens
import torch
from jaxtyping import Float
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.matching_pursuit_sae import MatchingPursuitTrainingSAEConfig
from sae_lens.saes.sae import SAEMetadata, TrainingSAE, TrainStepOutput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.training.sae_trainer import SAETrainer
from torch import Tensor

from lfp_mech._io import json_safe, read_json, sha256_json
from lfp_mech.activations.store import ActivationStore
from lfp_mech.devices import seeded
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.saes.artifacts import sae_folder, variant_name
from lfp_mech.saes.config import SIZES, SAEConfig
from lfp_mech.saes.io import save_sae
from lfp_mech.saes.matching_pursuit import GramMatchingPursuitTrainingSAE
from lfp_mech.saes.tied import TiedStandardTrainingSAE
from lfp_mech.tracking import Tracker, open_tracker, tracker_name

__all__ = [
    "DEAD_WINDOW_SAMPLES",
    "Batches",
    "TrackedSAETrainer",
    "build_training_sae",
    "hooks_for_layers",
    "store_batches",
    "tensor_batches",
    "train_sae",
    "step_scalars",
    "train_saes",
]

logger = logging.getLogger(__name__)

DEAD_WINDOW_SAMPLES = 50_000
"""SAE-Lens's dead-latent window, in activations: a latent silent that long counts as dead
(for the TopK auxiliary loss)."""

Batches = Callable[[int], Iterator[Float[Tensor, "batch d_in"]]]
"""A batch source: ``batches(epoch)`` yields one epoch of ``[batch, d_in]`` activations."""


def build_training_sae(
    d_in: int,
    d_sae: int,
    *,
    tied: bool,
    alpha: float,
    config: SAEConfig,
    n_steps: int,
    metadata: Mapping[str, Any] | None = None,
    architecture: str | None = None,
) -> TrainingSAE[Any]:
    """A fresh SAE-Lens training SAE of ``architecture`` (default ``config.architecture``).

    ``"batchtopk"``/``"topk"``: SAE-Lens's BatchTopK/TopK SAE with ``config.k`` latents and
    its dead-latent auxiliary loss (``config.aux_loss_coefficient``); ``"matching_pursuit"``:
    SAE-Lens's matching-pursuit SAE with at most ``config.k`` greedy steps per token (trained
    with the incremental encoder of [`matching_pursuit`][lfp_mech.saes.matching_pursuit]);
    ``"l1"``: the standard ReLU SAE (tied or untied) with α converted to SAE-Lens units,
    ``l1_coefficient = α · d_in`` (see [`lfp_mech.saes`][lfp_mech.saes] for what α means). The
    initialisation is seeded with ``config.seed``."""
    architecture = architecture or config.architecture
    common: dict[str, Any] = dict(
        d_in=d_in,
        d_sae=d_sae,
        # float32 whatever the run's dtype: the L1 penalty, Adam's second moments and the
        # decoder-norm terms are small differences of large sums, which bf16's 8-bit mantissa
        # would swamp (and SAE-Lens's trainer keeps no fp32 master copy). The activations are
        # cast to float32 when read (ActivationStore.iter_batches, tensor_batches).
        dtype="float32",
        device=config.device,
        normalize_activations="expected_average_only_in"
        if config.normalize_activations
        else "none",
        decoder_init_norm=config.decoder_init_norm,
        metadata=SAEMetadata(**dict(metadata or {})),
    )
    if architecture != "l1" and not 1 <= config.k <= d_sae:
        raise ConfigError(f"saes.k = {config.k}: must be between 1 and d_sae ({d_sae})")
    sae_cls: type[TrainingSAE[Any]]
    if architecture == "matching_pursuit":
        # no residual threshold: every token takes up to k greedy steps (fewer only when a
        # step picks a latent it already holds); SAE-Lens requires unit-norm decoder rows
        sae_cls = GramMatchingPursuitTrainingSAE
        sae_cfg: Any = MatchingPursuitTrainingSAEConfig(
            residual_threshold=0.0,
            max_iterations=config.k,
            stop_on_duplicate_support=True,
            **(common | {"decoder_init_norm": 1.0}),
        )
    elif architecture != "l1":
        batch = architecture == "batchtopk"
        sae_cls = BatchTopKTrainingSAE if batch else TopKTrainingSAE
        sae_cfg = (BatchTopKTrainingSAEConfig if batch else TopKTrainingSAEConfig)(
            k=config.k, aux_loss_coefficient=config.aux_loss_coefficient, **common
        )
    else:
        sae_cls = TiedStandardTrainingSAE if tied else StandardTrainingSAE
        sae_cfg = StandardTrainingSAEConfig(
            l1_coefficient=alpha * d_in,
            l1_warm_up_steps=int(config.l1_warm_up_fraction * n_steps),
            **common,
        )
    with seeded(config.seed):
        return sae_cls(sae_cfg)


def train_sae(
    batches: Batches,
    d_in: int,
    d_sae: int,
    config: SAEConfig,
    *,
    tied: bool,
    alpha: float | None = None,
    n_samples: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    track: str | None = None,
    architecture: str | None = None,
) -> tuple[TrainingSAE[Any], dict[str, Any]]:
    """Train one SAE with SAE-Lens's ``SAETrainer`` on ``batches(epoch)`` (one epoch each).

    ``architecture`` defaults to ``config.architecture`` (the L1 sweep passes ``"l1"``);
    ``alpha`` (L1 only) defaults to ``config.l1_coefficient``, ``n_samples`` (activations seen, rounded
    down to whole batches) to ``config.training_tokens``. ``track`` names its tracker when
    tracking is active ([`lfp_mech.tracking`][lfp_mech.tracking]: loss, L0, FVU per step).
    Returns the trained SAE (activation normalisation folded in: it takes raw activations) and
    training statistics (steps, seconds, samples/s, α and its SAE-Lens value).
    """
    alpha = config.l1_coefficient if alpha is None else alpha
    n_samples = n_samples or config.training_tokens
    n_steps = n_samples // config.batch_size
    architecture = architecture or config.architecture
    sae = build_training_sae(
        d_in,
        d_sae,
        tied=tied,
        alpha=alpha,
        config=config,
        n_steps=n_steps,
        metadata=metadata,
        architecture=architecture,
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
        # a latent silent for DEAD_WINDOW_SAMPLES activations is dead: the TopK auxiliary loss
        # trains those on the residual (the L1 SAEs do not use the window)
        dead_feature_window=max(1, min(n_steps, DEAD_WINDOW_SAMPLES // config.batch_size)),
        feature_sampling_window=10 * max(1, n_steps),
        logger=LoggingConfig(log_to_wandb=False),
    )
    provider = _endless(batches, config.batch_size)
    start = time.perf_counter()
    info = {"architecture": architecture, "alpha": alpha, "d_in": d_in, "d_sae": d_sae}
    tracker = open_tracker(track, info) if track else Tracker()
    with tracker, seeded(config.seed):
        trained = TrackedSAETrainer(trainer_cfg, sae, provider, tracker=tracker).fit()
    seconds = time.perf_counter() - start
    stats = {
        "steps": n_steps,
        "samples": n_steps * config.batch_size,
        "seconds": round(seconds, 2),
        "samples_per_second": round(n_steps * config.batch_size / max(seconds, 1e-9), 1),
        "architecture": architecture,
        "k": config.k if architecture != "l1" else None,
        "alpha": alpha if architecture == "l1" else None,
        "sae_lens_l1_coefficient": alpha * d_in if architecture == "l1" else None,
        "tied": tied,
    }
    return trained, stats


class TrackedSAETrainer(SAETrainer):
    """SAE-Lens's ``SAETrainer`` that also sends each step's loss, L0 and FVU to a
    [`Tracker`][lfp_mech.tracking.Tracker] (nothing is computed for the no-op tracker; training
    is the same either way)."""

    def __init__(self, *args: Any, tracker: Tracker | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = tracker or Tracker()

    def step(self, batch: Tensor) -> TrainStepOutput:
        output = super().step(batch)
        if self.tracker.enabled:
            self.tracker.log_scalars(self.n_training_steps + 1, step_scalars(output))
        return output


@torch.no_grad()
def step_scalars(output: TrainStepOutput) -> dict[str, float]:
    """``train/loss``, each SAE-Lens loss term (``train/mse_loss``, ``train/l1_loss``),
    ``train/l0`` (active features per input) and ``train/fvu`` (unexplained variance) of one
    training step (on the trainer's normalised inputs; FVU and L0 do not depend on the scale)."""
    sae_in, sae_out = output.sae_in.float(), output.sae_out.float()
    residual = (sae_out - sae_in).pow(2).sum()
    variance = (sae_in - sae_in.mean(0)).pow(2).sum().clamp_min(1e-12)
    return {
        "train/loss": float(output.loss),
        **{f"train/{name}": float(value) for name, value in output.losses.items()},
        "train/l0": float((output.feature_acts > 0).float().sum(-1).mean()),
        "train/fvu": float(residual / variance),
    }


def train_saes(
    store: ActivationStore,
    layers: Sequence[int],
    out_dir: str | os.PathLike[str],
    config: SAEConfig | None = None,
    *,
    sizes: Sequence[str] | None = None,
    model_name: str = "",
) -> dict[tuple[int, str], Path]:
    """Train and save an SAE per (layer, size) on ``store``'s activations of each layer.

    Each SAE is saved (atomically) in SAE-Lens format in ``out_dir/L{layer}_{size}/``
    (``cfg.json``, ``sae_weights.safetensors``, plus our ``training.json``), with
    ``cfg.metadata.hook_name`` set so it splices into a ``HookedSAETransformer``. A folder that
    already holds the dictionary these inputs train (its ``training.json`` records the same
    ``resume_key``: options, hook, width and store) is kept, not retrained: an interrupted
    stage resumes after the last dictionary it finished.

    Returns ``{(layer, size): path}``.
    """
    config = config or SAEConfig()
    hooks = hooks_for_layers(store, layers)
    sizes = SIZES[: len(config.expansion_factors)] if sizes is None else sizes
    bad = [s for s in sizes if s not in SIZES[: len(config.expansion_factors)]]
    if bad:
        raise ConfigError(
            f"unknown SAE size(s) {bad}; sizes: {SIZES[: len(config.expansion_factors)]} "
            f"(expansion_factors = {config.expansion_factors})"
        )
    out_dir = Path(out_dir)
    paths = {}
    for layer, hook in hooks.items():
        d_in = store.d_in_of(hook)
        for size in sizes:
            d_sae = d_in * config.expansion_factors[SIZES.index(size)]
            metadata = _metadata(hook, layer, size, config.tied, store, model_name)
            variant = variant_name(config.tied)
            logger.info("training %s SAE %s -> %d (%s)", size, hook, d_sae, variant)
            path = out_dir / sae_folder(layer, size)
            key = _resume_key(config, store, hook, d_sae)
            if _finished(path, key):
                logger.info("%s: already trained with these inputs, kept", path)
                paths[(layer, size)] = path
                continue
            sae, stats = train_sae(
                store_batches(store, hook, config),
                d_in,
                d_sae,
                config,
                tied=config.tied,
                metadata=metadata,
                track=tracker_name(path),
            )
            info = {**stats, "layer": layer, "size": size, "hook_name": hook, "resume_key": key}
            save_sae(sae, path, info)
            paths[(layer, size)] = path
    return paths


def _resume_key(config: SAEConfig, store: ActivationStore, hook: str, d_sae: int) -> str:
    """What a trained dictionary depends on: every option, the hook, the width and the store."""
    return sha256_json(
        {
            "options": json_safe(dataclasses.asdict(config)),
            "hook": hook,
            "d_sae": d_sae,
            "store": json_safe(store.meta),
            "sae_lens": sae_lens.__version__,
        }
    )


def _finished(path: Path, key: str) -> bool:
    """``path`` holds the dictionary of ``key`` as trained (a KL fine-tuned one is not)."""
    info_path = path / "training.json"
    if not (info_path.is_file() and (path / "cfg.json").is_file()):
        return False
    info = read_json(info_path)
    return info.get("resume_key") == key and "kl_finetune" not in info


def hooks_for_layers(store: ActivationStore, layers: Sequence[int]) -> dict[int, str]:
    """``{layer: hook}`` of ``layers`` in ``store`` (a clear error for a layer not captured)."""
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


def store_batches(store: ActivationStore, hook: str, config: SAEConfig) -> Batches:
    """Full shuffled batches of ``hook`` from ``store``; epoch ``e`` is shuffled with seed+e."""
    if store.n_tokens < config.batch_size:
        raise ConfigError(
            f"the store has {store.n_tokens} tokens, fewer than one batch ({config.batch_size}): "
            "capture more tokens or lower batch_size"
        )
    return lambda epoch: store.iter_batches(
        hook, config.batch_size, shuffle=True, seed=config.seed + epoch, drop_last=True
    )


def tensor_batches(acts: Float[Tensor, "n d_in"], config: SAEConfig) -> Batches:
    """Full shuffled batches of in-memory activations; epoch ``e`` is shuffled with seed+e."""
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


def _endless(batches: Batches, batch_size: int) -> Iterator[Tensor]:
    epoch = 0
    while True:
        produced = False
        for batch in batches(epoch):
            produced = True
            yield batch
        if not produced:
            raise LfpMechError(f"no full batch of {batch_size} activations: capture more tokens")
        epoch += 1


def _metadata(
    hook: str, layer: int, size: str, tied: bool, store: ActivationStore, model_name: str
) -> dict[str, Any]:
    """SAE-Lens ``cfg.metadata`` of a trained SAE (hook, model, context; our size and variant)."""
    return {
        "model_name": model_name or str(store.meta.get("model", "")),
        "hook_name": hook,
        "hook_layer": layer,
        "context_size": int(store.meta.get("context_length", 128)),
        "prepend_bos": True,
        "lfp_mech": {"size": size, "tied": tied, "bos_excluded": True},
    }
