"""swap.html, and the variant sections experiment.html shares with it: the metric of each variant
as bars (the baseline marked), the output difference and the label-free agreement, and the
results table with readable metric names and consistent digits."""

from __future__ import annotations

import math
from html import escape
from typing import Any

import pandas as pd

from yolobn.core.text import metric_label
from yolobn.report import charts
from yolobn.report.page import (
    cards,
    cell,
    data_table,
    figure,
    footer,
    header_cell,
    heading,
    meta_table,
    page,
    signed,
    verdicts_html,
)
from yolobn.report.svg import num

__all__ = [
    "BASELINE_PREFIX",
    "SAME",
    "agreement_bars",
    "difference_bars",
    "metric_bars",
    "metric_label",
    "metric_set",
    "render_html",
    "table",
    "variant_cards",
    "variant_sections",
]

BASELINE_PREFIX = "baseline"
SAME = 5e-5  # a change below this is shown as 0.0000 (4 decimals), and the bar is neutral

# Ultralytics' metric suffixes: which output the metric scores
_COLUMNS = {  # results column -> header, tooltip
    "variant": ("variant", "the variant's name"),
    "impl": ("implementation", "the BatchNorm implementation swapped in"),
    "swapped": ("BN swapped", "BatchNorm layers replaced"),
    "max_abs_diff": (
        "max |Δ output|",
        "largest absolute difference of the raw head outputs vs the original model",
    ),
    "max_rel_diff": ("relative", "that difference relative to the largest output"),
    "box_agreement": ("box agreement", "share of boxes matched by class at IoU >= 0.5 after NMS"),
    "top1_agreement": ("top-1 agreement", "share of images with the same top-1 class"),
    "boxes_a": ("boxes (original)", "boxes the original model finds on the images"),
    "boxes_b": ("boxes (swapped)", "boxes the swapped model finds on the images"),
    "channels_ablated": ("channels ablated", "channels replaced by their observed mean"),
    "ablated_share": ("ablated", "share of the model's channels ablated"),
    "ms_per_image": ("ms / image", "validation time per image"),
    "cached": ("cached", "result read from the cache"),
    "rank": ("rank", "rank by the drop"),
    "layer": ("BN layer", "the one layer swapped"),
    "delta": ("Δ", "change vs the baseline"),
}


def _is_metric(col: str, metrics: set[str]) -> bool:
    return col in metrics or col.removeprefix("metrics/") in metrics


def _header(col: str, metrics: set[str]) -> tuple[str, str]:
    if col.endswith(" delta") and _is_metric(col[: -len(" delta")], metrics):
        base = metric_label(col[: -len(" delta")])
        return "Δ", f"change of {base} vs the baseline"
    if _is_metric(col, metrics):
        return metric_label(col), f"Ultralytics' {col}"
    return _COLUMNS.get(col, (col.replace("_", " "), col))


def _value(col: str, v: Any, metrics: set[str]) -> tuple[str, str, str]:
    """(shown text, sort value, CSS class): metrics with 4 decimals, deltas signed with 4 decimals
    (a change below 0.00005 is 0), shares as percentages, other numbers with 3 significant digits."""
    if isinstance(v, bool) or col == "cached":
        return ("yes" if v else "no"), str(v), ""
    if not isinstance(v, (int, float)):
        return ("" if v is None else str(v)), ("" if v is None else str(v)), ""
    x = float(v)
    if not math.isfinite(x):
        return "–", "", "n"
    if isinstance(v, int) or col in ("swapped", "rank", "channels_ablated", "boxes_a", "boxes_b", "images"):
        return f"{int(x)}", num(x), "n"
    if col == "delta" or col.endswith(" delta"):
        shown = signed(x)
        return shown, num(x), "n" + ("" if shown == "0.0000" else (" better" if x > 0 else " worse"))
    if _is_metric(col, metrics):
        return f"{x:.4f}", num(x), "n"
    if col.endswith("agreement") or col == "ablated_share":
        return f"{x:.1%}", num(x), "n"
    return f"{x:.3g}", num(x), "n"


