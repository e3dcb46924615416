"""Figures without pyplot: built by ``new_figure``, shown inline by Jupyter, saved as PNG."""

from matplotlib.figure import Figure

from lfp_mech.plotting import new_figure, save_figure


def test_new_figure_is_shown_inline_and_saved(tmp_path):
    fig, ax = new_figure(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    assert isinstance(fig, Figure)
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # what IPython displays for a cell
    assert save_figure(fig, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
