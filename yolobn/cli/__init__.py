"""The ``yolobn`` command: the only package that prints.

One module per command (``add_parser(subparsers)`` and ``run(args)``), shared option groups in
``options``; tables and panels are built in ``yolobn.report.console``. Heavy imports (torch,
ultralytics, pandas) happen inside ``run``, so that ``yolobn --help`` answers at once.

Exit codes: 0 success, 1 internal error (a bug: please report it), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from yolobn._version import __version__
from yolobn.cli import activations, compare, experiment, frontier, inspect, recalibrate, report, swap
from yolobn.cli.options import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, Parser, debug_parent

COMMANDS = (inspect, report, activations, recalibrate, swap, experiment, compare, frontier)

__all__ = ["EXIT_INTERNAL", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="yolobn",
        description="See what the BatchNorm layers of an Ultralytics YOLO checkpoint are doing.",
        epilog="run 'yolobn inspect --help' for the inspection options and examples. Ultralytics-style "
        "key=value arguments work too: yolobn swap model=best.pt data=coco8.yaml impl=reference",
        parents=[debug_parent()],
    )
    p.add_argument("--version", action="version", version=f"yolobn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def key_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Ultralytics' ``key=value`` style as flags: ``model=best.pt impl=reference exist_ok=True`` ->
    ``best.pt --impl reference --exist-ok``. Only keys that name an option (or the positional
    argument) of the command are rewritten; anything else is left for argparse to judge."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    i = next((k for k, t in enumerate(argv) if sub is not None and t in sub.choices), None)
    if sub is None or i is None:
        return argv
    cmd = sub.choices[argv[i]]
    positional = {a.dest for a in cmd._actions if not a.option_strings}
    head, flags = [*argv[: i + 1]], []
    for tok in argv[i + 1 :]:
        m = re.fullmatch(r"([a-z][a-z0-9_-]*)=(.*)", tok, flags=re.S)
        if not m:
            flags.append(tok)
            continue
        key, value = m.group(1).replace("_", "-"), m.group(2)
        action = cmd._option_string_actions.get(f"--{key}")
        if key.replace("-", "_") in positional:
            head.append(value)  # right after the command: never taken by an option's list of values
        elif action is None:
            flags.append(tok)
        elif action.nargs == 0:  # a switch: true/1/yes sets it; false/0/no leaves it off (or --no-KEY)
            if value.lower() not in ("false", "0", "no", "off"):
                flags.append(f"--{key}")
            elif f"--no-{key}" in cmd._option_string_actions:
                flags.append(f"--no-{key}")
        else:
            flags += [f"--{key}", value]
    return head + flags


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(key_values(list(sys.argv[1:] if argv is None else argv), parser))
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
        from yolobn.core.errors import YolobnError
        from yolobn.core.text import visible

        if debug:
            raise
        if isinstance(e, YolobnError):
            print(visible(f"yolobn: error: {e}"), file=sys.stderr)  # messages quote file content
            return EXIT_USAGE
        print(
            visible(
                f"yolobn: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)"
            ),
            file=sys.stderr,
        )
        return EXIT_INTERNAL
