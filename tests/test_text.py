"""Strings from input files never reach the terminal raw (issue 18 §4), and the one helper that
clips a message to one line."""

from __future__ import annotations

import io
import json
import re
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch
from rich.text import Text

from tests.run_main import run_main
from yolobn.core.errors import YolobnError
from yolobn.core.text import one_line, visible
from yolobn.report.export import csv_text
from yolobn.report.fit import VisibleConsole, markup_safe

# What must never reach a terminal raw: C0 controls but the newline, DEL, C1, bidi controls.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
TITLE, CLEAR, RLO = "\x1b]0;pwned\x07", "\x1b[2J", "\u202e"


def raw_in(text: str) -> list[str]:
    return sorted({repr(c) for c in RAW.findall(text)})


# -- core.text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ch,shown",
    [
        ("\x1b", "\\x1b"),
        ("\x07", "\\x07"),
        ("\x00", "\\x00"),
        ("\n", "\\n"),
        ("\t", "\\t"),
        ("\x7f", "\\x7f"),
        ("\x9b", "\\x9b"),
        ("\u202e", "\\u202e"),
        ("\u2066", "\\u2066"),
        ("\u2069", "\\u2069"),
        ("\u200f", "\\u200f"),
        ("\u2028", "\\u2028"),
    ],
)
def test_visible_writes_controls_as_repr_does(ch, shown):
    assert visible(f"a{ch}b") == f"a{shown}b" == repr(f"a{ch}b")[1:-1]


def test_visible_leaves_ordinary_unicode_and_backslashes_alone():
    s = "é 中文 ✓ 🙂 a\\x1b C:\\runs [bold]"
    assert visible(s) == s
    evil = f"x{TITLE}{CLEAR}{RLO}\x9b"
    assert visible(visible(evil)) == visible(evil) and not raw_in(visible(evil))
    assert visible("a\nb\x1b", newlines=True) == "a\nb\\x1b"


def test_one_line_strings_values_and_exceptions():
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("x" * 200, 20) == "x" * 17 + "..." and len(one_line("x" * 200, 20)) == 20
    assert one_line(None) == "" and one_line({"k": 1}) == "{'k': 1}"
    assert one_line(f"class {CLEAR}") == "class \\x1b[2J"
    assert one_line(ValueError("bad\nvalue"), typed=True) == "ValueError: bad value"
    assert one_line(YolobnError("file.pt: refused"), typed=True) == "file.pt: refused"


def test_one_line_of_an_exception_without_message_says_its_type_and_where():
    def check() -> None:
        raise AssertionError  # what a bare `assert` raises in library code (pytest rewrites this module's)

    with pytest.raises(AssertionError) as ei:
        check()
    line = one_line(ei.value, typed=True)
    assert line.startswith("AssertionError at tests/test_text.py:") and line.endswith(" in check"), line
    assert one_line(KeyError()) == "KeyError"  # never raised: no place to name


# -- rendering ---------------------------------------------------------------------------------------


def rendered(*objs, terminal: bool = False) -> str:
    buf = io.StringIO()
    con = VisibleConsole(
        file=buf, width=200, force_terminal=terminal, color_system="standard" if terminal else None
    )
    con.print(*objs)
    return buf.getvalue()


def test_markup_safe_shows_names_as_text_never_as_markup():
    out = rendered(f"[bold]{markup_safe(f'ell{CLEAR}[bold]x[/bold]')}[/bold]")
    assert "ell\\x1b[2J[bold]x[/bold]" in out and not raw_in(out)


def test_visible_console_is_the_guard_behind_markup_safe():
    out = rendered(Text(f"name{TITLE}{RLO}"), terminal=True)  # rich drops the BEL itself, not ESC or RLO
    assert "name\\x1b]0;pwned\\u202e" in out and not raw_in(out.replace("\n", ""))
    # rich's own styles still reach the terminal: only text is escaped, not the styling
    assert "\x1b[31m" in rendered("[red]x[/]", terminal=True)


def test_csv_text_makes_strings_visible_and_keeps_numbers():
    df = pd.DataFrame({f"col{CLEAR}": [f"model.2.m.0{RLO}.bn", "é"], "x": [0.1234567891, float("nan")]})
    text = csv_text(df)
    assert not raw_in(text)
    assert text.splitlines() == ["col\\x1b[2J,x", "model.2.m.0\\u202e.bn,0.1234568", "é,"]


# -- end to end: a checkpoint whose strings are escape sequences ---------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, demo_path) -> Path:
    """A copy of the demo whose class names, saved version, train_args, one layer name and file name
    carry terminal escape sequences (set the title, clear the screen), C1 CSI and a bidi override."""
    ck = torch.load(demo_path, weights_only=False)
    m = ck["model"]
    m.names = {0: f"rect{TITLE}", 1: f"ell{CLEAR}[bold]x[/bold]", 2: f"tri{RLO}\x9b31m"}
    ck["version"] = f"8.4.190{CLEAR}"
    ck["train_args"] = {**ck["train_args"], "model": f"yolo11n{TITLE}.yaml", "data": f"/x/{CLEAR}data.yaml"}
    ml = m.model[2].m  # C3k2's ModuleList: iterated in forward, never read by key
    ml._modules = OrderedDict((f"0{CLEAR}{RLO}" if k == "0" else k, v) for k, v in ml._modules.items())
    path = tmp_path_factory.mktemp("hostile") / f"evil{CLEAR}name.pt"
    torch.save(ck, path)
    return path


