"""The terminal: consoles, progress bars, spinners, warnings and written-file lines (stdout for
results, stderr for everything else; nothing here runs unless a command prints)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "consoles",
    "file_link",
    "print_written",
    "progress_bar",
    "status",
    "unit_of",
    "warn_cannot_run",
    "warn_failed",
    "warn_skipped",
]


def warn_cannot_run(err: Any, loaded: Any, quiet: bool) -> None:
    """inspect and report read a model that cannot run here: say so (the reports carry the note)."""
    if getattr(loaded, "run_error", None) and not quiet:
        from rich.text import Text

        err.print(Text.assemble(("warning: ", "yellow"), loaded.run_error), soft_wrap=True)


def warn_skipped(err: Any, skipped: list[str]) -> None:
    if skipped:
        from rich.text import Text  # a file name: text, never markup

        what = f"{len(skipped)} image(s) could not be decoded and were skipped (first: {skipped[0]})"
        err.print(Text.assemble(("warning: ", "yellow"), what), soft_wrap=True)


def progress_bar(err: Any, quiet: bool) -> Any:
    """The progress bar of long work (stderr, only on a terminal, gone when done). Each task names
    the unit of its counter (``unit=`` field: images, validations, ...); an unknown total shows ``?``."""
    from rich.progress import (
        BarColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Count(ProgressColumn):
        def render(self, task: Any) -> Text:
            total = "?" if task.total is None else f"{task.total:g}"
            unit = task.fields.get("unit", "")
            return Text(f"{task.completed:g}/{total} {unit}".rstrip())

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        Count(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=quiet or not err.is_terminal,
    )


def unit_of(label: str) -> str:
    """The counter's unit for a sweep's progress label: images while observing, else validations."""
    return "images" if label.startswith(("observing", "loading")) else "validations"


def consoles(quiet: bool = False) -> tuple[Any, Any]:
    """(stdout, stderr) rich consoles. stdout fits the terminal, or ``COLUMNS`` when it is set; piped
    into a file or another program without ``COLUMNS``, it is 200 columns wide (not rich's 80); both
    ``report.fit.VisibleConsole``: control characters from input files are written visibly."""
    from yolobn.report.fit import VisibleConsole

    fitted = sys.stdout.isatty() or os.environ.get("COLUMNS", "").strip().isdigit()
    return VisibleConsole(width=None if fitted else 200), VisibleConsole(stderr=True, quiet=quiet)


def file_link(path: Path) -> str:
    """``path`` as rich markup: a clickable file:// link (OSC 8) where the terminal supports it."""
    from rich.markup import escape

    return f"[link={path.resolve().as_uri()}]{escape(str(path))}[/link]"


def print_written(out: Any, paths: list[Path]) -> None:
    for p in paths:
        out.print(f"wrote {file_link(p)}", soft_wrap=True)


def warn_failed(failed: list[tuple[str, str]], total: int) -> None:
    """Each failed task of a sweep, one line on stderr (also with --quiet: the run did not fully succeed)."""
    from yolobn.core.text import visible

    for label, why in failed:
        print(visible(f"yolobn: warning: {label}: failed: {why}"), file=sys.stderr)
    if failed:
        print(
            f"yolobn: warning: {len(failed)} of {total} measurements failed; the others are complete "
            "(their rows say why in the 'error' column)",
            file=sys.stderr,
        )


def status(err: Any, quiet: bool, text: str) -> Any:
    """A spinner on stderr while ``text`` happens (only on a terminal)."""
    import contextlib

    if quiet or not err.is_terminal:
        return contextlib.nullcontext()
    return err.status(text)
