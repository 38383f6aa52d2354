"""The report's plots, as inline SVG drawn through ``svg.Axes`` (two embed a small PNG).

Every plot takes the ``Inspection`` frames (or columns of them) and returns the ``<svg>`` text.
Each mark carries ``data-name`` and ``data-value`` with the values it plots, so tests can check
the drawing against layers.csv / channels.csv; a plot with nothing to draw says so.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from yolobn.report.svg import (
    BOX_COLOR,
    DEAD_RGB,
    EPS_COLOR,
    REASON_COLORS,
    ROLE_COLORS,
    VIRIDIS,
    Axes,
    legend,
    role_bands,
    roles_present,
    tick_label,
    viridis,
)

__all__ = [
    "CONFUSION_COLORS",
    "DEAD_HEX",
    "LAYER_AXIS",
    "WIDTH",
    "confusion_plot",
    "dead_share_plot",
    "depth_plot",
    "drift_plot",
    "eps_label",
    "heatmap_plot",
    "histogram_plot",
    "png_uri",
    "scatter_plot",
]

WIDTH = 1100
LAYER_AXIS = "BN layer (model order; tick = Ultralytics layer index)"
CONFUSION_COLORS = {"both dead": "#c0392b", "predicted only": "#e69f00", "observed only": "#8e44ad"}
DEAD_HEX = "#{:02x}{:02x}{:02x}".format(*DEAD_RGB)


def png_uri(pixels: np.ndarray, mode: str) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def eps_label(eps: float) -> str:
    """eps as usually written: 1e-3, 1e-5, 2.5e-4 (0.01 and above as a plain number)."""
    if not 0 < eps < 0.01:
        return f"{eps:g}"
    mant, exp = f"{eps:.1e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


def _layer_ticks(layers: pd.DataFrame) -> list[tuple[float, str]]:
    n = len(layers)
    step = max(1, math.ceil(n / 12))
    return [(i, str(int(layers["layer"].iloc[i]))) for i in range(0, n, step)]


def _layer_axes(
    layers: pd.DataFrame,
    height: int,
    ylim: tuple[float, float],
    ylabel: str,
    yticks: Sequence[tuple[float, str]] | None = None,
) -> Axes:
    """Axes with one slot per BN layer along x, the roles shaded behind."""
    ax = Axes(WIDTH, height, (-0.5, len(layers) - 0.5), ylim)
    role_bands(ax, list(layers["role"]))
    ax.frame(LAYER_AXIS, ylabel, xticks=_layer_ticks(layers), yticks=yticks)
    return ax


def _role_legend(ax: Axes, layers: pd.DataFrame) -> None:
    legend(ax, [(r, ROLE_COLORS[r]) for r in roles_present(layers["role"])])


def depth_plot(layers: pd.DataFrame, q: str, *, log: bool, title: str, ylabel: str, plot_id: str) -> str:
    """One box per BN layer along the depth: p05-p95 whiskers, p25-p75 box, median line. On the
    log-scale running variance, the eps of every layer is drawn too (eps-dominated below it)."""
    raw = layers[[f"{q}_{s}" for s in ("p05", "p25", "p50", "p75", "p95")]].to_numpy(dtype=float)
    eps = layers["eps"].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        vals = np.log10(np.clip(raw, 1e-12, None)) if log else raw
    lim = vals[np.isfinite(vals)]
    if log and q == "running_var":
        lim = np.concatenate([lim, np.log10(eps[eps > 0])])
    lo, hi = (float(lim.min()), float(lim.max())) if lim.size else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 0.5
    yt = None
    if log:
        yt = [(v, f"1e{v}") for v in range(math.ceil(lo - pad), math.floor(hi + pad) + 1)]
        yt = yt[:: math.ceil(len(yt) / 8)] if len(yt) > 8 else yt
    ax = _layer_axes(layers, 260, (lo - pad, hi + pad), ylabel, yt)
    bw = max(1.0, min(8.0, ax.pw / max(len(layers), 1) * 0.7))
    for i, (name, v, r) in enumerate(zip(layers["name"], vals, raw, strict=True)):
        if not np.isfinite(v).all():
            continue
        x, (p05, p25, p50, p75, p95) = ax.x(i), v
        tip = f"{name}: p05 {tick_label(r[0])} · p25 {tick_label(r[1])} · median {tick_label(r[2])} · p75 {tick_label(r[3])} · p95 {tick_label(r[4])}"
        with ax.mark(tip, name=name, value=r):
            ax.line(x, ax.y(p95), x, ax.y(p05), stroke=BOX_COLOR, stroke_width=1)
            ax.rect(
                x - bw / 2, ax.y(p75), bw, max(ax.y(p25) - ax.y(p75), 1), fill=BOX_COLOR, fill_opacity=0.55
            )
            ax.line(x - bw / 2, ax.y(p50), x + bw / 2, ax.y(p50), stroke="#111", stroke_width=1.2)
    if not lim.size:
        ax.note("no finite values")
    if log and q == "running_var":
        _eps_line(ax, layers, eps)
    _role_legend(ax, layers)
    return ax.svg(title, plot_id)


def _eps_line(ax: Axes, layers: pd.DataFrame, eps: np.ndarray) -> None:
    """The eps of each layer as a dashed line (one line when every layer has the same eps)."""
    values = sorted(set(eps[eps > 0].tolist()))
    if len(values) == 1:
        y = ax.y(math.log10(values[0]))
        with ax.mark(f"eps = {eps_label(values[0])} in every layer", name="eps", value=values[0]):
            ax.line(ax.ml, y, ax.ml + ax.pw, y, stroke=EPS_COLOR, stroke_dasharray="5 3", stroke_width=1.2)
            ax.text(
                ax.ml + ax.pw - 4,
                y - 4,
                f"eps {eps_label(values[0])}",
                class_="tick",
                text_anchor="end",
                fill=EPS_COLOR,
            )
        return
    for i, (name, e) in enumerate(zip(layers["name"], eps, strict=True)):
        if e > 0:
            y = ax.y(math.log10(e))
            with ax.mark(f"{name}: eps = {eps_label(e)}", name=f"eps {name}", value=e):
                ax.line(ax.x(i - 0.5), y, ax.x(i + 0.5), y, stroke=EPS_COLOR, stroke_width=1.5)


def _share_ticks(top: float) -> list[float]:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25):
        if top / step <= 6:
            break
    return [round(k * step, 6) for k in range(int(top / step) + 1)]


def _share_axes(layers: pd.DataFrame, top: float) -> tuple[Axes, float]:
    """Axes for a per-layer share of channels (0 to ``top``); and the bar width."""
    yt = [(v, f"{v:.0%}" if top >= 0.1 else f"{v:.1%}") for v in _share_ticks(top)]
    ax = _layer_axes(layers, 240, (0, top), "share of channels", yt)
    return ax, max(1.0, ax.pw / max(len(layers), 1) * 0.8)


def _stacked_bar(ax: Axes, i: int, bw: float, parts: list[tuple[float, str]]) -> None:
    """Layer ``i``'s bar: (share, colour) stacked from 0, empty shares skipped."""
    x, base = ax.x(i) - bw / 2, ax.y(0)
    for share, color in parts:
        if share > 0:
            h = base - ax.y(share)
            ax.rect(x, base - h, bw, max(h, 1), fill=color)
            base -= h


