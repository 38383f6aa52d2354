"""prune.html: what ``yolobn prune`` removed and what it costs and saves
(``yolobn.sweeps.pruning.PruneResult``), in the report's shell and look."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from yolobn.report import charts
from yolobn.report.page import (
    cards,
    figure,
    footer,
    heading,
    meta_table,
    page,
    signed,
    spec_table,
    verdicts_html,
)
from yolobn.report.svg import nice_ticks
from yolobn.report.variants_page import metric_label

__all__ = ["render_html"]

TOP_LAYERS = 20
COST_ROWS = [
    ("params", "parameters", "{:,.0f}"),
    ("gflops", "GFLOPs (Ultralytics' counter)", "{:.3f}"),
    ("latency_ms", "CPU latency, ms (fused, batch 1, 1 thread, fastest of 15)", "{:.1f}"),
    ("model_bytes", "model size, MB (as stored)", "{:.2f}"),
]

LAYER_SPEC = [
    ("name", "BatchNorm", "text", "the layer (dotted name)"),
    ("role", "role", "text", "backbone, neck or head"),
    ("block", "block", "text", "the Ultralytics block it belongs to"),
    ("channels", "channels", "int", "channels before pruning"),
    ("prunable", "prunable", "int", "channels that may be removed at all"),
    ("removed", "removed", "int", "channels removed"),
    ("kept", "kept", "int", "channels left"),
    ("share_removed", "removed %", "share", "share of the layer removed"),
    ("fixed_reason", "why the rest stays", "text", "why some channels can never be removed"),
]
RESIDUAL_SPEC = [
    ("layer", "layer", "text", "a layer that had inputs removed (its constant folded in)"),
    ("kernel", "kernel", "text", "kernel size / stride"),
    ("removed_inputs", "inputs removed", "int", "input channels removed"),
    (
        "interior_max",
        "interior max",
        "g3",
        "largest difference inside the image, in output standard deviations",
    ),
    ("border_max", "border max", "g3", "largest difference at border pixels, in output standard deviations"),
    ("border_mean", "border mean", "g3", "mean difference at border pixels, in output standard deviations"),
    (
        "border_pixels",
        "border pixels",
        "share",
        "share of the output pixels whose window reaches the padding",
    ),
]


MONEY_SPEC = [
    ("what", "", "text", ""),
    ("before", "before", "text", "the input model"),
    ("after", "after", "text", "the pruned model"),
    ("change", "ratio / Δ", "text", "after / before (a change for the metric)"),
]


def _money(r: Any) -> str:
    rows = []
    for key, label, fmt in COST_ROWS:
        b, a = r.cost.get(key, (math.nan, math.nan))
        if key == "model_bytes":
            b, a = b / 1e6, a / 1e6
        ratio = a / b if b else math.nan
        rows.append(
            {
                "what": label,
                "before": _fmt(fmt, b),
                "after": _fmt(fmt, a),
                "change": "–" if not math.isfinite(ratio) else f"{ratio:.3f}×",
            }
        )
    m = r.metrics
    label = metric_label(m["metric"])
    for what, key in (("pruned", "pruned"), ("ablated (the same channels, not removed)", "ablated")):
        v, b = m.get(key, math.nan), m.get("baseline", math.nan)
        d = v - b
        rows.append(
            {
                "what": f"{label}, {what}",
                "before": _fmt("{:.4f}", b),
                "after": _fmt("{:.4f}", v),
                "change": signed(d) if math.isfinite(d) else "–",
            }
        )
    return "<h2>Before and after</h2>\n" + spec_table(rows, MONEY_SPEC, table_id="before-after")


def _fmt(fmt: str, v: float) -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _search(r: Any) -> str:
    s = r.search
    if s is None or not len(s):
        return ""
    key, base = r.metrics["metric"], r.metrics["baseline"]
    tol = r.settings.get("tolerance") or 0.0
    x = [0.0, *s["share_actual"]]
    y = [base, *s[key]]
    tips = ["0% (the baseline)"] + [
        f"{a:.2f}% removed ({int(n):,} channels): {v:.4f} ({signed(d)})"
        for a, n, v, d in zip(s["share_actual"], s["channels"], s[key], s["delta"], strict=True)
    ]
    hi = float(max(x)) or 1.0
    svg = charts.line_chart(
        [charts.Series("pruned", "#2166ac", x, y, tips)],
        title=f"{metric_label(key)} of the pruned model",
        plot_id="plot-search",
        xlabel="channels removed (% of the BatchNorm channels)",
        ylabel=metric_label(key),
        band=(base - tol, base, f"within the tolerance: at most {tol:g} below {base:.4f}"),
        xticks=[(v, f"{v:g}%") for v in nice_ticks(0.0, hi)],
        height=300,
    )
    cap = (
        "Each point is a pruned model (removed, not ablated) validated with Ultralytics' validator: the "
        "frontier's shares, then a bisection between the last share within the tolerance and the first "
        "beyond it. The chosen share is the largest such that it and every smaller share stayed within."
    )
    return "<h2>How much can go</h2>\n" + figure(svg, cap)


def _layers(r: Any) -> str:
    ly = r.layers
    top = ly[ly["removed"] > 0].sort_values(["share_removed", "removed"], ascending=False, kind="stable")
    top = top.head(TOP_LAYERS)
    bars = [
        charts.Bar(
            str(x.name),
            100 * float(x.share_removed),
            f"{int(x.removed)} of {int(x.channels)}",
            f"{x.name} ({x.role}): {int(x.removed)} of {int(x.channels)} channels removed",
            charts.NEUTRAL,
            [int(x.removed), int(x.channels)],
        )
        for x in top.itertuples()
    ]
    svg = charts.hbar_chart(
        bars,
        title="Channels removed per layer",
        plot_id="plot-layers",
        xlabel="share of the layer's channels removed",
        min_span=10.0,
    )
    why = "".join(f"<li>{n:,} channels: {escape(k)}</li>" for k, n in r.fixed.items())
    fixed = (
        f"<p>Never removed ({sum(r.fixed.values()):,} of {r.selection.total:,} channels):</p><ul>{why}</ul>"
        if r.fixed
        else "<p>Every channel of this model could be removed.</p>"
    )
    return (
        "<h2>Channels removed per layer</h2>\n"
        + figure(svg, f"The {len(top)} layers that lost the largest share (layers.csv has every layer).")
        + fixed
        + spec_table(ly.to_dict(orient="records"), LAYER_SPEC, table_id="pruned-layers")
    )


def _residual(r: Any) -> str:
    s = r.residual_summary
    if not s:
        return ""
    text = (
        "<p>Each removed channel's observed mean after its activation is folded into what reads it (the "
        "BatchNorm's running mean after a convolution, or the bias of a head's last convolution). Inside the "
        "image this is exactly what the ablated model computes; at pixels whose kernel window reaches over the "
        "border, the ablated model sees the constant on fewer taps (zero padding). Measured layer by layer on "
        f"the images, each layer fed the ablated model's own input: inside at most {s['interior_max']:.2g} "
        f"output standard deviations (float rounding), at the border at most {s['border_max']:.2g} "
        f"(mean {s['border_mean']:.2g}). End to end the two models' outputs differ by at most "
        f"{s['output_max']:.2g} of the largest output (mean {s['output_mean']:.2g}).</p>"
    )
    rows = r.residual.sort_values("border_max", ascending=False, kind="stable").to_dict(orient="records")
    return (
        "<h2>Removal against ablation: the border residual</h2>\n"
        + text
        + spec_table(rows, RESIDUAL_SPEC, table_id="residual")
    )


def render_html(r: Any, out_file: str | None = None, verdicts: list[Any] | None = None) -> str:
    """The prune page (``yolobn prune``); ``verdicts``: its answer with the user's own paths
    (default ``r.verdicts(out_file)``)."""
    meta, st, m = r.meta or {}, r.settings or {}, r.metrics
    source = str(meta.get("path") or meta.get("source") or "model")
    stem = source.replace("\\", "/").rsplit("/", 1)[-1]
    label = metric_label(m["metric"])
    how = (
        f"{st['share_requested']:g}% requested"
        if st.get("share_requested") is not None
        else f"the largest share within {st.get('tolerance'):g} of the baseline"
    )
    rows = [
        ("model", source),
        ("written", out_file),
        ("data", st.get("data")),
        ("imgsz", st.get("imgsz")),
        ("images observed", st.get("images")),
        ("criterion", r.criterion),
        ("how much", how),
        ("metric", label),
    ]
    p, f, t = (r.cost.get(k, (math.nan, math.nan)) for k in ("params", "gflops", "latency_ms"))
    d = m["pruned"] - m["baseline"]
    items = [
        (
            "channels removed",
            f"{r.selection.count:,} ({r.selection.share:.1f}%)",
            "ok" if r.selection.count else "",
        ),
        ("parameters", _ratio(p, "{:,.0f}"), ""),
        ("GFLOPs", _ratio(f, "{:.3f}"), ""),
        ("CPU latency, ms (1 thread)", _ratio(t, "{:.1f}"), ""),
        (
            label,
            f"{m['baseline']:.4f} → {m['pruned']:.4f}" if math.isfinite(d) else "not validated",
            "" if not math.isfinite(d) else ("bad" if d < -(st.get("tolerance") or 0.005) else "ok"),
        ),
    ]
    body = [
        heading(f"yolobn prune — {stem}", "The lowest-ranked channels removed, their constants folded in"),
        verdicts_html(r.verdicts(out_file) if verdicts is None else verdicts),
        meta_table(rows),
        cards(items),
        _money(r),
        _search(r),
        _layers(r),
        _residual(r),
        footer(source, meta.get("sha256")),
    ]
    return page(f"yolobn prune — {stem}", "\n".join(b for b in body if b))


def _ratio(pair: tuple[float, float], fmt: str) -> str:
    b, a = pair
    return f"{a / b:.2f}× ({fmt.format(a)} of {fmt.format(b)})" if b and math.isfinite(a / b) else "–"
