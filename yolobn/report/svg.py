"""A small, dependency-free SVG plotting kit for the HTML report.

Hand-written SVG keeps the report self-contained, small (a few hundred KB for a YOLO11x) and
byte-for-byte deterministic; every plot gets axes, tick labels and axis titles. Plots draw through
the primitives of ``Axes`` (rect, line, circle, text, polygon, image) and group them into marks:
``with ax.mark(title, name=..., value=...)`` gives a ``<g class="mark">`` with a tooltip and the
plotted values as ``data-name`` / ``data-value`` (tests compare those with the CSV files).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from html import escape
from typing import Any

import numpy as np

__all__ = [
    "Axes",
    "BOX_COLOR",
    "DEAD_RGB",
    "EPS_COLOR",
    "REASON_COLORS",
    "ROLE_COLORS",
    "ROLE_ORDER",
    "VIRIDIS",
    "element",
    "fmt",
    "legend",
    "nice_ticks",
    "num",
    "role_bands",
    "roles_present",
    "tick_label",
    "viridis",
]

ROLE_COLORS = {"backbone": "#e8f0fb", "neck": "#eaf6ea", "head": "#fdf0e2", "unknown": "#f2f2f2"}
ROLE_ORDER = ("backbone", "neck", "head", "unknown")
REASON_COLORS = {"constant": "#b2182b", "off": "#f4a582"}
EPS_COLOR = "#2166ac"
BOX_COLOR = "#4a5d7e"
DEAD_RGB = (220, 20, 30)

# matplotlib's viridis (256 entries, van der Walt and Smith), as 8-bit RGB hex triplets
_VIRIDIS_HEX = (
    "44015444025645045745055946075a46085c460a5d460b5e470d60470e61471063471164471365481467481668481769"
    "48186a481a6c481b6d481c6e481d6f481f70482071482173482374482475482576482677482878482979472a7a472c7a"
    "472d7b472e7c472f7d46307e46327e46337f463480453581453781453882443983443a83443b84433d84433e85423f85"
    "4240864241864142874144874045884046883f47883f48893e49893e4a893e4c8a3d4d8a3d4e8a3c4f8a3c508b3b518b"
    "3b528b3a538b3a548c39558c39568c38588c38598c375a8c375b8d365c8d365d8d355e8d355f8d34608d34618d33628d"
    "33638d32648e32658e31668e31678e31688e30698e306a8e2f6b8e2f6c8e2e6d8e2e6e8e2e6f8e2d708e2d718e2c718e"
    "2c728e2c738e2b748e2b758e2a768e2a778e2a788e29798e297a8e297b8e287c8e287d8e277e8e277f8e27808e26818e"
    "26828e26828e25838e25848e25858e24868e24878e23888e23898e238a8d228b8d228c8d228d8d218e8d218f8d21908d"
    "21918c20928c20928c20938c1f948c1f958b1f968b1f978b1f988b1f998a1f9a8a1e9b8a1e9c891e9d891f9e891f9f88"
    "1fa0881fa1881fa1871fa28720a38620a48621a58521a68522a78522a88423a98324aa8325ab8225ac8226ad8127ad81"
    "28ae8029af7f2ab07f2cb17e2db27d2eb37c2fb47c31b57b32b67a34b67935b77937b87838b9773aba763bbb753dbc74"
    "3fbc7340bd7242be7144bf7046c06f48c16e4ac16d4cc26c4ec36b50c46a52c56954c56856c66758c7655ac8645cc863"
    "5ec96260ca6063cb5f65cb5e67cc5c69cd5b6ccd5a6ece5870cf5773d05675d05477d1537ad1517cd2507fd34e81d34d"
    "84d44b86d54989d5488bd6468ed64590d74393d74195d84098d83e9bd93c9dd93ba0da39a2da37a5db36a8db34aadc32"
    "addc30b0dd2fb2dd2db5de2bb8de29bade28bddf26c0df25c2df23c5e021c8e020cae11fcde11dd0e11cd2e21bd5e21a"
    "d8e219dae319dde318dfe318e2e418e5e419e7e419eae51aece51befe51cf1e51df4e61ef6e620f8e621fbe723fde725"
)
VIRIDIS = np.array(
    [[int(_VIRIDIS_HEX[i + k : i + k + 2], 16) for k in (0, 2, 4)] for i in range(0, 1536, 6)], dtype=np.uint8
)


def viridis(t: np.ndarray) -> np.ndarray:
    """t in [0, 1] (NaN counts as 0) -> uint8 RGB, the nearest of the 256 viridis entries."""
    t = np.nan_to_num(np.asarray(t, dtype=float), nan=0.0)
    return VIRIDIS[np.clip(np.round(t * 255), 0, 255).astype(np.int64)]


def fmt(x: float) -> str:
    """Compact, stable number formatting for coordinates (0.1 px)."""
    if not math.isfinite(x):
        return "0"
    s = f"{x:.1f}"
    s = s[:-2] if s.endswith(".0") else s
    return "0" if s == "-0" else s


def num(x: Any) -> str:
    """A data value as written in every file: 7 significant digits (the precision of float32)."""
    x = float(x)
    return f"{x:.7g}" if math.isfinite(x) else ""


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


_GEOMETRY = {"x", "y", "width", "height", "cx", "cy", "r", "x1", "x2", "y1", "y2"}


def element(tag: str, attrs: dict[str, Any], content: str = "") -> str:
    """One SVG element. Attribute names: ``_`` -> ``-``, a trailing ``_`` dropped (``class_``);
    geometry is formatted to 0.1 px, None values are left out, text is escaped."""
    parts = []
    for k, v in attrs.items():
        if v is None:
            continue
        k = k.rstrip("_").replace("_", "-")
        v = fmt(v) if k in _GEOMETRY and isinstance(v, (int, float)) else str(v)
        parts.append(f'{k}="{escape(v)}"')
    attr = (" " + " ".join(parts)) if parts else ""
    return f"<{tag}{attr}>{content}</{tag}>" if content else f"<{tag}{attr}/>"


class Axes:
    """Data -> pixel mapping for one plot area, with a frame, ticks, labels and drawing primitives.

    The primitives take pixel coordinates (``ax.x(v)``, ``ax.y(v)`` map data to pixels) and
    append to the plot, or to the open ``mark``.
    """

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
        if not self.x1 > self.x0:
            self.x1 = self.x0 + 1
        if not self.y1 > self.y0:
            self.y1 = self.y0 + 1
        self.parts: list[str] = []
        self._open: list[list[str]] = []

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

    # drawing primitives --------------------------------------------------------------------------

    def add(self, s: str) -> None:
        (self._open[-1] if self._open else self.parts).append(s)

    def rect(self, x: float, y: float, w: float, h: float, **attrs: Any) -> None:
        self.add(element("rect", {"x": x, "y": y, "width": w, "height": h, **attrs}))

    def line(self, x1: float, y1: float, x2: float, y2: float, **attrs: Any) -> None:
        self.add(element("line", {"x1": x1, "x2": x2, "y1": y1, "y2": y2, **attrs}))

    def circle(self, cx: float, cy: float, r: float, **attrs: Any) -> None:
        self.add(element("circle", {"cx": cx, "cy": cy, "r": r, **attrs}))

    def text(self, x: float, y: float, text: str, **attrs: Any) -> None:
        self.add(element("text", {"x": x, "y": y, **attrs}, escape(text)))

    def polygon(self, points: Iterable[tuple[float, float]], title: str | None = None, **attrs: Any) -> None:
        pts = " ".join(f"{fmt(px)},{fmt(py)}" for px, py in points)
        self.add(element("polygon", {"points": pts, **attrs}, _title(title)))

    def polyline(self, points: Iterable[tuple[float, float]], **attrs: Any) -> None:
        pts = " ".join(f"{fmt(px)},{fmt(py)}" for px, py in points)
        self.add(element("polyline", {"points": pts, "fill": "none", **attrs}))

    def image(self, x: float, y: float, w: float, h: float, href: str, **attrs: Any) -> None:
        self.add(
            element(
                "image",
                {
                    "x": x,
                    "y": y,
                    "width": w,
                    "height": h,
                    "preserveAspectRatio": "none",
                    "style": "image-rendering:pixelated",
                    "href": href,
                    **attrs,
                },
            )
        )

    @contextmanager
    def mark(
        self, title: str | None = None, *, name: str | None = None, value: Any = None, **attrs: Any
    ) -> Iterator[None]:
        """Group what is drawn inside into one mark: a tooltip (``title``), ``data-name`` and
        ``data-value`` (a number or a sequence of numbers, 7 significant digits, space separated).
        A mark with nothing drawn is left out."""
        self._open.append([])
        try:
            yield
        finally:
            body = "".join(self._open.pop())
        if body:
            values = (
                value if isinstance(value, (list, tuple, np.ndarray)) else ([] if value is None else [value])
            )
            data = {"class_": "mark", "data_name": name, "data_value": " ".join(map(num, values)) or None}
            self.add(element("g", {**data, **attrs}, _title(title) + body))

    def note(self, text: str) -> None:
        """A message in the middle of the plot area (an empty plot says why it is empty)."""
        self.text(self.ml + self.pw / 2, self.mt + self.ph / 2, text, class_="note", text_anchor="middle")

    # frame -----------------------------------------------------------------------------------------

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
        for v, label in yticks:
            yy = self.y(v)
            if grid:
                self.line(self.ml, yy, self.w - self.mr, yy, class_="grid")
            self.text(self.ml - 5, yy + 3.5, label, class_="tick", text_anchor="end")
        for v, label in xticks:
            xx = self.x(v)
            self.line(xx, self.h - self.mb, xx, self.h - self.mb + 4, class_="axis")
            self.text(xx, self.h - self.mb + 15, label, class_="tick", text_anchor="middle")
        self.rect(self.ml, self.mt, self.pw, self.ph, class_="frame")
        self.text(self.ml + self.pw / 2, self.h - 8, xlabel, class_="label", text_anchor="middle")
        cy = self.mt + self.ph / 2
        self.text(14, cy, ylabel, class_="label", text_anchor="middle", transform=f"rotate(-90 14 {fmt(cy)})")

    def svg(self, title: str, plot_id: str) -> str:
        body = "".join(self.parts)
        return (
            f'<svg id="{plot_id}" class="plot" viewBox="0 0 {self.w} {self.h}" width="{self.w}" height="{self.h}" '
            f'style="--w:{self.w}px" '
            f'role="img" aria-label="{escape(title)}">'
            f'<text x="{fmt(self.ml)}" y="17" class="title">{escape(title)}</text>{body}</svg>'
        )


def _title(title: str | None) -> str:
    return f"<title>{escape(title)}</title>" if title else ""


def role_bands(ax: Axes, roles: Sequence[str]) -> None:
    """Shade contiguous runs of backbone / neck / head along a layer axis (x = layer position)."""
    start = 0
    for i in range(1, len(roles) + 1):
        if i == len(roles) or roles[i] != roles[start]:
            r = roles[start]
            x0, x1 = ax.x(start - 0.5), ax.x(i - 0.5)
            ax.add(
                element(
                    "rect",
                    {
                        "x": x0,
                        "y": ax.mt,
                        "width": x1 - x0,
                        "height": ax.ph,
                        "fill": ROLE_COLORS.get(r, ROLE_COLORS["unknown"]),
                    },
                    _title(r),
                )
            )
            if x1 - x0 > 40:
                ax.text((x0 + x1) / 2, ax.mt + 12, r, class_="band", text_anchor="middle")
            start = i


def roles_present(roles: Iterable[str]) -> list[str]:
    """The roles that occur, in model order (a classifier has no neck)."""
    seen = set(roles)
    return [r for r in ROLE_ORDER if r in seen]


def legend(ax: Axes, items: Iterable[tuple[str, str]], x: float | None = None) -> None:
    xx = ax.w - ax.mr - 8 if x is None else x
    for label, color in reversed(list(items)):
        xx -= 7 * len(label) + 22
        ax.rect(xx, 7, 10, 10, fill=color)
        ax.text(xx + 14, 16, label, class_="tick")
