"""frontier.html: the prune frontier (``yolobn.sweeps.frontier.Frontier``) in the report's shell and look:
accuracy against the share ablated per criterion, the removable shares, the most prunable layers."""

from __future__ import annotations

import math
from html import escape
from typing import Any

import pandas as pd

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

__all__ = [
    "CRITERION_COLORS",
    "CRITERION_TEXT",
    "CURVE_SPEC",
    "ROLE_LINE_COLORS",
    "TOP_LAYERS",
    "ordered",
    "render_html",
]

CRITERION_COLORS = {"observed": "#2166ac", "gamma": "#e69f00", "random": "#7a8594"}
ROLE_LINE_COLORS = {"backbone": "#2166ac", "neck": "#1a9850", "head": "#d95f02"}
CRITERION_TEXT = {
    "observed": "post-activation std on the images",
    "gamma": "|γ|, network slimming",
    "random": "a control, averaged over seeds",
}
TOP_LAYERS = 15


def _share_ticks(shares: pd.Series) -> list[tuple[float, str]]:
    hi = float(shares.max()) if len(shares) else 1.0
    return [(v, f"{v:g}%") for v in nice_ticks(0.0, hi if hi > 0 else 1.0)]


def ordered(curve: pd.DataFrame) -> pd.DataFrame:
    """The curve by criterion (observed, gamma, random), scope (all, backbone, neck, head), share."""
    rank = {k: i for i, k in enumerate([*CRITERION_COLORS, "all", *ROLE_LINE_COLORS])}
    key = curve["criterion"].map(rank).fillna(99) * 100 + curve["scope"].map(rank).fillna(99)
    return curve.assign(_k=key).sort_values(["_k", "share"], kind="stable").drop(columns="_k")


def _series(
    curve: pd.DataFrame, metric: str, key: str, colors: dict[str, str], band: bool
) -> list[charts.Series]:
    out = []
    for name, g in ordered(curve).groupby(key, sort=False):
        g = g.sort_values("share")
        y = g[metric].to_numpy(float)
        base = y - g["delta"].to_numpy(float)  # the baseline, row by row
        seeds = g["seeds"].to_numpy() if "seeds" in g else None
        multi = band and seeds is not None and int(seeds.max()) > 1
        tips = [
            f"{name}, {s:g}% ablated ({int(n):,} channels): {v:.4f} ({signed(d)})"
            + (f", seeds {signed(lo)} to {signed(hi)}" if multi else "")
            for s, n, v, d, lo, hi in zip(
                g["share"], g["channels_ablated"], y, g["delta"], g["delta_min"], g["delta_max"], strict=True
            )
        ]
        lo = list(base + g["delta_min"].to_numpy(float)) if multi else None
        hi = list(base + g["delta_max"].to_numpy(float)) if multi else None
        out.append(
            charts.Series(
                str(name), colors.get(str(name), charts.NEUTRAL), list(g["share"]), list(y), tips, lo, hi
            )
        )
    return out


def _curves(fr: Any) -> str:
    c = fr.curve
    label = metric_label(fr.metric)
    allc = c[c["scope"] == "all"]
    band = (
        fr.baseline - fr.tolerance,
        fr.baseline,
        f"within the tolerance: at most {fr.tolerance:g} below the baseline {fr.baseline:.4f}",
    )
    main = charts.line_chart(
        _series(allc, fr.metric, "criterion", CRITERION_COLORS, band=True),
        title=f"{label} against the share of channels ablated",
        plot_id="plot-frontier",
        xlabel="channels ablated (% of the model, lowest-ranked first)",
        ylabel=label,
        band=band,
        xticks=_share_ticks(allc["share"]),
        height=360,
    )
    crit = ", ".join(
        f"<b>{escape(k)}</b> ({escape(CRITERION_TEXT.get(k, k))})" for k in dict.fromkeys(allc["criterion"])
    )
    out = [
        "<h2>The frontier</h2>",
        figure(
            main,
            f"Channels ranked by each criterion ({crit}); the lowest k% replaced by their observed mean "
            f"after the activation, validated with Ultralytics' validator. Shaded orange: within {fr.tolerance:g} "
            "of the baseline (the 0% point). The random line is the mean over the seeds, its shade the range.",
        ),
    ]
    roles = c[(c["scope"] != "all") & (c["criterion"] == "observed")]
    if len(roles):
        svg = charts.line_chart(
            _series(roles, fr.metric, "scope", ROLE_LINE_COLORS, band=False),
            title=f"{label}, ablating within one role only (observed criterion)",
            plot_id="plot-frontier-roles",
            xlabel="channels ablated (% of the role)",
            ylabel=label,
            band=band,
            xticks=_share_ticks(roles["share"]),
            height=300,
        )
        out.append(
            figure(
                svg,
                "The observed ranking restricted to the backbone, the neck or the head: which part "
                "of the model tolerates ablation.",
            )
        )
    return "\n".join(out)