def dead_share_plot(layers: pd.DataFrame) -> str:
    ch = np.maximum(layers["channels"].to_numpy(dtype=float), 1)
    counts = layers[["constant", "off", "eps_dominated"]].to_numpy(dtype=np.int64)
    cs, off, eps = (counts[:, k] / ch for k in range(3))
    top = max(0.05, float(np.max(cs + off, initial=0)), float(np.max(eps, initial=0)))
    ax, bw = _share_axes(layers, min(1.0, top * 1.1))
    for i, name in enumerate(layers["name"]):
        c, o, e = counts[i].tolist()
        tip = f"{name}: constant {c}, off {o}, eps-dominated {e} of {int(ch[i])}"
        with ax.mark(tip, name=name, value=[c, o, e, int(ch[i])]):
            _stacked_bar(ax, i, bw, [(cs[i], REASON_COLORS["constant"]), (off[i], REASON_COLORS["off"])])
            if e:
                ax.circle(ax.x(i), ax.y(eps[i]), 2.2, fill=EPS_COLOR)
    if not counts.any():
        ax.note("no dead channels and no eps-dominated channels")
    elif not counts[:, :2].any():
        ax.note("no dead channels (dots: eps-dominated)")
    legend(
        ax,
        [
            ("constant", REASON_COLORS["constant"]),
            ("off", REASON_COLORS["off"]),
            ("eps-dominated (dot)", EPS_COLOR),
        ],
    )
    return ax.svg("Dead channels per layer, stacked by reason", "plot-dead")


