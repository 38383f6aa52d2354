"""The self-contained HTML report: header, plots (inline SVG, one inline PNG heatmap), a sortable
and filterable per-layer table with per-channel details.

The page makes no network request: no CDN, no web fonts, no external images; styles, scripts and
data are inline. Every number comes from the same ``Inspection`` frames as the CSV/JSON files.
"""

from __future__ import annotations

import base64
import io
import json
import math
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from yolobn._version import __version__
from yolobn.report.svg import (
    BOX_COLOR,
    EPS_COLOR,
    REASON_COLORS,
    ROLE_COLORS,
    Axes,
    fmt,
    legend,
    role_bands,
    tick_label,
)

WIDTH = 1100
REASON_CODE = {"": 0, "constant": 1, "off": 2}
DETAIL_COLUMNS = ("gamma", "beta", "running_mean", "running_var")
OBSERVED_DETAIL_COLUMNS = (
    "obs_pre_mean", "obs_pre_std", "obs_positive_share", "obs_post_std", "mean_shift", "log_var_ratio",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# plots


def _layer_ticks(n: int, layers: pd.DataFrame) -> list[tuple[float, str]]:
    step = max(1, int(math.ceil(n / 12)))
    return [(i, str(int(layers["layer"].iloc[i]))) for i in range(0, n, step)]


def depth_plot(layers: pd.DataFrame, q: str, *, log: bool, title: str, ylabel: str, plot_id: str) -> str:
    """One box per BN layer along the depth: p05-p95 whiskers, p25-p75 box, median line."""
    n = len(layers)
    cols = [f"{q}_{s}" for s in ("p05", "p25", "p50", "p75", "p95")]
    vals = layers[cols].to_numpy(dtype=float)
    if log:
        vals = np.log10(np.clip(vals, 1e-12, None))
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = (hi - lo) * 0.05 or 0.5
    ax = Axes(WIDTH, 260, (-0.5, n - 0.5), (lo - pad, hi + pad))
    role_bands(ax, list(layers["role"]))
    yt = None
    if log:
        yt = [(v, f"1e{int(v)}") for v in range(math.ceil(lo - pad), math.floor(hi + pad) + 1)]
        if len(yt) > 8:
            yt = yt[:: math.ceil(len(yt) / 8)]
    ax.frame(
        "BN layer (model order; tick = Ultralytics layer index)",
        ylabel,
        xticks=_layer_ticks(n, layers),
        yticks=yt,
    )
    bw = max(1.0, min(8.0, ax.pw / max(n, 1) * 0.7))
    names = list(layers["name"])
    for i, (p05, p25, p50, p75, p95) in enumerate(vals):
        if not np.isfinite([p05, p25, p50, p75, p95]).all():
            continue
        x = ax.x(i)
        tip = f"{names[i]}: p05 {tick_label(p05)} · p25 {tick_label(p25)} · median {tick_label(p50)} · p75 {tick_label(p75)} · p95 {tick_label(p95)}"
        if log:
            tip += " (log10)"
        top, bot = ax.y(p75), ax.y(p25)
        ax.add(
            f"<g><title>{escape(tip)}</title>"
            f'<line x1="{fmt(x)}" x2="{fmt(x)}" y1="{fmt(ax.y(p95))}" y2="{fmt(ax.y(p05))}" stroke="{BOX_COLOR}" stroke-width="1"/>'
            f'<rect x="{fmt(x - bw / 2)}" y="{fmt(top)}" width="{fmt(bw)}" height="{fmt(max(bot - top, 1))}" fill="{BOX_COLOR}" fill-opacity="0.55"/>'
            f'<line x1="{fmt(x - bw / 2)}" x2="{fmt(x + bw / 2)}" y1="{fmt(ax.y(p50))}" y2="{fmt(ax.y(p50))}" stroke="#111" stroke-width="1.2"/></g>'
        )
    legend(ax, [(r, ROLE_COLORS[r]) for r in ("backbone", "neck", "head") if r in set(layers["role"])])
    return ax.svg(title, plot_id)


def _share_axes(layers: pd.DataFrame, top: float) -> tuple[Axes, float]:
    """Axes for a per-layer share of channels (0 to ``top``), with role bands; and the bar width."""
    n = len(layers)
    ax = Axes(WIDTH, 240, (-0.5, n - 0.5), (0, top))
    role_bands(ax, list(layers["role"]))
    ax.frame(
        "BN layer (model order; tick = Ultralytics layer index)",
        "share of channels",
        xticks=_layer_ticks(n, layers),
        yticks=[(v, f"{v:.0%}" if top >= 0.1 else f"{v:.1%}") for v in _share_ticks(top)],
    )
    return ax, max(1.0, ax.pw / max(n, 1) * 0.8)


def _stacked_bar(ax: Axes, i: int, bw: float, parts: list[tuple[float, str]]) -> list[str]:
    """The rects of layer ``i``'s bar: (share, colour) stacked from 0, empty shares skipped."""
    x, base = ax.x(i) - bw / 2, ax.y(0)
    rects = []
    for share, color in parts:
        if share > 0:
            h = base - ax.y(share)
            rects.append(
                f'<rect x="{fmt(x)}" y="{fmt(base - h)}" width="{fmt(bw)}" height="{fmt(max(h, 1))}" fill="{color}"/>'
            )
            base -= h
    return rects


def dead_share_plot(layers: pd.DataFrame) -> str:
    n = len(layers)
    ch = layers["channels"].to_numpy(dtype=float)
    cs = layers["constant"].to_numpy(dtype=float) / np.maximum(ch, 1)
    off = layers["off"].to_numpy(dtype=float) / np.maximum(ch, 1)
    eps = layers["eps_share"].to_numpy(dtype=float)
    top = max(0.05, float(np.max(cs + off, initial=0)), float(np.max(eps, initial=0)))
    ax, bw = _share_axes(layers, min(1.0, top * 1.1))
    names = list(layers["name"])
    for i in range(n):
        tip = f"{names[i]}: constant {int(layers['constant'].iloc[i])}, off {int(layers['off'].iloc[i])}, eps-dominated {int(layers['eps_dominated'].iloc[i])} of {int(ch[i])}"
        parts = _stacked_bar(ax, i, bw, [(cs[i], REASON_COLORS["constant"]), (off[i], REASON_COLORS["off"])])
        if eps[i] > 0:
            parts.append(f'<circle cx="{fmt(ax.x(i))}" cy="{fmt(ax.y(eps[i]))}" r="2.2" fill="{EPS_COLOR}"/>')
        if parts:
            ax.add(f"<g><title>{escape(tip)}</title>{''.join(parts)}</g>")
    legend(
        ax,
        [
            ("constant", REASON_COLORS["constant"]),
            ("off", REASON_COLORS["off"]),
            ("eps-dominated (dot)", EPS_COLOR),
        ],
    )
    return ax.svg("Dead channels per layer, stacked by reason", "plot-dead")


CONFUSION_COLORS = {"both dead": "#c0392b", "predicted only": "#e69f00", "observed only": "#8e44ad"}


def confusion_plot(layers: pd.DataFrame) -> str:
    """Per layer: channels dead on the images and by the data-free prediction, stacked by agreement."""
    n = len(layers)
    ch = np.maximum(layers["channels"].to_numpy(dtype=float), 1)
    parts_by = {
        "both dead": layers["dead_both"].to_numpy(dtype=float) / ch,
        "predicted only": layers["dead_predicted_only"].to_numpy(dtype=float) / ch,
        "observed only": layers["dead_observed_only"].to_numpy(dtype=float) / ch,
    }
    total = sum(parts_by.values())
    ax, bw = _share_axes(layers, min(1.0, max(0.05, float(np.max(total, initial=0))) * 1.1))
    names = list(layers["name"])
    for i in range(n):
        counts = {k: int(round(v[i] * ch[i])) for k, v in parts_by.items()}
        tip = f"{names[i]}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" of {int(ch[i])}"
        rects = _stacked_bar(ax, i, bw, [(v[i], CONFUSION_COLORS[k]) for k, v in parts_by.items()])
        if rects:
            ax.add(f"<g><title>{escape(tip)}</title>{''.join(rects)}</g>")
    legend(ax, list(CONFUSION_COLORS.items()))
    return ax.svg("Dead channels on the images vs the data-free prediction", "plot-confusion")


def drift_plot(layers: pd.DataFrame) -> str:
    """Per layer: mean and max channel drift (Gaussian KL of the observed BN input vs its running stats)."""
    n = len(layers)
    mean = layers["drift"].to_numpy(dtype=float)
    mx = layers["drift_max"].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        lm = np.log10(np.clip(mean, 1e-6, None))
        lx = np.log10(np.clip(mx, 1e-6, None))
    finite = np.isfinite(lm)
    lo = float(np.floor(min(np.min(lm[finite], initial=-2), -2)))
    hi = float(np.ceil(max(np.max(lx[np.isfinite(lx)], initial=0), 0)))
    ax = Axes(WIDTH, 240, (-0.5, n - 0.5), (lo, hi))
    role_bands(ax, list(layers["role"]))
    ax.frame(
        "BN layer (model order; tick = Ultralytics layer index)",
        "drift (log10 KL)",
        xticks=_layer_ticks(n, layers),
        yticks=[(v, tick_label(10**v)) for v in range(int(lo), int(hi) + 1)],
    )
    names = list(layers["name"])
    bw = max(1.0, ax.pw / max(n, 1) * 0.8)
    for i in range(n):
        if not math.isfinite(lm[i]):
            continue
        tip = (f"{names[i]}: mean drift {mean[i]:.3g}, max {mx[i]:.3g}, |mean shift| {layers['mean_shift_abs'].iloc[i]:.3g}, "
               f"|ln var ratio| {layers['log_var_ratio_abs'].iloc[i]:.3g}")  # fmt: skip
        color = "#c0392b" if mean[i] >= 1 else ("#e69f00" if mean[i] >= 0.1 else BOX_COLOR)
        y0, y1 = ax.y(lo), ax.y(lm[i])
        ax.add(f'<g><title>{escape(tip)}</title><rect x="{fmt(ax.x(i) - bw / 2)}" y="{fmt(y1)}" width="{fmt(bw)}" '
               f'height="{fmt(max(y0 - y1, 1))}" fill="{color}"/><circle cx="{fmt(ax.x(i))}" cy="{fmt(ax.y(lx[i]))}" '
               f'r="2" fill="#333"/></g>')  # fmt: skip
    legend(ax, [("mean over channels (bar)", BOX_COLOR), ("max channel (dot)", "#333")])
    return ax.svg("BN statistic drift per layer: the images vs the running statistics", "plot-drift")


def _share_ticks(top: float) -> list[float]:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25):
        if top / step <= 6:
            break
    return [round(k * step, 6) for k in range(int(top / step) + 1)]