def _removable(fr: Any, s: dict[str, Any]) -> str:
    bars = [
        charts.Bar(
            f"{k} (whole model)",
            float(v),
            f"{v:g}%",
            f"{k}: {v:g}% of all channels removable",
            CRITERION_COLORS.get(k, charts.NEUTRAL),
            [float(v)],
        )
        for k, v in s["removable"].items()
    ]
    bars += [
        charts.Bar(
            f"observed, {r} only",
            float(v),
            f"{v:g}%",
            f"observed within the {r}: {v:g}% of its channels",
            ROLE_LINE_COLORS.get(r, charts.NEUTRAL),
            [float(v)],
        )
        for r, v in s["removable_by_role"].items()
    ]
    svg = charts.hbar_chart(
        bars,
        title=f"Largest share removable within {fr.tolerance:g}",
        plot_id="plot-removable",
        xlabel="removable (% of the channels in scope)",
        min_span=10.0,
    )
    return figure(
        svg,
        "The largest share tested such that it and every smaller share stay within the tolerance "
        "(a later point back within it does not count: the validation set is small and the curve "
        "noisy). Per role: the share of that role's channels.",
    )


def _layers(fr: Any, s: dict[str, Any]) -> str:
    ly = fr.layers
    top = ly[ly["ablated"] > 0].head(TOP_LAYERS) if len(ly) else ly
    bars = [
        charts.Bar(
            str(r.name),
            100 * float(r.share),
            f"{int(r.ablated)} of {int(r.channels)} ({r.share:.0%})",
            f"{r.name} ({r.role}): {int(r.ablated)} of {int(r.channels)} channels ablated",
            charts.NEUTRAL,
            [int(r.ablated), int(r.channels), float(r.share)],
        )
        for r in top.itertuples()
    ]
    at = s["removable"].get("observed")
    svg = charts.hbar_chart(
        bars,
        title="Most prunable layers",
        plot_id="plot-layers",
        xlabel=f"share of the layer's channels ablated at {at or 0:g}% (observed)",
        min_span=10.0,
    )
    why = (
        f"At the largest share the observed criterion removes within the tolerance ({at:g}%), the layers that "
        f"give up the largest share of their channels (the first {len(top)})."
        if at
        else "The observed criterion removes nothing within the tolerance: no layer to show."
    )
    return "<h2>Most prunable layers</h2>\n" + figure(svg, why)


CURVE_SPEC = [
    ("criterion", "criterion", "text", "how channels are ranked"),
    ("scope", "scope", "text", "the whole model, or one role"),
    ("share", "ablated", "pct", "share of the channels in scope ablated"),
    ("channels_ablated", "channels", "int", "channels ablated (mean over seeds)"),
    ("metric", "value", "f4", "the validated metric (mean over seeds)"),
    ("delta", "Δ", "d4", "change vs the baseline (mean over seeds)"),
    ("delta_min", "Δ min", "d4", "lowest change over the seeds"),
    ("delta_max", "Δ max", "d4", "highest change over the seeds"),
    ("seeds", "seeds", "int", "rankings averaged"),
]


def render_html(fr: Any, verdicts: list[Any] | None = None) -> str:
    """The frontier page (``yolobn frontier``); ``verdicts``: its answers with the user's own paths
    (default ``fr.verdicts()``)."""
    s = fr.summary()
    meta, st = fr.meta or {}, fr.settings or {}
    source = str(meta.get("path") or meta.get("source") or "model")
    stem = source.replace("\\", "/").rsplit("/", 1)[-1]
    label = metric_label(fr.metric)
    rows = [
        ("model", source),
        ("data", st.get("data")),
        ("imgsz", st.get("imgsz")),
        ("images observed", st.get("images")),
        ("shares (%)", ", ".join(f"{x:g}" for x in st.get("shares", []))),
        ("criteria", ", ".join(st.get("criteria", []))),
        ("random seeds", st.get("seeds")),
        ("metric", label),
        ("tolerance", f"{fr.tolerance:g}"),
    ]
    items = [(f"baseline {label}", f"{fr.baseline:.4f}" if math.isfinite(fr.baseline) else "–", "")]
    items += [(f"removable: {k}", f"{v:g}%", "ok" if v > 0 else "") for k, v in s["removable"].items()]
    spec = [
        (fr.metric if k == "metric" else k, label if k == "metric" else h, kind, tip)
        for k, h, kind, tip in CURVE_SPEC
    ]
    body = [
        heading(f"yolobn frontier — {stem}", "How much of the model can be ablated before accuracy drops"),
        verdicts_html(fr.verdicts() if verdicts is None else verdicts),
        meta_table(rows),
        cards(items),
        _curves(fr),
        "<h2>Removable share</h2>",
        _removable(fr, s),
        _layers(fr, s),
        "<h2>The curve</h2>",
        '<p class="sub">frontier.csv: one row per criterion, scope and share (random: averaged over the seeds; '
        "points.csv has each seed).</p>",
        spec_table(ordered(fr.curve).to_dict(orient="records"), spec, table_id="curve"),
        footer(source, meta.get("sha256")),
    ]
    return page(f"yolobn frontier — {stem}", "\n".join(body))
