"""compare.html: what changed in the BatchNorm layers between two checkpoints (``Comparison``), or
the audit table of several; in the report's shell and look."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from yolobn.core.thresholds import Levels
from yolobn.report import charts
from yolobn.report.page import cards, figure, footer, heading, meta_table, page, spec_table, verdicts_html

__all__ = [
    "AUDIT_SPEC",
    "DRIFT_SPEC",
    "KL_IN",
    "KL_OUT",
    "LAYER_SPEC",
    "LIST_MAX",
    "TRANSITION_COLORS",
    "render_audit_html",
    "render_html",
]

KL_IN, KL_OUT = "#2166ac", "#e69f00"
TRANSITION_COLORS = {"newly dead": "#b2182b", "revived": "#4dac26", "dead in both": "#555555"}
LIST_MAX = 200  # unmatched layer names listed; the rest counted

LAYER_SPEC = [  # key, header, kind, tooltip
    ("index", "#", "int", "position in model order"),
    ("name", "name", "text", "dotted module name"),
    ("block", "block", "text", "Ultralytics block type"),
    ("role", "role", "text", "backbone, neck or head"),
    ("channels", "ch", "int", "channels"),
    ("gamma_p50_a", "γ p50 A", "g3", "median gamma in A"),
    ("gamma_p50_b", "γ p50 B", "g3", "median gamma in B"),
    ("kl_in", "KL in", "g3", "mean over channels of the KL of the running statistics (B vs A), nats"),
    ("kl_out", "KL out", "g3", "mean over channels of the KL of the estimated BN output (B vs A), nats"),
    ("change", "change", "g3", "KL in + KL out"),
    ("newly_dead", "died", "int", "channels alive in A, dead in B"),
    ("revived", "revived", "int", "channels dead in A, alive in B"),
    ("dead_both", "dead both", "int", "channels dead in A and in B"),
    ("newly_eps_dominated", "eps-dom new", "int", "channels eps-dominated in B, not in A"),
    ("no_longer_eps_dominated", "eps-dom gone", "int", "channels eps-dominated in A, not in B"),
]
DRIFT_SPEC = [  # with --images: the drift columns, after the name/block/role/channels columns
    (
        "drift_a",
        "drift A",
        "g3",
        "mean channel KL of the BN input on the images vs A's running statistics, nats",
    ),
    (
        "drift_b",
        "drift B",
        "g3",
        "mean channel KL of the BN input on the images vs B's running statistics, nats",
    ),
    ("drift_rise", "drift rise", "g3", "drift B - drift A: how much less B's statistics fit (nats)"),
]
DRIFT_A, DRIFT_B = "#4dac26", "#b2182b"
AUDIT_SPEC = [
    ("source", "checkpoint", "text", "the file"),
    ("task", "task", "text", "Ultralytics task"),
    ("family", "family", "text", "model family (its yaml)"),
    ("classes", "classes", "int", "number of classes"),
    ("bn_layers", "BN layers", "int", "BatchNorm layers"),
    ("channels", "channels", "int", "BatchNorm channels"),
    ("dead", "dead", "int", "dead channels (data-free criteria)"),
    ("dead_share", "dead %", "share", "share of channels dead"),
    ("eps_dominated", "eps-dom", "int", "channels with running_var below eps_factor * eps"),
    ("findings", "findings", "int", "layer health findings"),
    ("gamma_p50", "γ p50", "g3", "median gamma over all channels"),
    ("near_initial_share", "near init", "share", "share of layers whose gamma/beta are at or near 1/0"),
    ("eps", "eps", "text", "the distinct eps values"),
]


def _stem(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _cards(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    t, e = s["transitions"], s["eps_transitions"]
    unmatched = len(s["only_a"]) + len(s["only_b"]) + len(s["mismatched"])
    return [
        ("matched layers", f"{s['matched_layers']} ({s['matched_channels']:,} channels)", ""),
        (
            "changed layers",
            "none: identical" if s["identical"] else f"{s['changed_layers']} of {s['matched_layers']}",
            "ok" if s["identical"] else "",
        ),
        ("mean change (KL, nats)", f"{s['change_mean']:.3g}", ""),
        (
            "newly dead / revived",
            f"{t['newly_dead']:,} / {t['revived']:,}",
            "bad" if t["newly_dead"] else "ok",
        ),
        ("dead in both", f"{t['dead_both']:,}", ""),
        ("eps-dominated: new / gone", f"{e['newly_eps_dominated']:,} / {e['no_longer_eps_dominated']:,}", ""),
        ("unmatched layers", f"{unmatched}", "bad" if unmatched else "ok"),
    ]


def _drift_cards(s: dict[str, Any]) -> list[tuple[str, str, str]]:
    """With --images: the mean drift of A and B on the images and, when measured, the recalibration effect."""
    lv = Levels()
    d = s["drift"]
    mb = d["mean_b"]
    level = "bad" if mb >= lv.drift_act else "warn" if mb >= lv.drift_look else "ok"
    out = [
        ("mean drift A → B (nats)", f"{d['mean_a']:.3g} → {mb:.3g}", level),
        ("images", f"{d['images']} at imgsz {d['imgsz']}", ""),
    ]
    e = d.get("effect")
    if e:
        metric = str(e["metric"]).replace("metrics/", "")
        gain = e["b_recalibrated"] - e["b"]
        out.append(
            (
                f"{metric}: A / B / B recalibrated",
                f"{e['a']:.3f} / {e['b']:.3f} / {e['b_recalibrated']:.3f}",
                "ok" if gain > 0 else "",
            )
        )
    return out


def _drift_section(ly: pd.DataFrame) -> str:
    chart = charts.depth_series(
        list(ly["name"]),
        list(ly["layer"]),
        {
            "drift A": (ly["drift_a"].to_numpy(float), DRIFT_A),
            "drift B": (ly["drift_b"].to_numpy(float), DRIFT_B),
        },
        title="Drift per layer on the same images (mean KL over channels)",
        plot_id="plot-drift",
        ylabel="drift (nats, log scale)",
        roles=list(ly["role"]),
    )
    lv = Levels()
    return "<h2>Drift on the images</h2>\n" + figure(
        chart,
        "Per layer, the mean over its channels of the Gaussian KL of the BN input, measured on the images, "
        "against the running statistics each checkpoint stores: how well the stored statistics fit the weights "
        f"on these images. Where B (red) is far above A (green), B's statistics no longer fit (a layer from "
        f"{lv.drift_layer_act:g} nats, a mean from {lv.drift_act:g}): recalibrating them on the images fixes it "
        "without training. Hover a dot for the values.",
    )


def _meta_rows(cmp: Any) -> list[tuple[str, Any]]:
    rows = []
    for side, ins in (("A", cmp.a), ("B", cmp.b)):
        m = ins.meta.to_dict()
        when = " ".join(str(x) for x in (m.get("ultralytics_version"), m.get("date")) if x)
        rows += [
            (side, m.get("path") or m.get("source")),
            (f"{side} sha256", m.get("sha256")),
            (f"{side} saved by", when or None),
        ]
    th = cmp.a.thresholds.to_dict()
    return [*rows, ("thresholds", ", ".join(f"{k}={v:g}" for k, v in th.items()))]


def _depth_sections(ly: pd.DataFrame) -> str:
    names, ids, roles = list(ly["name"]), list(ly["layer"]), list(ly["role"])
    kl = charts.depth_series(
        names,
        ids,
        {
            "KL in (running stats)": (ly["kl_in"].to_numpy(float), KL_IN),
            "KL out (BN output)": (ly["kl_out"].to_numpy(float), KL_OUT),
        },
        title="Change per layer along the depth (mean KL over channels, B vs A)",
        plot_id="plot-change",
        ylabel="KL (nats, log scale)",
        roles=roles,
    )
    parts = {
        k: (ly[c].to_numpy(), col)
        for (k, col), c in zip(TRANSITION_COLORS.items(), ("newly_dead", "revived", "dead_both"), strict=True)
    }
    tr = charts.depth_stacked(
        names,
        ids,
        parts,
        title="Dead-channel transitions per layer",
        plot_id="plot-transitions",
        ylabel="channels",
        empty="no dead channel in A or B",
        roles=roles,
    )
    return "\n".join(
        [
            "<h2>Change along the depth</h2>",
            figure(
                kl,
                "Per layer, the mean over its channels of the Gaussian KL divergence of B from A: <b>KL in</b> "
                "compares the running statistics (how differently B normalises its input), <b>KL out</b> the "
                "estimated BN output N(β, (|γ|·sqrt(var/(var+eps)))²) (what the layer hands on). 0 (bottom line): "
                "the tensors are identical. Hover a dot for the values.",
            ),
            "<h2>Dead-channel transitions</h2>",
            figure(
                tr,
                "Per layer, channels newly dead in B (red), revived (alive in B, dead in A; green) and dead in "
                "both (grey), by the same data-free thresholds for both checkpoints.",
            ),
        ]
    )


def _scatter_section(ch: pd.DataFrame) -> str:
    labels = [f"{n}:{c}" for n, c in zip(ch["name"], ch["channel"], strict=True)]
    status = ch["transition"].astype(str).to_numpy()
    out, notes = [], []
    for q, sym in (("gamma", "γ"), ("beta", "β")):
        svg, clipped = charts.ab_scatter(
            ch[f"{q}_a"].to_numpy(float),
            ch[f"{q}_b"].to_numpy(float),
            labels,
            status,
            TRANSITION_COLORS,
            title=f"{q}: A vs B",
            plot_id=f"plot-{q}-ab",
            xlabel=f"{sym} in A",
            ylabel=f"{sym} in B",
        )
        out.append(svg)
        if clipped:
            notes.append(
                f"{clipped:,} {q} points outside the 0.1–99.9 percentile view are drawn at its edge."
            )
    binned = len(ch) > charts.SCATTER_POINTS
    how = (
        "Channels whose dead status did not change are binned into 2-pixel cells (darker: more channels). "
        if binned
        else ""
    )
    return "<h2>Every channel, A against B</h2>\n" + figure(
        f'<div class="row2">{"".join(out)}</div>',
        "Each point is a channel: its value in A (x) and in B (y); on the dashed diagonal nothing changed. "
        f"{how}Coloured: channels that died, revived or are dead in both. {' '.join(notes)}",
    )


def _unmatched_section(cmp: Any) -> str:
    if not (cmp.only_a or cmp.only_b or cmp.mismatched):
        return "<h2>Unmatched layers</h2>\n<p>None: every BN layer of A has a layer of the same name and width in B.</p>"
    wa = dict(zip(cmp.a.layers["name"], cmp.a.layers["channels"], strict=True))
    wb = dict(zip(cmp.b.layers["name"], cmp.b.layers["channels"], strict=True))
    groups: list[tuple[str, str, list[str], Callable[[str], str]]] = [
        ("a", "only in A", cmp.only_a, lambda n: f"{n} ({wa.get(n)} ch)"),
        ("b", "only in B", cmp.only_b, lambda n: f"{n} ({wb.get(n)} ch)"),
        (
            "width",
            "same name, another width",
            cmp.mismatched,
            lambda n: f"{n} (A {wa.get(n)} ch, B {wb.get(n)} ch)",
        ),
    ]
    out = ["<h2>Unmatched layers</h2>", '<p class="sub">Left out of every plot and of the table above.</p>']
    for key, title, names, show in groups:
        if not names:
            continue
        items = "".join(f"<li>{escape(show(n))}</li>" for n in names[:LIST_MAX])
        more = f"<p>... and {len(names) - LIST_MAX} more.</p>" if len(names) > LIST_MAX else ""
        out.append(
            f'<h3>{escape(title)} ({len(names)})</h3><ul class="findings" id="unmatched-{key}">'
            f"{items}</ul>{more}"
        )
    return "\n".join(out)


def render_html(cmp: Any) -> str:
    """The comparison page of two checkpoints (``yolobn compare A B --html FILE``)."""
    s = cmp.summary()
    a, b = _stem(s["a"]), _stem(s["b"])
    ly = cmp.layers
    observed = cmp.observed is not None
    spec = [*LAYER_SPEC[:5], *DRIFT_SPEC, *LAYER_SPEC[5:]] if observed else LAYER_SPEC
    body = [
        heading(f"yolobn compare — {a} → {b}", "What changed in the BatchNorm layers from A to B"),
        meta_table(_meta_rows(cmp)),
        verdicts_html(cmp.verdicts()),
        cards(_cards(s) + (_drift_cards(s) if observed else [])),
        _drift_section(ly) if observed and len(ly) else "",
        _depth_sections(ly) if len(ly) else "<p>No layer of A matches a layer of B.</p>",
        _scatter_section(cmp.channels) if len(cmp.channels) else "",
        "<h2>Layers</h2>",
        '<p class="sub">Every matched layer in model order; click a column to sort (e.g. by change). The same '
        "numbers as --csv / --json.</p>",
        spec_table(ly.to_dict(orient="records"), spec, table_id="layers-compare"),
        _unmatched_section(cmp),
        footer(f"{s['a']} and {s['b']}"),
    ]
    return page(f"yolobn compare — {a} → {b}", "\n".join(p for p in body if p))


def render_audit_html(table: pd.DataFrame, results: list[Any], thresholds: dict[str, float]) -> str:
    """The audit page of several checkpoints: one row each, and their dead shares as bars."""
    n = len(table)
    dead = table["dead_share"].to_numpy(float) if n else np.zeros(0)
    bars = [
        charts.Bar(
            _stem(str(r["source"])),
            100 * float(r["dead_share"]),
            f"{int(r['dead']):,} ({r['dead_share']:.1%})",
            f"{r['source']}: {int(r['dead']):,} of {int(r['channels']):,} channels dead",
            charts.WORSE if r["dead"] else charts.NEUTRAL,
            [float(r["dead_share"])],
        )
        for r in table.to_dict(orient="records")
    ]
    svg = charts.hbar_chart(
        bars,
        title="Dead channels per checkpoint",
        plot_id="plot-audit-dead",
        xlabel="dead channels (% of the BN channels)",
        min_span=1.0,
    )
    items = [
        ("checkpoints", f"{n}", ""),
        ("with dead channels", f"{int((dead > 0).sum())} of {n}", "bad" if (dead > 0).any() else "ok"),
        ("with findings", f"{int((table['findings'] > 0).sum()) if n else 0} of {n}", ""),
    ]
    body = [
        heading(
            f"yolobn compare — audit of {n} checkpoints", "Headline BatchNorm numbers, one row per checkpoint"
        ),
        meta_table([("thresholds", ", ".join(f"{k}={v:g}" for k, v in thresholds.items()))]),
        cards(items),
        figure(
            svg, "The share of each checkpoint's BatchNorm channels that are dead by the data-free criteria."
        ),
        "<h2>Checkpoints</h2>",
        spec_table(table.to_dict(orient="records"), AUDIT_SPEC, table_id="audit"),
        footer(", ".join(str(r.meta.path or r.meta.source) for r in results[:8]) + (" ..." if n > 8 else "")),
    ]
    return page(f"yolobn compare — audit of {n} checkpoints", "\n".join(body))
