"""The Colab notebook (recipes/colab.ipynb): valid nbformat 4.5, code that compiles, the cells users expect, and
its cells tagged ``offline`` executed with ``nbclient`` at toy size (a tiny model and data set by the test)."""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "recipes" / "colab.ipynb"
#: Cells that need the network (install, Hub login, push, Hub models and data) or the user's own data.
SKIPPED_TAGS = {"online", "your-data"}


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


def test_every_code_cell_says_whether_it_runs_offline(notebook):
    """The tags the offline run below selects by: each code cell runs offline, needs the network or needs your data."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            tags = set(cell.metadata.get("tags", []))
            assert len(tags & ({"offline"} | SKIPPED_TAGS)) == 1, (cell.id, tags)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert [cell.id for cell in parameters] == ["parameters"]


def offline_cells(notebook, values: dict[str, object]):
    """The notebook's ``offline`` cells, with the test's ``values`` in a cell right after the ``parameters`` cell
    (papermill's convention: the notebook's defaults stay as they are, the next cell replaces them)."""
    from nbformat.v4 import new_code_cell

    cells = []
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code" and "offline" in tags:
            cells.append(cell)
            if "parameters" in tags:
                injected = new_code_cell("\n".join(f"{name} = {value!r}" for name, value in values.items()),
                                         metadata={"tags": ["injected-parameters"]})
                injected.id = "injected-parameters"
                cells.append(injected)
    run = nbformat.v4.new_notebook(cells=cells, metadata=notebook.metadata)
    nbformat.validate(run)
    return run


def venv_kernel(root: Path, monkeypatch) -> str:
    """A kernelspec for this interpreter (the project's venv, with ipykernel) under ``root``, found through
    JUPYTER_PATH: a ``python3`` kernel installed elsewhere on the machine would run another Python."""
    spec = root / "kernels" / "hf-transfer-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hf-transfer tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(root))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))  # connection files, not in the user's home
    monkeypatch.setenv("IPYTHONDIR", str(root / "ipython"))  # nor the kernel's profile and history
    return "hf-transfer-test"


def test_the_offline_cells_run_at_toy_size(notebook, tiny_timm_dir, image_folder_data, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    work = tmp_path / "colab"  # the notebook's working folder, as /content is in Colab
    work.mkdir()
    shutil.copy(NOTEBOOK.parent / "quickstart.yaml", work)  # what the install cell downloads
    overrides = [f"model.name_or_path={tiny_timm_dir}", f"data.path={image_folder_data}", "data.image_size=32",
                 "training.num_train_epochs=1", "training.dataloader_num_workers=0", "training.disable_tqdm=true"]
    run = offline_cells(notebook, {"OVERRIDES": overrides})
    kernel = venv_kernel(tmp_path / "jupyter", monkeypatch)
    NotebookClient(run, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(work)}}).execute()

    outputs = {cell.id: cell.outputs for cell in run.cells}
    assert not [o for cell in outputs.values() for o in cell if o.output_type == "error"]
    folder = work / "runs" / "quickstart"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "transfer_gain" in metrics and (folder / "scratch" / "metrics.json").is_file()  # the recipe as shipped
    printed = "".join(o.get("text", "") for o in outputs["quickstart"] if o.output_type == "stream")
    assert str(metrics["test"]["accuracy"]) in printed
    images = [o for o in outputs["confusion-matrix"] if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1 and (folder / "confusion_matrix.png").is_file()
