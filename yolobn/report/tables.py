"""Rich renderables of swap, experiment, recalibrate, compare, frontier and prune (built here, printed by the CLI)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from yolobn.core.text import visible
from yolobn.core.thresholds import Levels
from yolobn.report.console import kv_grid
from yolobn.report.fit import Col, fit_table, markup_safe
from yolobn.report.fit import delta as _delta
from yolobn.report.fit import metric as _metric
from yolobn.report.fit import ms as _ms
from yolobn.report.fit import pct as _pct
from yolobn.report.fit import sci as _sci
from yolobn.report.fit import sig as _g
from yolobn.sweeps.frontier import CRITERIA

__all__ = [
    "AUDIT_COLS",
    "COMPARE_COLS",
    "audit_table",
    "before_after_table",
    "compare_panel",
    "compare_table",
    "frontier_table",
    "sensitivity_table",
    "variants_table",
]


def variants_table(
    table: pd.DataFrame,
    metrics: tuple[str, ...],
    title: str,
    *,
    images: bool,
    width: int = 200,
    wide: bool = False,
) -> Table:
    """``yolobn swap``/``experiment``: one row per variant (the table of ``run_variants``).

    The variant in full, the main metric and its change (with images: the label-free agreement);
    ``wide`` adds the other metrics, the output difference and the time per image (all are in the CSV).
    """
    short = [k.replace("metrics/", "") for k in metrics]
    rows_in = table.to_dict(orient="records")
    agree = "top1_agreement" if any("top1_agreement" in r for r in rows_in) else "box_agreement"
    shown = short if wide else short[:1]
    cols = [Col("variant", "left"), Col("BN swapped", drop=2)]
    for i, k in enumerate(shown):  # the other metrics go before the main one when space is short
        cols += [Col(k, drop=4 + i if i else 0), Col("Δ", drop=4 + i if i else 0)]
    if wide or not metrics:
        cols.append(Col("max |Δout| (rel)", drop=3))
    ablated = "channels_ablated" in table.columns
    if ablated:
        cols.append(Col("ablated"))
    if images:
        cols.append(Col(agree.replace("_", " ")))
    if wide:
        cols.append(Col("ms/img", drop=1))
    rows = []
    for r in rows_in:
        cells = [markup_safe(r["variant"]) + (" (cached)" if r["cached"] else ""), str(r["swapped"])]
        for k in shown:
            cells += [_metric(r[k]), _delta(r[f"{k} delta"])]
        if wide or not metrics:
            cells.append(f"{_sci(r['max_abs_diff'])} ({_sci(r['max_rel_diff'])})")
        if ablated:
            n = r.get("channels_ablated")
            cells.append(f"{int(n):,} ({_pct(r['ablated_share'])})" if n == n and n is not None else "-")
        if images:
            a = r.get(agree)
            base = not r["swapped"] and r["variant"].startswith("baseline")
            cells.append("-" if a is None or base else (f"{a:.1%}" if a == a else "no boxes"))
        if wide:
            cells.append(_ms(r["ms_per_image"]))
        rows.append(cells)
    caption = "" if wide else "--wide: every metric, the output difference and ms/img (all in the CSV)"
    return fit_table(cols, rows, width=width, title=markup_safe(title), caption=caption)


def sensitivity_table(sensitivity: pd.DataFrame, metric: str, top: int) -> Table:
    """The layers most sensitive to the swapped implementation, one at a time."""
    short = metric.replace("metrics/", "")
    impl = markup_safe(sensitivity["impl"].iloc[0])
    st = Table(title=f"most sensitive BN layers to {impl} (one at a time)")
    for c in ("rank", "layer", short, "Δ"):
        st.add_column(c, justify="left" if c == "layer" else "right")
    for r in sensitivity.head(top).to_dict(orient="records"):
        st.add_row(str(r["rank"]), markup_safe(r["layer"]), _metric(r[metric]), _delta(r["delta"]))
    return st


def before_after_table(rows: list[tuple[str, float, float]], title: str) -> Table:
    """Metrics before and after (``yolobn recalibrate --data``)."""
    t = Table(title=markup_safe(title))
    for c in ("metric", "before", "after", "Δ"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for k, b, a in rows:
        t.add_row(markup_safe(k), _metric(b), _metric(a), _delta(a - b))
    return t


# --------------------------------------------------------------------------------------------------
# compare


def _KV(label: str, *parts: Any) -> tuple[str, Text]:  # noqa: N802 (a row, read as one)
    """One row of a headline panel: its label and the value's parts (``Text.assemble`` parts)."""
    return label, Text.assemble(*parts)


def _panel(rows: list[tuple[str, Text]], title: str) -> Panel:
    """A headline panel: labels in one column, values wrapping in their own (a hanging indent)."""
    g = kv_grid()
    for label, value in rows:
        g.add_row(label, value)
    return Panel(g, title=title, title_align="left", expand=False)


