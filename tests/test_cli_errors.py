"""`yolobn` on bad inputs and bad options: exit 2, one line on stderr, no traceback, nothing written.

Most cases call ``yolobn.cli.main`` in-process (fast); one runs ``python -m yolobn.cli`` for the real exit
code. The bad inputs come from ``tests/corpus.py`` (``tests/test_corpus.py`` runs the whole corpus).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests import corpus as shared
from tests.run_main import run_main

OUTPUTS = ("out.csv", "out.json", "ch.csv")
OUTPUT_ARGS = ["--csv", "out.csv", "--json", "out.json", "--channels-csv", "ch.csv"]


@pytest.fixture(scope="module")
def model():
    return shared.build_model()


@pytest.fixture(scope="module")
def good_ckpt(model, tmp_path_factory) -> Path:
    return shared.save_checkpoint(model, tmp_path_factory.mktemp("good") / "best.pt")


def assert_one_error_line(err: str, *, prefix: str = "yolobn: error: ") -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith(prefix), err
    return lines[0]


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


# --------------------------------------------------------------------------------------------------
# bad model inputs


CASES = [*shared.BAD_INPUTS, "official_name_offline", "missing_unofficial_name"]


@pytest.mark.parametrize("kind", CASES)
def test_bad_input_exits_2_with_one_line(kind, tmp_path, monkeypatch, capsys, model, offline_network):
    monkeypatch.chdir(tmp_path)
    if kind == "official_name_offline":
        name, words = "yolo11n.pt", ("could not be downloaded",)
    elif kind == "missing_unofficial_name":
        name, words = "mymodel.pt", ("no such file",)
    else:
        name, words = shared.make_bad_input(kind, tmp_path, model).name, shared.expected_words(kind)
    before = listing(tmp_path)

    code, out, err = run_main(["inspect", name, *OUTPUT_ARGS], capsys)

    assert code == 2
    assert out == ""
    line = assert_one_error_line(err)
    assert name in line
    assert any(w in line for w in words), line
    assert "Traceback" not in out + err
    for o in OUTPUTS:
        assert not (tmp_path / o).exists(), o
    assert listing(tmp_path) == before  # no output, no staged temp file, no payload marker
    assert not (tmp_path / shared.MARKER_NAME).exists()
    if kind == "official_name_offline":
        assert offline_network == ["yolo11n.pt"]
    else:
        assert offline_network == []


def test_pickle_like_junk_is_one_line_without_warnings(tmp_path, monkeypatch, capsys):
    import random

    monkeypatch.chdir(tmp_path)
    Path("noise.pt").write_bytes(b"\x80" + random.Random(1).randbytes(4096))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")  # a real run prints each of these on stderr
        code, out, err = run_main(["inspect", "noise.pt", *OUTPUT_ARGS], capsys)
    assert code == 2 and out == ""
    line = assert_one_error_line(err)
    assert [str(w.message) for w in rec] == []
    assert "--trust" not in line


@pytest.mark.slow
def test_real_process_exit_code_on_malicious_checkpoint(tmp_path, model):
    path = shared.make_bad_input("malicious", tmp_path, model)
    before = listing(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "yolobn.cli", "inspect", path.name, *OUTPUT_ARGS],
        cwd=tmp_path,
        env={**os.environ, "YOLO_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    line = assert_one_error_line(r.stderr)
    assert path.name in line and "--trust" in line
    assert "Traceback" not in r.stdout + r.stderr
    assert listing(tmp_path) == before
    assert not (tmp_path / shared.MARKER_NAME).exists()


@pytest.mark.parametrize("where", ["subcommand", "top_level"])
def test_debug_adds_the_traceback_and_keeps_exit_2(where, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("empty.pt").write_bytes(b"")
    argv = ["inspect", "--debug", "empty.pt"] if where == "subcommand" else ["--debug", "inspect", "empty.pt"]
    code, out, err = run_main(argv, capsys)
    assert code == 2 and out == ""
    assert "Traceback (most recent call last)" in err and "CheckpointError" in err
    assert err.splitlines()[-1].startswith("yolobn: error: empty.pt: the file is empty")


def test_debug_keeps_exit_1_for_an_internal_error(tmp_path, monkeypatch, capsys):
    from yolobn.cli import inspect as inspect_cmd

    def boom(args):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(inspect_cmd, "run", boom)
    for extra, traceback in (([], False), (["--debug"], True)):
        code, _, err = run_main(["inspect", *extra], capsys)
        assert code == 1 and ("Traceback" in err) is traceback
        assert err.splitlines()[-1].startswith("yolobn: internal error: ZeroDivisionError: planted")


# --------------------------------------------------------------------------------------------------
# usage errors


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["inspect", "--bogus"], "--bogus"),
        (["frobnicate"], "frobnicate"),
        (["inspect", "--const-std", "-1"], "--const-std"),
        (["inspect", "--off-sigma", "abc"], "--off-sigma"),
        (["inspect", "--sort", "sideways"], "--sort"),
    ],
    ids=["unknown_option", "unknown_command", "negative_const_std", "non_numeric", "bad_choice"],
)
def test_argparse_errors_exit_2_with_one_line(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main([*argv, *OUTPUT_ARGS], capsys)
    assert code == 2
    assert out == ""
    line = assert_one_error_line(err, prefix="yolobn")
    assert "error:" in line and needle in line
    assert "Traceback" not in err
    assert listing(tmp_path) == []


def test_negative_top_exits_2(tmp_path, monkeypatch, capsys, good_ckpt):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["inspect", str(good_ckpt), "--top", "-1", *OUTPUT_ARGS], capsys)
    assert code == 2 and out == ""
    assert "--top" in assert_one_error_line(err)
    assert listing(tmp_path) == []


def test_csv_pointing_at_a_directory(tmp_path, monkeypatch, capsys, good_ckpt):
    monkeypatch.chdir(tmp_path)
    Path("reports").mkdir()
    code, out, err = run_main(
        ["inspect", str(good_ckpt), "--csv", "reports", "--json", "out.json", "--channels-csv", "ch.csv"],
        capsys,
    )
    assert code == 2 and out == ""
    line = assert_one_error_line(err)
    assert "reports" in line and "is a folder" in line
    assert listing(tmp_path) == ["reports"]  # nothing written, not even the other outputs


@pytest.mark.parametrize("option", ["--csv", "--json", "--channels-csv"])
def test_output_equal_to_the_model_is_refused(option, tmp_path, monkeypatch, capsys, good_ckpt):
    monkeypatch.chdir(tmp_path)
    model_path = tmp_path / "best.pt"
    model_path.write_bytes(good_ckpt.read_bytes())
    before = (shared.sha256(model_path), model_path.stat().st_mtime_ns)
    code, out, err = run_main(["inspect", "best.pt", option, str(model_path)], capsys)
    assert code == 2 and out == ""
    line = assert_one_error_line(err)
    assert option in line and "is the input checkpoint" in line
    assert (shared.sha256(model_path), model_path.stat().st_mtime_ns) == before
    assert listing(tmp_path) == ["best.pt"]


def test_two_outputs_on_one_file_are_refused(tmp_path, monkeypatch, capsys, good_ckpt):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["inspect", str(good_ckpt), "--csv", "a.out", "--json", "a.out"], capsys)
    assert code == 2 and out == ""
    assert "same file" in assert_one_error_line(err)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# help


@pytest.mark.parametrize("argv", [["--help"], ["inspect", "--help"], ["-h"]])
def test_help_exits_0_with_examples(argv, capsys):
    code, out, err = run_main(argv, capsys)
    assert code == 0
    assert "examples" in out
    assert err == ""


def test_inspect_help_lists_exit_codes(capsys):
    code, out, _ = run_main(["inspect", "--help"], capsys)
    assert code == 0
    assert "examples:" in out and "exit codes" in out and "yolobn inspect best.pt" in out


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = run_main([], capsys)
    assert code == 2
    assert "usage: yolobn" in out


def test_version(capsys):
    from yolobn import __version__

    code, out, _ = run_main(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"yolobn {__version__}"


def test_help_does_not_import_torch():
    code = (
        "import sys; from yolobn.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "print('torch' in sys.modules, 'ultralytics' in sys.modules, 'pandas' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "examples" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "False False False"