def scatter_plot(channels: pd.DataFrame, th: dict[str, float]) -> str:
    """gamma vs beta of every channel, binned to 2-pixel cells; dead channels drawn on top."""
    g = channels["gamma"].to_numpy(dtype=float)
    b = channels["beta"].to_numpy(dtype=float)
    ok = np.isfinite(g) & np.isfinite(b)
    g, b = g[ok], b[ok]
    reason = channels["dead_reason"].to_numpy()[ok]
    if g.size == 0:
        g, b, reason = np.zeros(1), np.zeros(1), np.array([""])
    gl, gh = np.quantile(g, [0.001, 0.999])
    bl, bh = np.quantile(b, [0.001, 0.999])
    gl, gh = min(gl, -0.05, float(g[reason != ""].min(initial=0))), max(gh, 0.05)
    bl, bh = min(bl, float(b[reason != ""].min(initial=0))), max(bh, 0.05)
    gp, bp = (gh - gl) * 0.06, (bh - bl) * 0.06
    ax = Axes(WIDTH // 2 + 60, 420, (gl - gp, gh + gp), (bl - bp, bh + bp))
    # dead regions (assuming running_var >> eps, so the output std is ~|gamma|)
    k = th["off_sigma"]
    x0, x1 = ax.x0, ax.x1
    poly = [(x0, -k * abs(x0)), (0, 0), (x1, -k * abs(x1)), (x1, ax.y0), (x0, ax.y0)]
    pts = " ".join(f"{fmt(ax.x(px))},{fmt(ax.y(max(min(py, ax.y1), ax.y0)))}" for px, py in poly)
    ax.add(
        f'<polygon points="{pts}" fill="{REASON_COLORS["off"]}" fill-opacity="0.18"><title>off region: beta + {k:g}·|gamma| &lt; 0</title></polygon>'
    )
    cw = max(ax.x(th["const_std"]) - ax.x(-th["const_std"]), 2)
    ax.add(
        f'<rect x="{fmt(ax.x(0) - cw / 2)}" y="{fmt(ax.mt)}" width="{fmt(cw)}" height="{fmt(ax.ph)}" fill="{REASON_COLORS["constant"]}" fill-opacity="0.25"><title>constant region: |gamma| &lt; {th["const_std"]:g}</title></rect>'
    )
    ax.frame("gamma (BN weight)", "beta (BN bias)")
    cx = np.clip(np.round((np.clip(g, ax.x0, ax.x1) - ax.x0) / (ax.x1 - ax.x0) * ax.pw / 2), 0, None).astype(
        int
    )
    cy = np.clip(np.round((np.clip(b, ax.y0, ax.y1) - ax.y0) / (ax.y1 - ax.y0) * ax.ph / 2), 0, None).astype(
        int
    )
    alive = reason == ""
    # Alive channels as a density image (2-pixel cells, opacity ~ log count): tens of thousands of
    # channels stay a few KB, and dense clusters still read as dense.
    gw, gh = int(ax.pw // 2) + 1, int(ax.ph // 2) + 1
    counts = np.zeros((gh, gw))
    np.add.at(counts, (np.minimum(cy[alive], gh - 1), np.minimum(cx[alive], gw - 1)), 1)
    if counts.any():
        alpha = np.where(counts > 0, 90 + 165 * np.log1p(counts) / np.log1p(counts.max()), 0)
        rgba = np.zeros((gh, gw, 4), dtype=np.uint8)
        rgba[..., :3] = (74, 93, 126)
        rgba[..., 3] = alpha.round().astype(np.uint8)
        ax.add(
            f'<image x="{fmt(ax.ml)}" y="{fmt(ax.mt + ax.ph - 2 * gh)}" width="{2 * gw}" height="{2 * gh}" '
            f'preserveAspectRatio="none" style="image-rendering:pixelated" href="{_png_uri(rgba[::-1], "RGBA")}"/>'
        )
    for r, color in REASON_COLORS.items():
        m = reason == r
        if m.any():
            cells = np.unique(np.stack([cx[m], cy[m]], 1), axis=0)
            dots = "".join(
                f'<circle cx="{fmt(ax.ml + 2 * i + 1)}" cy="{fmt(ax.mt + ax.ph - 2 * j - 1)}" r="2.5"/>'
                for i, j in cells
            )
            ax.add(f'<g fill="{color}" stroke="#000" stroke-width="0.4"><title>{r}</title>{dots}</g>')
    clipped = int(((g < ax.x0) | (g > ax.x1) | (b < ax.y0) | (b > ax.y1)).sum())
    legend(ax, [("alive", BOX_COLOR), ("constant", REASON_COLORS["constant"]), ("off", REASON_COLORS["off"])])
    svg = ax.svg("gamma vs beta of every channel", "plot-scatter")
    return svg, clipped


def _viridis(t: np.ndarray) -> np.ndarray:
    """A 5-stop approximation of viridis, t in [0, 1] -> uint8 RGB."""
    stops = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=float)
    t = np.clip(t, 0, 1) * (len(stops) - 1)
    i = np.minimum(t.astype(int), len(stops) - 2)
    f = (t - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).round().astype(np.uint8)


def _png_uri(pixels: np.ndarray, mode: str) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def heatmap_plot(layers: pd.DataFrame, channels: pd.DataFrame) -> str:
    """Layer x channel image of log10 |effective scale|; dead channels red. Channels are binned so
    the widest layer fits 512 columns (a bin shows its mean, and red if any channel in it is dead)."""
    from PIL import Image

    n = len(layers)
    max_ch = int(layers["channels"].max()) if n else 1
    binsz = max(1, math.ceil(max_ch / 512))
    cols = math.ceil(max_ch / binsz)
    s = np.log10(np.clip(np.abs(channels["scale"].to_numpy(dtype=float)), 1e-12, None))
    fin = s[np.isfinite(s)]
    lo, hi = (float(np.quantile(fin, 0.01)), float(np.quantile(fin, 0.99))) if fin.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1
    img = np.full((n, cols, 3), 235, dtype=np.uint8)
    dead = channels["dead"].to_numpy(dtype=bool)
    starts = np.concatenate([[0], np.cumsum(layers["channels"].to_numpy())])
    for r in range(n):  # one vectorised op per layer
        a, b = starts[r], starts[r + 1]
        c = b - a
        k = math.ceil(c / binsz)
        pad = k * binsz - c
        v = np.concatenate([s[a:b], np.full(pad, np.nan)]).reshape(k, binsz)
        d = np.concatenate([dead[a:b], np.zeros(pad, bool)]).reshape(k, binsz).any(1)
        with np.errstate(all="ignore"):
            m = np.nanmean(v, 1)
        img[r, :k] = _viridis((np.nan_to_num(m, nan=lo) - lo) / (hi - lo))
        img[r, :k][d] = (220, 20, 30)
    row_h = max(1, min(8, 640 // max(n, 1)))
    pil = Image.fromarray(img, "RGB").resize((cols, n * row_h), Image.NEAREST)
    data = _png_uri(np.asarray(pil), "RGB")
    h = n * row_h
    ax = Axes(WIDTH, h + 80, (0, max_ch), (0, n), margin=(28, 130, 44, 64))
    ax.add(
        f'<image x="{fmt(ax.ml)}" y="{fmt(ax.mt)}" width="{fmt(ax.pw)}" height="{fmt(ax.ph)}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated" href="{data}"/>'
    )
    step = max(1, math.ceil(n / 16))
    yt = [(n - i - 0.5, str(int(layers["layer"].iloc[i]))) for i in range(0, n, step)]  # row 0 at the top
    ax.frame(
        f"channel index{'' if binsz == 1 else f' (bins of {binsz} channels)'}",
        "BN layer (Ultralytics index)",
        yticks=yt,
        grid=False,
    )
    # colour bar
    x = ax.w - ax.mr + 30
    for k in range(50):
        c = _viridis(np.array([1 - k / 49]))[0]
        ax.add(
            f'<rect x="{x}" y="{fmt(ax.mt + k * 4)}" width="14" height="4" fill="rgb({c[0]},{c[1]},{c[2]})"/>'
        )
    ax.add(f'<text x="{x + 18}" y="{fmt(ax.mt + 8)}" class="tick">{tick_label(10**hi)}</text>')
    ax.add(f'<text x="{x + 18}" y="{fmt(ax.mt + 200)}" class="tick">{tick_label(10**lo)}</text>')
    ax.add(f'<text x="{x}" y="{fmt(ax.mt + 218)}" class="tick">|scale|</text>')
    ax.add(f'<rect x="{x}" y="{fmt(ax.mt + 230)}" width="14" height="10" fill="rgb(220,20,30)"/>')
    ax.add(f'<text x="{x + 18}" y="{fmt(ax.mt + 239)}" class="tick">dead</text>')
    return ax.svg("Layer x channel map of |effective scale| (dead channels in red)", "plot-heatmap")


def histogram_plot(
    values: np.ndarray, dead: np.ndarray, *, title: str, xlabel: str, plot_id: str, bins: int = 60
) -> str:
    ok = np.isfinite(values)
    v, d = values[ok], dead[ok]
    if v.size == 0:
        v, d = np.zeros(1), np.zeros(1, bool)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    alive_c, _ = np.histogram(v[~d], edges)
    dead_c, _ = np.histogram(v[d], edges)
    top = float((alive_c + dead_c).max()) * 1.08 or 1.0
    ax = Axes(WIDTH // 2 - 10, 230, (lo, hi), (0, top))
    ax.frame(xlabel, "channels")
    for i in range(bins):
        x0, x1 = ax.x(edges[i]), ax.x(edges[i + 1])
        w = max(x1 - x0 - 0.5, 0.5)
        a, dd = int(alive_c[i]), int(dead_c[i])
        if a + dd == 0:
            continue
        tip = f"[{tick_label(edges[i])}, {tick_label(edges[i + 1])}): {a + dd} channels, {dd} dead"
        yb = ax.y(0)
        ya = ax.y(a)
        parts = (
            f'<rect x="{fmt(x0)}" y="{fmt(ya)}" width="{fmt(w)}" height="{fmt(yb - ya)}" fill="{BOX_COLOR}"/>'
        )
        if dd:
            yd = ax.y(a + dd)
            parts += f'<rect x="{fmt(x0)}" y="{fmt(yd)}" width="{fmt(w)}" height="{fmt(max(ya - yd, 1))}" fill="{REASON_COLORS["constant"]}"/>'
        ax.add(f"<g><title>{escape(tip)}</title>{parts}</g>")
    legend(ax, [("alive", BOX_COLOR), ("dead", REASON_COLORS["constant"])])
    return ax.svg(title, plot_id)


# --------------------------------------------------------------------------------------------------
# page

TABLE_COLUMNS = [
    # key, header, kind (num/text), formatter
    ("index", "#", "num"),
    ("name", "name", "text"),
    ("layer", "layer", "num"),
    ("block", "block", "text"),
    ("owner", "owner", "text"),
    ("role", "role", "text"),
    ("act", "act", "text"),
    ("channels", "ch", "num"),
    ("gamma_mean", "γ mean", "num"),
    ("gamma_std", "γ std", "num"),
    ("beta_mean", "β mean", "num"),
    ("running_var_p50", "var p50", "num"),
    ("max_abs_scale", "|scale| max", "num"),
    ("dead", "dead", "num"),
    ("dead_share", "dead %", "num"),
    ("constant", "constant", "num"),
    ("off", "off", "num"),
    ("eps_dominated", "eps-dom", "num"),
    ("findings", "findings", "text"),
]
OBSERVED_COLUMNS = [  # with --images, before "findings"
    ("obs_dead", "obs dead", "num"),
    ("dead_predicted_only", "pred only", "num"),
    ("dead_observed_only", "obs only", "num"),
    ("mean_shift_abs", "|Δμ|/σ", "num"),
    ("log_var_ratio_abs", "|ln var ratio|", "num"),
    ("drift", "drift", "num"),
]
INT_COLUMNS = ("index", "layer", "channels", "dead", "constant", "off", "eps_dominated", "obs_dead",
               "dead_predicted_only", "dead_observed_only")  # fmt: skip


def table_columns(layers: pd.DataFrame) -> list[tuple[str, str, str]]:
    if "obs_dead" not in layers.columns:
        return TABLE_COLUMNS
    return [*TABLE_COLUMNS[:-1], *OBSERVED_COLUMNS, TABLE_COLUMNS[-1]]


def _cell(key: str, kind: str, v: Any) -> str:
    if kind == "text":
        t = "" if v is None else str(v)
        return f'<td data-v="{escape(t)}">{escape(t)}</td>'
    x = float(v) if v is not None else float("nan")
    if not math.isfinite(x):
        return '<td data-v="" class="n">-</td>'
    if key == "dead_share":
        shown = f"{100 * x:.1f}%"
    elif float(x).is_integer() and key in INT_COLUMNS:
        shown = str(int(x))
    else:
        shown = f"{x:.4g}"
    return f'<td data-v="{x:.7g}" class="n">{shown}</td>'


def layer_table(layers: pd.DataFrame) -> str:
    columns = table_columns(layers)
    head = "".join(
        f'<th data-k="{k}" data-t="{t}" tabindex="0" title="sort by {escape(h)}">{escape(h)}</th>'
        for k, h, t in columns
    )
    rows = []
    for rec in layers.to_dict(orient="records"):
        cls = ' class="has-dead"' if rec["dead"] else (' class="has-finding"' if rec["findings"] else "")
        cells = "".join(_cell(k, t, rec[k]) for k, _, t in columns)
        rows.append(
            f'<tr{cls} data-name="{escape(rec["name"])}" data-role="{escape(rec["role"])}" '
            f'data-block="{escape(rec["block"])}" data-eps="{float(rec["eps"]):.7g}">{cells}</tr>'
        )
    return f'<table id="layers"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _json_numbers(x: np.ndarray) -> list[str]:
    """5 significant digits, JSON-valid (non-finite -> null); formatted once per column."""
    return [f"{v:.5g}" if math.isfinite(v) else "null" for v in x.tolist()]


def channel_data(channels: pd.DataFrame) -> str:
    """Per-channel values for the detail rows, compact JSON:
    name -> [gamma, beta, running_mean, running_var, flag], flag 0 alive, 1 constant, 2 off,
    3 eps-dominated (alive)."""
    if channels.empty:
        return "{}"
    # scale and out_std are not sent: the page recomputes them from gamma, var and the layer's eps.
    cols = [_json_numbers(channels[c].to_numpy(dtype=float)) for c in DETAIL_COLUMNS]
    reason = channels["dead_reason"].to_numpy()
    flag = np.where(reason == "constant", 1, np.where(reason == "off", 2, 0))
    flag = np.where((flag == 0) & channels["eps_dominated"].to_numpy(dtype=bool), 3, flag)
    cols.append([str(v) for v in flag.tolist()])
    if "obs_dead" in channels.columns:  # with --images: [..., pre mean, pre std, positive share,
        # post std, mean shift, ln var ratio, observed flag (0 alive, 1 flat, 2 never positive, 3 not run)]
        cols += [_json_numbers(channels[c].to_numpy(dtype=float)) for c in OBSERVED_DETAIL_COLUMNS]
        r = channels["obs_reason"].to_numpy()
        obs = np.where(r == "flat", 1, np.where(r == "never positive", 2, 0))
        obs = np.where(channels["obs_count"].to_numpy() == 0, 3, obs)
        cols.append([str(v) for v in obs.tolist()])
    names = channels["name"].to_numpy()
    cuts = [0, *(np.flatnonzero(names[1:] != names[:-1]) + 1).tolist(), len(names)]
    parts = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        arrays = ",".join("[" + ",".join(c[a:b]) + "]" for c in cols)
        parts.append(f"{json.dumps(str(names[a]))}:[{arrays}]")
    return ("{" + ",".join(parts) + "}").replace("</", "<\\/")


def _meta_rows(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    names = meta.get("names") or []
    rows = [
        ("file", meta.get("path") or meta.get("source")),
        ("sha256", meta.get("sha256")),
        ("task", meta.get("task") or "unknown"),
        ("family", meta.get("family")),
        ("classes", f"{meta.get('nc') or 0}: " + ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")),
        (
            "ultralytics",
            " ".join(x for x in (meta.get("ultralytics_version"), meta.get("date")) if x) or None,
        ),
        ("training", ", ".join(f"{k}={v}" for k, v in (meta.get("train_args") or {}).items()) or None),
        ("parameters", f"{meta.get('n_params', 0):,}"),
        (
            "BN layers",
            f"{summary['bn_layers']} ({', '.join(f'{v} {k}' for k, v in summary['bn_types'].items())})",
        ),
        ("channels", f"{summary['channels']:,}"),
    ]
    return "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows if v not in (None, "")
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1140px;padding:16px;color:#1d2430;background:#fff}
h1{font-size:22px;margin:6px 0}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #dde3ea;padding-bottom:3px}
.sub{color:#5b6676}.meta{border-collapse:collapse;margin:8px 0}.meta th{text-align:left;padding:2px 14px 2px 0;color:#5b6676;font-weight:600;vertical-align:top}
.meta td{padding:2px 0;word-break:break-all}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #dde3ea;border-radius:8px;padding:8px 14px;min-width:150px}.card b{display:block;font-size:22px}
.card.bad b{color:#b2182b}.card.ok b{color:#1a7f37}.findings li{color:#8a5a00}
figure{margin:10px 0 18px}figcaption{color:#5b6676;font-size:13px;max-width:1000px}
svg.plot{max-width:100%;height:auto;display:block}svg .grid{stroke:#e3e7ec;stroke-width:1}svg .axis{stroke:#555}
svg .frame{fill:none;stroke:#8893a2}svg .tick{font-size:11px;fill:#444}svg .label{font-size:12px;fill:#222}
svg .title{font-size:13px;font-weight:600;fill:#1d2430}svg .band{font-size:11px;fill:#7a8594}
.row2{display:flex;gap:10px;flex-wrap:wrap}
#controls{display:flex;gap:10px;align-items:center;margin:8px 0;flex-wrap:wrap}#controls input[type=search]{padding:4px 6px;width:240px}.tablewrap{overflow-x:auto}
table#layers{border-collapse:collapse;width:100%;font-size:12.5px}#layers th{position:sticky;top:0;background:#f3f5f8;cursor:pointer;user-select:none;text-align:left;padding:4px 5px;border-bottom:1px solid #cfd6df;white-space:nowrap}
#layers th.asc::after{content:' ▲'}#layers th.desc::after{content:' ▼'}#layers td{padding:3px 5px;border-bottom:1px solid #eef1f4}
#layers td.n{text-align:right;font-variant-numeric:tabular-nums}#layers tr.has-dead td:nth-child(14){color:#b2182b;font-weight:600}
#layers tr.has-finding td:last-child,#layers tr.has-dead td:last-child{color:#8a5a00}#layers tbody tr{cursor:pointer}#layers tbody tr:hover{background:#f7f9fc}
tr.detail td{background:#fafbfc;padding:6px 10px}table.ch{border-collapse:collapse;font-size:12px}table.ch td,table.ch th{padding:1px 8px;text-align:right;border-bottom:1px solid #eef1f4}
table.ch tr.dead td{color:#b2182b}table.ch tr.epsdom td{color:#2166ac}table.ch td.obsdead{color:#8e44ad;font-weight:600}.hidden{display:none}footer{margin:30px 0 10px;color:#7a8594;font-size:12px}
"""

JS = r"""
(function(){
const table=document.getElementById('layers'),tbody=table.tBodies[0];
const CH=JSON.parse(document.getElementById('channel-data').textContent);
const REASON=['','constant','off','eps-dominated'],OBS=['','flat','never positive','not run'];
let sortKey=null,sortDir=1;
function rows(){return Array.from(tbody.rows).filter(r=>!r.classList.contains('detail'));}
function closeDetails(){Array.from(tbody.querySelectorAll('tr.detail')).forEach(d=>d.remove());}
function sortBy(th){
  const idx=Array.from(th.parentNode.children).indexOf(th),num=th.dataset.t==='num';
  sortDir=(sortKey===idx)?-sortDir:1;sortKey=idx;
  Array.from(th.parentNode.children).forEach(h=>h.classList.remove('asc','desc'));
  th.classList.add(sortDir>0?'asc':'desc');closeDetails();
  const rs=rows();
  rs.sort((a,b)=>{let x=a.cells[idx].dataset.v,y=b.cells[idx].dataset.v;
    if(num){x=x===''?-Infinity:parseFloat(x);y=y===''?-Infinity:parseFloat(y);return (x-y)*sortDir||0;}
    return x.localeCompare(y)*sortDir;});
  rs.forEach(r=>tbody.appendChild(r));
}
Array.from(table.tHead.rows[0].cells).forEach(th=>{th.addEventListener('click',()=>sortBy(th));
  th.addEventListener('keydown',e=>{if(e.key==='Enter')sortBy(th);});});
const q=document.getElementById('filter-name'),role=document.getElementById('filter-role'),block=document.getElementById('filter-block'),
  deadOnly=document.getElementById('filter-dead'),count=document.getElementById('shown-count');
function applyFilter(){closeDetails();const t=q.value.trim().toLowerCase();let n=0;
  rows().forEach(r=>{const ok=(!t||r.dataset.name.toLowerCase().includes(t))&&(!role.value||r.dataset.role===role.value)&&
    (!block.value||r.dataset.block===block.value)&&(!deadOnly.checked||r.classList.contains('has-dead'));
    r.classList.toggle('hidden',!ok);if(ok)n++;});
  count.textContent=n+' of '+rows().length+' layers';}
[q,role,block,deadOnly].forEach(el=>el.addEventListener('input',applyFilter));applyFilter();
function fmt(x){return x===null?'-':(Math.abs(x)>=1e4||(Math.abs(x)<1e-3&&x!==0))?x.toExponential(3):+x.toPrecision(4)+'';}
tbody.addEventListener('click',e=>{const tr=e.target.closest('tr');if(!tr||tr.classList.contains('detail'))return;
  const nx=tr.nextElementSibling;if(nx&&nx.classList.contains('detail')){nx.remove();return;}
  const d=CH[tr.dataset.name];if(!d)return;const det=document.createElement('tr');det.className='detail';
  const td=document.createElement('td');td.colSpan=tr.cells.length;
  let h='<b>'+tr.dataset.name+'</b> — per-channel values (full precision in channels.csv)<table class="ch"><tr><th>ch</th><th>gamma</th><th>beta</th><th>running mean</th><th>running var</th><th>scale</th><th>out std</th><th>flag</th>'+
    (d.length>5?'<th>pre mean</th><th>pre std</th><th>positive</th><th>post std</th><th>Δμ/σ</th><th>ln var ratio</th><th>observed</th>':'')+'</tr>';
  const eps=parseFloat(tr.dataset.eps);
  for(let i=0;i<d[0].length;i++){const r=d[4][i],g=d[0][i],v=d[3][i];
    const sc=(g===null||v===null)?null:g/Math.sqrt(v+eps),sd=(g===null||v===null)?null:Math.abs(g)*Math.sqrt(v/(v+eps));
    h+='<tr class="'+(r===1||r===2?'dead':(r===3?'epsdom':''))+'"><td>'+i+'</td>';
    for(const x of [g,d[1][i],d[2][i],v,sc,sd])h+='<td>'+fmt(x)+'</td>';h+='<td>'+REASON[r]+'</td>';
    if(d.length>5){for(let k=5;k<11;k++)h+='<td>'+(k===7&&d[k][i]!==null?(100*d[k][i]).toFixed(1)+'%':fmt(d[k][i]))+'</td>';
      h+='<td class="'+(d[11][i]===1||d[11][i]===2?'obsdead':'')+'">'+OBS[d[11][i]]+'</td>';}
    h+='</tr>';}
  td.innerHTML=h+'</table>';det.appendChild(td);tr.after(det);});
})();
"""


def render_html(ins: Any) -> str:
    """The report page for an ``Inspection``."""
    layers, channels = ins.layers, ins.channels
    meta = ins.meta.to_dict()
    summary = ins.summary()
    th = ins.thresholds.to_dict()
    title = meta.get("path") or meta.get("source") or "model"
    stem = title.rsplit("/", 1)[-1]

    def fig(svg: str, caption: str) -> str:
        return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"

    by = summary["dead_by_reason"]
    cards = [
        ("BN layers", f"{summary['bn_layers']}", ""),
        ("channels", f"{summary['channels']:,}", ""),
        (
            "dead channels",
            f"{summary['dead']:,} ({summary['dead_share']:.1%})",
            "bad" if summary["dead"] else "ok",
        ),
        ("constant / off", f"{by['constant']:,} / {by['off']:,}", ""),
        ("eps-dominated", f"{summary['eps_dominated']:,} ({summary['eps_dominated_share']:.1%})", ""),
        (
            "layers with findings",
            f"{int((layers['findings'] != '').sum())}",
            "bad" if (layers["findings"] != "").any() else "ok",
        ),
    ]
    observed_html = ""
    obs = ins.observation
    if obs is not None:
        os_ = ins.observed_summary()
        c = os_["confusion"]
        cards += [
            (f"observed dead ({os_['images']} images)", f"{os_['observed_dead']:,} ({os_['observed_dead_share']:.1%})",
             "bad" if os_["observed_dead"] else "ok"),
            ("observed only / predicted only", f"{c['observed_only']:,} / {c['predicted_only']:,}",
             "bad" if c["observed_only"] or c["predicted_only"] else "ok"),
            ("mean drift (KL)", f"{os_['drift_mean']:.3g}", "bad" if os_["drift_mean"] >= 0.1 else "ok"),
        ]  # fmt: skip
        ot = obs.thresholds.to_dict()
        drifted = "".join(
            f"<li>{escape(d['name'])} ({escape(d['block'])}): drift {d['drift']:.3g}, |mean shift| "
            f"{d['mean_shift_abs']:.3g} running std, |ln var ratio| {d['log_var_ratio_abs']:.3g}</li>"
            for d in os_["most_drifted"]
        )
        observed_html = f"""
<h2>On the images</h2>
<p class="sub">{os_["images"]:,} images at imgsz {obs.imgsz}, preprocessed as Ultralytics' predict does (letterbox, RGB, 0-1).
A channel is observed dead when its post-activation std over all images and positions is below {ot["dead_std"]:g}
(<b>flat</b>), or when, before a SiLU/ReLU-like activation, at most {ot["min_positive"]:g} of its pre-activations are positive
(<b>never positive</b>). Drift compares the BN input seen on the images with running_mean / running_var: mean shift in running
standard deviations, ln of the variance ratio, and their Gaussian KL (0 when the stored statistics fit these images).
{escape(str(len(os_["layers_not_reached"])))} BN layer(s) not run by the forward pass.</p>
{fig(confusion_plot(layers), "Per layer, the share of channels dead on the images and/or by the data-free criteria: red both, orange predicted only (the data keeps them alive), purple observed only (the data-free criteria missed them). Hover a bar for the counts.")}
{fig(drift_plot(layers), "Mean channel drift per layer (bar; orange from 0.1, red from 1) and the most drifted channel (dot), log scale. High drift: the stored statistics do not describe these images (domain shift, or stale statistics after pruning or fine-tuning): yolobn recalibrate re-estimates them.")}
<p>Most drifted layers:</p><ul class="findings">{drifted}</ul>"""
    cards_html = "".join(
        f'<div class="card {c}"><span>{escape(k)}</span><b>{escape(v)}</b></div>' for k, v, c in cards
    )
    findings = [*summary["model_findings"], *(f"{f['name']}: {f['finding']}" for f in summary["findings"])]
    notes = meta.get("notes") or []
    findings_html = (
        "<ul class='findings'>" + "".join(f"<li>{escape(f)}</li>" for f in findings[:200]) + "</ul>"
        if findings
        else "<p>No health findings: no non-finite values, no untrained statistics, no layer with a majority of "
        "eps-dominated channels, no extreme scales.</p>"
    )
    if len(findings) > 200:
        findings_html += f"<p>... and {len(findings) - 200} more in the table below.</p>"

    g = channels["gamma"].to_numpy(dtype=float)
    b = channels["beta"].to_numpy(dtype=float)
    v = channels["running_var"].to_numpy(dtype=float)
    sc = channels["scale"].to_numpy(dtype=float)
    dead = channels["dead"].to_numpy(dtype=bool)
    with np.errstate(all="ignore"):
        lv = np.log10(np.clip(v, 1e-12, None))
        ls = np.log10(np.clip(np.abs(sc), 1e-12, None))
    scatter, clipped = scatter_plot(channels, th)

    depth = [
        ("gamma", False, "gamma (BN weight) per layer", "gamma", "plot-gamma"),
        ("beta", False, "beta (BN bias) per layer", "beta", "plot-beta"),
        ("running_mean", False, "running mean per layer", "running mean", "plot-mean"),
        ("running_var", True, "running variance per layer (log scale)", "running var", "plot-var"),
    ]
    depth_html = "".join(
        fig(
            depth_plot(layers, q, log=log, title=t, ylabel=yl, plot_id=pid),
            "Each box is one BN layer in model order: whiskers span the 5th-95th percentile of its channels, the box the "
            "25th-75th, the black line the median. Background: backbone, neck, head. "
            + (
                "Variances near or below eps (1e-3 in Ultralytics) mark eps-dominated channels."
                if q == "running_var"
                else "Look for layers whose spread collapses towards 0 or drifts far from the rest."
            ),
        )
        for q, log, t, yl, pid in depth
    )
    blocks = sorted(set(layers["block"]) - {""})
    roles = [r for r in ("backbone", "neck", "head", "unknown") if r in set(layers["role"])]
    body = f"""
<h1>yolobn report — {escape(stem)}</h1>
<div class="sub">BatchNorm statistics and data-free dead channels · yolobn {escape(__version__)}</div>
<table class="meta">{_meta_rows(meta, summary)}</table>
{"".join(f"<p class='sub'>note: {escape(n)}</p>" for n in notes)}
<div class="cards">{cards_html}</div>
<h2>Health findings</h2>{findings_html}
<p class="sub">Thresholds: {escape(", ".join(f"{k}={v:g}" for k, v in th.items()))}. A channel is <b>constant</b> when its estimated BN
output std |γ|·sqrt(var/(var+eps)) is below const_std; <b>off</b> when β + off_sigma·std &lt; 0 before a SiLU/ReLU-like activation;
<b>eps-dominated</b> (a finding, not dead) when running_var &lt; eps_factor·eps.</p>
<h2>Distributions along the depth</h2>
{depth_html}
<h2>Dead channels</h2>
{fig(dead_share_plot(layers), "Share of each layer's channels that are dead, stacked by reason (constant, off); blue dots: share of eps-dominated channels. Hover a bar for the counts.")}
<div class="row2">
{fig(scatter, f"Every channel's gamma against its beta (alive channels binned to 2-pixel cells; dead channels as circles). Shaded: the constant band |γ| &lt; {th['const_std']:g} and the off wedge β &lt; -{th['off_sigma']:g}·|γ| (exact when running_var ≫ eps)." + (f" {clipped} channels outside the 0.1-99.9 percentile view are drawn at its edge." if clipped else ""))}
</div>
{fig(heatmap_plot(layers, channels), "One row per BN layer, one column per channel (left-aligned, so wide layers extend further; grey: no channel). Colour: log10 |γ/sqrt(var+eps)|, clipped to the 1st-99th percentile; red: dead. Vertical stripes of extreme colour within a row point at channels a port or a quantiser will treat differently.")}
{observed_html}
<h2>Overall histograms</h2>
<div class="row2">
{fig(histogram_plot(g, dead, title="gamma, all channels", xlabel="gamma", plot_id="hist-gamma"), "Dead channels stacked in red.")}
{fig(histogram_plot(b, dead, title="beta, all channels", xlabel="beta", plot_id="hist-beta"), "Very negative betas before SiLU mean channels that rarely fire.")}
{fig(histogram_plot(lv, dead, title="running variance, all channels", xlabel="log10 running_var", plot_id="hist-var"), "Mass left of log10(eps) = -3 is eps-dominated.")}
{fig(histogram_plot(ls, dead, title="|effective scale|, all channels", xlabel="log10 |gamma / sqrt(var + eps)|", plot_id="hist-scale"), "The per-channel gain BN applies in eval mode.")}
</div>
<h2>Layers</h2>
<div id="controls">
<input id="filter-name" type="search" placeholder="filter by name, e.g. model.2." aria-label="filter by name">
<select id="filter-role" aria-label="role"><option value="">all roles</option>{"".join(f'<option value="{r}">{r}</option>' for r in roles)}</select>
<select id="filter-block" aria-label="block"><option value="">all blocks</option>{"".join(f'<option value="{escape(x)}">{escape(x)}</option>' for x in blocks)}</select>
<label><input id="filter-dead" type="checkbox"> only layers with dead channels</label>
<span id="shown-count" class="sub"></span>
</div>
<p class="sub">Click a column to sort, click a row for its per-channel values. Every number here is in layers.csv / channels.csv / summary.json beside this file.</p>
<div class="tablewrap">{layer_table(layers)}</div>
<footer>Generated by yolobn {escape(__version__)} from {escape(title)}{(" (sha256 " + escape(meta["sha256"][:16]) + "…)") if meta.get("sha256") else ""}. Self-contained: no network requests.</footer>
"""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>yolobn report — {escape(stem)}</title><style>{CSS}</style></head><body>{body}"
        f'<script type="application/json" id="channel-data">{channel_data(channels)}</script>'
        f"<script>{JS}</script></body></html>\n"
    )