def confusion_plot(layers: pd.DataFrame) -> str:
    """Per layer: channels dead on the images and by the data-free prediction, stacked by agreement."""
    ch = np.maximum(layers["channels"].to_numpy(dtype=float), 1)
    counts = layers[["dead_both", "dead_predicted_only", "dead_observed_only"]].to_numpy(dtype=np.int64)
    total = counts.sum(1) / ch
    ax, bw = _share_axes(layers, min(1.0, max(0.05, float(np.max(total, initial=0))) * 1.1))
    for i, name in enumerate(layers["name"]):
        tip = f"{name}: " + ", ".join(
            f"{k} {v}" for k, v in zip(CONFUSION_COLORS, counts[i].tolist(), strict=True)
        )
        with ax.mark(f"{tip} of {int(ch[i])}", name=name, value=[*counts[i].tolist(), int(ch[i])]):
            _stacked_bar(
                ax, i, bw, [(v / ch[i], c) for v, c in zip(counts[i], CONFUSION_COLORS.values(), strict=True)]
            )
    if not counts.any():
        ax.note("no dead channels, neither on the images nor by the data-free criteria")
    legend(ax, list(CONFUSION_COLORS.items()))
    return ax.svg("Dead channels on the images vs the data-free prediction", "plot-confusion")


def drift_plot(layers: pd.DataFrame) -> str:
    """Per layer: mean and max channel drift (Gaussian KL of the observed BN input vs its running stats)."""
    mean = layers["drift"].to_numpy(dtype=float)
    mx = layers["drift_max"].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        lm, lx = np.log10(np.clip(mean, 1e-6, None)), np.log10(np.clip(mx, 1e-6, None))
    lo = float(np.floor(min(np.min(lm[np.isfinite(lm)], initial=-2), -2)))
    hi = float(np.ceil(max(np.max(lx[np.isfinite(lx)], initial=0), 0)))
    yt = [(v, tick_label(10**v)) for v in range(int(lo), int(hi) + 1)]
    ax = _layer_axes(layers, 240, (lo, hi), "drift (log10 KL)", yt)
    bw = max(1.0, ax.pw / max(len(layers), 1) * 0.8)
    shift, ratio = (
        layers["mean_shift_abs"].to_numpy(dtype=float),
        layers["log_var_ratio_abs"].to_numpy(dtype=float),
    )
    for i, name in enumerate(layers["name"]):
        if not math.isfinite(lm[i]):
            continue
        tip = (
            f"{name}: mean drift {mean[i]:.3g}, max {mx[i]:.3g}, |mean shift| {shift[i]:.3g}, "
            f"|ln var ratio| {ratio[i]:.3g}"
        )
        color = "#c0392b" if mean[i] >= 1 else ("#e69f00" if mean[i] >= 0.1 else BOX_COLOR)
        y0, y1 = ax.y(lo), ax.y(lm[i])
        with ax.mark(tip, name=name, value=[mean[i], mx[i]]):
            ax.rect(ax.x(i) - bw / 2, y1, bw, max(y0 - y1, 1), fill=color)
            ax.circle(ax.x(i), ax.y(lx[i]), 2, fill="#333")
    if not np.isfinite(lm).any():
        ax.note("no BN layer was reached by the images")
    legend(ax, [("mean over channels (bar)", BOX_COLOR), ("max channel (dot)", "#333")])
    return ax.svg("BN statistic drift per layer: the images vs the running statistics", "plot-drift")


