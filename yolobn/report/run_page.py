"""training.html: the BatchNorm layers over the epochs of a tracked training (``yolobn.track``'s
``epochs.csv``), in the report's shell and look: dead channels per epoch, each layer's gamma
distribution over the epochs as a heat map with the epoch its first channel died, and a table."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from yolobn.core.errors import YolobnError
from yolobn.report import charts
from yolobn.report.page import cards, figure, footer, heading, meta_table, page, spec_table
from yolobn.report.svg import nice_ticks

__all__ = ["GRID", "LAYER_SPEC", "NUMERIC", "Run", "dead_chart", "grid_payload", "render_html", "run_grids"]

NUMERIC = ("epoch", "index", "layer", "channels", "eps", "gamma_p05", "gamma_p50", "gamma_p95", "dead",
           "constant", "off", "eps_dominated")  # fmt: skip
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
    for k in ("gamma_p05", "gamma_p50", "gamma_p95", "dead", "constant", "off", "eps_dominated"):
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
        series.append(charts.Series(label, color, e, ys, [f"epoch {x}: {y:,.0f} {label} channels" for x, y in zip(e, ys, strict=True)]))  # fmt: skip
    top = max([y for s in series for y in s.y if math.isfinite(y)] + [1.0])
    xt = [(float(x), str(x)) for x in _int_ticks(e[0], e[-1])]
    yt = [(float(y), f"{y:,}") for y in _int_ticks(0, int(math.ceil(top * 1.1)))]
    none = None if any(y > 0 for y in series[0].y if math.isfinite(y)) else "no dead channel at any epoch"
    return charts.line_chart(series, title="Dead channels per epoch (whole model)", plot_id="plot-dead-epochs",
                             xlabel="epoch", ylabel="channels", xticks=xt, yticks=yt, ylim=(0, top * 1.1),
                             height=300, note=none)  # fmt: skip


def _int_ticks(lo: int, hi: int) -> list[int]:
    if hi <= lo:
        return [lo]
    return sorted({int(round(t)) for t in nice_ticks(lo, hi, 8) if float(t).is_integer()} | {lo})


def grid_payload(run: Run) -> str:
    """The heat map's per-cell values for the tooltip (4 significant digits; null: no row)."""

    def rows(g: np.ndarray, digits: str) -> list[list[Any]]:
        return [[float(format(v, digits)) if math.isfinite(v) else None for v in r] for r in g.tolist()]

    doc = {
        "rows": list(run.layers["name"]),
        "cols": run.epochs,
        "col_label": "epoch",
        "fields": [["γ p05", rows(run.grids["gamma_p05"], ".4g")], ["γ median", rows(run.grids["gamma_p50"], ".4g")],
                   ["γ p95", rows(run.grids["gamma_p95"], ".4g")], ["dead", rows(run.grids["dead"], ".0f")]],
    }  # fmt: skip
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
]


def _table_rows(run: Run) -> list[dict[str, Any]]:
    g, d = run.grids["gamma_p50"], run.grids["dead"]
    out = []
    for i, r in enumerate(run.layers.to_dict(orient="records")):
        fin = np.flatnonzero(np.isfinite(g[i]))
        out.append({**r, "first_dead": run.first_dead[i], "dead_last": d[i, -1],
                    "dead_max": np.nanmax(d[i]) if np.isfinite(d[i]).any() else math.nan,
                    "gamma_first": g[i, fin[0]] if fin.size else math.nan,
                    "gamma_last": g[i, fin[-1]] if fin.size else math.nan,
                    "eps_last": run.grids["eps_dominated"][i, -1]})  # fmt: skip
    return out


def render_html(df: pd.DataFrame, source: str) -> str:
    """training.html for the epochs.csv of the run folder ``source`` (``yolobn report --run``)."""
    run = run_grids(df, f"{source}/yolobn/epochs.csv")
    name = source.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1] or source
    dead_last = _sums(run.grids["dead"])[-1]
    channels = float(np.nansum(run.layers["channels"].to_numpy(float)))
    died = [e for e in run.first_dead if e is not None]
    heat = charts.epoch_heatmap(
        run.grids["gamma_p50"], list(run.layers["name"]), list(run.layers["layer"]), run.epochs, run.first_dead,
        title="Median gamma of each BN layer per epoch", plot_id="plot-gamma-epochs", label="median γ", grid=GRID,
    )  # fmt: skip
    share = f" ({dead_last / channels:.1%})" if channels > 0 and math.isfinite(dead_last) else ""
    items = [("epochs", f"{len(run.epochs)} ({run.epochs[0]}–{run.epochs[-1]})", ""),
             ("BN layers", f"{len(run.layers)}", ""),
             ("dead channels at the last epoch", f"{dead_last:,.0f}{share}" if math.isfinite(dead_last) else "–",
              "bad" if dead_last > 0 else "ok"),
             ("layers that lost a channel", f"{len(died)}", "bad" if died else "ok"),
             ("first death", f"epoch {min(died)}" if died else "none", "")]  # fmt: skip
    body = [
        heading(f"yolobn training — {name}", "BatchNorm layers over the epochs of a tracked training"),
        meta_table(
            [
                ("run", source),
                ("epochs", f"{run.epochs[0]}–{run.epochs[-1]}"),
                ("BN layers", len(run.layers)),
                ("channels", f"{channels:,.0f}" if channels else None),
            ]
        ),  # fmt: skip
        cards(items),
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
