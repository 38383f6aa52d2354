"""The experiment page: the variants table and the per-layer sensitivity ranking."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def render_html(res: Any) -> str:
    """A self-contained page: the results table and, if run, the sensitivity ranking as bars."""
    from html import escape

    from yolobn.report.svg import REASON_COLORS, Axes

    def table(df: pd.DataFrame) -> str:
        head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(_fmt(v))}</td>" for v in r) + "</tr>"
            for r in df.itertuples(index=False)
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [
        f"<h1>yolobn experiment — {escape(str(res.meta.get('path') or res.meta.get('source')))}</h1>",
        f"<p>data {escape(str(res.config['data']))} · imgsz {res.config['imgsz']} · validated with Ultralytics' "
        "validator on unfused copies (the swapped modules are what ran)</p>",
        "<h2>Variants</h2>",
        table(res.results),
    ]
    if res.sensitivity is not None and len(res.sensitivity):
        s = res.sensitivity
        n = len(s)
        lo = min(float(s["delta"].min()), 0.0)
        ax = Axes(1000, 60 + 14 * n, (lo * 1.05 if lo < 0 else -0.01, 0.0), (0, n), margin=(28, 20, 40, 260))
        for i, r in enumerate(s.itertuples()):
            y = ax.y(n - i)
            x0, x1 = ax.x(min(r.delta, 0)), ax.x(0)
            ax.add(
                f'<rect x="{x0:.1f}" y="{y + 2:.1f}" width="{max(x1 - x0, 0.5):.1f}" height="10" fill="{REASON_COLORS["constant"]}"/>'
            )
            ax.add(
                f'<text x="{ax.ml - 6}" y="{y + 11:.1f}" class="tick" text-anchor="end">{escape(r.layer)}</text>'
            )
        ax.frame(f"change in {res.metric} when only this layer is swapped", "", yticks=[], grid=False)
        parts += [
            "<h2>Per-layer sensitivity</h2>",
            ax.svg(f"Sensitivity to {s['impl'].iloc[0]}, one BN layer at a time", "plot-sensitivity"),
            table(s),
        ]
    css = (
        "body{font:14px system-ui,sans-serif;max-width:1100px;margin:auto;padding:16px}table{border-collapse:collapse;"
        "font-size:12.5px;margin:8px 0}td,th{border-bottom:1px solid #e3e7ec;padding:3px 8px;text-align:right}"
        "th{background:#f3f5f8}td:first-child,th:first-child{text-align:left}svg .tick{font-size:11px;fill:#444}"
        "svg .label{font-size:12px}svg .title{font-size:13px;font-weight:600}svg .frame{fill:none;stroke:#8893a2}"
        "svg .axis{stroke:#555}svg .grid{stroke:#e3e7ec}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>yolobn experiment</title><style>{css}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)
