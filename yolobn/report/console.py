"""Rich renderables of inspect and activations. Builds them only: the CLI decides what to print."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from yolobn.core.table import Table as TableOfColumns
from yolobn.core.text import visible
from yolobn.report.fit import Col, fit_table, markup_safe
from yolobn.report.fit import pct as _pct
from yolobn.report.fit import sig as _g

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "LAYER_COLS",
    "OBSERVED_COLS",
    "kv_grid",
    "layer_table",
    "observed_panel",
    "observed_table",
    "summary_panel",
    "verdict_table",
]


def _conv(r: Any) -> str:
    if not r.conv_kind:
        return "-"
    k = r.kernel.split("x")[0] if r.kernel and len(set(r.kernel.split("x"))) == 1 else r.kernel
    s = r.stride.split("x")[0] if r.stride and len(set(r.stride.split("x"))) == 1 else r.stride
    dw = (
        " dw"
        if r.groups and r.groups > 1 and r.groups == r.in_channels
        else (f" g{r.groups}" if r.groups and r.groups > 1 else "")
    )
    return f"{k}/{s} {r.in_channels}→{r.out_channels}{dw}"


def _tags(r: Any) -> str:
    """The layer's findings as short tags (the full sentences are in the summary, CSV and JSON)."""
    text = getattr(r, "findings", "") or ""
    tags = []
    for f in filter(None, text.split("; ")):
        for key, tag in _TAGS:
            if key in f:
                tags.append(tag)
                break
        else:
            tags.append(f)
    return ", ".join(tags)


_TAGS = (
    ("non-finite", "non-finite"),
    ("negative running_var", "negative var"),
    ("untrained", "untrained stats"),
    ("still at init", "at init"),
    ("near init", "near init"),
    ("eps-dominated", "eps-dominated"),
    ("extreme scale", "extreme scale"),
    ("all channels dead", "all dead"),
)


LAYER_COLS = [  # dropped to fit, first to last: conv, act, role, #, block, β, var, |scale|, ch, γ
    Col("#", drop=8, style="dim"),
    Col("name", "left"),
    Col("block", "left", drop=7),
    Col("role", "left", drop=9),
    Col("conv k/s in→out", "left", drop=11),
    Col("act", "left", drop=10),
    Col("ch", drop=3),
    Col("γ mean±std", drop=2),
    Col("β mean", drop=6),
    Col("var p50", drop=5),
    Col("|scale| max", drop=4),
    Col("dead"),
    Col("eps-dom"),
]


def layer_table(
    layers: pd.DataFrame | TableOfColumns, title: str = "BatchNorm layers", *, width: int = 200
) -> Table:
    """One row per BN layer, in the order of ``layers``, fitted to ``width`` columns."""
    observed = "obs_dead" in layers.columns  # inspect --images: the observed columns too
    cols = [
        *LAYER_COLS,
        *((Col("obs dead"), Col("drift")) if observed else ()),
        Col("findings", "left", style="yellow"),
    ]
    rows = []
    for r in layers.itertuples():
        dead = f"[red]{r.dead}[/] ({_pct(r.dead_share)})" if r.dead else "·"
        act = markup_safe((r.act or "-") + ("*" if r.act_shared else ""))
        block = r.block if r.block == r.owner or not r.owner else f"{r.block}/{r.owner}"
        rows.append(
            [
                str(r.index),
                markup_safe(r.name),
                markup_safe(block),
                markup_safe(r.role),
                _conv(r),
                act,
                str(r.channels),
                f"{_g(r.gamma_mean)}±{_g(r.gamma_std, 2)}",
                _g(r.beta_mean),
                _g(r.running_var_p50),
                _g(r.max_abs_scale),
                dead,
                f"{r.eps_dominated}" if r.eps_dominated else "·",
                *((_obs_dead(r), _drift(r.drift)) if observed else ()),
                markup_safe(_tags(r)),
            ]
        )
    caption = (
        "act* = the SiLU instance shared by every Ultralytics Conv · dead = constant + off (data-free)"
        + (" · obs dead / drift: on the images (see yolobn activations)" if observed else "")
    )
    return fit_table(cols, rows, width=width, title=title, caption=caption)