def scatter_plot(channels: pd.DataFrame, th: dict[str, float]) -> tuple[str, int]:
    """gamma vs beta of every channel: alive channels as a density image of 2-pixel cells, dead
    channels as circles on top. Returns the SVG and how many channels lie outside the view."""
    g, b = channels["gamma"].to_numpy(dtype=float), channels["beta"].to_numpy(dtype=float)
    ok = np.isfinite(g) & np.isfinite(b)
    g, b, reason = g[ok], b[ok], channels["dead_reason"].to_numpy()[ok]
    gv, bv = (g, b) if g.size else (np.zeros(1), np.zeros(1))
    gl, gh = np.quantile(gv, [0.001, 0.999])
    bl, bh = np.quantile(bv, [0.001, 0.999])
    gl, gh = min(gl, -0.05, float(g[reason != ""].min(initial=0))), max(gh, 0.05)
    bl, bh = min(bl, float(b[reason != ""].min(initial=0))), max(bh, 0.05)
    gp, bp = (gh - gl) * 0.06, (bh - bl) * 0.06
    ax = Axes(WIDTH // 2 + 60, 420, (gl - gp, gh + gp), (bl - bp, bh + bp))
    k, c = th["off_sigma"], th["const_std"]
    # the dead regions (assuming running_var >> eps, so that the output std is ~|gamma|)
    wedge = [(ax.x0, -k * abs(ax.x0)), (0, 0), (ax.x1, -k * abs(ax.x1)), (ax.x1, ax.y0), (ax.x0, ax.y0)]
    ax.polygon(
        [(ax.x(px), ax.y(max(min(py, ax.y1), ax.y0))) for px, py in wedge],
        f"off region: beta + {k:g}·|gamma| < 0",
        fill=REASON_COLORS["off"],
        fill_opacity=0.18,
    )
    cw = max(ax.x(c) - ax.x(-c), 2)
    with ax.mark(f"constant region: |gamma| < {c:g}"):
        ax.rect(ax.x(0) - cw / 2, ax.mt, cw, ax.ph, fill=REASON_COLORS["constant"], fill_opacity=0.25)
    ax.frame("gamma (BN weight)", "beta (BN bias)")
    cx = np.clip(np.round((np.clip(g, ax.x0, ax.x1) - ax.x0) / (ax.x1 - ax.x0) * ax.pw / 2), 0, None).astype(
        int
    )
    cy = np.clip(np.round((np.clip(b, ax.y0, ax.y1) - ax.y0) / (ax.y1 - ax.y0) * ax.ph / 2), 0, None).astype(
        int
    )
    alive = reason == ""
    # Alive channels as a density image (opacity ~ log count): a YOLO11x's 47k channels stay a few KB.
    gw, gh_ = int(ax.pw // 2) + 1, int(ax.ph // 2) + 1
    counts = np.zeros((gh_, gw))
    np.add.at(counts, (np.minimum(cy[alive], gh_ - 1), np.minimum(cx[alive], gw - 1)), 1)
    if counts.any():
        rgba = np.zeros((gh_, gw, 4), dtype=np.uint8)
        rgba[..., :3] = (74, 93, 126)
        rgba[..., 3] = np.where(counts > 0, 90 + 165 * np.log1p(counts) / np.log1p(counts.max()), 0).round()
        with ax.mark(f"{int(alive.sum()):,} alive channels", name="alive", value=int(alive.sum())):
            ax.image(ax.ml, ax.mt + ax.ph - 2 * gh_, 2 * gw, 2 * gh_, png_uri(rgba[::-1], "RGBA"))
    for r, color in REASON_COLORS.items():
        m = reason == r
        with ax.mark(
            f"{r}: {int(m.sum())} channels",
            name=r,
            value=int(m.sum()),
            fill=color,
            stroke="#000",
            stroke_width=0.4,
        ):
            for i, j in np.unique(np.stack([cx[m], cy[m]], 1), axis=0):
                ax.circle(ax.ml + 2 * i + 1, ax.mt + ax.ph - 2 * j - 1, 2.5)
    clipped = int(((g < ax.x0) | (g > ax.x1) | (b < ax.y0) | (b > ax.y1)).sum())
    legend(ax, [("alive", BOX_COLOR), ("constant", REASON_COLORS["constant"]), ("off", REASON_COLORS["off"])])
    return ax.svg("gamma vs beta of every channel", "plot-scatter"), clipped


def _heatmap_lines(widths: np.ndarray) -> tuple[int, int, int]:
    """(channels per line, channels per pixel column, columns): rows wider than most wrap onto
    further lines, so that one very wide layer (a classifier's 1280-channel head) does not
    squeeze every other row into a corner."""
    cap = max(1, int(np.quantile(widths, 0.9, method="higher"))) if widths.size else 1
    binsz = max(1, math.ceil(cap / 512))
    return cap, binsz, math.ceil(cap / binsz)


def heatmap_plot(layers: pd.DataFrame, channels: pd.DataFrame) -> str:
    """Layer x channel image of log10 |effective scale|; dead channels red. A pixel column is a
    channel (or a bin of channels, red if any is dead); rows wider than the 90th percentile of
    widths continue on the lines below."""
    widths = layers["channels"].to_numpy(dtype=np.int64)
    cap, binsz, cols = _heatmap_lines(widths)
    with np.errstate(all="ignore"):
        s = np.log10(np.clip(np.abs(channels["scale"].to_numpy(dtype=float)), 1e-12, None))
    fin = s[np.isfinite(s)]
    lo, hi = (float(np.quantile(fin, 0.01)), float(np.quantile(fin, 0.99))) if fin.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1
    dead = channels["dead"].to_numpy(dtype=bool)
    nlines = np.maximum(1, -(-widths // cap))
    img = np.full((int(nlines.sum()), cols, 3), 235, dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(widths)])
    first = np.concatenate([[0], np.cumsum(nlines)])
    for r in range(len(layers)):  # one vectorised op per line
        for ln in range(nlines[r]):
            a = starts[r] + ln * cap
            b = min(a + cap, starts[r + 1])
            k, pad = -(-(b - a) // binsz), -(b - a) % binsz
            v = np.concatenate([s[a:b], np.full(pad, np.nan)]).reshape(k, binsz)
            d = np.concatenate([dead[a:b], np.zeros(pad, bool)]).reshape(k, binsz).any(1)
            with np.errstate(all="ignore"):
                m = np.nanmean(v, 1)
            img[first[r] + ln, :k] = viridis((np.nan_to_num(m, nan=lo) - lo) / (hi - lo))
            img[first[r] + ln, :k][d] = DEAD_RGB
    total = int(nlines.sum())
    row_h = max(1, min(8, 640 // max(total, 1)))
    ax = Axes(WIDTH, total * row_h + 72, (0, cap), (0, total), margin=(28, 130, 44, 64))  # 1 line = row_h px
    ax.image(ax.ml, ax.mt, ax.pw, ax.ph, png_uri(np.repeat(img, row_h, axis=0), "RGB"))
    _heatmap_rows(ax, layers, dead, starts, first, nlines, cap, total)
    step = max(1, math.ceil(len(layers) / 16))
    ticked = sorted(set(range(0, len(layers), step)) | set(np.flatnonzero(nlines > 1).tolist()))
    yt = [(total - first[i] - 0.5, str(int(layers["layer"].iloc[i]))) for i in ticked]
    wrapped = f"; rows of more than {cap:,} channels continue below" if nlines.max(initial=1) > 1 else ""
    ax.frame(
        f"channel index{'' if binsz == 1 else f' (bins of {binsz} channels)'}{wrapped}",
        "BN layer (Ultralytics index)",
        yticks=yt,
        grid=False,
    )
    x = ax.w - ax.mr + 30
    ax.image(x, ax.mt, 14, 200, png_uri(VIRIDIS[::-1, None, :], "RGB"))
    ax.text(x + 18, ax.mt + 8, tick_label(10**hi), class_="tick")
    ax.text(x + 18, ax.mt + 200, tick_label(10**lo), class_="tick")
    ax.text(x, ax.mt + 218, "|scale|", class_="tick")
    ax.rect(x, ax.mt + 230, 14, 10, fill=DEAD_HEX)
    ax.text(x + 18, ax.mt + 239, "dead", class_="tick")
    return ax.svg("Layer x channel map of |effective scale| (dead channels in red)", "plot-heatmap")


def _heatmap_rows(
    ax: Axes,
    layers: pd.DataFrame,
    dead: np.ndarray,
    starts: np.ndarray,
    first: np.ndarray,
    nlines: np.ndarray,
    cap: int,
    total: int,
) -> None:
    """An invisible mark over each layer's lines: its tooltip, and its channel and dead counts."""
    for r, name in enumerate(layers["name"]):
        c, nd = int(starts[r + 1] - starts[r]), int(dead[starts[r] : starts[r + 1]].sum())
        wrap = f", on {nlines[r]} lines of {cap:,}" if nlines[r] > 1 else ""
        y0, y1 = ax.y(total - first[r]), ax.y(total - first[r] - nlines[r])
        with ax.mark(f"{name}: {c:,} channels, {nd} dead{wrap}", name=name, value=[c, nd]):
            ax.rect(ax.ml, y0, ax.pw * min(c, cap) / cap, y1 - y0, fill="#000", fill_opacity=0)
            if nlines[r] > 1:  # a bracket on the right groups the lines of a wrapped layer
                ax.line(
                    ax.ml + ax.pw + 4, y0 + 0.5, ax.ml + ax.pw + 4, y1 - 0.5, stroke="#555", stroke_width=2
                )


def histogram_plot(
    values: np.ndarray,
    dead: np.ndarray,
    *,
    title: str,
    xlabel: str,
    plot_id: str,
    bins: int = 60,
    vlines: list[tuple[float, str]] | None = None,
) -> str:
    """Histogram of ``values`` over all channels, dead channels stacked in red; ``vlines``: (x,
    label) reference lines (the log10 eps on the variance histogram)."""
    ok = np.isfinite(values)
    v, d = values[ok], dead[ok]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    for x, _ in vlines or []:
        lo, hi = min(lo, x), max(hi, x)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    alive_c, _ = np.histogram(v[~d], edges)
    dead_c, _ = np.histogram(v[d], edges)
    ax = Axes(WIDTH // 2 - 10, 230, (lo, hi), (0, float((alive_c + dead_c).max()) * 1.08 or 1.0))
    ax.frame(xlabel, "channels")
    for i in range(bins):
        a, dd = int(alive_c[i]), int(dead_c[i])
        x0, w = ax.x(edges[i]), max(ax.x(edges[i + 1]) - ax.x(edges[i]) - 0.5, 0.5)
        tip = f"[{tick_label(edges[i])}, {tick_label(edges[i + 1])}): {a + dd} channels, {dd} dead"
        with ax.mark(tip, value=[edges[i], edges[i + 1], a, dd]):
            if a:
                ax.rect(x0, ax.y(a), w, ax.y(0) - ax.y(a), fill=BOX_COLOR)
            if dd:
                ax.rect(x0, ax.y(a + dd), w, max(ax.y(a) - ax.y(a + dd), 1), fill=REASON_COLORS["constant"])
    for x, label in vlines or []:
        ax.line(
            ax.x(x), ax.mt, ax.x(x), ax.mt + ax.ph, stroke=EPS_COLOR, stroke_dasharray="5 3", stroke_width=1.2
        )
        ax.text(ax.x(x) + 4, ax.mt + 12, label, class_="tick", fill=EPS_COLOR)
    if not v.size:
        ax.note("no finite values")
    legend(ax, [("alive", BOX_COLOR), ("dead", REASON_COLORS["constant"])])
    return ax.svg(title, plot_id)
