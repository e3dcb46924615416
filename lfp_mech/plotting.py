"""Figures without pyplot: every stage's ``plots.py`` draws on figures from
[`new_figure`][lfp_mech.plotting.new_figure].

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure``), so the
library never selects a backend or touches pyplot's global state: the same figure is written to
a PNG by [`save_figure`][lfp_mech.plotting.save_figure] in a headless run and shown inline when a
notebook cell returns it.
"""

import io
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lfp_mech._io import atomic_path

__all__ = ["InlineFigure", "new_figure", "save_figure"]


class InlineFigure(Figure):
    """A matplotlib ``Figure`` that Jupyter shows as a PNG when a cell returns it.

    IPython renders a plain ``Figure`` inline only after pyplot has set up the inline backend;
    ``_repr_png_`` does it without pyplot.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float | int, float | int] = (6.4, 4.2),
    **kwargs: Any,
) -> tuple[Figure, Any]:
    """A figure and its axes (``Figure.subplots``: one ``Axes``, or an array of them)."""
    fig = InlineFigure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 130) -> Path:
    """Write ``fig`` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return Path(path)
