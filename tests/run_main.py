"""Run the CLI in-process the way a shell would see it."""

from __future__ import annotations

from yolobn.cli import main


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)``: (exit code, stdout, stderr); argparse's own usage errors exit via SystemExit."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
