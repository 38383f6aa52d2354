"""The self-contained HTML report of an ``Inspection``: header, plots, a sortable and filterable
per-layer table with per-channel details.

Every number comes from the same ``Inspection`` frames as the CSV/JSON files; plots are in
``report.plots``, the page shell (CSS, JS, security policy) in ``report.page``.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from yolobn.report import plots
from yolobn.report.export import channels_csv, layers_csv
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
    verdicts_html,
)
from yolobn.report.svg import num, roles_present

__all__ = [
    "report_files",
    "DEAD_COLUMNS",
    "DETAIL_COLUMNS",
    "FLAG_CODES",
    "INT_COLUMNS",
    "OBSERVED_COLUMNS",
    "OBSERVED_DETAIL_COLUMNS",
    "OBS_CODES",
    "SMALL_SAMPLE",
    "TABLE_COLUMNS",
    "channel_data",
    "eps_summary",
    "layer_table",
    "observed_cards",
    "render_html",
    "small_sample_note",
    "summary_cards",
    "table_columns",
]

SMALL_SAMPLE = 32  # fewer images than this: observed dead and drift are noisy (as the console says)
DETAIL_COLUMNS = ("gamma", "beta", "running_mean", "running_var")
OBSERVED_DETAIL_COLUMNS = (
    "obs_pre_mean",
    "obs_pre_std",
    "obs_positive_share",
    "obs_post_std",
    "mean_shift",
    "log_var_ratio",
)
FLAG_CODES = ["", "constant", "off", "eps-dominated"]
OBS_CODES = ["", "flat", "never positive", "not run"]

# the columns that answer something first (a phone shows the first few without scrolling)
TABLE_COLUMNS = [  # key, header, kind
    ("index", "#", "num"),
    ("name", "name", "text"),
    ("findings", "findings", "text"),
    ("dead", "dead", "num"),
    ("dead_share", "dead %", "num"),
    ("eps_dominated", "eps-dom", "num"),
    ("port_eps", "port eps", "num"),
    ("port_fp16", "port fp16", "num"),
    ("channels", "ch", "num"),
    ("block", "block", "text"),
    ("role", "role", "text"),
    ("layer", "layer", "num"),
    ("owner", "owner", "text"),
    ("act", "act", "text"),
    ("eps", "eps", "num"),
    ("gamma_mean", "γ mean", "num"),
    ("gamma_std", "γ std", "num"),
    ("beta_mean", "β mean", "num"),
    ("running_var_p50", "var p50", "num"),
    ("max_abs_scale", "|scale| max", "num"),
    ("constant", "constant", "num"),
    ("off", "off", "num"),
]
OBSERVED_COLUMNS = [  # with --images: the observed answers right after the data-free dead count
    ("obs_dead", "obs dead", "num"),
    ("drift", "drift", "num"),
    ("dead_predicted_only", "pred only", "num"),
    ("dead_observed_only", "obs only", "num"),
    ("mean_shift_abs", "|Δμ|/σ", "num"),
    ("log_var_ratio_abs", "|ln var ratio|", "num"),
]
INT_COLUMNS = (
    "index",
    "layer",
    "channels",
    "dead",
    "constant",
    "off",
    "eps_dominated",
    "obs_dead",
    "dead_predicted_only",
    "dead_observed_only",
)
DEAD_COLUMNS = {"dead": "dead", "obs_dead": "obsdead"}  # column -> CSS class of its cells when > 0


def render_html(ins: Any) -> str:
    """The report page for an ``Inspection``."""
    layers, channels = ins.layers, ins.channels
    meta, summary, th = ins.meta.to_dict(), ins.summary(), ins.thresholds.to_dict()
    source = meta.get("path") or meta.get("source") or "model"
    stem = source.rsplit("/", 1)[-1]
    os_ = ins.observed_summary() if ins.observation is not None else None
    sub = (
        f"BatchNorm statistics, observed on {os_['images']:,} images; the data-free figures are the prediction"
        if os_
        else "BatchNorm statistics and data-free dead channels"
    )
    head = [
        heading(f"yolobn report — {stem}", sub),
        verdicts_html(ins.verdicts()),
        meta_table(_meta_rows(meta, summary, layers)),
        *(f"<p class='sub'>note: {escape(n)}</p>" for n in meta.get("notes") or []),
        cards(
            observed_cards(os_) + summary_cards(summary, layers, predicted=True)
            if os_
            else summary_cards(summary, layers)
        ),
        *([small_sample_note(os_["images"])] if os_ and os_["images"] < SMALL_SAMPLE else []),
        "<h2>Health findings</h2>",
        _findings_html(summary),
        _criteria_text(th, layers),
    ]
    body = "\n".join(
        [
            *head,
            _depth_section(layers),
            _observed_section(ins, os_) if os_ else "",  # what was seen before what was predicted
            _dead_section(layers, channels, th, predicted=bool(os_)),
            _histogram_section(layers, channels),
            _table_section(layers),
            footer(source, meta.get("sha256")),
        ]
    )
    return page(f"yolobn report — {stem}", body, data={"channel-data": channel_data(channels)})


# --------------------------------------------------------------------------------------------------
# header


def eps_summary(layers: pd.DataFrame) -> str:
    """The model's eps: ``1e-3`` when every layer has it, else each value with its layer count."""
    counts = layers["eps"].value_counts().sort_index()
    if len(counts) == 1:
        return plots.eps_label(float(counts.index[0]))
    return ", ".join(
        f"{plots.eps_label(float(e))} ({n} layer{'s' if n != 1 else ''})" for e, n in counts.items()
    )


