"""Figures of the study, one submodule per stage; every function returns a matplotlib Figure.

Use :func:`save_figure` to write a figure atomically as PNG.
"""

from lfp_mech.plots._style import save_figure

__all__ = ["save_figure"]
