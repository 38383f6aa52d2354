"""Every example in the README and docs/ runs as written, from a copy of a clean clone's root.

Each document runs in its own copy of the repository's files (what ``git ls-files`` lists, so
what a clean clone holds), its examples in order: an example may use a file an earlier one of
the same document made (``best.pt``, ``best-recal.pt``). Shell examples are the lines of ``bash`` blocks,
run in one shell per document (and the ``examples:`` lines of the generated command reference);
a document's ``python`` blocks run as one script, in order, as a notebook
would. Every command must exit 0. Slow (validations, a Ray instance, short trainings): CI runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _blocks(doc: Path, langs: tuple[str, ...]) -> list[str]:
    return [
        m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", doc.read_text(), re.S) if m.group(1) in langs
    ]


def shell_examples(doc: Path) -> list[str]:
    """The runnable lines of a document: bash blocks, and the examples of the command reference.

    Left out: the quick start's set-up lines (checked in a fresh clone, not here) and ``ray start``
    (a cluster's set-up; the examples use ``--ray`` alone, a local instance)."""
    if doc.name == "commands.md":  # the --help epilogs: the yolobn lines under "examples:"
        lines = [ln.strip() for b in _blocks(doc, ("text",)) for ln in b.splitlines()]
        return [ln for ln in lines if ln.startswith("yolobn ")]
    lines = [ln.strip() for b in _blocks(doc, ("bash",)) for ln in b.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith(("#", "ray ")) and "-m venv" not in ln]


def python_examples(doc: Path) -> str:
    return "\n".join(_blocks(doc, ("python",)))


def _clone(dst: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, files.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("yolobn-cache")


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, YOLO_OFFLINE="1", YOLOBN_CACHE=str(cache), COLUMNS="100")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(argv: list[str], cwd: Path, cache: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_env(cache), capture_output=True, text=True, timeout=timeout)


DOCS = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
SHELL_DOCS = [d for d in DOCS if shell_examples(ROOT / d)]
PYTHON_DOCS = [d for d in DOCS if python_examples(ROOT / d)]


def test_the_documents_have_examples():
    """The collection itself: the README's command block and the reference are found."""
    assert len(shell_examples(ROOT / "README.md")) >= 8
    assert len(shell_examples(ROOT / "docs" / "commands.md")) >= 25
    assert "README.md" in PYTHON_DOCS and "docs/python.md" in PYTHON_DOCS


@pytest.mark.parametrize("doc", SHELL_DOCS)
def test_shell_examples_run_as_written(doc, tmp_path, cache):
    clone = _clone(tmp_path / "clone")
    if doc != "README.md":  # the reference's examples assume the README's first line (it says so)
        shutil.copy2(clone / "yolobn" / "data" / "demo_yolo11n_shapes.pt", clone / "best.pt")
    script = clone / "examples.sh"  # one shell, in order: a line may use what an earlier one set
    script.write_text("set -euxo pipefail\n" + "\n".join(shell_examples(ROOT / doc)) + "\n")
    r = _run(["bash", str(script)], clone, cache, timeout=3600)
    assert r.returncode == 0, f"{doc}: an example exited {r.returncode}\n{r.stderr[-4000:]}"
    assert "Traceback" not in r.stderr, f"{doc}\n{r.stderr[-4000:]}"


@pytest.mark.parametrize("doc", PYTHON_DOCS)
def test_python_examples_run_as_written(doc, tmp_path, cache):
    clone = _clone(tmp_path / "clone")
    shutil.copy2(clone / "yolobn" / "data" / "demo_yolo11n_shapes.pt", clone / "best.pt")
    # the README's Python block compares with the checkpoint its command block made
    r = _run(["yolobn", "recalibrate", "best.pt", "-o", "best-recal.pt"], clone, cache)
    assert r.returncode == 0, r.stderr
    script = clone / "example.py"
    script.write_text(python_examples(ROOT / doc))
    r = _run([sys.executable, str(script)], clone, cache)
    assert r.returncode == 0, f"{doc}: the python blocks failed\n{r.stderr[-4000:]}"
