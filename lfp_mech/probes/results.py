"""What the ``probes`` stage wrote, read back: tables, the fitted probes and the probe inputs."""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lfp_mech._io import read_json
from lfp_mech.probes.artifacts import (
    KENDALL_TABLE,
    PER_WORD_TABLE,
    PREFERENCE_SUMMARY_FILE,
    PREFERENCE_TABLE,
    PRIMARY_PROBE,
    PROBE_INPUTS_FILE,
    PROBES_FILE,
    SIGN_ACCURACY_TABLE,
)
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from torch import Tensor

    from lfp_mech.probes.fit import LinearProbe
    from lfp_mech.probes.inputs import ProbeInputs

__all__ = ["ProbesResults"]


class ProbesResults(StageResults):
    """The feedback probes of a run: τ and sign accuracies per probe, per-word predictions, the
    fitted probes and the tuned SAE probe's inputs.

    Example::

        probes = ProbesResults("runs/default/probes")
        probes.kendall[["probe", "tau", "p_value"]]
        probe = probes.load_probe()              # the tuned SAE probe (a LinearProbe)
        inputs = probes.probe_inputs()           # its inputs per hook (paper Table 7's)
    """

    stage = "probes"

    @property
    def kendall(self) -> "pd.DataFrame":
        """One row per probe (tuned SAE probe first): τ, p, 95% CI, τ on negative / positive
        words, and the paired difference tuned − this probe (``tuned_minus_this``, CI, p)."""
        return self.table(KENDALL_TABLE)

    @property
    def sign_accuracy(self) -> "pd.DataFrame":
        """One row per probe: sign accuracy on positive and on negative words (paper Table 5)."""
        return self.table(SIGN_ACCURACY_TABLE)

    @property
    def per_word(self) -> "pd.DataFrame":
        """One row per held-out word: ``true_valence``, ``pred_<probe>`` for every probe,
        ``abs_error_tuned`` and ``frequency`` in the tuned policy's completions (Figure 4)."""
        return self.table(PER_WORD_TABLE)

    @property
    def hooks(self) -> list[str]:
        """The SAE hooks of the probes' inputs, in ``A_concat`` order."""
        return list(self.summary["hooks"])

    @property
    def probe_names(self) -> list[str]:
        """The probes saved in ``probes.safetensors`` (``tuned_sae`` and the baselines)."""
        from lfp_mech._io import load_tensors

        return sorted({key.split(".")[0] for key in load_tensors(self.file(PROBES_FILE))})

    def probe_weights(self, name: str = PRIMARY_PROBE) -> "Tensor":
        """``w`` of probe ``name`` on raw features (float32 ``[d_concat]``, ``A_concat`` order: the
        hooks of [`hooks`][lfp_mech.probes.results.ProbesResults.hooks], each ``d_sae`` wide)."""
        from lfp_mech._io import load_tensors
        from lfp_mech.errors import ConfigError

        tensors = load_tensors(self.file(PROBES_FILE))
        if f"{name}.weight" not in tensors:
            raise ConfigError(f"no probe {name!r} in {self.path / PROBES_FILE}: {self.probe_names}")
        return tensors[f"{name}.weight"]

    def feature_weights(
        self, widths: "Mapping[str, int]", name: str = PRIMARY_PROBE
    ) -> "pd.DataFrame":
        """Probe ``name``'s weight on every SAE feature: hook, feature, weight and rank (1 = the
        largest |weight| within its hook). ``widths`` is ``{hook: d_sae}`` of the SAEs the probe
        reads (``{h: sae.cfg.d_sae for h, sae in SAEsResults(...).load_saes().items()}``)."""
        import pandas as pd

        from lfp_mech.errors import ConfigError

        weight, hooks = self.probe_weights(name), self.hooks
        missing = [hook for hook in hooks if hook not in widths]
        sizes = [int(widths[hook]) for hook in hooks if hook in widths]
        if missing or sum(sizes) != weight.numel():
            raise ConfigError(
                f"probe {name!r} has {weight.numel()} weights over hooks {hooks}, but the given "
                f"widths {dict(widths)} do not match: were the probes trained on other SAEs?"
            )
        frames = [
            pd.DataFrame(
                {
                    "hook": hook,
                    "feature": range(len(chunk)),
                    "weight": chunk.numpy(),
                    "rank": (chunk.abs().argsort(descending=True).argsort() + 1).numpy(),
                }
            )
            for hook, chunk in zip(hooks, weight.split(sizes), strict=True)
        ]
        return pd.concat(frames, ignore_index=True)

    def load_probe(self, name: str = PRIMARY_PROBE) -> "LinearProbe":
        """Probe ``name`` (default: the tuned SAE probe) as a
        [`LinearProbe`][lfp_mech.probes.fit.LinearProbe]."""
        from lfp_mech.probes.reward import load_probe

        return load_probe(self.file(PROBES_FILE), name)

    def probe_inputs(self) -> "ProbeInputs | None":
        """The tuned SAE probe's inputs per hook with its predictions
        (``probe_inputs.safetensors``), or None if the stage predates that file."""
        from lfp_mech.probes.inputs import load_probe_inputs

        path = self.path / PROBE_INPUTS_FILE
        return load_probe_inputs(path) if path.is_file() else None

    @property
    def preference(self) -> "pd.DataFrame | None":
        """Table 3 of a DPO run: one row per label mode ("preference", "delta") with train and
        held-out accuracy (``test_accuracy_vs_preference``: against the true preference); None
        when the run's policy was not tuned with DPO."""
        return self.table(PREFERENCE_TABLE) if self.has_preference else None

    @property
    def preference_summary(self) -> dict[str, Any] | None:
        """The DPO run's preference-probe summary (pairs, accuracies, PCA variance ratios)."""
        return read_json(self.path / PREFERENCE_SUMMARY_FILE) if self.has_preference else None

    @property
    def has_preference(self) -> bool:
        """Whether the stage wrote the preference probe (Table 3, Figure 5: DPO runs)."""
        return (self.path / f"{PREFERENCE_TABLE}.csv").is_file()

    @property
    def shuffled_null_tau(self) -> list[float]:
        """τ of the probes fitted on permuted labels (the null distribution of τ)."""
        return list(self.summary["shuffled_null_tau"])

    def tau(self, name: str = PRIMARY_PROBE) -> float | None:
        """Kendall τ of probe ``name`` on the held-out words (None if undefined)."""
        return self.summary["tau"].get(name)

    def headline(self) -> dict[str, Any]:
        """The tuned SAE probe's τ, p, CI, within-sign τ and sign accuracies, the sign-only
        reference's τ, tuned − base SAE (CI, permutation p; None in runs from older versions) and
        whether it beat every baseline."""
        s = self.summary
        return {
            "tau": s["tau"][PRIMARY_PROBE],
            "p_value": s["p_value"][PRIMARY_PROBE],
            "tau_ci": s["tau_ci"][PRIMARY_PROBE],
            "tau_positive": s["tau_positive"][PRIMARY_PROBE],
            "tau_negative": s["tau_negative"][PRIMARY_PROBE],
            "sign_acc": s.get("sign_acc", {}).get(PRIMARY_PROBE),
            "sign_acc_positive": s["sign_acc_positive"][PRIMARY_PROBE],
            "sign_acc_negative": s["sign_acc_negative"][PRIMARY_PROBE],
            "tau_sign_only": s.get("tau_sign_only"),
            "tuned_minus_base_sae": s.get("headline_tuned_minus_base_sae"),
            "tuned_minus_base_sae_within_sign": s.get("tuned_minus_base_sae_within_sign"),
            "base_sae_source": s.get("base_sae_source"),
            "above_every_baseline": s["tuned_above_every_baseline"],
        }

    def predicted_vs_true_figure(self, probe: str = PRIMARY_PROBE) -> "Figure":
        """Probe ``probe``'s prediction vs VADER valence per held-out word."""
        from lfp_mech.probes.plots import predicted_vs_true_figure

        per_word, tau = self.per_word, self.tau(probe)
        title = f"{probe}: Kendall τ = {float('nan') if tau is None else tau:.2f}"
        return predicted_vs_true_figure(
            per_word["true_valence"].to_numpy(float),
            per_word[f"pred_{probe}"].to_numpy(float),
            list(per_word["word"]),
            title=title,
        )

    def word_frequency_figure(self) -> "Figure":
        """Paper Figure 4: the tuned probe's error vs how often the tuned policy said the word."""
        from lfp_mech.probes.plots import word_frequency_figure

        per_word, summary = self.per_word, self.summary
        return word_frequency_figure(
            per_word["frequency"].to_numpy(float),
            per_word["abs_error_tuned"].to_numpy(float),
            list(per_word["word"]),
            rho=summary["frequency_spearman_rho"],
            p_value=summary["frequency_spearman_p"],
        )

    def baselines_figure(self, words: str = "all") -> "Figure":
        """Kendall τ with its 95% CI of the tuned probe and every baseline, on all held-out
        words or (``words="negative"`` / ``"positive"``) on the words of one sign only."""
        from lfp_mech.errors import ConfigError
        from lfp_mech.probes.plots import baselines_figure

        if words not in ("all", "negative", "positive"):
            raise ConfigError(f"words must be 'all', 'negative' or 'positive', got {words!r}")
        tau, p = ("tau", "p_value") if words == "all" else (f"tau_{words}", f"p_{words}")
        kendall = self.kendall
        cis = list(zip(kendall[f"{tau}_ci_low"], kendall[f"{tau}_ci_high"], strict=True))
        fig = baselines_figure(list(kendall["probe"]), list(kendall[tau]), cis, list(kendall[p]))
        if words != "all":
            ax = fig.axes[0]
            ax.set_title(f"{words} held-out words only: tuned SAE probe vs baselines")
            ax.set_ylabel(f"Kendall τ on {words} words (95% CI)")
        return fig