def _obs_dead(r: Any) -> str:
    if not r.obs_count:
        return "[dim]not run[/]"
    return f"[red]{r.obs_dead}[/] ({_pct(r.obs_dead_share)})" if r.obs_dead else "·"


def _drift(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    style = "red" if x >= 1 else ("yellow" if x >= 0.1 else "")
    return f"[{style}]{x:#.3g}[/]" if style else f"{x:#.3g}"


OBSERVED_COLS = [
    Col("#", drop=6, style="dim"),
    Col("name", "left"),
    Col("block", "left", drop=7),
    Col("act", "left", drop=8),
    Col("ch", drop=5),
    Col("pred dead"),
    Col("obs dead"),
    Col("both", drop=4),
    Col("pred only", drop=3),
    Col("obs only", drop=2),
    Col("|Δμ|/σ", drop=9),
    Col("|ln var ratio|", drop=10),
    Col("drift"),
    Col("drift max", drop=1),
]


def observed_table(
    layers: pd.DataFrame, title: str = "BatchNorm layers on the images", *, width: int = 200
) -> Table:
    """``yolobn activations``: predicted vs observed dead and drift, one row per BN layer."""
    rows = []
    for r in layers.itertuples():
        act = markup_safe((r.act or "-") + ("*" if r.act_shared else ""))
        if not r.obs_count:
            rows.append(
                [
                    str(r.index),
                    markup_safe(r.name),
                    markup_safe(r.block),
                    act,
                    str(r.channels),
                    str(r.dead),
                    "[dim]not run[/]",
                    *("-" * 7),
                ]
            )
            continue
        rows.append(
            [
                str(r.index),
                markup_safe(r.name),
                markup_safe(r.block),
                act,
                str(r.channels),
                f"{r.dead}" if r.dead else "·",
                _obs_dead(r),
                f"{r.dead_both}" if r.dead_both else "·",
                f"[yellow]{r.dead_predicted_only}[/]" if r.dead_predicted_only else "·",
                f"[yellow]{r.dead_observed_only}[/]" if r.dead_observed_only else "·",
                _g(r.mean_shift_abs),
                _g(r.log_var_ratio_abs),
                _drift(r.drift),
                _drift(r.drift_max),
            ]
        )
    caption = (
        "pred = data-free (constant/off) · obs = on the images (flat or never positive) · "
        "|Δμ|/σ, |ln var ratio|: channel means of the BN input vs its running stats · "
        "drift = mean Gaussian KL(observed || running), 0 = the stored statistics fit"
    )
    return fit_table(OBSERVED_COLS, rows, width=width, title=title, caption=caption)


def observed_panel(
    summary: dict[str, Any], observed: dict[str, float], title: str = "yolobn activations"
) -> Panel:
    """Headline numbers of the observed statistics: confusion, dead by reason, drift."""
    s = summary
    c = s["confusion"]
    g = kv_grid()
    g.add_row("images", f"{s['images']:,} at imgsz {s['imgsz']}")
    g.add_row(
        "observed dead",
        Text.assemble(
            (
                f"{s['observed_dead']:,} ({_pct(s['observed_dead_share'])})",
                "bold red" if s["observed_dead"] else "bold green",
            ),
            f"  flat {s['observed_dead_by_reason']['flat']:,} · never positive "
            f"{s['observed_dead_by_reason']['never positive']:,}",
        ),
    )
    g.add_row(
        "vs data-free",
        f"both dead {c['both']:,} · predicted only {c['predicted_only']:,} · observed only "
        f"{c['observed_only']:,} · both alive {c['neither']:,}",
    )
    g.add_row("", Text(_prediction(s["prediction"], c), style="dim"))
    g.add_row("drift", f"mean over layers {_g(s['drift_mean'])} (Gaussian KL, nats)")
    if s["most_drifted"]:
        drifted = ", ".join(f"{d['name']} {_g(d['drift'])}" for d in s["most_drifted"][:3])
        g.add_row("most drifted", markup_safe(drifted))
    ab = s.get("ablation")
    if ab:
        short = ab["metric"].replace("metrics/", "")
        g.add_row(
            "ablating them",
            f"{ab['channels']:,} channels observed dead ({_pct(ab['share'])}) set to their mean: {short} "
            f"{ab['baseline']:.4f} → {ab['ablated']:.4f} ({ab['delta']:+.4f}) on {markup_safe(ab['data'])}",
        )
    if s["images"] < 32:
        g.add_row(
            "note",
            Text(
                f"only {s['images']} images: observed dead and drift are noisy on small samples; "
                "use 32 or more",
                style="yellow",
            ),
        )
    if s["layers_not_reached"]:
        n = len(s["layers_not_reached"])
        names = ", ".join(s["layers_not_reached"][:3]) + (" ..." if n > 3 else "")
        g.add_row(
            "note", Text(visible(f"{n} BN layer(s) not run by the forward pass: {names}"), style="yellow")
        )
    g.add_row("thresholds", Text(", ".join(f"{k}={v:g}" for k, v in observed.items()), style="dim"))
    return Panel(g, title=markup_safe(title), title_align="left", expand=False)


def _prediction(p: dict[str, float], c: dict[str, int]) -> str:
    """``data-free prediction: recall 0.0% of 130 observed-dead channels, precision - (none predicted dead)``."""
    observed, predicted = c["both"] + c["observed_only"], c["both"] + c["predicted_only"]
    recall = (
        f"{_pct(p['recall'])} of {observed:,} observed-dead channels"
        if observed
        else "- (none observed dead)"
    )
    precision = (
        f"{_pct(p['precision'])} of {predicted:,} predicted-dead" if predicted else "- (none predicted dead)"
    )
    return f"data-free prediction: recall {recall}, precision {precision}"


def _eps(counts: dict[str, int]) -> str:
    """``0.001 (all 81 layers)``, or ``1e-05 ×60 · 0.001 ×21`` for a model mixing eps values."""
    if len(counts) == 1:
        ((e, n),) = counts.items()
        return f"{float(e):g} (all {n} layers)"
    return " · ".join(f"{float(e):g} ×{n}" for e, n in counts.items())


STATUS_STYLE = {"ok": "green", "look": "yellow", "act": "bold red"}


def verdict_table(verdicts: list[Any], title: str = "answers") -> Table:
    """The answers first: each question with its status, the evidence (wrapping under itself) and
    the next command on a line of its own, ready to paste."""
    g = Table.grid(padding=(0, 1))
    g.add_column(no_wrap=True, width=4)
    g.add_column(overflow="fold")
    g.title = title
    g.title_justify = "left"
    g.title_style = "bold"
    for v in verdicts:
        style = STATUS_STYLE.get(v.status, "")
        g.add_row(Text(v.status, style=style), Text(v.question, style="bold"))
        g.add_row("", Text(v.evidence))
        if v.next:
            g.add_row("", Text.assemble(("→ ", "dim"), (v.next, "cyan")))
    return g


def kv_grid() -> Table:
    """Key/value rows whose values wrap inside their own column (a narrow terminal stays readable)."""
    g = Table.grid(padding=(0, 1))
    g.add_column(style="bold cyan", no_wrap=True)
    g.add_column(overflow="fold")
    return g


def summary_panel(meta: dict[str, Any], summary: dict[str, Any], thresholds: dict[str, float]) -> Panel:
    """Model metadata and the headline numbers. Every string value is shown as text, never as markup
    (names, paths, the version and ``train_args`` come from the file)."""
    g = kv_grid()

    def kv(k: str, v: Any) -> None:
        if v not in (None, "", [], {}):
            g.add_row(k, v if isinstance(v, Text) else markup_safe(v))

    kv("model", meta.get("path") or meta.get("source"))
    if meta.get("sha256"):
        kv(
            "sha256",
            Text.assemble(meta["sha256"][:16], (" (first 16 of 64 hex digits; all in the JSON)", "dim")),
        )
    if meta.get("size_bytes"):
        kv("size", f"{meta['size_bytes'] / 1e6:.1f} MB ({meta.get('dtype_on_disk') or '?'} on disk)")
    names = meta.get("names") or []
    classes = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    kv(
        "task",
        f"{meta.get('task') or 'unknown'} · {meta.get('model_class')} · {meta.get('nc') or 0} classes ({classes})",
    )
    how = meta.get("family_source")
    if meta.get("family"):
        kv("family", meta["family"] + (f" (inferred from {how})" if how and how != "yaml_file" else ""))
    else:
        kv("family", f"unknown ({how})" if how else "unknown")
    date = str(meta.get("date") or "")[:16].replace("T", " ")
    saved = " ".join(x for x in (meta.get("ultralytics_version"), date) if x)
    kv("saved by", f"ultralytics {saved}" if saved else None)
    ta = meta.get("train_args") or {}
    if ta:
        kv("trained", ", ".join(f"{k}={ta[k]}" for k in ("imgsz", "epochs", "batch", "data") if k in ta))
    kv("parameters", f"{meta.get('n_params', 0):,}")
    for n in meta.get("notes") or []:
        g.add_row("note", Text(visible(n), style="yellow"))
    g.add_row("", "")
    s = summary
    by = s["dead_by_reason"]
    types = ", ".join(f"{v} {k}" for k, v in s["bn_types"].items())
    kv(
        "BatchNorm",
        Text.assemble(f"{s['bn_layers']} layers, {s['channels']:,} channels ", (f"({types})", "dim")),
    )
    if s.get("eps"):
        kv("eps", _eps(s["eps"]))
    kv(
        "dead",
        Text.assemble(
            (f"{s['dead']:,} ({_pct(s['dead_share'])})", "bold red" if s["dead"] else "bold green"),
            f"  constant {by['constant']:,} · off {by['off']:,}  in {s['layers_with_dead']} layers",
        ),
    )
    kv(
        "eps-dominated",
        f"{s['eps_dominated']:,} ({_pct(s['eps_dominated_share'])}) channels with running_var < "
        f"{thresholds['eps_factor']:g}·eps",
    )
    if s["worst_layers"]:
        worst = ", ".join(
            f"{w['name']} {w['dead']}/{w['channels']} dead"
            + (f" {_pct(w['eps_share'])} eps" if w["eps_share"] else "")
            for w in s["worst_layers"][:3]
        )
        kv("worst layers", worst)
    for f in s["model_findings"]:
        g.add_row("finding", Text(visible(f), style="yellow"))
    if s["findings_by_kind"]:
        kinds = ", ".join(f"{k.replace('_', ' ')} ×{v}" for k, v in s["findings_by_kind"].items())
        kv("findings", Text(kinds, style="yellow"))
        for f in s["findings"][:5]:
            g.add_row("", Text(visible(f"{f['name']}: {f['finding']}"), style="yellow"))
        if len(s["findings"]) > 5:
            g.add_row("", Text(f"... {len(s['findings']) - 5} more in the table and the JSON", style="dim"))
    else:
        kv("findings", Text("none", style="green"))
    g.add_row("thresholds", Text(", ".join(f"{k}={v:g}" for k, v in thresholds.items()), style="dim"))
    return Panel(g, title="yolobn inspect", title_align="left", expand=False)
