"""The Colab notebook (recipes/colab.ipynb): valid nbformat 4.5, code that compiles, the cells users expect."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "recipes" / "colab.ipynb"


@pytest.fixture(scope="module")
def notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def python_source(cell) -> str:
    """The cell without IPython's shell (``!``) and magic (``%``) lines, which are not Python."""
    return "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("!", "%")))


def test_the_notebook_is_valid_nbformat_4_5_with_cell_ids(notebook):
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) >= (4, 5)
    ids = [cell.get("id") for cell in notebook.cells]
    assert all(ids) and len(set(ids)) == len(ids)


def test_every_code_cell_compiles(notebook):
    for cell in notebook.cells:
        if cell.cell_type == "code":
            ast.parse(python_source(cell), filename=f"colab.ipynb cell {cell.id}")


def test_the_notebook_has_the_cells_users_expect(notebook):
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert 'REPO = "' in code and "git+{REPO}" in code  # one marked place to change the install source
    assert "notebook_login()" in code and "hf_transfer.push(" in code
    assert "is_bf16_supported()" in code and "training.bf16=" in code
    assert 'confusion_matrix.png' in code and "display(Image(" in code
    assert "image-text-classification" in code and "hf_transfer.predict(" in code


def test_the_quickstart_overrides_of_the_notebook_parse():
    from hf_transfer import Recipe

    recipe = Recipe.from_yaml(NOTEBOOK.parents[0] / "quickstart.yaml", ["output.overwrite=true", "training.bf16=false"])
    assert recipe.training["bf16"] is False and recipe.output.overwrite
