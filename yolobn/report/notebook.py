"""Compact HTML for notebooks (``_repr_html_`` of the result objects): a few headline numbers and a
short table, the same numbers as the terminal and the files."""

from __future__ import annotations

import math
from html import escape
from typing import Any

ROWS = 10


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:#.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return escape(str(v))


def _table(df: Any, cols: list[str], rows: int = ROWS) -> str:
    cols = [c for c in cols if c in df.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>"
        for r in df[cols].head(rows).itertuples(index=False)
    )
    more = f"<p style='color:#666'>{len(df) - rows} more rows</p>" if len(df) > rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _kv(title: str, items: list[tuple[str, Any]]) -> str:
    lis = "".join(f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in items if v not in (None, ""))
    return f"<h4 style='margin:4px 0'>{escape(title)}</h4><ul style='margin:0'>{lis}</ul>"


def inspection_html(ins: Any, ranked: Any) -> str:
    """``ranked``: the layers in the order worth a look (``inspection.rank_layers``)."""
    s, m = ins.summary(), ins.meta
    items = [
        ("model", m.path or m.source),
        ("task", f"{m.task} · {m.nc or 0} classes"),
        ("BatchNorm", f"{s['bn_layers']} layers, {s['channels']:,} channels"),
        ("dead", f"{s['dead']:,} ({s['dead_share']:.1%})"),
        ("eps-dominated", f"{s['eps_dominated']:,}"),
        ("findings", ", ".join(f"{k} ×{v}" for k, v in s["findings_by_kind"].items()) or "none"),
    ]
    obs = ins.observed_summary()
    if obs is not None:
        items.append(("observed dead", f"{obs['observed_dead']:,} on {obs['images']} images"))
    cols = ["name", "block", "channels", "gamma_mean", "running_var_p50", "dead", "eps_dominated", "findings"]
    if obs is not None:
        cols[-1:-1] = ["obs_dead", "drift"]
    return _kv("yolobn inspection", items) + _table(ranked, cols)


def variants_html(res: Any) -> str:
    t = res.table
    metric = [k.replace("metrics/", "") for k in res.metrics[:1]]
    cols = ["variant", "swapped", *metric, *(f"{k} delta" for k in metric), "max_abs_diff", "box_agreement",
            "top1_agreement", "channels_ablated"]  # fmt: skip
    return _kv("yolobn swap", [("data", res.settings.data), ("imgsz", res.settings.imgsz)]) + _table(
        t, cols, 50
    )


def experiment_html(res: Any) -> str:
    short = res.metric.replace("metrics/", "")
    out = _kv("yolobn experiment", [("data", res.config.get("data")), ("metric", short)])
    out += _table(res.results, ["variant", "swapped", short, f"{short} delta", "max_abs_diff"], 50)
    if res.sensitivity is not None:
        out += "<h4>most sensitive layers</h4>" + _table(
            res.sensitivity, ["rank", "layer", res.metric, "delta"]
        )
    return out


def comparison_html(c: Any) -> str:
    s = c.summary()
    items = [
        ("A", s["a"]),
        ("B", s["b"]),
        (
            "change",
            "none: identical" if s["identical"] else f"{s['changed_layers']} of {s['matched_layers']} layers",
        ),
        ("dead transitions", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["transitions"].items())),
    ]
    ly = c.layers.sort_values(["change", "index"], ascending=[False, True], kind="stable")
    cols = ["name", "block", "channels", "kl_in", "kl_out", "change", "newly_dead", "revived"]
    return _kv("yolobn compare", items) + _table(ly, cols)


def frontier_html(fr: Any) -> str:
    s = fr.summary()
    items = [
        ("metric", f"{fr.metric.replace('metrics/', '')} baseline {fr.baseline:.4f}"),
        ("removable", " · ".join(f"{k} {v:g}%" for k, v in s["removable"].items())),
        ("by role", " · ".join(f"{k} {v:g}%" for k, v in s["removable_by_role"].items())),
    ]
    c = fr.curve[fr.curve["scope"] == "all"].pivot_table(index="share", columns="criterion", values="delta")
    c = c.reset_index()
    return _kv("yolobn frontier", items) + _table(c, list(c.columns), 20)
