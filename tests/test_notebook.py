"""notebooks/walkthrough.ipynb executes top to bottom in the test preset and prints real, in-range numbers."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
CELL_TIMEOUT_S = 300


def _stream_text(nb: nbformat.NotebookNode) -> str:
    """Everything the executed notebook printed (stdout/stderr streams of every code cell)."""
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream"
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[nbformat.NotebookNode, Path]:
    """The walkthrough run by a python3 kernel with its working folder in a temp dir; returns (notebook, cwd)."""
    cwd = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on the first failing cell
    return nb, cwd


def test_committed_notebook_is_stripped():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.id


def test_notebook_runs_and_prints_dice(executed):
    nb, cwd = executed
    text = _stream_text(nb)
    for name in ("lung", "infection"):
        match = re.search(rf"^{name} Dice: (\S+)$", text, flags=re.MULTILINE)
        assert match, f"no '{name} Dice:' line in the notebook output:\n{text[-2000:]}"
        assert 0.0 <= float(match.group(1)) <= 1.0, match.group(0)
    assert re.search(r"^\{'training': [1-9]\d*, ", text, flags=re.MULTILINE), "no synthetic training slices"
    assert "scale 0 " in text and "wrote " in text, "GAN training log lines missing"
    assert "infection    slices" in text, "inspect summary missing"


def test_notebook_writes_into_its_working_folder(executed):
    nb, cwd = executed
    run = cwd / "nb_run"
    for path in (
        "bundles/cosingan_train/models/model.pt",
        "bundles/covid_seg_2d/models/model.pt",
        "data/synthetic/datalist.json",
        "eval/covid_seg_2d/metrics.csv",
    ):
        assert (run / path).is_file(), path
    assert list((run / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    pngs = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "display_data" and "image/png" in out.get("data", {})
    ]
    assert len(pngs) == 3, f"expected the case, synthetic and curves figures, got {len(pngs)}"
    for name in ("case.png", "synthetic.png", "curves.png"):
        assert (run / "figures" / name).stat().st_size > 1000, name
