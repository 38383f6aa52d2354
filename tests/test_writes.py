"""Writes are all-or-nothing and never replace an input (issue 9): the one atomic-write helper
(yolobn/core/atomic.py) behind write_texts, save_checkpoint and the baseline cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from yolobn.core.errors import YolobnError
from yolobn.evaluate import validation
from yolobn.report.export import write_texts

ROOT = Path(__file__).resolve().parents[1]


def _killed_mid_write(folder: Path, name: str) -> Path:
    """A process that dies (SIGKILL) while writing ``folder/name``: its temporary file stays behind."""
    code = (
        "import os, signal, sys; from pathlib import Path; from yolobn.core.atomic import temp_path\n"
        f"t = temp_path(Path({str(folder / name)!r})); t.write_text('half a fi'); print(t.name, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    left = folder / r.stdout.strip()
    assert left.is_file()
    return left


def test_temp_files_of_a_killed_run_are_removed_by_the_next_write(tmp_path):
    stale = _killed_mid_write(tmp_path, "out.csv")
    mine = tmp_path / f".other.csv.{os.getpid()}.0123abcd.yolobn.tmp"  # a write of this process in flight
    mine.write_text("x")
    theirs = tmp_path / ".user-notes.tmp"  # not yolobn's naming: never touched
    theirs.write_text("x")
    assert write_texts({tmp_path / "out.csv": "a,b\n"}) == [tmp_path / "out.csv"]
    assert not stale.exists()
    assert mine.exists() and theirs.exists()
    assert (tmp_path / "out.csv").read_text() == "a,b\n"


def test_save_checkpoint_cleans_up_too(tmp_path, demo_model_loaded):
    from yolobn.io.save import save_checkpoint

    stale = _killed_mid_write(tmp_path, "best.pt")
    save_checkpoint(demo_model_loaded, tmp_path / "recal.pt")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recal.pt"]


def test_a_failed_write_names_the_target_and_leaves_nothing(tmp_path):
    target = tmp_path / "summary.json"
    target.mkdir()  # a folder where the file should go: the final rename fails
    (target / "keep").write_text("x")
    with pytest.raises(YolobnError) as ei:
        write_texts({tmp_path / "a.csv": "1\n", target: "{}"})
    msg = str(ei.value)
    assert str(target) in msg and ".tmp" not in msg and "nothing was written" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_recalibrate_never_replaces_the_bundled_demo_from_another_folder(tmp_path):
    """The demo's meta.path is package-relative: resolved against the working folder it named
    nothing, and `recalibrate -o <package>/yolobn/data/demo... --force` replaced its own input.
    Run on a copy of the package, from another folder."""
    pkg = tmp_path / "site"
    shutil.copytree(ROOT / "yolobn", pkg / "yolobn", ignore=shutil.ignore_patterns("__pycache__"))
    demo = pkg / "yolobn" / "data" / "demo_yolo11n_shapes.pt"
    before = demo.read_bytes()
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "yolobn.cli",
            "recalibrate",
            "-o",
            str(demo),
            "--force",
            "--max-images",
            "4",
            "--batch",
            "2",
        ],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(pkg), "YOLO_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    assert "is the input checkpoint" in r.stderr and len(r.stderr.splitlines()) == 1
    assert demo.read_bytes() == before
    assert list(elsewhere.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# the baseline cache


@pytest.fixture
def counted_validate(monkeypatch, tmp_path):
    """validate() replaced by a recorder (the cache is under test, not Ultralytics), the cache in tmp."""
    calls: list[int] = []

    def fake(model, data, **kw):
        calls.append(1)
        return {k: 0.5 for k in validation.KEY_METRICS["detect"]} | {"ms_per_image": 1.0, "wall_s": 0.1}

    monkeypatch.setattr(validation, "validate", fake)
    monkeypatch.setattr(validation, "_cache_dir", lambda: tmp_path / "val")
    return calls


@pytest.mark.parametrize(
    "entry",
    [
        "[]",
        "null",
        "{}",
        '"metrics"',
        "12",
        '{"metrics/mAP50-95(B)": null}',
        '{"metrics/mAP50-95(B)": "0.6"}',
        '{"metrics/mAP50-95(B)": 0.6}',
        '{"metrics/mAP50-95(B)": tru',
        "",
    ],
    ids=[
        "list",
        "null",
        "empty",
        "string",
        "number",
        "null_metric",
        "string_metric",
        "incomplete",
        "cut",
        "blank",
    ],
)
def test_a_cache_entry_that_is_not_a_complete_record_is_recomputed(
    entry, counted_validate, demo_model_loaded
):
    m, cached = validation.baseline(demo_model_loaded, "shapes", imgsz=None, batch=16, device="cpu")
    assert cached is False and counted_validate == [1]
    (key,) = (Path(validation._cache_dir())).glob("*.json")
    key.write_text(entry)
    again, cached = validation.baseline(demo_model_loaded, "shapes", imgsz=None, batch=16, device="cpu")
    assert cached is False and counted_validate == [1, 1]
    assert again == m and isinstance(again["metrics/mAP50-95(B)"], float)
    assert json.loads(key.read_text()) == m  # the entry is repaired
    third, cached = validation.baseline(demo_model_loaded, "shapes", imgsz=None, batch=16, device="cpu")
    assert cached is True and third == m and counted_validate == [1, 1]
    assert [p.name for p in key.parent.iterdir()] == [key.name]  # no temporary file left


def test_cache_survives_an_unwritable_cache_folder(
    counted_validate, demo_model_loaded, tmp_path, monkeypatch
):
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    monkeypatch.setattr(validation, "_cache_dir", lambda: tmp_path / "blocked" / "val")
    m, cached = validation.baseline(demo_model_loaded, "shapes", imgsz=None, batch=16, device="cpu")
    assert cached is False and m["metrics/mAP50-95(B)"] == 0.5
