"""A small, dependency-free SVG plotting kit for the HTML report.

Hand-written SVG keeps the report self-contained, small (a few hundred KB for a YOLO11x) and
byte-for-byte deterministic; every plot gets axes, tick labels and axis titles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

ROLE_COLORS = {"backbone": "#e8f0fb", "neck": "#eaf6ea", "head": "#fdf0e2", "unknown": "#f2f2f2"}
REASON_COLORS = {"constant": "#b2182b", "off": "#f4a582"}
EPS_COLOR = "#2166ac"
BOX_COLOR = "#4a5d7e"


def fmt(x: float) -> str:
    """Compact, stable number formatting for coordinates."""
    if not math.isfinite(x):
        return "0"
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def tick_label(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if 1e3 <= a < 1e7 and float(v).is_integer():
        return f"{int(v):,}"
    if a >= 1e4 or a < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:.3g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


class Axes:
    """Data -> pixel mapping for one plot area with a frame, ticks and labels."""

    def __init__(
        self,
        width: int,
        height: int,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        *,
        margin: tuple[int, int, int, int] = (28, 16, 44, 64),  # top, right, bottom, left
    ) -> None:
        self.w, self.h = width, height
        self.mt, self.mr, self.mb, self.ml = margin
        self.x0, self.x1 = xlim
        self.y0, self.y1 = ylim
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1
        self.parts: list[str] = []

    @property
    def pw(self) -> float:
        return self.w - self.ml - self.mr

    @property
    def ph(self) -> float:
        return self.h - self.mt - self.mb

    def x(self, v: float) -> float:
        return self.ml + (v - self.x0) / (self.x1 - self.x0) * self.pw

    def y(self, v: float) -> float:
        return self.mt + (1 - (v - self.y0) / (self.y1 - self.y0)) * self.ph

    def add(self, s: str) -> None:
        self.parts.append(s)

    def frame(
        self,
        xlabel: str,
        ylabel: str,
        *,
        xticks: Sequence[tuple[float, str]] | None = None,
        yticks: Sequence[tuple[float, str]] | None = None,
        grid: bool = True,
    ) -> None:
        if yticks is None:
            yticks = [(v, tick_label(v)) for v in nice_ticks(self.y0, self.y1)]
        if xticks is None:
            xticks = [(v, tick_label(v)) for v in nice_ticks(self.x0, self.x1)]
        out = []
        for v, label in yticks:
            yy = self.y(v)
            if grid:
                out.append(
                    f'<line x1="{fmt(self.ml)}" x2="{fmt(self.w - self.mr)}" y1="{fmt(yy)}" y2="{fmt(yy)}" class="grid"/>'
                )
            out.append(
                f'<text x="{fmt(self.ml - 5)}" y="{fmt(yy + 3.5)}" class="tick" text-anchor="end">{escape(label)}</text>'
            )
        for v, label in xticks:
            xx = self.x(v)
            out.append(
                f'<line x1="{fmt(xx)}" x2="{fmt(xx)}" y1="{fmt(self.h - self.mb)}" y2="{fmt(self.h - self.mb + 4)}" class="axis"/>'
            )
            out.append(
                f'<text x="{fmt(xx)}" y="{fmt(self.h - self.mb + 15)}" class="tick" text-anchor="middle">{escape(label)}</text>'
            )
        out.append(
            f'<rect x="{fmt(self.ml)}" y="{fmt(self.mt)}" width="{fmt(self.pw)}" height="{fmt(self.ph)}" class="frame"/>'
        )
        out.append(
            f'<text x="{fmt(self.ml + self.pw / 2)}" y="{fmt(self.h - 8)}" class="label" text-anchor="middle">{escape(xlabel)}</text>'
        )
        cy = self.mt + self.ph / 2
        out.append(
            f'<text x="14" y="{fmt(cy)}" class="label" text-anchor="middle" transform="rotate(-90 14 {fmt(cy)})">{escape(ylabel)}</text>'
        )
        self.parts.extend(out)

    def svg(self, title: str, plot_id: str) -> str:
        body = "".join(self.parts)
        return (
            f'<svg id="{plot_id}" class="plot" viewBox="0 0 {self.w} {self.h}" width="{self.w}" height="{self.h}" '
            f'role="img" aria-label="{escape(title)}">'
            f'<text x="{fmt(self.ml)}" y="17" class="title">{escape(title)}</text>{body}</svg>'
        )


def role_bands(ax: Axes, roles: Sequence[str]) -> None:
    """Shade contiguous runs of backbone / neck / head along a layer axis (x = layer position)."""
    start = 0
    for i in range(1, len(roles) + 1):
        if i == len(roles) or roles[i] != roles[start]:
            r = roles[start]
            x0, x1 = ax.x(start - 0.5), ax.x(i - 0.5)
            ax.add(
                f'<rect x="{fmt(x0)}" y="{fmt(ax.mt)}" width="{fmt(x1 - x0)}" height="{fmt(ax.ph)}" '
                f'fill="{ROLE_COLORS.get(r, ROLE_COLORS["unknown"])}"><title>{escape(r)}</title></rect>'
            )
            if x1 - x0 > 40:
                ax.add(
                    f'<text x="{fmt((x0 + x1) / 2)}" y="{fmt(ax.mt + 12)}" class="band" text-anchor="middle">{escape(r)}</text>'
                )
            start = i


def legend(ax: Axes, items: Iterable[tuple[str, str]], x: float | None = None) -> None:
    xx = ax.w - ax.mr - 8 if x is None else x
    items = list(items)
    for k, (label, color) in enumerate(reversed(items)):
        w = 7 * len(label) + 22
        xx -= w
        ax.add(f'<rect x="{fmt(xx)}" y="7" width="10" height="10" fill="{color}"/>')
        ax.add(f'<text x="{fmt(xx + 14)}" y="16" class="tick">{escape(label)}</text>')
        del k