def summary_cards(
    summary: dict[str, Any], layers: pd.DataFrame, *, predicted: bool = False
) -> list[tuple[str, str, str]]:
    """The data-free headline; ``predicted``: beside observed figures, labelled as the prediction."""
    by, n_find = summary["dead_by_reason"], int((layers["findings"] != "").sum())
    return [
        ("BN layers", f"{summary['bn_layers']}", ""),
        ("channels", f"{summary['channels']:,}", ""),
        (
            "predicted dead (data-free)" if predicted else "dead channels",
            f"{summary['dead']:,} ({summary['dead_share']:.1%})",
            "" if predicted else "bad" if summary["dead"] else "ok",
        ),
        ("constant / off", f"{by['constant']:,} / {by['off']:,}", ""),
        ("eps-dominated", f"{summary['eps_dominated']:,} ({summary['eps_dominated_share']:.1%})", ""),
        ("layers with findings", f"{n_find}", "bad" if n_find else "ok"),
    ]


def observed_cards(os_: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The observed headline numbers; the data-free prediction's precision and recall against the
    observed dead channels when the summary carries them (``prediction``)."""
    c = os_["confusion"]
    out = [
        (
            f"observed dead ({os_['images']} images)",
            f"{os_['observed_dead']:,} ({os_['observed_dead_share']:.1%})",
            "bad" if os_["observed_dead"] else "ok",
        ),
        (
            "observed only / predicted only",
            f"{c['observed_only']:,} / {c['predicted_only']:,}",
            "bad" if c["observed_only"] or c["predicted_only"] else "ok",
        ),
    ]
    pred = os_.get("prediction")
    if pred is not None:
        p, r = (_share(pred.get(k)) for k in ("precision", "recall"))
        out.append(("data-free prediction: precision / recall", f"{p} / {r}", ""))
    drift = os_["drift_mean"]
    out.append(
        ("mean drift (KL)", f"{drift:.3g}" if drift == drift else "n/a", "bad" if drift >= 0.1 else "ok")
    )
    ab = os_.get("ablation")
    if ab:  # report --images --data: what ablating the observed-dead channels costs
        label = f"{ab['metric'].replace('metrics/', '')} with them ablated"
        out.append(
            (label, f"{ab['ablated']:.4f} ({ab['delta']:+.4f})", "bad" if ab["delta"] < -0.005 else "ok")
        )
    return out


def _share(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def small_sample_note(images: int) -> str:
    return (
        f'<p class="warn">Only {images} image{"s" if images != 1 else ""}: observed dead channels and drift are '
        f"noisy on small samples; use {SMALL_SAMPLE} or more (see the README).</p>"
    )


def _findings_html(summary: dict[str, Any]) -> str:
    findings = [*summary["model_findings"], *(f"{f['name']}: {f['finding']}" for f in summary["findings"])]
    if not findings:
        return (
            "<p>No health findings: no non-finite values, no untrained statistics, no layer with a majority of "
            "eps-dominated channels, no extreme scales.</p>"
        )
    out = "<ul class='findings'>" + "".join(f"<li>{escape(f)}</li>" for f in findings[:200]) + "</ul>"
    if len(findings) > 200:
        out += f"<p>... and {len(findings) - 200} more in the table below.</p>"
    return out


def _criteria_text(th: dict[str, float], layers: pd.DataFrame) -> str:
    return (
        f'<p class="sub">Thresholds: {escape(", ".join(f"{k}={v:g}" for k, v in th.items()))}; eps of this model: '
        f"{escape(eps_summary(layers))}. A channel is <b>constant</b> when its estimated BN output std "
        "|γ|·sqrt(var/(var+eps)) is below const_std; <b>off</b> when β + off_sigma·std &lt; 0 before a "
        "SiLU/ReLU-like activation; <b>eps-dominated</b> (a finding, not dead) when running_var &lt; "
        "eps_factor·eps.</p>"
    )


def _meta_rows(meta: dict[str, Any], summary: dict[str, Any], layers: pd.DataFrame) -> list[tuple[str, Any]]:
    names = meta.get("names") or []
    bn_types = ", ".join(f"{v} {k}" for k, v in summary["bn_types"].items())
    return [
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
        ("BN layers", f"{summary['bn_layers']} ({bn_types})"),
        ("BN eps", eps_summary(layers)),
        ("channels", f"{summary['channels']:,}"),
    ]


# --------------------------------------------------------------------------------------------------
# plots


def _roles_text(layers: pd.DataFrame) -> str:
    roles = roles_present(layers["role"])
    return f"Background: {', '.join(roles)}." if roles else ""


def _depth_section(layers: pd.DataFrame) -> str:
    depth = [
        ("gamma", False, "gamma (BN weight) per layer", "gamma", "plot-gamma"),
        ("beta", False, "beta (BN bias) per layer", "beta", "plot-beta"),
        ("running_mean", False, "running mean per layer", "running mean", "plot-mean"),
        ("running_var", True, "running variance per layer (log scale)", "running var", "plot-var"),
    ]
    base = (
        "Each box is one BN layer in model order: whiskers span the 5th-95th percentile of its channels, the box "
        f"the 25th-75th, the black line the median. {_roles_text(layers)} "
    )
    var = (
        f"Dashed blue: eps ({escape(eps_summary(layers))} in this model); variances near or below it mark "
        "eps-dominated channels."
    )
    return "<h2>Distributions along the depth</h2>\n" + "".join(
        figure(
            plots.depth_plot(layers, q, log=log, title=t, ylabel=yl, plot_id=pid),
            base
            + (
                var
                if q == "running_var"
                else "Look for layers whose spread collapses towards 0 or drifts far from the rest."
            ),
        )
        for q, log, t, yl, pid in depth
    )


def _dead_section(
    layers: pd.DataFrame, channels: pd.DataFrame, th: dict[str, float], *, predicted: bool = False
) -> str:
    scatter, clipped = plots.scatter_plot(channels, th)
    edge = (
        f" {clipped} channels outside the 0.1-99.9 percentile view are drawn at its edge." if clipped else ""
    )
    title = "Dead channels predicted from the weights (data-free)" if predicted else "Dead channels"
    return f"""<h2>{title}</h2>
{figure(plots.dead_share_plot(layers), "Share of each layer's channels that are dead, stacked by reason (constant, off); blue dots: share of eps-dominated channels. Hover a bar for the counts.")}
<div class="row2">
{figure(scatter, f"Every channel's gamma against its beta (alive channels binned to 2-pixel cells; dead channels as circles). Shaded: the constant band |γ| &lt; {th['const_std']:g} and the off wedge β &lt; -{th['off_sigma']:g}·|γ| (exact when running_var ≫ eps).{edge}")}
</div>
{figure(plots.heatmap_plot(layers, channels), "One row per BN layer, one column per channel (left-aligned, so wide layers extend further; grey: no channel; a bracket on the right marks a layer continued on the lines below). Colour: log10 |γ/sqrt(var+eps)|, clipped to the 1st-99th percentile; red: dead. Hover a row for its layer. Vertical stripes of extreme colour within a row point at channels a port or a quantiser will treat differently.")}"""


def _observed_section(ins: Any, os_: dict[str, Any]) -> str:
    obs, layers = ins.observation, ins.layers
    ot = obs.thresholds.to_dict()
    drifted = "".join(
        f"<li>{escape(d['name'])} ({escape(d['block'])}): drift {d['drift']:.3g}, |mean shift| "
        f"{d['mean_shift_abs']:.3g} running std, |ln var ratio| {d['log_var_ratio_abs']:.3g}</li>"
        for d in os_["most_drifted"]
    )
    small = small_sample_note(os_["images"]) if os_["images"] < SMALL_SAMPLE else ""
    return f"""<h2>On the images</h2>
{small}<p class="sub">{os_["images"]:,} images at imgsz {obs.imgsz}, preprocessed as Ultralytics' predict does (letterbox, RGB, 0-1).
A channel is observed dead when its post-activation std over all images and positions is below {ot["dead_std"]:g}
(<b>flat</b>), or when, before a SiLU/ReLU-like activation, at most {ot["min_positive"]:g} of its pre-activations are positive
(<b>never positive</b>). Drift compares the BN input seen on the images with running_mean / running_var: mean shift in running
standard deviations, ln of the variance ratio, and their Gaussian KL (0 when the stored statistics fit these images).
{len(os_["layers_not_reached"])} BN layer(s) not run by the forward pass.</p>{_ablation_line(os_.get("ablation"))}
{figure(plots.confusion_plot(layers), "Per layer, the share of channels dead on the images and/or by the data-free criteria: red both, orange predicted only (the data keeps them alive), purple observed only (the data-free criteria missed them). Hover a bar for the counts.")}
{figure(plots.drift_plot(layers), "Mean channel drift per layer (bar; orange from 0.1, red from 1) and the most drifted channel (dot), log scale. High drift: the stored statistics do not describe these images (domain shift, or stale statistics after pruning or fine-tuning): yolobn recalibrate re-estimates them.")}
<p>Most drifted layers:</p><ul class="findings">{drifted}</ul>"""


def _ablation_line(ab: dict[str, Any] | None) -> str:
    if not ab:
        return ""
    metric = escape(ab["metric"].replace("metrics/", ""))
    return (
        f'<p class="sub"><b>{ab["channels"]:,} channels observed dead ({ab["share"]:.1%})</b>: set to their mean after '
        f"the activation, {metric} goes from {ab['baseline']:.4f} to {ab['ablated']:.4f} ({ab['delta']:+.4f}) on "
        f"{escape(ab['data'])}, validated with Ultralytics' validator.</p>"
    )


def _histogram_section(layers: pd.DataFrame, channels: pd.DataFrame) -> str:
    g, b, v, sc = (channels[c].to_numpy(dtype=float) for c in ("gamma", "beta", "running_var", "scale"))
    dead = channels["dead"].to_numpy(dtype=bool)
    with np.errstate(all="ignore"):
        lv, ls = np.log10(np.clip(v, 1e-12, None)), np.log10(np.clip(np.abs(sc), 1e-12, None))
    eps = sorted(set(layers["eps"].astype(float)) - {0.0})
    lines = [(math.log10(e), f"eps {plots.eps_label(e)}") for e in eps]
    left = " and ".join(f"log10({plots.eps_label(e)}) = {math.log10(e):.3g}" for e in eps)
    hist = plots.histogram_plot
    return f"""<h2>Overall histograms</h2>
<div class="row2">
{figure(hist(g, dead, title="gamma, all channels", xlabel="gamma", plot_id="hist-gamma"), "Dead channels stacked in red.")}
{figure(hist(b, dead, title="beta, all channels", xlabel="beta", plot_id="hist-beta"), "Very negative betas before SiLU mean channels that rarely fire.")}
{figure(hist(lv, dead, title="running variance, all channels", xlabel="log10 running_var", plot_id="hist-var", vlines=lines), f"Dashed blue: the model's eps; mass left of {escape(left)} is eps-dominated.")}
{figure(hist(ls, dead, title="|effective scale|, all channels", xlabel="log10 |gamma / sqrt(var + eps)|", plot_id="hist-scale"), "The per-channel gain BN applies in eval mode.")}
</div>"""


# --------------------------------------------------------------------------------------------------
# the layer table and the per-channel data


def _table_section(layers: pd.DataFrame) -> str:
    blocks = sorted(set(layers["block"]) - {""})
    roles = roles_present(layers["role"])
    observed = " (data-free or observed)" if "obs_dead" in layers.columns else ""
    return f"""<h2>Layers</h2>
<div id="controls">
<input id="filter-name" type="search" placeholder="filter by name, e.g. model.2." aria-label="filter by name">
<select id="filter-role" aria-label="role"><option value="">all roles</option>{"".join(f'<option value="{r}">{r}</option>' for r in roles)}</select>
<select id="filter-block" aria-label="block"><option value="">all blocks</option>{"".join(f'<option value="{escape(x)}">{escape(x)}</option>' for x in blocks)}</select>
<label><input id="filter-dead" type="checkbox"> only layers with dead channels{observed}</label>
<span id="shown-count" class="sub"></span>
</div>
<p class="sub">Click a column to sort, click a row for its per-channel values. Every number here is in layers.csv / channels.csv / summary.json beside this file.</p>
{layer_table(layers)}"""


def table_columns(layers: pd.DataFrame) -> list[tuple[str, str, str]]:
    if "obs_dead" not in layers.columns:
        return TABLE_COLUMNS
    at = next(k for k, c in enumerate(TABLE_COLUMNS) if c[0] == "dead_share") + 1
    return [*TABLE_COLUMNS[:at], *OBSERVED_COLUMNS, *TABLE_COLUMNS[at:]]


def _cell(key: str, kind: str, v: Any) -> str:
    if kind == "text":
        t = "" if v is None else str(v)
        return cell(t, t, "finding" if key == "findings" and t else "")
    x = float(v) if v is not None else float("nan")
    if not math.isfinite(x):
        return cell("-", "", "n")
    if key == "dead_share":
        shown = f"{100 * x:.1f}%"
    elif key == "eps":
        shown = plots.eps_label(x)
    elif x.is_integer() and key in INT_COLUMNS:
        shown = str(int(x))
    else:
        shown = f"{x:.4g}"
    dead = DEAD_COLUMNS.get(key, "") if x > 0 else ""
    return cell(shown, num(x), f"n {dead}".rstrip())


def layer_table(layers: pd.DataFrame) -> str:
    columns = table_columns(layers)
    head = [header_cell(k, h, t) for k, h, t in columns]
    rows = []
    obs = layers["obs_dead"] if "obs_dead" in layers.columns else pd.Series(0, index=layers.index)
    for rec, n_obs in zip(layers.to_dict(orient="records"), obs, strict=True):
        dead = rec["dead"] > 0 or n_obs > 0  # the filter "only layers with dead channels" counts both
        cls = ' class="has-dead"' if dead else (' class="has-finding"' if rec["findings"] else "")
        cells = "".join(_cell(k, t, rec[k]) for k, _, t in columns)
        rows.append(
            f'<tr{cls} data-name="{escape(rec["name"])}" data-role="{escape(rec["role"])}" '
            f'data-block="{escape(rec["block"])}" data-eps="{num(rec["eps"])}">{cells}</tr>'
        )
    return data_table(head, rows, table_id="layers")


def _json_numbers(x: np.ndarray) -> list[str]:
    """5 significant digits (the page shows 4; channels.csv has 7), JSON-valid (non-finite -> null)."""
    return [f"{v:.5g}" if math.isfinite(v) else "null" for v in x.tolist()]


def channel_data(channels: pd.DataFrame) -> str:
    """Per-channel values for the detail rows, compact JSON: ``columns`` names the arrays of each
    layer in ``layers`` (name -> one array per column); ``codes`` labels the integer flags
    (``flag``: dead reason or eps-dominated; ``obs_flag``: observed dead reason or not run)."""
    columns = [*DETAIL_COLUMNS, "flag"]
    if channels.empty:
        return json.dumps({"columns": columns, "codes": {"flag": FLAG_CODES}, "layers": {}})
    # scale and out_std are not sent: the page recomputes them from gamma, var and the layer's eps.
    cols = [_json_numbers(channels[c].to_numpy(dtype=float)) for c in DETAIL_COLUMNS]
    reason = channels["dead_reason"].to_numpy()
    flag = np.where(reason == "constant", 1, np.where(reason == "off", 2, 0))
    flag = np.where((flag == 0) & channels["eps_dominated"].to_numpy(dtype=bool), 3, flag)
    cols.append([str(v) for v in flag.tolist()])
    codes = {"flag": FLAG_CODES}
    if "obs_dead" in channels.columns:  # with --images
        columns += [*OBSERVED_DETAIL_COLUMNS, "obs_flag"]
        cols += [_json_numbers(channels[c].to_numpy(dtype=float)) for c in OBSERVED_DETAIL_COLUMNS]
        r = channels["obs_reason"].to_numpy()
        obs = np.where(r == "flat", 1, np.where(r == "never positive", 2, 0))
        cols.append([str(v) for v in np.where(channels["obs_count"].to_numpy() == 0, 3, obs).tolist()])
        codes["obs_flag"] = OBS_CODES
    names = channels["name"].to_numpy()
    cuts = [0, *(np.flatnonzero(names[1:] != names[:-1]) + 1).tolist(), len(names)]
    parts = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        arrays = ",".join("[" + ",".join(c[a:b]) + "]" for c in cols)
        parts.append(f"{json.dumps(str(names[a]))}:[{arrays}]")
    head = f'"columns":{json.dumps(columns)},"codes":{json.dumps(codes)}'
    return "{" + head + ',"layers":{' + ",".join(parts) + "}}"


def report_files(inspection: Any, out_dir: Path) -> dict[Path, str]:
    """The four files of ``yolobn report``: one source of truth (the Inspection) for all of them."""
    return {
        out_dir / "report.html": render_html(inspection),
        out_dir / "layers.csv": layers_csv(inspection.layers),
        out_dir / "channels.csv": channels_csv(inspection.channels),
        out_dir / "summary.json": inspection.to_json(),
    }
