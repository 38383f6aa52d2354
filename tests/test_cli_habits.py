"""Ultralytics-native habits of the CLI: key=value arguments, '-' for stdout, output folders that
increment instead of overwriting, and the same one-line errors either way."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.run_main import run_main
from yolobn.cli import build_parser, key_values
from yolobn.data import demo_model_path


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["swap", "model=best.pt", "data=coco8.yaml", "impl=reference"],
            ["swap", "--data=coco8.yaml", "--impl=reference", "--", "best.pt"],
        ),
        (
            ["swap", "impl=reference", "impl=reference:eps=1e-5"],
            ["swap", "--impl=reference", "--impl=reference:eps=1e-5"],
        ),
        (["report", "exist_ok=True", "quiet=false"], ["report", "--exist-ok"]),
        (
            ["activations", "--images", "a.jpg", "model=b.pt"],
            ["activations", "--images", "a.jpg", "--", "b.pt"],
        ),
        (["inspect", "max_images=5", "colour=red"], ["inspect", "--max-images=5", "colour=red"]),
        (["swap", "--impl", "reference:eps=1e-5"], ["swap", "--impl", "reference:eps=1e-5"]),
        (["experiment", "file=e.yaml", "resume=false"], ["experiment", "--no-resume", "--", "e.yaml"]),
        (["experiment", "file=e.yaml", "resume=true"], ["experiment", "--resume", "--", "e.yaml"]),
        (["experiment", "file=e.yaml", "--trust"], ["experiment", "--trust", "--", "e.yaml"]),
        (
            ["inspect", "--", "model=x.pt"],
            ["inspect", "--", "model=x.pt"],
        ),  # after --: the user's own positional
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
        "demo_yolo11n_shapes",
        "demo_yolo11n_shapes2",
        "demo_yolo11n_shapes3",
    ]


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


# --------------------------------------------------------------------------------------------------
# a value is always a value (issue 18 §2): key=value never turns into a flag, --trust is the user's own


def _subparsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, dict(sub.choices)


COMMANDS = list(_subparsers()[1])
REQUIRED = {  # what each command needs besides the key under test, so that only the key decides
    "swap": ("impl", ["--impl", "reference"]),
    "recalibrate": ("out", ["-o", "x.pt"]),
    "experiment": ("file", ["e.yaml"]),
    "compare": ("", ["a.pt"]),
    "prune": ("out", ["-o", "x.pt"]),
    "finetune": ("model", ["a.pt"]),  # its other key=value words are Ultralytics' training arguments
}
HOSTILE = ["--trust", "--debug", "-o", "a=b.pt", "--trust=true"]


def _keys(cmd: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every key a user can write as key=value: each positional, and each long option (as
    Ultralytics spells keys: max_images)."""
    keys = {}
    for a in cmd._actions:
        if not a.option_strings:
            keys[a.dest] = a
        for s in a.option_strings:
            negation = isinstance(a, argparse.BooleanOptionalAction) and s.startswith("--no-")
            if s.startswith("--") and not negation:
                keys[s[2:].replace("-", "_")] = a
    return keys


def _plain(action: argparse.Action) -> bool:
    """An argument whose value is any string (no number type, no choices, not a switch)."""
    return action.nargs != 0 and action.choices is None and action.type in (None, str, Path)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_key_value_is_always_a_value(command, capsys):
    """Every command, every key, hostile values: either exit 2 (a switch, a number, trust=), or
    the value lands in that key's own argument, and --trust and --debug stay off."""
    parser, cmds = _subparsers()
    keys = _keys(cmds[command])
    assert {"trust", "debug"} <= set(keys)
    skip, required = REQUIRED.get(command, ("", []))
    landed = 0
    for key, action in keys.items():
        for value in HOSTILE:
            argv = [command, *(required if key != skip else []), f"{key}={value}"]
            try:
                ns = parser.parse_args(key_values(argv, parser))
            except SystemExit as e:
                assert e.code == 2, argv
                assert key == "trust" or not _plain(action), f"{argv}: a plain value was refused"
                continue
            assert _plain(action) and key != "trust", f"{argv}: parsed as {ns}"
            assert ns.trust is False and not getattr(ns, "debug", False), argv
            got = getattr(ns, action.dest)
            want = Path(value) if action.type is Path else value
            assert got == want or got == [want] or got == ["a.pt", want], (argv, got)
            landed += 1
    capsys.readouterr()
    assert landed >= 4 * 2  # the model (or file) and at least one more key took every value


