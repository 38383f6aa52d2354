"""The ``yolobn`` command: the only package that prints.

One module per command (``add_parser(subparsers)`` and ``run(args)``), shared option groups in
``options``; tables and panels are built in ``yolobn.report.console``. Heavy imports (torch,
ultralytics, pandas) happen inside ``run``, so that ``yolobn --help`` answers at once.

Exit codes: 0 success, 1 internal error (a bug: please report it), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import os
import sys

from yolobn._version import __version__
from yolobn.cli import activations, experiment, inspect, recalibrate, report, swap
from yolobn.cli.options import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, Parser, debug_parent

COMMANDS = (inspect, report, activations, recalibrate, swap, experiment)

__all__ = ["EXIT_INTERNAL", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="yolobn",
        description="See what the BatchNorm layers of an Ultralytics YOLO checkpoint are doing.",
        epilog="run 'yolobn inspect --help' for the inspection options and examples",
        parents=[debug_parent()],
    )
    p.add_argument("--version", action="version", version=f"yolobn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    # Ultralytics logs to stdout; the CLI speaks for it.
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("yolobn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from yolobn.errors import YolobnError

        if debug:
            raise
        if isinstance(e, YolobnError):
            print(f"yolobn: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"yolobn: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