def table(df: pd.DataFrame, metrics: set[str], table_id: str) -> str:
    """A sortable table of ``df`` with readable headers and consistent digits."""
    head = []
    for c in df.columns:
        label, tip = _header(str(c), metrics)
        kind = "num" if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool else "text"
        head.append(header_cell(str(c), label, kind, tip))
    rows = []
    for rec in df.to_dict(orient="records"):
        cells = (cell(*_value(str(c), v, metrics)) for c, v in rec.items())
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return data_table(head, rows, table_id=table_id)


def metric_set(results: pd.DataFrame, metric: str | None) -> set[str]:
    """The metric columns of a results table: those with a delta column, and the main metric."""
    cols = [str(c) for c in results.columns]
    return {*([metric] if metric else []), *(c for c in cols if f"{c} delta" in cols)}


# --------------------------------------------------------------------------------------------------
# the variant charts


def _variants(results: pd.DataFrame) -> pd.DataFrame:
    return results[~results["variant"].astype(str).str.startswith(BASELINE_PREFIX)]


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def metric_bars(results: pd.DataFrame, metric: str) -> str:
    """The change of the main metric per variant as a bar from the baseline (the dashed zero line),
    red for a drop, green for a gain; the value and its change in the column on the right."""
    short = metric.removeprefix("metrics/")
    label = metric_label(metric)
    base = _float(results[short].iloc[0]) if len(results) else math.nan
    bars = []
    for r in _variants(results).to_dict(orient="records"):
        v, d = _float(r.get(short)), _float(r.get(f"{short} delta"))
        color = charts.NEUTRAL if not abs(d) >= SAME else (charts.WORSE if d < 0 else charts.BETTER)
        text = f"{v:.4f}  ({signed(d)})" if math.isfinite(v) else "–"
        bars.append(charts.Bar(str(r["variant"]), d, text, f"{r['variant']}: {label} {text}", color, [v, d]))
    return charts.hbar_chart(
        bars,
        title=f"Change in {label} per variant",
        plot_id="plot-metric",
        xlabel=f"change in {label} vs the baseline",
        ref=(0.0, f"baseline {base:.4f}"),
        min_span=0.01,
    )


def difference_bars(results: pd.DataFrame, where: str) -> str:
    """The largest relative output difference of each variant vs the original model (log scale)."""
    bars = []
    for r in _variants(results).to_dict(orient="records"):
        rel, ab = _float(r.get("max_rel_diff")), _float(r.get("max_abs_diff"))
        text = "0 (identical)" if rel == 0 else (f"{rel:.2g}" if math.isfinite(rel) else "–")
        tip = f"{r['variant']}: max |Δ output| {ab:.3g}, relative {rel:.3g} ({where})"
        bars.append(charts.Bar(str(r["variant"]), rel, text, tip, charts.NEUTRAL, [rel, ab]))
    return charts.hbar_chart(
        bars,
        title="Largest output difference vs the original model",
        plot_id="plot-difference",
        xlabel="max |Δ raw head output| / max |output| (log scale)",
        log=True,
    )


def agreement_bars(results: pd.DataFrame) -> str | None:
    """Label-free agreement of the predictions (boxes or top-1), 0-100 %; None without images."""
    col = next((c for c in ("box_agreement", "top1_agreement") if c in results.columns), None)
    if col is None:
        return None
    what = (
        "boxes matched by class at IoU ≥ 0.5"
        if col == "box_agreement"
        else "images with the same top-1 class"
    )
    bars = []
    for r in _variants(results).to_dict(orient="records"):
        v = _float(r.get(col))
        boxes = f"; boxes {r.get('boxes_a')} → {r.get('boxes_b')}" if "boxes_a" in r else ""
        text = f"{v:.1%}" if math.isfinite(v) else "unknown (no boxes in either model)"
        color = charts.NEUTRAL if not v < 0.99 else (charts.WORSE if v < 0.9 else "#e69f00")
        bars.append(
            charts.Bar(str(r["variant"]), 100 * v, text, f"{r['variant']}: {text}{boxes}", color, [v])
        )
    return charts.hbar_chart(
        bars,
        title=f"Agreement with the original model ({what})",
        plot_id="plot-agreement",
        xlabel="agreement (%)",
        ref=(100.0, "100 %"),
    )


