"""Figures without pyplot: every stage's ``plots.py`` draws on figures from :func:`new_figure`.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure``), so the
library never selects a backend or touches pyplot's global state: the same figure is written to
a PNG by :func:`save_figure` in a headless run and shown inline when a notebook cell returns it.
"""

import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lfp_mech._io import atomic_path

__all__ = ["new_figure", "save_figure"]


def new_figure(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.4, 4.2), **kwargs: Any
) -> tuple[Figure, Any]:
    """A figure and its axes (``Figure.subplots``: one ``Axes``, or an array of them)."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 130) -> Path:
    """Write ``fig`` as PNG, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return Path(path)
