"""examples/quickstart.ipynb runs top to bottom in a fresh kernel, from a folder outside the source tree.

The test sets the notebook's TRAIN_DATA parameter to the first 64 sample examples (16 steps per epoch instead of
84); everything else runs as the notebook is shipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"
TRAIN_EXAMPLES = 64


def cell_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output and "text/plain" in output["data"]:
            parts.append(output["data"]["text/plain"])
        elif output.get("output_type") == "error":
            parts.append("\n".join(output.get("traceback", [])))
    return "".join(parts).replace("\r", "\n")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    from theta_ai import sample_path

    folder = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert "EPOCHS = 2" in params.source and 'TRAIN_DATA = "sample:theta_sample_train.json"' in params.source
    subset = folder / "train_subset.json"  # the sample's own records, fewer of them
    records = json.loads(sample_path("theta_sample_train.json").read_text(encoding="utf-8"))
    subset.write_text(json.dumps(records[:TRAIN_EXAMPLES]), encoding="utf-8")
    params.source += f"\nTRAIN_DATA = {str(subset)!r}  # set by tests/test_notebook.py"
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the kernel inherits it
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    client.execute()
    return folder, [c for c in nb.cells if c.cell_type == "code"]


def test_every_cell_ran_without_error(executed):
    _, cells = executed
    for cell in cells:
        assert not [o for o in cell.outputs if o.get("output_type") == "error"], cell_text(cell)[-2000:]


def test_outputs_show_each_step(executed):
    folder, cells = executed
    text = [cell_text(c) for c in cells]
    setup, data, prepare, mask, trained, evaluation, chat, plot = text[1:]
    assert f"writing into {folder / 'theta-notebook'}" in setup
    assert f"{TRAIN_EXAMPLES} training examples, 60 validation examples" in data
    assert "first question:" in data
    assert "theta-train: preset cpu-quickstart, model theta-tiny" in prepare
    assert "2 epochs" in prepare
    assert re.search(r"\d+ tokens, \d+ masked, \d+ trained", mask)
    assert re.search(r"label mask: _+\^+", mask) and "label -100" in mask
    assert re.search(r"\[theta\] epoch 1: train loss \d+\.\d+, validation loss", trained)
    assert re.search(r"\[theta\] epoch 2: train loss \d+\.\d+, validation loss", trained)
    assert "{'loss': " not in trained  # the raw dictionaries stay out of the output, as on the console
    assert f"best model : {folder / 'theta-notebook' / 'models' / 'theta_best'}" in trained
    assert "theta-eval: 60 examples" in evaluation and "exact match" in evaluation
    assert "Loading weights" not in evaluation + chat
    assert "Q: What is a firewall?" in chat and re.search(r"A: \S+", chat)
    assert re.search(r"validation loss per epoch: \[\(1\.0, \d+\.\d+\), \(2\.0, \d+\.\d+\)\]", plot)


def test_the_loss_plot_is_shown_and_written(executed):
    folder, cells = executed
    images = [o for o in cells[-1].outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    png = base64.b64decode(images[0]["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    (written,) = (folder / "theta-notebook" / "logs").glob("cpu-quickstart-*/loss.png")
    assert written.read_bytes() == png
    assert (folder / "theta-notebook" / "models" / "theta_best" / "eval" / "eval_report.md").is_file()