def variant_sections(results: pd.DataFrame, metric: str | None, where: str) -> str:
    """The charts of a results table: the metric (when validated), the output difference and the
    agreement (with images). ``where``: what the outputs were compared on."""
    parts = []
    if metric and metric.removeprefix("metrics/") in results.columns:
        label = metric_label(metric)
        parts += [
            "<h2>Accuracy</h2>",
            figure(
                metric_bars(results, metric),
                f"Each bar: the change in {escape(label)} when that variant is swapped in, validated with "
                "Ultralytics' validator; dashed: the baseline (nn.BatchNorm2d). Red: worse by 0.0001 or more, "
                "green: better. On the right the variant's value and, in brackets, the change.",
            ),
        ]
    if "max_rel_diff" in results.columns:
        parts += [
            "<h2>Output difference</h2>",
            figure(
                difference_bars(results, where),
                f"The largest difference of the raw head outputs between the swapped and the original model on "
                f"{escape(where)}, relative to the largest output. Around 1e-7 is float32 rounding: the same "
                "computation; from 1e-3 predictions start to move.",
            ),
        ]
    agree = agreement_bars(results)
    if agree:
        parts.append(
            figure(
                agree,
                "Without labels: how many of the original model's predictions the swapped "
                "model reproduces after NMS. Unknown: neither model found a box.",
            )
        )
    return "\n".join(parts)


def variant_cards(results: pd.DataFrame, metric: str | None) -> list[tuple[str, str, str]]:
    v = _variants(results)
    out = [("variants", f"{len(v)}", "")]
    short = (metric or "").removeprefix("metrics/")
    if short and short in results.columns and len(v):
        d = v[f"{short} delta"].astype(float)
        same = int((d.abs() < SAME).sum())
        worst = v.iloc[int(d.to_numpy().argmin())]
        out += [
            (f"baseline {metric_label(metric or '')}", f"{_float(results[short].iloc[0]):.4f}", ""),
            ("unchanged (|Δ| < 0.0001)", f"{same} of {len(v)}", "ok" if same == len(v) else ""),
            (
                f"largest drop: {_short_label(str(worst['variant']))}",
                signed(float(d.min())),
                "bad" if d.min() <= -SAME else "ok",
            ),
        ]
    col = next((c for c in ("box_agreement", "top1_agreement") if c in results.columns), None)
    if col and len(v):
        a = v[col].astype(float)
        out.append(
            (
                "lowest agreement",
                f"{a.min():.1%}" if a.notna().any() else "unknown",
                "bad" if a.min() < 0.99 else "ok",
            )
        )
    return out


def _short_label(s: str, n: int = 28) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def render_html(
    res: Any,
    meta: dict[str, Any],
    *,
    layers: list[str] | None = None,
    note: str = "",
    verdicts: list[Any] | None = None,
) -> str:
    """swap.html: a ``VariantsResult`` (``yolobn swap``) as a page in the report's look; ``verdicts``:
    its answer with the user's own paths (default ``res.verdicts()``)."""
    source = str(meta.get("path") or meta.get("source") or "model")
    stem = source.rsplit("/", 1)[-1]
    s = res.settings
    images = s.images
    where = f"{len(images)} images" if images is not None else "a fixed random batch"
    rows = [
        ("model", source),
        ("data", s.data or "none: label-free"),
        ("images", where),
        ("imgsz", s.imgsz),
        ("batch", s.batch),
        ("device", s.device),
        ("BN layers swapped", ", ".join(layers or []) or "all"),
        ("main metric", metric_label(res.metric) if res.metric else None),
    ]
    body = [
        heading(
            f"yolobn swap — {stem}",
            "BatchNorm implementations swapped and validated"
            if s.data
            else "BatchNorm implementations swapped and compared without labels",
        ),
        verdicts_html(res.verdicts() if verdicts is None else verdicts),
        meta_table(rows),
        cards(variant_cards(res.table, res.metric)),
        f'<p class="sub">{escape(note[:1].upper() + note[1:])}. Δ: change vs the baseline (green better, red worse).</p>'
        if note
        else "",
        variant_sections(res.table, res.metric, where),
        "<h2>Results</h2>",
        table(res.table, metric_set(res.table, res.metric), "results"),
        footer(source, meta.get("sha256")),
    ]
    return page(f"yolobn swap — {stem}", "\n".join(p for p in body if p))
