"""The worked notebook example (docs/notebook.ipynb) runs in a real Jupyter kernel, and the committed
notebook holds the same cells as the script that makes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real Jupyter kernel: CI runs them (pytest -m slow)

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_notebook", ROOT / "scripts" / "make_notebook.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_notebook_runs_and_shows_rich_results(tmp_path):
    pytest.importorskip("nbclient", reason="nbclient and ipykernel are dev dependencies")
    pytest.importorskip("ipykernel")
    mk = _script()
    nb = mk.run(mk.build(), tmp_path)  # raises CellExecutionError on any failing cell
    code = [c for c in nb.cells if c.cell_type == "code"]
    html = [c for c in code if any("text/html" in o.get("data", {}) for o in c.outputs)]
    assert len(html) >= 4  # Inspection, observed Inspection, VariantsResult, Comparison render as HTML
    first = next(o for o in code[0].outputs if "text/html" in o.get("data", {}))
    assert (
        "yolobn inspection" in first["data"]["text/html"]
        and "model.23.cv2.2.0.bn" in first["data"]["text/html"]
    )
    text = "".join(o.get("data", {}).get("text/plain", "") for c in code for o in c.outputs)
    from yolobn.io.ultra import ap_closes_at_last_recall

    # the demo's mAP50-95 from m.box.map, with the 8.4 / 8.3 validator (docs/compat.md)
    assert ("0.6294" if ap_closes_at_last_recall() else "0.6308") in text


def test_committed_notebook_matches_the_script():
    nbformat = pytest.importorskip("nbformat")
    mk = _script()
    committed = nbformat.read(ROOT / "docs" / "notebook.ipynb", as_version=4)
    assert [c.source for c in committed.cells] == [c.source for c in mk.build().cells]
