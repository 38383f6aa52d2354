"""Write docs/notebook.ipynb: the worked notebook example, executed so that GitHub shows its outputs.

python scripts/make_notebook.py      # regenerates and runs it (tests/test_notebook.py runs it too)
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CELLS = [
    (
        "markdown",
        "# yolobn in a notebook\n\nEvery command is one call; every result shows a compact summary and "
        "table when it is the last expression of a cell. This notebook runs offline on the bundled demo model "
        "(YOLO11n trained on a synthetic shapes dataset).",
    ),
    (
        "code",
        "import yolobn\n\nins = yolobn.inspect()  # or yolobn.inspect('runs/detect/train/weights/best.pt')\nins",
    ),
    ("markdown", "The tables are pandas DataFrames keyed by the dotted module name:"),
    (
        "code",
        "ins.layers[['name', 'block', 'role', 'channels', 'gamma_p50', 'running_var_p50', 'dead', 'findings']].head()",
    ),
    ("code", "[f for f in ins.findings()][:4]"),
    (
        "markdown",
        "## On images\n\n`observe` runs images through the model (preprocessed as Ultralytics' predict "
        "does) and adds the observed columns: dead channels on the data, and drift of the running statistics.",
    ),
    (
        "markdown",
        "`prediction` scores the data-free rules against what the images show. On the demo the rules "
        "predict no dead channel, so precision is undefined (`nan`), and they find none of the channels "
        "the images show never positive (recall 0): a Gaussian summary of the weights misses skewed "
        "pre-activations, which is what looking at data adds.",
    ),
    ("code", "obs = yolobn.observe(ins, max_images=32)\nobs.observed_summary()['prediction']"),
    ("code", "obs"),
    (
        "markdown",
        "## Swap BatchNorm and validate\n\nUltralytics' own validator, with fusion disabled so that the "
        "swapped module is what runs:",
    ),
    (
        "code",
        "res = yolobn.swap_validate(impls=['reference', 'reference:eps=1e-5', 'fixedpoint:bits=8', 'ablate'])\nres",
    ),
    ("code", "m = yolobn.validate(yolobn.load(), 'shapes')\nm.box.map, m.box.map50"),
    ("markdown", "## Compare two checkpoints"),
    (
        "code",
        "import torch\n\nchanged = yolobn.load()\nwith torch.no_grad():\n    changed.model.model[6].cv1.bn.weight[:4] = 0\n"
        "yolobn.compare(yolobn.load(), changed)",
    ),
    ("markdown", "## Write the HTML report"),
    ("code", "import tempfile\n\nyolobn.write_report(obs, tempfile.mkdtemp())"),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
        for kind, src in CELLS
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def run(nb: nbformat.NotebookNode, cwd: str | os.PathLike) -> nbformat.NotebookNode:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    out = root / "docs" / "notebook.ipynb"
    nbformat.write(run(build(), root), out)
    print(f"wrote {out}")
