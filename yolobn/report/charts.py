"""The plots of the swap, experiment, compare, frontier and training pages, drawn through ``svg.Axes``.

``report.plots`` holds the report's own plots; these are the generic shapes the other pages need:
labelled horizontal bars, per-layer charts along the depth, lines with bands, an A-vs-B scatter
and a layer x epoch heat map. Like the report's plots, every mark carries ``data-name`` and
``data-value`` with the values it draws, and a plot with nothing to draw says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yolobn.report.plots import LAYER_AXIS, WIDTH, png_uri
from yolobn.report.svg import (
    BOX_COLOR,
    ROLE_COLORS,
    VIRIDIS,
    Axes,
    legend,
    nice_ticks,
    role_bands,
    roles_present,
    tick_label,
    viridis,
)

__all__ = [
    "BETTER",
    "Bar",
    "MAX_LABEL",
    "NEUTRAL",
    "ROW",
    "SCATTER_POINTS",
    "Series",
    "WORSE",
    "ab_scatter",
    "depth_bars",
    "depth_series",
    "depth_stacked",
    "epoch_heatmap",
    "hbar_chart",
    "layer_axes",
    "line_chart",
]

WORSE, BETTER, NEUTRAL = "#b2182b", "#1a7f37", BOX_COLOR
ROW = 20  # px per bar of a horizontal bar chart
MAX_LABEL = 48  # characters of a bar label before it is shortened (the tooltip has it whole)


@dataclass
class Bar:
    """One bar of ``hbar_chart``: ``value`` sets its length (NaN: no bar), ``text`` is printed in
    the column on the right, ``data`` is its ``data-value`` (default: ``value``)."""

    label: str
    value: float
    text: str = ""
    tip: str = ""
    color: str = NEUTRAL
    data: Sequence[float] | None = None


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _text_width(texts: Sequence[str], px: float = 6.3) -> int:
    return int(max((len(t) for t in texts), default=1) * px) + 16


def _log_ticks(lo: int, hi: int) -> list[tuple[float, str]]:
    step = max(1, math.ceil((hi - lo + 1) / 9))
    return [(float(k), tick_label(10.0**k)) for k in range(lo, hi + 1, step)]


def hbar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    plot_id: str,
    xlabel: str,
    ref: tuple[float, str] | None = None,
    log: bool = False,
    min_span: float = 0.0,
    width: int = WIDTH,
) -> str:
    """One labelled horizontal bar per item, top to bottom; ``ref``: a dashed reference line
    (value, label), e.g. the baseline. Linear bars start at 0 (the axis spans at least
    ``min_span``); ``log`` bars at the left edge."""
    labels = [_short(b.label) for b in bars]
    vals = np.array([b.value for b in bars], dtype=float)
    fin = vals[np.isfinite(vals)]
    n = max(len(bars), 1)
    if log:
        pos = fin[fin > 0]
        lo_i = math.floor(math.log10(pos.min())) if pos.size else -3
        hi_i = max(math.ceil(math.log10(pos.max())) if pos.size else 0, lo_i + 1)
        xlim, xticks, base = (float(lo_i), float(hi_i)), _log_ticks(lo_i, hi_i), float(lo_i)
    else:
        ext = np.concatenate([fin, [0.0], [ref[0]] if ref else []])
        lo, hi = float(ext.min()), float(ext.max())
        if hi - lo < min_span:
            lo, hi = (hi - min_span, hi) if lo < 0 and hi <= 0 else (lo, lo + min_span)
        hi = hi if hi > lo else lo + 1
        pad = (hi - lo) * 0.04
        xlim, xticks, base = (lo - (pad if lo < 0 else 0), hi + (pad if hi > 0 else 0)), None, 0.0
    ax = Axes(
        width,
        64 + ROW * n,
        xlim,
        (0, n),
        margin=(28, _text_width([b.text for b in bars]), 40, _text_width(labels)),
    )
    ax.frame(xlabel, "", xticks=xticks, yticks=[], grid=False)
    for v, _ in xticks or [(t, "") for t in nice_ticks(*xlim)]:
        ax.line(ax.x(v), ax.mt, ax.x(v), ax.mt + ax.ph, class_="grid")
    for i, (b, label) in enumerate(zip(bars, labels, strict=True)):
        y = ax.y(n - i)
        with ax.mark(
            b.tip or f"{b.label}: {b.text}", name=b.label, value=b.data if b.data is not None else b.value
        ):
            v = b.value
            if math.isfinite(v) and (not log or v > 0):
                x0, x1 = ax.x(base), ax.x(math.log10(v) if log else v)
                ax.rect(min(x0, x1), y + 3, max(abs(x1 - x0), 1), ROW - 6, fill=b.color)
            ax.text(ax.w - ax.mr + 6, y + 14, b.text, class_="tick")
        ax.text(ax.ml - 6, y + 14, label, class_="tick", text_anchor="end")
    if ref is not None and math.isfinite(ref[0]):
        x = ax.x(ref[0])
        with ax.mark(ref[1], name="ref-line", value=ref[0]):
            ax.line(x, ax.mt, x, ax.mt + ax.ph, stroke="#111", stroke_dasharray="5 3", stroke_width=1.3)
            ax.text(x + 4, ax.mt - 4, ref[1], class_="tick")
    if not bars:
        ax.note("nothing to show")
    return ax.svg(title, plot_id)


# --------------------------------------------------------------------------------------------------
# along the depth: one slot per BN layer, in model order


def layer_axes(
    layer_ids: Sequence[int],
    roles: Sequence[str] | None,
    height: int,
    ylim: tuple[float, float],
    ylabel: str,
    yticks: list[tuple[float, str]] | None = None,
) -> Axes:
    """Axes with one slot per BN layer along x (ticks: Ultralytics layer index), roles shaded."""
    n = len(layer_ids)
    ax = Axes(WIDTH, height, (-0.5, max(n, 1) - 0.5), ylim)
    if roles is not None and n:
        role_bands(ax, list(roles))
    step = max(1, math.ceil(n / 12))
    ax.frame(
        LAYER_AXIS, ylabel, xticks=[(i, str(int(layer_ids[i]))) for i in range(0, n, step)], yticks=yticks
    )
    if roles is not None:
        legend(ax, [(r, ROLE_COLORS[r]) for r in roles_present(roles)])
    return ax


def depth_bars(
    names: Sequence[str],
    layer_ids: Sequence[int],
    values: np.ndarray,
    *,
    title: str,
    plot_id: str,
    ylabel: str,
    tips: Sequence[str],
    roles: Sequence[str] | None = None,
) -> str:
    """A signed bar per layer from 0 (red below, green above), e.g. the metric change of a sweep."""
    v = np.asarray(values, dtype=float)
    fin = v[np.isfinite(v)]
    lo, hi = min(float(fin.min(initial=0)), 0.0), max(float(fin.max(initial=0)), 0.0)
    pad = (hi - lo) * 0.06 or 0.001
    ax = layer_axes(layer_ids, roles, 250, (lo - (pad if lo < 0 else 0), hi + (pad if hi > 0 else 0)), ylabel)
    bw = max(1.0, ax.pw / max(len(v), 1) * 0.75)
    for i, (name, x, tip) in enumerate(zip(names, v, tips, strict=True)):
        if not math.isfinite(x):
            continue
        y0, y1 = ax.y(0), ax.y(x)
        with ax.mark(tip, name=name, value=x):
            ax.rect(
                ax.x(i) - bw / 2, min(y0, y1), bw, max(abs(y1 - y0), 0.5), fill=WORSE if x < 0 else BETTER
            )
    ax.line(ax.ml, ax.y(0), ax.ml + ax.pw, ax.y(0), stroke="#555", stroke_width=1)
    if not fin.size:
        ax.note("no layer was measured")
    return ax.svg(title, plot_id)


def depth_series(
    names: Sequence[str],
    layer_ids: Sequence[int],
    series: dict[str, tuple[np.ndarray, str]],
    *,
    title: str,
    plot_id: str,
    ylabel: str,
    roles: Sequence[str] | None = None,
) -> str:
    """Per layer, one dot per series on a log scale, joined along the depth. Exact zeros sit on
    the bottom line, labelled 0 (one decade below the smallest positive value)."""
    arrays = [np.asarray(v, dtype=float) for v, _ in series.values()]
    allv = np.concatenate(arrays) if arrays else np.zeros(0)
    pos = allv[np.isfinite(allv) & (allv > 0)]
    top = math.ceil(math.log10(pos.max())) if pos.size else 0
    zero = min(math.floor(math.log10(pos.min())) - 1 if pos.size else -1, top - 1)
    ticks = [(float(zero), "0"), *[(float(k), tick_label(10.0**k)) for k in range(zero + 1, top + 1)]]
    ticks = ticks[:1] + ticks[1:][:: max(1, math.ceil(len(ticks) / 8))]
    ax = layer_axes(layer_ids, roles, 270, (zero - 0.15, top + 0.15), ylabel, ticks)

    def ypix(x: float) -> float:
        return ax.y(math.log10(x) if x > 0 else zero)

    for (_, color), v in zip(series.values(), arrays, strict=True):
        pts = [(ax.x(i), ypix(x)) for i, x in enumerate(v) if math.isfinite(x)]
        ax.polyline(pts, stroke=color, stroke_width=1, stroke_opacity=0.6)
    for i, name in enumerate(names):
        vals = [a[i] for a in arrays]
        tip = f"{name}: " + ", ".join(f"{k} {x:.3g}" for k, x in zip(series, vals, strict=True))
        with ax.mark(tip, name=name, value=vals):
            for x, (_, color) in zip(vals, series.values(), strict=True):
                if math.isfinite(x):
                    ax.circle(ax.x(i), ypix(x), 2.4, fill=color)
    legend(ax, [(k, c) for k, (_, c) in series.items()], x=ax.w - ax.mr - 8 - 7 * 28)
    if not pos.size:
        ax.note("no change in any layer: every value is 0")
    return ax.svg(title, plot_id)


def depth_stacked(
    names: Sequence[str],
    layer_ids: Sequence[int],
    parts: dict[str, tuple[np.ndarray, str]],
    *,
    title: str,
    plot_id: str,
    ylabel: str,
    empty: str,
    roles: Sequence[str] | None = None,
) -> str:
    """Per layer, counts stacked from 0 (one colour per part)."""
    counts = np.stack([np.asarray(v, dtype=np.int64) for v, _ in parts.values()], 1)
    top = max(int(counts.sum(1).max(initial=0)), 1)
    ticks = [(float(t), f"{int(t)}") for t in nice_ticks(0, top * 1.1) if float(t).is_integer()]
    ax = layer_axes(layer_ids, roles, 240, (0, top * 1.1), ylabel, ticks)
    bw = max(1.0, ax.pw / max(len(names), 1) * 0.8)
    colors = [c for _, c in parts.values()]
    for i, name in enumerate(names):
        row = counts[i].tolist()
        tip = f"{name}: " + ", ".join(f"{k} {c}" for k, c in zip(parts, row, strict=True))
        with ax.mark(tip, name=name, value=row):
            ax.rect(
                ax.x(i - 0.5), ax.mt, ax.x(i + 0.5) - ax.x(i - 0.5), ax.ph, fill="#000", fill_opacity=0
            )  # hover
            base = ax.y(0)
            for c, color in zip(row, colors, strict=True):
                if c > 0:
                    h = ax.y(0) - ax.y(c)
                    ax.rect(ax.x(i) - bw / 2, base - h, bw, h, fill=color)
                    base -= h
    if not counts.any():
        ax.note(empty)
    legend(ax, [(k, c) for k, (_, c) in parts.items()], x=ax.w - ax.mr - 8 - 7 * 28)
    return ax.svg(title, plot_id)


# --------------------------------------------------------------------------------------------------
# lines with bands


@dataclass
class Series:
    """A line of ``line_chart``: points (x, y) with tooltips, and an optional band lo..hi."""

    name: str
    color: str
    x: Sequence[float]
    y: Sequence[float]
    tips: Sequence[str]
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    plot_id: str,
    xlabel: str,
    ylabel: str,
    band: tuple[float, float, str] | None = None,
    xticks: list[tuple[float, str]] | None = None,
    yticks: list[tuple[float, str]] | None = None,
    height: int = 320,
    ylim: tuple[float, float] | None = None,
    note: str | None = None,
) -> str:
    """Lines with a dot per point (the marks: ``data-value`` = x, y[, lo, hi]); each series' band
    shaded behind it; ``band``: a horizontal band (lo, hi, label), e.g. a tolerance; ``note``: a
    message in the middle (e.g. why the lines are flat)."""
    xs = np.concatenate([np.asarray(s.x, float) for s in series]) if series else np.zeros(1)
    ys = [np.asarray(v, float) for s in series for v in (s.y, s.lo, s.hi) if v is not None]
    yall = np.concatenate([*ys, [band[0], band[1]] if band else []]) if ys or band else np.zeros(1)
    yall = yall[np.isfinite(yall)]
    if ylim is None:
        lo, hi = (float(yall.min()), float(yall.max())) if yall.size else (0.0, 1.0)
        pad = (hi - lo) * 0.06 or 0.05
        ylim = (lo - pad, hi + pad)
    ax = Axes(WIDTH, height, (float(xs.min()), float(xs.max())), ylim)
    ax.frame(xlabel, ylabel, xticks=xticks, yticks=yticks)
    if band is not None:
        y0, y1 = ax.y(min(band[1], ax.y1)), ax.y(max(band[0], ax.y0))
        with ax.mark(band[2], name="band", value=[band[0], band[1]]):
            ax.rect(ax.ml, y0, ax.pw, max(y1 - y0, 1), fill="#f4a582", fill_opacity=0.25)
    for s in series:
        if s.lo is not None and s.hi is not None and len(s.x):
            pts = [(ax.x(x), ax.y(v)) for x, v in zip(s.x, s.hi, strict=True)]
            pts += [(ax.x(x), ax.y(v)) for x, v in zip(reversed(s.x), reversed(s.lo), strict=True)]
            ax.polygon(pts, f"{s.name}: min to max", fill=s.color, fill_opacity=0.15)
        ax.polyline(
            [(ax.x(x), ax.y(y)) for x, y in zip(s.x, s.y, strict=True) if math.isfinite(y)],
            stroke=s.color,
            stroke_width=1.8,
        )
    for s in series:
        for j, (x, y, tip) in enumerate(zip(s.x, s.y, s.tips, strict=True)):
            extra = [s.lo[j], s.hi[j]] if s.lo is not None and s.hi is not None else []
            with ax.mark(tip, name=s.name, value=[x, y, *extra]):
                if math.isfinite(y):
                    ax.circle(ax.x(x), ax.y(y), 3, fill=s.color)
    legend(ax, [(s.name, s.color) for s in series])
    if note or not series:
        ax.note(note or "nothing to show")
    return ax.svg(title, plot_id)


# --------------------------------------------------------------------------------------------------
# A against B, every channel


SCATTER_POINTS = 2000  # up to this many channels, each is its own circle; above, a density image


def ab_scatter(
    a: np.ndarray,
    b: np.ndarray,
    labels: Sequence[str],
    status: np.ndarray,
    colors: dict[str, str],
    *,
    title: str,
    plot_id: str,
    xlabel: str,
    ylabel: str,
) -> tuple[str, int]:
    """Every channel's value in A (x) against B (y) on equal axes, the diagonal drawn: channels
    with a ``status`` (e.g. "newly dead") in its colour. Up to ``SCATTER_POINTS`` channels each is
    a mark; more are binned into 2-pixel cells (a density image, deterministic) with the channels
    that have a status drawn on top. Returns the SVG and how many points lie outside the view."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    both = np.concatenate([a[ok], b[ok]]) if ok.any() else np.zeros(1)
    q = (0.001, 0.999) if both.size > 2 * SCATTER_POINTS else (0.0, 1.0)
    lo, hi = (float(v) for v in np.quantile(both, q))
    hi = hi if hi > lo else lo + 1
    pad = (hi - lo) * 0.06
    ax = Axes(470, 478, (lo - pad, hi + pad), (lo - pad, hi + pad), margin=(44, 16, 44, 64))
    ax.frame(xlabel, ylabel)
    with ax.mark("the diagonal: the same value in A and B", name="diagonal"):
        ax.line(ax.x(ax.x0), ax.y(ax.y0), ax.x(ax.x1), ax.y(ax.y1), stroke="#555", stroke_dasharray="5 3")
    xa, yb = np.clip(a, ax.x0, ax.x1), np.clip(b, ax.y0, ax.y1)
    idx = np.flatnonzero(ok)
    if len(idx) > SCATTER_POINTS:
        plain = idx[status[idx] == ""]
        _density(ax, xa[plain], yb[plain], f"{len(plain):,} channels, binned", len(plain))
        idx = idx[status[idx] != ""][:SCATTER_POINTS]
    for i in (int(j) for j in idx):
        s = str(status[i])
        with ax.mark(
            f"{labels[i]}: A {a[i]:.4g}, B {b[i]:.4g}{f' ({s})' if s else ''}",
            name=labels[i],
            value=[a[i], b[i]],
        ):
            ax.circle(
                ax.x(xa[i]),
                ax.y(yb[i]),
                2.6 if s else 1.8,
                fill=colors.get(s, NEUTRAL),
                fill_opacity=0.9 if s else 0.55,
            )
    x = float(ax.ml)
    for k, c in [("channel", NEUTRAL), *((k, c) for k, c in colors.items() if k and (status == k).any())]:
        ax.rect(x, 25, 10, 10, fill=c)  # a legend row under the title: a narrow plot has no room beside it
        ax.text(x + 14, 34, k, class_="tick")
        x += 7 * len(k) + 26
    if not ok.any():
        ax.note("no finite values")
    out = int((ok & ((a < ax.x0) | (a > ax.x1) | (b < ax.y0) | (b > ax.y1))).sum())
    return ax.svg(title, plot_id), out


