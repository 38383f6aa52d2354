"""The experiment page: the variants (charts and table, shared with swap.html) and the per-layer
sensitivity sweep: the ``top`` most sensitive layers as bars, the change of every layer along the
depth, and the full ranking as a table; in the same shell and look as the report."""

from __future__ import annotations

import math
import re
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from yolobn.report import charts
from yolobn.report.page import cards, figure, footer, heading, meta_table, page, signed, verdicts_html
from yolobn.report.variants_page import metric_label, metric_set, table, variant_cards, variant_sections

__all__ = ["metric_label", "render_html", "sensitivity_sections"]

TOP = 10  # the experiment file's sensitivity.top default


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """A dotted name as a sort key with numbers compared as numbers (model.2 before model.10)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in name.split("."))


def model_order(sens: pd.DataFrame) -> pd.DataFrame:
    """The sweep's rows in model order: by ``index`` when the sweep has it, else by the dotted names
    compared part by part (exact across Ultralytics layers; within one block it is name order)."""
    if "index" in sens.columns:
        return sens.sort_values("index", kind="stable").reset_index(drop=True)
    keys = sens["layer"].astype(str).map(_natural)
    return sens.iloc[sorted(range(len(sens)), key=lambda i: keys.iloc[i])].reset_index(drop=True)


def _layer_id(name: str, pos: int) -> int:
    m = re.match(r"model\.(\d+)(\.|$)", name)
    return int(m.group(1)) if m else pos


def sensitivity_sections(s: pd.DataFrame, metric: str, top: int) -> str:
    """The sweep: the ``top`` layers with the largest drop as bars, every layer's change along the
    depth, and the whole ranking as a table."""
    label = metric_label(metric)
    impl = str(s["impl"].iloc[0])
    ranked = s.sort_values(["delta", "layer"], kind="stable").reset_index(drop=True)
    head = ranked.head(top)
    bars = [
        charts.Bar(
            str(r.layer),
            float(r.delta),
            signed(float(r.delta)),
            f"{r.layer}: {label} {signed(float(r.delta))}",
            charts.WORSE if r.delta <= -5e-5 else (charts.BETTER if r.delta >= 5e-5 else charts.NEUTRAL),
        )
        for r in head.itertuples()
    ]
    top_svg = charts.hbar_chart(
        bars,
        title=f"The {len(head)} layers most sensitive to {impl}",
        plot_id="plot-sensitivity",
        xlabel=f"change in {label} when only this layer is swapped",
    )
    ordered = model_order(s)
    names = [str(n) for n in ordered["layer"]]
    deltas = ordered["delta"].to_numpy(dtype=float)
    depth_svg = charts.depth_bars(
        names,
        [_layer_id(n, i) for i, n in enumerate(names)],
        deltas,
        title=f"Change in {label} along the depth, one BN layer swapped at a time",
        plot_id="plot-sensitivity-depth",
        ylabel=f"Δ {label}",
        tips=[f"{n}: {signed(d)}" for n, d in zip(names, deltas, strict=True)],
        roles=list(ordered["role"]) if "role" in ordered.columns else None,
    )
    moved = int((np.abs(deltas[np.isfinite(deltas)]) >= 5e-5).sum())
    return "\n".join(
        [
            "<h2>Per-layer sensitivity</h2>",
            f'<p class="sub">{len(s)} BN layers swapped to {escape(impl)} one at a time; {moved} of them change '
            f"{escape(label)} by 0.0001 or more.</p>",
            figure(
                top_svg,
                f"The {len(head)} largest drops (the experiment's <code>sensitivity.top</code>), most "
                f"sensitive first: {escape(label)} with only that BN layer swapped, minus the baseline.",
            ),
            figure(
                depth_svg,
                "Every layer of the sweep in model order (tick: Ultralytics layer index): where along "
                "the depth the drop sits. Hover a bar for its layer.",
            ),
            table(ranked, {metric}, "sensitivity"),
        ]
    )


def render_html(res: Any) -> str:
    """A self-contained page: the variants as charts and a table and, if run, the sensitivity sweep."""
    source = str(res.meta.get("path") or res.meta.get("source"))
    stem = source.rsplit("/", 1)[-1]
    metrics = metric_set(res.results, res.metric)
    sens_cfg = res.config.get("sensitivity") or {}
    images = "box_agreement" in res.results.columns or "top1_agreement" in res.results.columns
    parts = [
        heading(f"yolobn experiment — {stem}", "BatchNorm implementations swapped and validated"),
        verdicts_html(res.verdicts()),
        meta_table(
            [
                ("model", source),
                ("data", res.config.get("data")),
                ("imgsz", res.config.get("imgsz")),
                ("main metric", metric_label(res.metric) if res.metric else None),
            ]
        ),
        cards(_cards(res)),
        '<p class="sub">Validated with Ultralytics\' validator on unfused copies: the swapped modules are what ran. '
        "Δ: change vs the baseline (green better, red worse).</p>",
        variant_sections(res.results, res.metric, "the images" if images else "a fixed random batch"),
        "<h2>Variants</h2>",
        table(res.results, metrics, "results"),
    ]
    s = res.sensitivity
    if s is not None and len(s):
        top = int(sens_cfg.get("top") or TOP)
        parts.append(sensitivity_sections(s, res.metric, top))
    parts.append(footer(source, res.meta.get("sha256")))
    return page(f"yolobn experiment — {stem}", "\n".join(parts))


def _cards(res: Any) -> list[tuple[str, str, str]]:
    out = variant_cards(res.results, res.metric)
    s = res.sensitivity
    if s is not None and len(s):
        worst = s.sort_values(["delta", "layer"], kind="stable").iloc[0]
        d = float(worst["delta"])
        out.append(
            (
                f"most sensitive layer ({s['impl'].iloc[0]})",
                f"{worst['layer']} {signed(d)}",
                "bad" if math.isfinite(d) and d <= -5e-5 else "ok",
            )
        )
    return out
