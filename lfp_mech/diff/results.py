"""What the ``diff`` stage wrote, read back: the dictionary, ranked latents, interventions."""

from pathlib import Path
from typing import TYPE_CHECKING

from lfp_mech.errors import LfpMechError
from lfp_mech.stage_api import StageResults

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from lfp_mech.diff.dictionary import DiffDictionary

__all__ = ["DiffResults"]


class DiffResults(StageResults):
    """The diff stage's folder.

    Example::

        diff = DiffResults("runs/default/diff")
        diff.latents.head()          # the most tuned-specific latents, with descriptions
        diff.interventions           # gap shares with CIs, distinct-2, perplexity per condition
        top = diff.latents.iloc[0]
        diff.dashboard(top.latent, top.layer)   # path of an offline HTML dashboard
    """

    stage = "diff"

    @property
    def layers(self) -> list[int]:
        """The blocks whose residual streams have a dictionary (and were edited), ascending."""
        return [int(layer) for layer in self.summary["layers"]]

    @property
    def latents(self) -> "pd.DataFrame":
        """Top latents, most tuned-specific first (score, contexts, logit effects, VADER)."""
        return self.table("latents")

    @property
    def interventions(self) -> "pd.DataFrame":
        """One row per condition: reward, gap share with CI, p vs random, fluency."""
        return self.table("interventions")

    @property
    def completions(self) -> "pd.DataFrame":
        """Every condition's completions of the held-out prompts, with rewards."""
        return self.jsonl("completions")

    def dictionary(self, layer: int | None = None, device: str = "cpu") -> "DiffDictionary":
        """The trained diff dictionary of block ``layer`` (None: the first block)."""
        from lfp_mech.diff.dictionary import DiffDictionary
        from lfp_mech.diff.study import dictionary_file

        layer = self.layers[0] if layer is None else int(layer)
        if layer not in self.layers:
            raise LfpMechError(
                f"the diff stage has no dictionary at block {layer}: its blocks are {self.layers}"
            )
        return DiffDictionary.load(str(self.file(dictionary_file(layer))), device=device)

    def dashboard(self, latent: int | None = None, layer: int | None = None) -> Path:
        """The dashboard of ``latent`` of block ``layer`` (None: the first block); no latent:
        the index page."""
        from lfp_mech.diff.dashboards import INDEX_FILE, dashboard_file

        if latent is None:
            return self.file(f"dashboards/{INDEX_FILE}")
        layer = self.layers[0] if layer is None else layer
        return self.file(f"dashboards/{dashboard_file(layer, latent)}")

    def figure(self) -> "Figure":
        """The dose-response figure."""
        from lfp_mech.diff.plots import plot_dose_response

        return plot_dose_response(self.interventions)
