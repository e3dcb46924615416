"""Each notebook is a jupytext ``.py`` paired with its ``.ipynb``: the two must hold the same cells
(``make notebooks`` or ``jupytext --sync notebooks/*.py`` re-pairs them)."""

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9]*.py"))


def test_there_is_one_notebook_per_figure_and_table():
    assert len(NOTEBOOKS) == 17


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_holds_the_cells_of_its_py(source):
    paired = source.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing: jupytext --sync {source}"
    cells = [(c.cell_type, c.source) for c in jupytext.read(source).cells]
    stored = [(c.cell_type, c.source) for c in jupytext.read(paired).cells]
    assert stored == cells, f"{paired.name} is out of date: jupytext --sync {source}"