def compare_panel(s: dict[str, Any]) -> Panel:
    """Headline numbers of a two-checkpoint comparison."""
    lines = [
        _KV("A (before)", visible(s["a"])),
        _KV("B (after)", visible(s["b"])),
        _KV(
            "matched",
            f"{s['matched_layers']} BN layers, {s['matched_channels']:,} channels",
        ),
    ]
    if s["identical"]:
        lines.append(_KV("change", ("none: every BN tensor is identical", "green")))
    else:
        lines.append(
            _KV(
                "change",
                f"{s['changed_layers']} layers changed, mean {_g(s['change_mean'])} nats "
                "(Gaussian KL of running stats + BN output)",
            )
        )
    t, e = s["transitions"], s["eps_transitions"]
    lines.append(
        _KV(
            "dead channels",
            (f"newly dead {t['newly_dead']:,}", "bold red" if t["newly_dead"] else ""),
            f" · revived {t['revived']:,} · dead in both {t['dead_both']:,}",
        )
    )
    lines.append(
        _KV(
            "eps-dominated",
            f"newly {e['newly_eps_dominated']:,} · no longer {e['no_longer_eps_dominated']:,}",
        )
    )
    if s["most_changed"]:
        top = ", ".join(f"{d['name']} {_g(d['change'])}" for d in s["most_changed"][:3])
        lines.append(_KV("most changed", visible(top)))
    if "drift" in s:
        d = s["drift"]
        lines.append(
            _KV(
                "drift",
                f"on {d['images']} images at imgsz {d['imgsz']}: mean A {_g(d['mean_a'])} → B ",
                (_g(d["mean_b"]), "bold red" if d["mean_b"] >= Levels().drift_act else ""),
                " nats (Gaussian KL of each BN input vs its running statistics)",
            )
        )
        if d["most_risen"]:
            top = ", ".join(f"{r['name']} {_g(r['drift_a'])}→{_g(r['drift_b'])}" for r in d["most_risen"][:3])
            lines.append(_KV("most risen", visible(top)))
    for key, what in (("only_a", "only in A"), ("only_b", "only in B"), ("mismatched", "other width")):
        if s[key]:
            names = ", ".join(s[key][:3]) + (" ..." if len(s[key]) > 3 else "")
            lines.append(("note", Text(visible(f"{len(s[key])} layer(s) {what}: {names}"), style="yellow")))
    return _panel(lines, "yolobn compare")


COMPARE_COLS = [
    Col("name", "left"),
    Col("block", "left", drop=6),
    Col("ch", drop=5),
    Col("γ p50 A→B", drop=3),
    Col("var p50 A→B", drop=4),
    Col("kl in"),
    Col("kl out"),
    Col("newly dead"),
    Col("revived", drop=2),
    Col("eps-dom +/-", drop=1),
]


def compare_table(layers: pd.DataFrame, *, width: int = 200) -> Table:
    """The matched layers of a comparison, in the order given (most changed first; with drift, the
    layers whose drift rose most first)."""
    drift = "drift_rise" in layers.columns
    rise_level = Levels().drift_layer_look
    rows = []
    for r in layers.itertuples():
        row = [
            markup_safe(r.name),
            markup_safe(r.block),
            str(r.channels),
            f"{_g(r.gamma_p50_a)}→{_g(r.gamma_p50_b)}",
            f"{_g(r.running_var_p50_a)}→{_g(r.running_var_p50_b)}",
            _g(r.kl_in),
            _g(r.kl_out),
            f"[red]{r.newly_dead}[/]" if r.newly_dead else "·",
            str(r.revived) if r.revived else "·",
            f"+{r.newly_eps_dominated}/-{r.no_longer_eps_dominated}"
            if r.newly_eps_dominated or r.no_longer_eps_dominated
            else "·",
        ]
        if drift:
            text = f"{_g(r.drift_a)}→{_g(r.drift_b)}"
            row.insert(3, f"[red]{text}[/]" if r.drift_rise >= rise_level else text)
        rows.append(row)
    caption = (
        "kl in / kl out: mean channel Gaussian KL (nats) of the running statistics / the BN output, B vs A"
    )
    cols = COMPARE_COLS
    if drift:
        caption += (
            f"; drift A→B: mean channel KL of the BN input on the images vs the running statistics (red: rose "
            f"by ≥{rise_level:g})"
        )
        cols = [*COMPARE_COLS[:3], Col("drift A→B"), *COMPARE_COLS[3:]]
    title = "BN layers whose drift rose most" if drift else "most changed BN layers"
    return fit_table(cols, rows, width=width, title=title, caption=caption)


AUDIT_COLS = [
    Col("model", "left"),
    Col("task", "left", drop=4),
    Col("family", "left", drop=5),
    Col("classes", drop=6),
    Col("BN", drop=7),
    Col("channels", drop=8),
    Col("dead"),
    Col("eps-dom"),
    Col("findings"),
    Col("γ p50", drop=3),
    Col("near init", drop=2),
    Col("eps", drop=1),
]


