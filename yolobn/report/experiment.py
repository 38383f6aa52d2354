"""The experiment page: the variants table and the per-layer sensitivity ranking, in the same
shell and look as the report (``report.page``), with readable metric names."""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from yolobn.report import plots
from yolobn.report.page import cell, data_table, figure, footer, header_cell, heading, meta_table, page
from yolobn.report.svg import num

# Ultralytics' metric suffixes: which output the metric scores
_KINDS = {"B": "box", "M": "mask", "P": "pose"}
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
    "ms_per_image": ("ms / image", "validation time per image"),
    "cached": ("cached", "result read from the cache"),
    "rank": ("rank", "rank by the drop"),
    "layer": ("BN layer", "the one layer swapped"),
    "delta": ("Δ", "change vs the baseline"),
}


def metric_label(key: str) -> str:
    """``metrics/mAP50-95(B)`` -> ``mAP50-95 (box)``; ``metrics/accuracy_top1`` -> ``top-1 accuracy``."""
    k = key.removeprefix("metrics/")
    m = re.fullmatch(r"accuracy_top(\d+)", k)
    if m:
        return f"top-{m.group(1)} accuracy"
    m = re.fullmatch(r"(.+)\(([A-Z])\)", k)
    return f"{m.group(1)} ({_KINDS.get(m.group(2), m.group(2))})" if m else k.replace("_", " ")


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
    (a change below 0.00005 is 0), output differences and times with 3 significant digits."""
    if isinstance(v, bool) or col == "cached":
        return ("yes" if v else "no"), str(v), ""
    if not isinstance(v, (int, float)):
        return ("" if v is None else str(v)), ("" if v is None else str(v)), ""
    x = float(v)
    if not math.isfinite(x):
        return "–", "", "n"
    if isinstance(v, int) or col in ("swapped", "rank"):
        return f"{int(x)}", num(x), "n"
    if col == "delta" or col.endswith(" delta"):
        if abs(x) < 5e-5:
            return "0.0000", num(x), "n"
        return f"{x:+.4f}".replace("-", "−"), num(x), "n " + ("better" if x > 0 else "worse")
    if _is_metric(col, metrics):
        return f"{x:.4f}", num(x), "n"
    if col.endswith("agreement"):
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


def render_html(res: Any) -> str:
    """A self-contained page: the results table and, if run, the sensitivity ranking as bars."""
    source = str(res.meta.get("path") or res.meta.get("source"))
    cols = [str(c) for c in res.results.columns]
    metrics = {res.metric, *(c for c in cols if f"{c} delta" in cols)}  # a metric has a delta column
    parts = [
        heading(
            f"yolobn experiment — {source.rsplit('/', 1)[-1]}",
            "BatchNorm implementations swapped and validated",
        ),
        meta_table(
            [
                ("model", source),
                ("data", res.config.get("data")),
                ("imgsz", res.config.get("imgsz")),
                ("main metric", metric_label(res.metric) if res.metric else None),
            ]
        ),  # fmt: skip
        '<p class="sub">Validated with Ultralytics\' validator on unfused copies: the swapped modules are what ran. '
        "Δ: change vs the baseline (green better, red worse).</p>",
        "<h2>Variants</h2>",
        table(res.results, metrics, "results"),
    ]
    s = res.sensitivity
    if s is not None and len(s):
        label = metric_label(res.metric)
        svg = plots.sensitivity_plot(s, f"change in {label} when only this layer is swapped",
                                     f"Sensitivity to {s['impl'].iloc[0]}, one BN layer at a time")  # fmt: skip
        parts += [
            "<h2>Per-layer sensitivity</h2>",
            figure(
                svg,
                f"Each bar: {label} with only that BN layer swapped, minus the baseline; most sensitive first.",
            ),
            table(s, metrics, "sensitivity"),
        ]
    parts.append(footer(source, res.meta.get("sha256")))
    return page(f"yolobn experiment — {source.rsplit('/', 1)[-1]}", "\n".join(parts))
