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
import traceback

from yolobn._version import __version__
from yolobn.cli import (
    activations,
    compare,
    experiment,
    finetune,
    frontier,
    inspect,
    prune,
    recalibrate,
    report,
    swap,
)
from yolobn.cli.options import EXIT_INTERNAL, EXIT_OK, EXIT_PIPE, EXIT_USAGE, Parser, debug_parent

COMMANDS = (inspect, report, activations, recalibrate, swap, experiment, compare, frontier, prune, finetune)

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


TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def key_values(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """Ultralytics' ``key=value`` style as flags: ``model=best.pt impl=reference exist_ok=True`` ->
    ``--impl=reference --exist-ok -- best.pt``.

    A value is always a value, never a flag: an option's becomes one ``--key=value`` token, and the
    positional arguments go after ``--``, so ``model=--trust`` names a file called ``--trust``. A
    switch takes true/false words only. ``trust=`` is refused: key=value strings are often built
    from other people's data (file names, forms, CI matrices), and trust must be the user's own
    ``--trust``. Only keys that name an option (or a positional argument) of the command are
    rewritten; anything else is left for argparse to judge.
    """
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    i = next((k for k, t in enumerate(argv) if sub is not None and t in sub.choices), None)
    if sub is None or i is None:
        return argv
    cmd = sub.choices[argv[i]]
    positional = {a.dest for a in cmd._actions if not a.option_strings}
    tokens, values = argv[i + 1 :], []
    flags: list[str] = []
    for k, tok in enumerate(tokens):
        if tok == "--":  # the user's own: everything after it is positional already
            flags += tokens[k:]
            break
        m = re.fullmatch(r"([a-z][a-z0-9_-]*)=(.*)", tok, flags=re.S)
        if not m:
            flags.append(tok)
            continue
        key, value = m.group(1).replace("_", "-"), m.group(2)
        action = cmd._option_string_actions.get(f"--{key}")
        if key.replace("-", "_") in positional:
            values.append(value)
        elif action is None:
            flags.append(tok)
        elif key == "trust":
            cmd.error(
                f"{tok}: key=value arguments never grant trust; pass --trust yourself if you trust the files"
            )
        elif action.nargs == 0:  # a switch: true/1/yes sets it; false/0/no leaves it off (or --no-KEY)
            if value.lower() in TRUE:
                flags.append(f"--{key}")
            elif value.lower() not in FALSE:
                cmd.error(f"{tok}: {key} is a switch; use {key}=true or {key}=false")
            elif f"--no-{key}" in cmd._option_string_actions:
                flags.append(f"--no-{key}")
        else:
            flags.append(f"--{key}={value}")
    if not values:
        return argv[: i + 1] + flags
    return argv[: i + 1] + flags + ([] if "--" in flags else ["--"]) + values


def _closed_stdout() -> int:
    """The reader of stdout went away (``yolobn inspect | head``): stop quietly, as cat and git do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush into the closed pipe at exit
    return EXIT_PIPE


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
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:
        return _closed_stdout()
    except SystemExit as e:  # rich ends a print into a closed pipe with SystemExit(1)
        if isinstance(e.__context__, BrokenPipeError):
            return _closed_stdout()
        raise
    except KeyboardInterrupt:
        print("yolobn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from yolobn.core.errors import YolobnError
        from yolobn.core.text import one_line, visible

        if debug:  # the traceback, and the same exit code as without --debug
            traceback.print_exc()
        if isinstance(e, YolobnError):
            print(visible(f"yolobn: error: {e}"), file=sys.stderr)  # messages quote file content
            return EXIT_USAGE
        hint = "" if debug else " (re-run with --debug for the traceback)"
        print(f"yolobn: internal error: {one_line(e, 400, typed=True)}{hint}", file=sys.stderr)
        return EXIT_INTERNAL