def audit_table(table: pd.DataFrame, *, width: int = 200) -> Table:
    """One row per checkpoint (``yolobn.bn.comparison.audit``)."""
    rows = [
        [
            markup_safe(r.source),
            markup_safe(r.task or "-"),
            markup_safe(r.family or "-"),
            str(r.classes or "-"),
            str(r.bn_layers),
            f"{r.channels:,}",
            f"{r.dead:,} ({_pct(r.dead_share)})" if r.dead else "·",
            f"{r.eps_dominated:,}" if r.eps_dominated else "·",
            str(r.findings) if r.findings else "·",
            _g(r.gamma_p50),
            _pct(r.near_initial_share),
            markup_safe(r.eps),
        ]
        for r in table.itertuples()
    ]
    return fit_table(AUDIT_COLS, rows, width=width, title="BatchNorm audit", caption="")


# --------------------------------------------------------------------------------------------------
# frontier


def frontier_table(fr: Any, *, width: int = 200) -> Group:
    """The metric change at each share ablated, one column per criterion, and the removable shares."""
    c = fr.curve[fr.curve["scope"] == "all"]

    crits = sorted(dict.fromkeys(c["criterion"]), key=lambda k: CRITERIA.index(k) if k in CRITERIA else 9)
    cols = [Col("ablated", "right")] + [Col(k) for k in crits]
    rows = []
    for share in sorted(set(c["share"])):
        row = [f"{share:g}%"]
        for k in crits:
            r = c[(c["criterion"] == k) & (c["share"] == share)]
            if not len(r):
                row.append("-")
                continue
            d = float(r["delta"].iloc[0])
            spread = (
                f" ({_delta(float(r['delta_min'].iloc[0]))}..{_delta(float(r['delta_max'].iloc[0]))})"
                if int(r["seeds"].iloc[0]) > 1
                else ""
            )
            row.append(_delta(d) + spread)
        rows.append(row)
    short = fr.metric.replace("metrics/", "")
    t = fit_table(
        cols,
        rows,
        width=width,
        title=f"change in {short} (baseline {fr.baseline:.4f}) when the lowest k% are ablated",
        caption="random: mean over seeds (min..max)" if "random" in crits else "",
    )
    s = fr.summary()
    lines = [
        _KV(
            "removable",
            " · ".join(f"{k} {v:g}%" for k, v in s["removable"].items()),
            (f"  (within {fr.tolerance:g} {short}, every smaller share too)", "dim"),
        )
    ]
    if s["removable_by_role"]:
        lines.append(
            _KV(
                "by role",
                " · ".join(f"{k} {v:g}%" for k, v in s["removable_by_role"].items()),
                ("  (observed criterion, within each role)", "dim"),
            )
        )
    if s["most_prunable_layers"]:
        top = ", ".join(f"{d['name']} {d['ablated']}/{d['channels']}" for d in s["most_prunable_layers"][:3])
        lines.append(_KV("most prunable", visible(top)))
    # the answer first, the evidence under it
    return Group(_panel(lines, "yolobn frontier"), t)


# --------------------------------------------------------------------------------------------------
# prune


def prune_table(r: Any) -> Group:
    """Before and after (parameters, FLOPs, latency, size, the metric) and what was removed."""
    import math

    t = Table(
        title=f"yolobn prune: {r.selection.count:,} of {r.selection.total:,} channels removed "
        f"({r.selection.share:.1f}%, {r.criterion} ranking)"
    )
    for c in ("", "before", "after", "ratio / Δ"):
        t.add_column(c, justify="left" if not c else "right")
    fmt = {"params": "{:,.0f}", "gflops": "{:.3f}", "latency_ms": "{:.1f}", "model_bytes": "{:.2f}"}
    label = {
        "params": "parameters",
        "gflops": "GFLOPs",
        "latency_ms": "CPU latency (ms)",
        "model_bytes": "model (MB)",
    }
    for k, (b, a) in r.cost.items():
        scale = 1e-6 if k == "model_bytes" else 1.0
        ratio = a / b if b else math.nan
        t.add_row(
            label.get(k, k),
            fmt[k].format(b * scale),
            fmt[k].format(a * scale),
            f"{ratio:.3f}x" if math.isfinite(ratio) else "-",
        )
    m = r.metrics
    short = m["metric"].replace("metrics/", "")
    for what in ("pruned", "ablated"):
        t.add_row(
            f"{short} ({what})", _metric(m["baseline"]), _metric(m[what]), _delta(m[what] - m["baseline"])
        )
    s = r.residual_summary
    lines = []
    if s:
        lines.append(
            _KV(
                "border residual",
                f"inside {_g(s['interior_max'])}, at the border {_g(s['border_max'])} output std at most; "
                f"output {_g(s['output_max'])} of its largest value at most",
            )
        )
    if r.fixed:
        lines.append(
            _KV(
                "never removed",
                f"{sum(r.fixed.values()):,} channels: " + "; ".join(r.fixed),
            )
        )
    top = r.layers[r.layers["removed"] > 0].sort_values("removed", ascending=False, kind="stable").head(3)
    if len(top):
        lines.append(
            _KV(
                "most removed",
                ", ".join(f"{x.name} {x.removed}/{x.channels}" for x in top.itertuples()),
            )
        )
    return Group(t, _panel(lines, "yolobn prune")) if lines else Group(t)