def files_text(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in folder.rglob("*") if p.suffix in (".csv", ".json")}


def check_clean(code: int, out: str, err: str, folder: Path) -> dict[str, str]:
    assert code == 0, err
    texts = {"stdout": out, "stderr": err, **files_text(folder)}
    assert {k: raw_in(v) for k, v in texts.items() if raw_in(v)} == {}
    return texts


def test_inspect_shows_hostile_strings_visibly(hostile, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, err = run_main(
        [
            "inspect",
            str(hostile),
            "--all",
            "--csv",
            str(tmp_path / "l.csv"),
            "--channels-csv",
            str(tmp_path / "c.csv"),
            "--json",
            str(tmp_path / "s.json"),
        ],
        capsys,
    )
    texts = check_clean(code, out, err, tmp_path)
    for shown in (
        "evil\\x1b[2Jname.pt",
        "rect\\x1b]0;pwned\\x07",
        "ell\\x1b[2J[bold]x[/bold]",
        "tri\\u202e\\x9b31m",
        "8.4.190\\x1b[2J",
        "/x/\\x1b[2Jdata.yaml",
        "model.2.m.0\\x1b[2J\\u202e.cv1.bn",
    ):
        assert shown in out, shown
    assert "model.2.m.0\\x1b[2J\\u202e.cv1.bn" in texts["l.csv"] and "model.2.m.0" in texts["c.csv"]
    doc = json.loads(texts["s.json"])  # JSON escapes (\u001b) and reads back as the file's own strings
    assert (
        doc["model"]["names"][0] == f"rect{TITLE}"
        and doc["model"]["ultralytics_version"] == f"8.4.190{CLEAR}"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "{model}", "-o", "{out}/rep"],
        ["activations", "{model}", "--max-images", "2", "--json", "{out}/a.json", "--csv", "{out}/a.csv"],
        ["recalibrate", "{model}", "--max-images", "2", "--layers", "model.2.m.*", "-o", "{out}/r\x1b[2J.pt"],
        ["swap", "{model}", "--impl", "reference", "--images", "--max-images", "2", "-o", "{out}/swap"],
        ["compare", "{model}", "{demo}", "--csv", "{out}/c.csv", "--json", "{out}/c.json"],
        ["compare", "{model}", "{demo}", "{model}", "--csv", "{out}/a.csv", "--json", "{out}/a.json"],
    ],
    ids=["report", "activations", "recalibrate", "swap", "compare", "audit"],
)
def test_every_command_keeps_hostile_strings_off_the_terminal(argv, hostile, demo_path, tmp_path, capsys):
    args = [a.format(model=hostile, demo=demo_path, out=tmp_path) for a in argv]
    code, out, err = run_main(args, capsys)
    texts = check_clean(code, out, err, tmp_path)
    assert "\\x1b[2J" in out + "".join(texts.values())  # the strings are shown, escaped, not dropped


@pytest.mark.slow  # an experiment and a frontier run end to end
def test_experiment_and_frontier_keep_hostile_strings_off_the_terminal(
    hostile, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("YOLOBN_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "e.yaml"
    f.write_text(
        json.dumps(
            {
                "model": str(hostile),
                "data": "shapes",
                "variants": [{"impl": "reference", "name": f"ref{TITLE}"}],
                "sensitivity": {"impl": "identity", "layers": ["model.2.m.0*.cv1.bn"], "top": 1},
            }
        )
    )
    code, out, err = run_main(["experiment", str(f), "-o", str(tmp_path / "exp")], capsys)
    texts = check_clean(code, out, err, tmp_path / "exp")
    assert "ref\\x1b]0;pwned\\x07" in out and "model.2.m.0\\x1b[2J\\u202e.cv1.bn" in texts["sensitivity.csv"]
    argv = ["frontier", str(hostile), "--data", "shapes", "--shares", "0,5", "--criteria", "observed"]
    code, out, err = run_main([*argv, "--no-roles", "--max-images", "4", "-o", str(tmp_path / "fr")], capsys)
    check_clean(code, out, err, tmp_path / "fr")


def test_an_error_quoting_a_hostile_file_name_is_one_visible_line(tmp_path, capsys):
    bad = tmp_path / f"bad{CLEAR}{RLO}.pt"
    bad.write_bytes(b"")
    code, out, err = run_main(["inspect", str(bad)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and not raw_in(err) and "bad\\x1b[2J\\u202e.pt" in err, err
