"""Ultralytics-native habits of the CLI: key=value arguments, '-' for stdout, output folders that
increment instead of overwriting, and the same one-line errors either way."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.run_main import run_main
from yolobn.cli import build_parser, key_values


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["swap", "model=best.pt", "data=coco8.yaml", "impl=reference"],
            ["swap", "best.pt", "--data", "coco8.yaml", "--impl", "reference"],
        ),
        (
            ["swap", "impl=reference", "impl=reference:eps=1e-5"],
            ["swap", "--impl", "reference", "--impl", "reference:eps=1e-5"],
        ),
        (["report", "exist_ok=True", "quiet=false"], ["report", "--exist-ok"]),
        (["activations", "--images", "a.jpg", "model=b.pt"], ["activations", "b.pt", "--images", "a.jpg"]),
        (["inspect", "max_images=5", "colour=red"], ["inspect", "--max-images", "5", "colour=red"]),
        (["swap", "--impl", "reference:eps=1e-5"], ["swap", "--impl", "reference:eps=1e-5"]),
        (["experiment", "file=e.yaml", "trust=1"], ["experiment", "e.yaml", "--trust"]),
        (["experiment", "file=e.yaml", "resume=false"], ["experiment", "e.yaml", "--no-resume"]),
        (["experiment", "file=e.yaml", "resume=true"], ["experiment", "e.yaml", "--resume"]),
    ],
)
def test_key_value_arguments_become_flags(argv, expected):
    assert key_values(argv, build_parser()) == expected


def test_key_value_runs_like_flags(tmp_path, capsys):
    a = run_main(["inspect", "top=2", "sort=channels", "json=" + str(tmp_path / "a.json")], capsys)
    b = run_main(["inspect", "--top", "2", "--sort", "channels", "--json", str(tmp_path / "b.json")], capsys)
    assert a[0] == b[0] == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    code, _, err = run_main(["inspect", "top=-1"], capsys)
    assert code == 2 and err.startswith("yolobn: error: --top -1") and len(err.splitlines()) == 1


def test_dash_writes_the_data_alone_to_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(["inspect", "--json", "-"], capsys)
    assert code == 0
    doc = json.loads(out)  # nothing else on stdout: it parses as one JSON document
    assert doc["summary"]["bn_layers"] == 81
    code, out, _ = run_main(["inspect", "--csv", "-", "--json", "j.json"], capsys)
    assert code == 0 and list(tmp_path.iterdir()) == [tmp_path / "j.json"]
    from io import StringIO

    assert len(pd.read_csv(StringIO(out))) == 81
    code, out, err = run_main(["inspect", "--csv", "-", "--json", "-"], capsys)
    assert code == 2 and out == "" and "only one output can go to stdout" in err


def test_default_report_folder_increments(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for expected in ("demo_yolo11n_shapes", "demo_yolo11n_shapes2", "demo_yolo11n_shapes3"):
        code, out, _ = run_main(["report"], capsys)
        assert code == 0 and f"reports/{expected}/report.html" in out
    first = Path("reports/demo_yolo11n_shapes/report.html")
    first.write_text("a previous report")
    code, out, _ = run_main(["report", "--exist-ok", "-q"], capsys)
    assert code == 0 and first.read_text() != "a previous report"  # --exist-ok: written in place
    assert sorted(p.name for p in Path("reports").iterdir()) == [
        "demo_yolo11n_shapes", "demo_yolo11n_shapes2", "demo_yolo11n_shapes3",
    ]  # fmt: skip


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("taken").write_text("not a folder")
    code, out, err = run_main(["report", "-o", "taken"], capsys)
    assert (
        code == 2 and err.strip() == "yolobn: error: --out taken: is a file, not a folder; give a folder name"
    )
    assert Path("taken").read_text() == "not a folder" and not Path("reports").exists()

    import yolobn
    from yolobn.core.errors import YolobnError

    with pytest.raises(YolobnError, match="^taken: is a file, not a folder"):  # the API: the same check
        yolobn.write_report(None, "taken")
    assert yolobn.write_report(None, exist_ok=False).parent.name == "demo_yolo11n_shapes"


@pytest.mark.parametrize("columns, widest", [("80", 80), ("120", 120), (None, 200)])
def test_piped_output_honours_columns(columns, widest, capsys, monkeypatch):
    """Piped (not a terminal), the output is COLUMNS wide when COLUMNS is set, else at most 200."""
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = run_main(["inspect", "--top", "5"], capsys)
    assert code == 0
    width = max(len(line) for line in out.splitlines())
    assert width <= widest
    if columns is not None:
        assert width == widest  # the summary panel spans the width it was given
    else:
        assert width > 120  # 200 is room, not a target: the panel fits its content
