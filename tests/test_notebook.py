"""docs/quickstart.ipynb executes top to bottom on micro organisms, and is kept in git without outputs."""

import nbformat
import pytest
from conftest import MICRO, ROOT
from nbclient import NotebookClient

NOTEBOOK = ROOT / "docs" / "quickstart.ipynb"


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


@pytest.mark.slow
def test_the_quickstart_notebook_executes(micro_organisms):
    """The notebook as a researcher runs it, after one cell pointing emis at the micro organisms (not saved)."""
    _, root, _ = micro_organisms
    overrides = [o for o in MICRO if o.startswith("organisms.corpus") and "heldout_questions" not in o]
    overrides += ["organisms.corpus.heldout_questions=40", f"paths.organisms={root}", "eval.sampling.max_new_tokens=6",
                  "steer.n_bootstrap=200", "transfer.max_new_tokens=6"]
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(f"import emis\nemis.configure(*{overrides!r})"))
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    error = float(text.split("max |emis - numpy|:")[1].split()[0])
    assert error < 1e-5  # the direction is numpy's difference of means
    assert "held-out accuracy" in text and "p-values:" in text and "llama -> qwen2: R²" in text and "AUROC" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # separation, steering and the transfer matrix