def test_trust_as_a_key_value_is_refused(capsys):
    for value in ("true", "1", "--trust"):
        code, out, err = run_main(["inspect", f"trust={value}"], capsys)
        assert code == 2 and out == ""
        assert err.strip() == (
            f"yolobn: error: trust={value}: key=value arguments never grant trust; pass --trust yourself if "
            "you trust the files (see yolobn inspect --help)"
        )


def test_a_switch_takes_true_or_false_only(capsys):
    code, _, err = run_main(["inspect", "quiet=--trust"], capsys)
    assert code == 2 and "quiet=--trust: quiet is a switch; use quiet=true or quiet=false" in err


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_no_option_is_matched_by_a_prefix(command, capsys):
    """--tru is not --trust (argparse's allow_abbrev is off in every parser)."""
    parser, cmds = _subparsers()
    cmd = cmds[command] if command else parser
    skip, required = REQUIRED.get(command, ("", []))
    head = [command, *required] if command else []
    tried = 0
    for s in [s for s in cmd._option_string_actions if s.startswith("--")]:
        for n in range(3, len(s)):
            if s[:n] in cmd._option_string_actions:
                continue
            with pytest.raises(SystemExit) as ei:
                parser.parse_args(key_values([*head, s[:n]], parser))
            assert ei.value.code == 2
            assert f"unrecognized arguments: {s[:n]}" in capsys.readouterr().err
            tried += 1
    assert tried >= 10


@pytest.fixture
def evil(tmp_path, monkeypatch) -> Path:
    """A checkpoint whose unpickling creates tmp_path/pwned.marker; the working folder is tmp_path."""
    from tests.corpus import MARKER_NAME, make_bad_input

    monkeypatch.chdir(tmp_path)
    path = make_bad_input("malicious", tmp_path, None)
    (tmp_path / "e.yaml").write_text(f"model: {path}\ndata: shapes\nvariants: [reference]\n")
    assert path.is_file() and not (tmp_path / MARKER_NAME).exists()
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "{evil}", "model=--trust"],  # issue 18's two examples
        ["activations", "{evil}", "images=--trust"],
        ["inspect", "model={evil}", "model=--trust"],
        ["report", "{evil}", "model=--trust"],
        ["recalibrate", "{evil}", "out=--trust"],
        ["recalibrate", "-o", "r.pt", "{evil}", "model=--trust"],
        ["swap", "{evil}", "impl=reference", "data=shapes", "model=--trust"],
        ["frontier", "{evil}", "data=shapes", "model=--trust"],
        ["compare", "{evil}", "{evil}", "models=--trust"],
        ["experiment", "file=e.yaml", "file=--trust"],
        ["inspect", "{evil}", "trust=true"],
        ["inspect", "{evil}", "--tru"],
        ["inspect", "{evil}", "layers=--trust"],
    ],
)
def test_a_malicious_checkpoint_never_runs_through_an_argument_value(argv, evil, capsys):
    from tests.corpus import MARKER_NAME

    code, _, err = run_main([a.format(evil=evil) for a in argv], capsys)
    assert code == 2, err
    assert not (evil.parent / MARKER_NAME).exists(), "the payload ran"
    assert sorted(p.name for p in evil.parent.iterdir()) == ["e.yaml", evil.name]


@pytest.mark.parametrize("argv", [["inspect"], ["compare", "DEMO", "DEMO"]])
def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(argv):
    """`yolobn inspect | head -1`: no internal error, no traceback, the shell's SIGPIPE status."""
    argv = [str(demo_model_path()) if a == "DEMO" else a for a in argv]
    env = {**os.environ, "YOLO_OFFLINE": "1", "COLUMNS": "100"}
    p = subprocess.Popen(
        [sys.executable, "-m", "yolobn.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.readline()
    p.stdout.close()  # what head does after its first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141
    assert err == ""


def test_progress_counters_say_their_unit_and_an_unknown_total():
    import io

    from rich.console import Console

    from yolobn.cli import options

    err = Console(file=io.StringIO(), force_terminal=True, width=120)
    with options.progress_bar(err, quiet=False) as bar:
        job = bar.add_task("observing", total=None, unit="images")
        count = bar.columns[2]
        assert str(count.render(bar.tasks[0])) == "0/? images"
        bar.update(job, completed=3, total=96)
        assert str(count.render(bar.tasks[0])) == "3/96 images"
    assert options.unit_of("observing images") == "images" and options.unit_of("gamma 5%") == "validations"
