"""What the ``saes`` stage wrote, read back: the dictionaries, their metrics, sweep and MMCS."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfp_mech.errors import ConfigError
from lfp_mech.saes.artifacts import (
    HIGH_MMCS_FILE,
    KL_FINETUNE,
    L1_SWEEP,
    METRICS,
    TIED_VS_UNTIED,
    TRAINING_FILE,
    mmcs_stem,
    sae_folder,
)
from lfp_mech.saes.config import SIZES
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure
    from sae_lens import SAE

__all__ = ["SAEsResults"]


class SAEsResults(StageResults):
    """The SAEs of a run: folders and loaders, held-out metrics, the L1 sweep, MMCS.

    Example::

        saes = SAEsResults("runs/default/saes")
        saes.metrics                     # one row per SAE: fvu, l0, dead_fraction, ce_recovered
        dictionaries = saes.load_saes()  # {hook: SAE}, the small dictionaries, in layer order
        base = saes.load_saes(model="base")  # the base model's, trained the same way
    """

    stage = "saes"

    # ------------------------------------------------------------------ the dictionaries

    @property
    def layers(self) -> list[int]:
        """The layers with dictionaries, in layer order."""
        return sorted(int(layer) for layer in self.summary["layers"])

    @property
    def hook_names(self) -> list[str]:
        """The hooks the dictionaries read, in layer order."""
        return list(self._hooks().values())

    @property
    def sizes(self) -> list[str]:
        """The dictionary sizes the stage has (``["small", "big"]``; reused SAEs with no wider
        twin: ``["small"]``)."""
        return list(self.summary.get("sizes", SIZES))

    @property
    def pretrained(self) -> str | None:
        """The source the SAEs were reused from (``saes.pretrained``), None when trained."""
        return self.summary.get("pretrained")

    @property
    def variant(self) -> str:
        """``"tied"`` or ``"untied"``: the variant of the main dictionaries."""
        return str(self.summary["variant"])

    @property
    def has_base(self) -> bool:
        """Whether the stage trained base-model dictionaries (``saes.base_model``)."""
        return bool(self.summary.get("base"))

    @property
    def architecture(self) -> str:
        """``"batchtopk"``, ``"topk"``, ``"matching_pursuit"``, ``"l1"`` (``"pretrained"`` when
        reused; runs older than the option: ``"l1"``)."""
        return str(self.summary.get("architecture", "l1"))

    def sae_dirs(
        self, size: str = "small", variant: str | None = None, model: str = "tuned"
    ) -> dict[str, Path]:
        """``{hook: folder}`` of the ``size`` dictionaries (``"small"``/``"big"``), in layer order.

        ``variant`` (default: the main one) picks the comparison twins of the small SAEs when it
        is the other variant (``untied/L{layer}_small``). ``model="base"``: the dictionaries
        trained on the base model's activations (``base/L{layer}_{size}``).
        """
        if model not in ("tuned", "base"):
            raise ConfigError(f"model must be 'tuned' or 'base', got {model!r}")
        if model == "base" and not self.has_base:
            raise ConfigError(
                "the saes stage trained no base-model dictionaries: rerun it with "
                "saes.base_model = true (and activations.base_model = true)"
            )
        if size not in SIZES:
            raise ConfigError(f"size must be one of {SIZES}, got {size!r}")
        if size not in self.sizes:
            raise ConfigError(
                f"the saes stage has no {size!r} dictionaries (it reused {self.pretrained}, "
                f"which has sizes: {', '.join(self.sizes)})"
            )
        if variant not in (None, "tied", "untied"):
            raise ConfigError(f"variant must be 'tied' or 'untied', got {variant!r}")
        prefix = "" if variant is None or variant == self.variant else f"{variant}/"
        if model == "base":
            if prefix:
                raise ConfigError("the base model has only the main variant's dictionaries")
            prefix = "base/"
        return {
            hook: self.file(prefix + sae_folder(layer, size))
            for layer, hook in self._hooks().items()
        }

    def small_sae_dirs(self) -> dict[str, Path]:
        """``{hook: folder}`` of the small dictionaries (the ones the probes use), in layer order."""
        return self.sae_dirs("small")

    def load_saes(
        self,
        size: str = "small",
        device: str = "cpu",
        variant: str | None = None,
        model: str = "tuned",
    ) -> dict[str, "SAE"]:
        """``{hook: SAE}`` of the ``size`` dictionaries (SAE-Lens ``SAE``s in eval mode) of the
        tuned policy (default) or, with ``model="base"``, of the base model (trained exactly
        like the tuned ones on its activations on the same tokens)."""
        from lfp_mech.saes.io import load_saes

        return load_saes(self.sae_dirs(size, variant, model), device=device)

    def training_info(self, layer: int, size: str = "small") -> dict[str, Any]:
        """``training.json`` of one SAE: steps, samples, seconds, α, hook."""
        return self.json(f"{sae_folder(layer, size)}/{Path(TRAINING_FILE).stem}")

    # ------------------------------------------------------------------ tables

    @property
    def metrics(self) -> "pd.DataFrame":
        """Held-out metrics, one row per SAE: model (``tuned``/``base``), layer, size,
        architecture, variant, k, d_sae, mse, nmse, fvu, l0, l0_scaled, dead_fraction,
        dense_fraction, ce_clean, ce_sae, ce_zero, ce_recovered (with its 95% bootstrap CI over
        the CE texts, ce_recovered_ci_low / _high), delta_lm_loss, and the control of the last
        two: the CE loss with an error of the SAE's per-token norm in a random direction
        spliced in instead (ce_random_error, ce_recovered_random_error,
        delta_lm_loss_random_error; [`SameNormRandomError`][lfp_mech.saes.metrics.SameNormRandomError])
        and the dictionary's CE loss recovered minus the control's with its paired bootstrap CI
        (ce_recovered_minus_random_error, _ci_low, _ci_high)."""
        return self.table(METRICS)

    @property
    def l1_sweep(self) -> "pd.DataFrame | None":
        """The L1 sweep (alpha, sae_lens_l1_coefficient, nmse, fvu, l0, dead_fraction), or None
        if the run had no sweep (``sweep_alphas`` empty)."""
        return self.table(L1_SWEEP) if (self.path / f"{L1_SWEEP}.csv").is_file() else None

    @property
    def l1_sweep_layer(self) -> int | None:
        """The layer of the L1 sweep (None without a sweep)."""
        sweep = self.summary.get("l1_sweep")
        return None if sweep is None else int(sweep["layer"])

    @property
    def tied_vs_untied(self) -> "pd.DataFrame | None":
        """The paper's appendix table averaged over layers (variant, n_layers, nmse, l0_scaled,
        fvu, dead_fraction, ce_recovered), or None without ``compare_untied``."""
        path = self.path / f"{TIED_VS_UNTIED}.csv"
        return self.table(TIED_VS_UNTIED) if path.is_file() else None

    @property
    def kl_finetune(self) -> "pd.DataFrame | None":
        """The decoders' KL fine-tune (``saes.kl_finetune_texts``), one row per dictionary:
        model, layer, size, hook, finetune_texts, val_texts, the CE loss recovered on the
        validation texts before and after (ce_val_before / _after), kept, steps, final_kl,
        seconds; None if the run had none."""
        return self.table(KL_FINETUNE) if (self.path / f"{KL_FINETUNE}.csv").is_file() else None

    def mmcs(self, layer: int) -> "pd.DataFrame":
        """Each small feature of ``layer``: its MMCS and the big feature attaining it (sorted by
        MMCS, highest first; columns small_feature, mmcs, big_feature)."""
        return self.table(mmcs_stem(layer))

    def mmcs_values(self) -> dict[int, "np.ndarray"]:
        """``{layer: MMCS of every small feature}``, for
        [`plot_mmcs`][lfp_mech.saes.plots.plot_mmcs]."""
        return {
            layer: self.mmcs(layer)["mmcs"].to_numpy()
            for layer in self.layers
            if (self.path / f"{mmcs_stem(layer)}.csv").is_file()
        }

    def high_mmcs_features(self) -> dict[str, Any]:
        """``high_mmcs_features.json``: per layer (key ``str(layer)``) the hook, mean MMCS, the
        number above the threshold and the ``top_features`` (highest MMCS first)."""
        return self.json(Path(HIGH_MMCS_FILE).stem)

    @property
    def checks(self) -> dict[str, bool]:
        """The quality checks of the tuned model's small dictionaries (L0, FVU, CE recovered,
        dead fraction; ``summary["base"]["checks"]``: the base model's)."""
        return dict(self.summary["checks"])

    @property
    def alpha(self) -> float:
        """The L1 coefficient α of the dictionaries (per-element-MSE units; NaN when reused or
        TopK/BatchTopK)."""
        alpha = self.summary["alpha"]
        return float("nan") if alpha is None else float(alpha)

    @property
    def alpha_meaning(self) -> str:
        """What α means in this package's loss, in one line."""
        return str(self.summary["alpha_meaning"])

    # ------------------------------------------------------------------ figures

    def plot_l1_sweep(self) -> "Figure | None":
        """The L1-sweep figure (None without a sweep)."""
        from lfp_mech.saes.plots import plot_l1_sweep

        sweep = self.l1_sweep
        if sweep is None:
            return None
        return plot_l1_sweep(sweep, chosen=self.alpha, layer=self.l1_sweep_layer)

    def plot_mmcs(self) -> "Figure":
        """The MMCS distribution per layer, threshold dashed."""
        from lfp_mech.saes.plots import plot_mmcs

        threshold = self.summary["config"]["mmcs_threshold"]
        return plot_mmcs(self.mmcs_values(), threshold=threshold)

    def _hooks(self) -> dict[int, str]:
        summary = self.summary
        pairs = zip(summary["layers"], summary["hook_names"], strict=True)
        return {int(layer): hook for layer, hook in sorted(pairs, key=lambda p: int(p[0]))}
