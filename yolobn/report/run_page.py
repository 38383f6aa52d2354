"""training.html: the BatchNorm layers over the epochs of a tracked training (``yolobn.track``'s
``epochs.csv``), in the report's shell and look: the answer (do the saved model's running statistics
fit the training images?), the drift per epoch with the epoch where it jumped in red, dead channels
per epoch, each layer's gamma distribution over the epochs as a heat map with the epoch its first
channel died, and a table. Runs tracked without drift (older files) get the rest, and an answer
that says drift was not measured."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from yolobn.bn.answers import drift_jump, training_verdicts
from yolobn.core.errors import YolobnError
from yolobn.core.thresholds import Levels
from yolobn.core.verdict import Verdict
from yolobn.report import charts
from yolobn.report.page import cards, figure, footer, heading, meta_table, page, spec_table, verdicts_html
from yolobn.report.svg import nice_ticks, tick_label

__all__ = [
    "GRID",
    "LAYER_SPEC",
    "NUMERIC",
    "Run",
    "dead_chart",
    "drift_chart",
    "epoch_drift",
    "grid_payload",
    "render_html",
    "run_grids",
    "run_verdicts",
]

GRIDS = (
    "gamma_p05",
    "gamma_p50",
    "gamma_p95",
    "dead",
    "constant",
    "off",
    "eps_dominated",
    "drift",
    "drift_max",
    "drift_images",
)
NUMERIC = ("epoch", "index", "layer", "channels", "eps", *GRIDS)
DRIFT, TOP, JUMPED = "#2166ac", "#e69f00", "#e8112d"
GRID = "gamma-grid"  # id of the JSON the heat map's tooltip reads


@dataclass
class Run:
    """epochs.csv as grids: one row per BN layer (model order), one column per epoch."""

    epochs: list[int]
    layers: pd.DataFrame  # name, index, layer, block, role, channels (one row per layer)
    grids: dict[str, np.ndarray]  # column -> layers x epochs (NaN where a layer has no row)
    first_dead: list[int | None]  # per layer: the first epoch with a dead channel


def run_grids(df: pd.DataFrame, where: str = "epochs.csv") -> Run:
    """Check epochs.csv (untrusted input: one-line ``YolobnError`` on anything malformed) and
    arrange it as layer x epoch grids."""
    df = df.copy()
    for c in NUMERIC:
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce")
            if v.isna().any() and df[c].notna().sum() > v.notna().sum():
                raise YolobnError(f"{where}: column {c} holds values that are not numbers")
            df[c] = v
    if df["epoch"].isna().any() or (df["epoch"] % 1 != 0).any():
        raise YolobnError(f"{where}: every row needs a whole epoch number")
    df["epoch"] = df["epoch"].astype(int)
    df["name"] = df["name"].astype(str)
    if df.duplicated(["epoch", "name"]).any():
        row = df[df.duplicated(["epoch", "name"])].iloc[0]
        raise YolobnError(f"{where}: layer {row['name']} appears twice in epoch {row['epoch']}")
    if not len(df):
        raise YolobnError(f"{where}: no rows; the training wrote no epoch yet")
    order = "index" if "index" in df.columns and df["index"].notna().all() else None
    first = df.drop_duplicates("name", keep="last")
    layers = first.sort_values(order, kind="stable") if order else first
    layers = layers.reset_index(drop=True)
    info = pd.DataFrame({"name": layers["name"]})
    for c, default in (
        ("index", None),
        ("layer", None),
        ("block", ""),
        ("role", None),
        ("channels", math.nan),
    ):
        info[c] = layers[c].to_numpy() if c in layers.columns else default
    info["index"] = info["index"].fillna(pd.Series(range(len(info)))).astype(int)
    info["layer"] = info["layer"].fillna(info["index"]).astype(int)
    epochs = sorted(set(df["epoch"].tolist()))
    col = {e: j for j, e in enumerate(epochs)}
    row = {n: i for i, n in enumerate(info["name"])}
    r, c = df["name"].map(row).to_numpy(), df["epoch"].map(col).to_numpy()
    grids = {}
    for k in GRIDS:
        g = np.full((len(info), len(epochs)), np.nan)
        if k in df.columns:
            g[r, c] = df[k].to_numpy(float)
        grids[k] = g
    dead = np.nan_to_num(grids["dead"], nan=0.0) > 0
    first_dead = [epochs[int(np.argmax(d))] if d.any() else None for d in dead]
    return Run(epochs, info, grids, first_dead)


def _sums(g: np.ndarray) -> list[float]:
    return [float(np.nansum(col)) if np.isfinite(col).any() else math.nan for col in g.T]


def dead_chart(run: Run) -> str:
    """Dead channels of the whole model per epoch (and by reason, and the eps-dominated ones)."""
    e = run.epochs
    lines = [("dead", "#b2182b"), ("constant", "#67001f"), ("off", "#f4a582"), ("eps_dominated", "#2166ac")]
    series = []
    for k, color in lines:
        ys = _sums(run.grids[k])
        if k != "dead" and not any(y > 0 for y in ys if math.isfinite(y)):
            continue  # a reason that never occurs is left out of the legend
        label = k.replace("_", "-")
        series.append(
            charts.Series(
                label,
                color,
                e,
                ys,
                [f"epoch {x}: {y:,.0f} {label} channels" for x, y in zip(e, ys, strict=True)],
            )
        )
    top = max([y for s in series for y in s.y if math.isfinite(y)] + [1.0])
    xt = [(float(x), str(x)) for x in _int_ticks(e[0], e[-1])]
    yt = [(float(y), f"{y:,}") for y in _int_ticks(0, int(math.ceil(top * 1.1)))]
    none = None if any(y > 0 for y in series[0].y if math.isfinite(y)) else "no dead channel at any epoch"
    return charts.line_chart(
        series,
        title="Dead channels per epoch (whole model)",
        plot_id="plot-dead-epochs",
        xlabel="epoch",
        ylabel="channels",
        xticks=xt,
        yticks=yt,
        ylim=(0, top * 1.1),
        height=300,
        note=none,
    )


def _int_ticks(lo: int, hi: int) -> list[int]:
    if hi <= lo:
        return [lo]
    return sorted({int(round(t)) for t in nice_ticks(lo, hi, 8) if float(t).is_integer()} | {lo})


@dataclass
class EpochDrift:
    """Per epoch: the mean drift over the layers that ran, the largest layer drift and its layer, the
    sample size (NaN / "" / None where drift was not measured)."""

    mean: list[float]
    top: list[float]
    top_names: list[str]
    images: int | None
    jump: int | None


def epoch_drift(run: Run, levels: Levels | None = None) -> EpochDrift:
    """The drift of the saved model per epoch, and the epoch where it jumped (``bn.answers.drift_jump``)."""
    g = run.grids["drift"]
    mean, top, names = [], [], []
    for j in range(len(run.epochs)):
        col = g[:, j]
        ok = np.isfinite(col)
        mean.append(float(col[ok].mean()) if ok.any() else math.nan)
        top.append(float(col[ok].max()) if ok.any() else math.nan)
        names.append(
            str(run.layers["name"].iloc[int(np.flatnonzero(ok)[np.argmax(col[ok])])]) if ok.any() else ""
        )
    n = run.grids["drift_images"]
    images = int(np.nanmax(n)) if np.isfinite(n).any() else None
    return EpochDrift(mean, top, names, images, drift_jump(run.epochs, mean, levels))


def run_verdicts(run: Run, source: str, levels: Levels | None = None) -> list[Verdict]:
    """The answers of a tracked training; ``source`` is the run folder as the user wrote it."""
    d = epoch_drift(run, levels)
    model = f"{source.rstrip('/')}/weights/last.pt"
    return training_verdicts(run.epochs, d.mean, d.top, d.top_names, d.images, model, levels)


def drift_chart(run: Run, d: EpochDrift, levels: Levels | None = None) -> str:
    """Mean and largest layer drift per epoch on a log scale; the jump epoch in red."""
    lv = levels or Levels()
    e = run.epochs
    vals = np.array([v for v in d.mean + d.top if math.isfinite(v) and v > 0] + [lv.drift_look, lv.drift_act])
    lo, hi = math.floor(math.log10(vals.min())), math.ceil(math.log10(vals.max()))
    hi = max(hi, lo + 1)

    def y(v: float) -> float:
        return math.log10(max(v, 10.0**lo)) if math.isfinite(v) else math.nan

    series = [
        charts.Series(
            "mean over layers",
            DRIFT,
            e,
            [y(v) for v in d.mean],
            [f"epoch {x}: mean drift {v:.3g} nats" for x, v in zip(e, d.mean, strict=True)],
        ),
        charts.Series(
            "largest layer",
            TOP,
            e,
            [y(v) for v in d.top],
            [f"epoch {x}: {n} {v:.3g} nats" for x, n, v in zip(e, d.top_names, d.top, strict=True)],
        ),
    ]
    if d.jump is not None:
        j = e.index(d.jump)
        series.append(
            charts.Series(
                "jump",
                JUMPED,
                [d.jump],
                [y(d.mean[j])],
                [f"epoch {d.jump}: the drift jumped ({d.mean[j]:.3g} nats)"],
            )
        )
    yt = [(float(k), tick_label(10.0**k)) for k in range(lo, hi + 1)]
    xt = [(float(x), str(x)) for x in _int_ticks(e[0], e[-1])]
    band = (math.log10(lv.drift_act), float(hi), f"mean drift ≥ {lv.drift_act:g}: needs recalibration")
    return charts.line_chart(
        series,
        title="Drift of the running statistics on the training sample",
        plot_id="plot-drift-epochs",
        xlabel="epoch",
        ylabel="drift (nats, log scale)",
        band=band,
        xticks=xt,
        yticks=yt,
        ylim=(lo - 0.1, hi + 0.1),
        height=300,
    )


def grid_payload(run: Run) -> str:
    """The heat map's per-cell values for the tooltip (4 significant digits; null: no row)."""

    def rows(g: np.ndarray, digits: str) -> list[list[Any]]:
        return [[float(format(v, digits)) if math.isfinite(v) else None for v in r] for r in g.tolist()]

    doc = {
        "rows": list(run.layers["name"]),
        "cols": run.epochs,
        "col_label": "epoch",
        "fields": [
            ["γ p05", rows(run.grids["gamma_p05"], ".4g")],
            ["γ median", rows(run.grids["gamma_p50"], ".4g")],
            ["γ p95", rows(run.grids["gamma_p95"], ".4g")],
            ["dead", rows(run.grids["dead"], ".0f")],
        ],
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


LAYER_SPEC = [
    ("index", "#", "int", "position in model order"),
    ("name", "name", "text", "dotted module name"),
    ("block", "block", "text", "Ultralytics block type"),
    ("role", "role", "text", "backbone, neck or head"),
    ("channels", "ch", "int", "channels"),
    ("first_dead", "first dead", "int", "the first epoch with a dead channel in this layer"),
    ("dead_last", "dead (last)", "int", "dead channels at the last epoch"),
    ("dead_max", "dead (max)", "int", "the most dead channels at any epoch"),
    ("gamma_first", "γ p50 (first)", "g3", "median gamma at the first epoch"),
    ("gamma_last", "γ p50 (last)", "g3", "median gamma at the last epoch"),
    ("eps_last", "eps-dom (last)", "int", "eps-dominated channels at the last epoch"),
    ("drift_last", "drift (last)", "g3", "mean drift of the layer's channels at the last epoch (nats)"),
    ("drift_peak", "drift (max)", "g3", "the layer's largest drift at any epoch (nats)"),
    ("drift_peak_epoch", "at epoch", "int", "the epoch of the layer's largest drift"),
]


def _table_rows(run: Run) -> list[dict[str, Any]]:
    g, d, dr = run.grids["gamma_p50"], run.grids["dead"], run.grids["drift"]
    out = []
    for i, r in enumerate(run.layers.to_dict(orient="records")):
        fin = np.flatnonzero(np.isfinite(g[i]))
        seen = np.flatnonzero(np.isfinite(dr[i]))
        peak = int(seen[np.argmax(dr[i, seen])]) if seen.size else None
        out.append(
            {
                **r,
                "first_dead": run.first_dead[i],
                "dead_last": d[i, -1],
                "dead_max": np.nanmax(d[i]) if np.isfinite(d[i]).any() else math.nan,
                "gamma_first": g[i, fin[0]] if fin.size else math.nan,
                "gamma_last": g[i, fin[-1]] if fin.size else math.nan,
                "eps_last": run.grids["eps_dominated"][i, -1],
                "drift_last": dr[i, -1],
                "drift_peak": dr[i, peak] if peak is not None else math.nan,
                "drift_peak_epoch": run.epochs[peak] if peak is not None else None,
            }
        )
    return out


def _drift_section(run: Run, d: EpochDrift) -> str:
    if not any(math.isfinite(v) for v in d.mean):
        return (
            "<h2>Drift</h2>\n<p>Not measured in this run (tracked with <code>drift_images=0</code>, or by an "
            "older yolobn): whether the running statistics fit the weights needs images.</p>"
        )
    jump = (
        f' The drift jumped at <b class="jump">epoch {d.jump}</b> (red dot).'
        if d.jump is not None
        else " No epoch where the drift jumped."
    )
    return "<h2>Drift</h2>\n" + figure(
        drift_chart(run, d),
        f"Per epoch, the Gaussian KL (nats) of each BN input on the same {d.images or '?'} training images "
        "against the running statistics of the model Ultralytics saves (the EMA, in eval mode): the mean over "
        "the layers (blue) and the largest layer (orange). Above the shaded level the statistics no longer fit the "
        "weights: a fine-tune whose steps are too large moves the convolutions faster than the running averages "
        f"follow, with hardly any change in gamma or beta. Epoch 0 is the model the training started from.{jump}",
    )


def render_html(df: pd.DataFrame, source: str) -> str:
    """training.html for the epochs.csv of the run folder ``source`` (``yolobn report --run``)."""
    run = run_grids(df, f"{source}/yolobn/epochs.csv")
    d = epoch_drift(run)
    drift_last = d.mean[-1]
    name = source.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1] or source
    dead_last = _sums(run.grids["dead"])[-1]
    channels = float(np.nansum(run.layers["channels"].to_numpy(float)))
    died = [e for e in run.first_dead if e is not None]
    heat = charts.epoch_heatmap(
        run.grids["gamma_p50"],
        list(run.layers["name"]),
        list(run.layers["layer"]),
        run.epochs,
        run.first_dead,
        title="Median gamma of each BN layer per epoch",
        plot_id="plot-gamma-epochs",
        label="median γ",
        grid=GRID,
    )
    share = f" ({dead_last / channels:.1%})" if channels > 0 and math.isfinite(dead_last) else ""
    items = [
        ("epochs", f"{len(run.epochs)} ({run.epochs[0]}–{run.epochs[-1]})", ""),
        ("BN layers", f"{len(run.layers)}", ""),
        (
            "dead channels at the last epoch",
            f"{dead_last:,.0f}{share}" if math.isfinite(dead_last) else "–",
            "bad" if dead_last > 0 else "ok",
        ),
        ("layers that lost a channel", f"{len(died)}", "bad" if died else "ok"),
        ("first death", f"epoch {min(died)}" if died else "none", ""),
        (
            "mean drift at the last epoch",
            f"{drift_last:.3g} nats" if math.isfinite(drift_last) else "not measured",
            ""
            if not math.isfinite(drift_last)
            else "bad"
            if drift_last >= Levels().drift_act
            else "warn"
            if drift_last >= Levels().drift_look
            else "ok",
        ),
        (
            "drift jumped",
            f"epoch {d.jump}" if d.jump is not None else "no",
            "bad" if d.jump is not None else "",
        ),
    ]
    body = [
        heading(f"yolobn training — {name}", "BatchNorm layers over the epochs of a tracked training"),
        meta_table(
            [
                ("run", source),
                ("epochs", f"{run.epochs[0]}–{run.epochs[-1]}"),
                ("BN layers", len(run.layers)),
                ("channels", f"{channels:,.0f}" if channels else None),
            ]
        ),
        verdicts_html(run_verdicts(run, source)),
        cards(items),
        _drift_section(run, d),
        "<h2>Dead channels</h2>",
        figure(
            dead_chart(run),
            "Channels dead by the data-free criteria (constant or off) in the model Ultralytics "
            "saves after each epoch (the EMA), summed over all BN layers; by reason, and eps-dominated channels "
            "(a finding, not dead). Hover a dot for the count.",
        ),
        "<h2>gamma over the epochs</h2>",
        figure(
            heat,
            "One row per BN layer in model order, one column per epoch; colour: the layer's median gamma "
            "(1st–99th percentile of all cells). Hover a cell for its 5th / 50th / 95th percentile and dead "
            "count. Red triangle: the first epoch the layer had a dead channel. Rows that fade towards 0 are "
            "layers whose channels are being switched off; grey: no row for that epoch.",
        ),
        '<div id="gridtip" class="gridtip hidden" role="tooltip"></div>',
        "<h2>Layers</h2>",
        f'<p class="sub">{escape(str(len(died)))} layer(s) with a dead channel at some epoch. Click a column to sort.</p>',
        spec_table(_table_rows(run), LAYER_SPEC, table_id="run-layers"),
        footer(f"{source}/yolobn/epochs.csv"),
    ]
    return page(f"yolobn training — {name}", "\n".join(body), data={GRID: grid_payload(run)})