def _density(ax: Axes, x: np.ndarray, y: np.ndarray, tip: str, n: int) -> None:
    gw, gh = int(ax.pw // 2) + 1, int(ax.ph // 2) + 1
    cx = np.clip(((x - ax.x0) / (ax.x1 - ax.x0) * (gw - 1)).round().astype(int), 0, gw - 1)
    cy = np.clip(((y - ax.y0) / (ax.y1 - ax.y0) * (gh - 1)).round().astype(int), 0, gh - 1)
    counts = np.zeros((gh, gw))
    np.add.at(counts, (cy, cx), 1)
    rgba = np.zeros((gh, gw, 4), dtype=np.uint8)
    rgba[..., :3] = (74, 93, 126)
    if counts.any():
        rgba[..., 3] = np.where(counts > 0, 90 + 165 * np.log1p(counts) / np.log1p(counts.max()), 0).round()
    with ax.mark(tip, name="binned", value=n):
        ax.image(ax.ml, ax.mt + ax.ph - 2 * gh, 2 * gw, 2 * gh, png_uri(rgba[::-1], "RGBA"))


# --------------------------------------------------------------------------------------------------
# layers x epochs


def epoch_heatmap(
    values: np.ndarray,
    names: Sequence[str],
    layer_ids: Sequence[int],
    epochs: Sequence[int],
    first: Sequence[int | None],
    *,
    title: str,
    plot_id: str,
    label: str,
    grid: str,
) -> str:
    """Rows = layers (model order), columns = epochs, colour = ``values`` (viridis, 1st-99th
    percentile); a red marker at ``first[r]``, the epoch layer r first had a dead channel. Each row
    is a mark (``data-value``: its values per epoch); ``grid`` names the JSON the page's script
    reads for the per-cell tooltip."""
    rows, cols = values.shape
    fin = values[np.isfinite(values)]
    lo, hi = (float(np.quantile(fin, 0.01)), float(np.quantile(fin, 0.99))) if fin.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1
    rgb = viridis((np.clip(values, lo, hi) - lo) / (hi - lo))
    rgb[~np.isfinite(values)] = 235
    rh, cw = max(2, min(10, 640 // max(rows, 1))), max(1, 960 // max(cols, 1))
    ax = Axes(
        64 + cols * cw + 130, 28 + rows * rh + 44, (-0.5, cols - 0.5), (0, rows), margin=(28, 130, 44, 64)
    )
    ax.image(
        ax.ml,
        ax.mt,
        ax.pw,
        ax.ph,
        png_uri(np.repeat(np.repeat(rgb, rh, 0), cw, 1), "RGB"),
        class_="grid-image",
    )
    step = max(1, math.ceil(cols / 12))
    ystep = max(1, math.ceil(rows / 16))
    ax.frame(
        "epoch",
        "BN layer (Ultralytics index)",
        grid=False,
        xticks=[(j, str(epochs[j])) for j in range(0, cols, step)],
        yticks=[(rows - r - 0.5, str(int(layer_ids[r]))) for r in range(0, rows, ystep)],
    )
    for r, name in enumerate(names):
        with ax.mark(None, name=name, value=values[r]):
            ax.rect(ax.ml, ax.y(rows - r), ax.pw, rh, fill="#000", fill_opacity=0)
    for r, (name, e) in enumerate(zip(names, first, strict=True)):
        if e is None:
            continue
        j = list(epochs).index(e)
        x, y = ax.x(j), ax.y(rows - r - 0.5)
        with ax.mark(
            f"{name}: first dead channel at epoch {e}", name=name, value=e, class_="mark first-dead"
        ):
            ax.polygon(
                [(x - 4, y - 4), (x + 4, y - 4), (x, y + 3)], fill="#e8112d", stroke="#fff", stroke_width=0.8
            )
    x = ax.w - ax.mr + 30
    ax.image(x, ax.mt, 14, 160, png_uri(VIRIDIS[::-1, None, :], "RGB"))
    ax.text(x + 18, ax.mt + 8, tick_label(hi), class_="tick")
    ax.text(x + 18, ax.mt + 160, tick_label(lo), class_="tick")
    ax.text(x, ax.mt + 178, label, class_="tick")
    ax.polygon([(x + 3, ax.mt + 192), (x + 11, ax.mt + 192), (x + 7, ax.mt + 199)], fill="#e8112d")
    ax.text(x + 16, ax.mt + 199, "first dead", class_="tick")
    return ax.svg(title, plot_id).replace("<svg ", f'<svg data-grid="{grid}" ', 1)
