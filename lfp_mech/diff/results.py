"""What the ``diff`` stage wrote, read back: the dictionary, ranked latents, interventions."""

from pathlib import Path
from typing import TYPE_CHECKING

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
        diff.dashboard(diff.latents.latent[0])   # path of an offline HTML dashboard
    """

    stage = "diff"

    @property
    def layer(self) -> int:
        """The block whose residual stream the dictionary reads."""
        return int(self.summary["layer"])

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

    def dictionary(self, device: str = "cpu") -> "DiffDictionary":
        """The trained diff dictionary."""
        from lfp_mech.diff.dictionary import DiffDictionary
        from lfp_mech.diff.study import DICTIONARY_FILE

        return DiffDictionary.load(str(self.file(DICTIONARY_FILE)), device=device)

    def dashboard(self, latent: int | None = None) -> Path:
        """The dashboard of ``latent`` (None: the index page)."""
        name = "index.html" if latent is None else f"latent_{int(latent)}.html"
        return self.file(f"dashboards/{name}")

    def figure(self) -> "Figure":
        """The dose-response figure."""
        from lfp_mech.diff.plots import plot_dose_response

        return plot_dose_response(self.interventions)
