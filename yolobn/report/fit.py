"""Tables that fit the terminal, the number formats every table uses, and text from input files
made safe for the terminal (torch-free)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType
from rich.markup import escape
from rich.segment import Segment
from rich.table import Table

from yolobn.core.text import visible

__all__ = ["Col", "VisibleConsole", "delta", "fit_table", "markup_safe", "metric", "ms", "pct", "sci", "sig"]


def markup_safe(s: Any) -> str:
    """A string from an input file (a layer or class name, a path, a version) as rich markup: its
    control characters visible (``core.text.visible``), and a ``[`` in it never read as a tag."""
    return escape(visible(str(s)))


class VisibleConsole(Console):
    """A rich Console that writes the control characters of every text it renders visibly: the guard
    behind ``markup_safe`` for anything that reaches the terminal without it. Rich's own styles, links
    and cursor movements are not text (styles, control segments) and pass unchanged."""

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for seg in super().render(renderable, options):
            text = seg.text if seg.control or seg.text.isprintable() else visible(seg.text, newlines=True)
            yield seg if text is seg.text else Segment(text, seg.style, seg.control)


def sig(x: Any, digits: int = 3) -> str:
    """``digits`` significant digits, trailing zeros kept (1.00, 0.0349, 28.1, 1.00e-05)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:#.{digits}g}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


@dataclass(frozen=True)
class Col:
    """A table column: its header, alignment, and when it is dropped to fit the width.

    ``drop``: 0 never (names and the numbers the table is for); otherwise columns with a higher
    value are dropped first when the table would be wider than the terminal.
    """

    header: str
    justify: JustifyMethod = "right"
    drop: int = 0
    style: str = ""


def fit_table(
    cols: list[Col], rows: list[list[str]], *, width: int, title: str = "", caption: str = ""
) -> Table:
    """A table no wider than ``width``: minor columns are dropped (highest ``drop`` first) until it
    fits; no cell is ever wrapped or cut, so a layer name always appears whole."""
    keep = list(range(len(cols)))
    measure = Console(width=100_000, file=io.StringIO())  # the natural width, uncapped
    while True:
        t = Table(
            title=title or None, box=box.SIMPLE_HEAVY, header_style="bold", pad_edge=False, expand=False
        )
        for k in keep:
            c = cols[k]
            t.add_column(c.header, justify=c.justify, style=c.style or None, no_wrap=True, overflow="fold")
        for r in rows:
            t.add_row(*(r[k] for k in keep))
        droppable = [k for k in keep if cols[k].drop]
        if measure.measure(t).maximum <= width or not droppable:
            break
        keep.remove(max(droppable, key=lambda k: (cols[k].drop, k)))
    dropped = [cols[k].header for k in range(len(cols)) if k not in keep]
    t.caption = caption + (f" · hidden to fit {width} columns: {', '.join(dropped)}" if dropped else "")
    return t


def delta(d: float) -> str:
    if not (isinstance(d, (int, float)) and math.isfinite(d)):
        return "-"
    if abs(d) < 5e-5:  # what +/-0.0000 would show: no change at this precision
        return "0.0000"
    style = "red" if d < -0.001 else ("green" if d > 0.001 else "")
    return f"[{style}]{d:+.4f}[/]" if style else f"{d:+.4f}"


def metric(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def ms(x: Any) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def sci(x: Any) -> str:
    return f"{x:.1e}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"
