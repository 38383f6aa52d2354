"""Rich renderables for the terminal. Builds them only: the CLI decides what to print."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def _g(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


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


def layer_table(layers: pd.DataFrame, title: str = "BatchNorm layers") -> Table:
    """One row per BN layer, in the order of ``layers``."""
    t = Table(title=title, box=box.SIMPLE_HEAVY, header_style="bold", pad_edge=False, expand=False)
    t.add_column("#", justify="right", style="dim")
    t.add_column("name", overflow="fold")
    t.add_column("block")
    t.add_column("role")
    t.add_column("conv k/s in→out")
    t.add_column("act")
    t.add_column("ch", justify="right")
    t.add_column("γ mean±std", justify="right")
    t.add_column("β mean", justify="right")
    t.add_column("var p50", justify="right")
    t.add_column("|scale| max", justify="right")
    t.add_column("dead", justify="right")
    t.add_column("eps-dom", justify="right")
    observed = "obs_dead" in layers.columns  # inspect --images: the observed columns too
    if observed:
        t.add_column("obs dead", justify="right")
        t.add_column("drift", justify="right")
    t.add_column("findings", overflow="fold", style="yellow")
    for r in layers.itertuples():
        dead = f"{r.dead}" if r.dead else "·"
        if r.dead:
            dead = f"[red]{r.dead}[/] ({_pct(r.dead_share)})"
        eps = f"{r.eps_dominated}" if r.eps_dominated else "·"
        act = r.act or "-"
        if r.act_shared:
            act += "*"
        t.add_row(
            str(r.index),
            r.name,
            r.block if r.block == r.owner or not r.owner else f"{r.block}/{r.owner}",
            r.role,
            _conv(r),
            act,
            str(r.channels),
            f"{_g(r.gamma_mean)}±{_g(r.gamma_std, 2)}",
            _g(r.beta_mean),
            _g(r.running_var_p50),
            _g(r.max_abs_scale),
            dead,
            eps,
            *((_obs_dead(r), _drift(r.drift)) if observed else ()),
            r.findings or "",
        )
    t.caption = (
        "act* = the SiLU instance shared by every Ultralytics Conv · dead = constant + off (data-free)"
        + (" · obs dead / drift: on the images (see yolobn activations)" if observed else "")
    )
    return t


def _obs_dead(r: Any) -> str:
    if not r.obs_count:
        return "[dim]not run[/]"
    return f"[red]{r.obs_dead}[/] ({_pct(r.obs_dead_share)})" if r.obs_dead else "·"


def _drift(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    style = "red" if x >= 1 else ("yellow" if x >= 0.1 else "")
    return f"[{style}]{x:.3g}[/]" if style else f"{x:.3g}"


def observed_table(layers: pd.DataFrame, title: str = "BatchNorm layers on the images") -> Table:
    """``yolobn activations``: predicted vs observed dead and drift, one row per BN layer."""
    t = Table(title=title, box=box.SIMPLE_HEAVY, header_style="bold", pad_edge=False, expand=False)
    for name, justify in (
        ("#", "right"), ("name", "left"), ("block", "left"), ("act", "left"), ("ch", "right"),
        ("pred dead", "right"), ("obs dead", "right"), ("both", "right"), ("pred only", "right"),
        ("obs only", "right"), ("|Δμ|/σ", "right"), ("|ln var ratio|", "right"), ("drift", "right"),
        ("drift max", "right"),
    ):  # fmt: skip
        t.add_column(name, justify=justify, overflow="fold" if name == "name" else "ellipsis")
    for r in layers.itertuples():
        act = (r.act or "-") + ("*" if r.act_shared else "")
        if not r.obs_count:
            t.add_row(str(r.index), r.name, r.block, act, str(r.channels), str(r.dead), "[dim]not run[/]",
                      *("-" * 7))  # fmt: skip
            continue
        t.add_row(
            str(r.index),
            r.name,
            r.block,
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
        )
    t.caption = (
        "pred = data-free (constant/off) · obs = on the images (flat or never positive) · "
        "|Δμ|/σ, |ln var ratio|: channel means of the BN input vs its running stats · "
        "drift = mean Gaussian KL(observed || running), 0 = the stored statistics fit"
    )
    return t


def observed_panel(
    summary: dict[str, Any], observed: dict[str, float], title: str = "yolobn activations"
) -> Panel:
    """Headline numbers of the observed statistics: confusion, dead by reason, drift."""
    s = summary
    c = s["confusion"]
    lines = [
        Text.assemble(("images        ", "bold cyan"), f"{s['images']:,} at imgsz {s['imgsz']}"),
        Text.assemble(
            ("observed dead ", "bold cyan"),
            (
                f"{s['observed_dead']:,} ({_pct(s['observed_dead_share'])})",
                "bold red" if s["observed_dead"] else "bold green",
            ),
            f"  flat {s['observed_dead_by_reason']['flat']:,} · never positive "
            f"{s['observed_dead_by_reason']['never positive']:,}",
        ),
        Text.assemble(
            ("vs data-free  ", "bold cyan"),
            f"both dead {c['both']:,} · predicted only {c['predicted_only']:,} · observed only "
            f"{c['observed_only']:,} · both alive {c['neither']:,}",
        ),
        Text.assemble(("              ", "bold cyan"), (_prediction(s["prediction"], c), "dim")),
        Text.assemble(
            ("drift         ", "bold cyan"), f"mean over layers {_g(s['drift_mean'])} (Gaussian KL, nats)"
        ),
    ]
    if s["most_drifted"]:
        lines.append(
            Text.assemble(
                ("most drifted  ", "bold cyan"),
                ", ".join(f"{d['name']} {_g(d['drift'])}" for d in s["most_drifted"][:3]),
            )
        )
    if s["images"] < 32:
        lines.append(Text(f"note: only {s['images']} images: observed dead and drift are noisy on small samples; "
                          "use 32 or more (see README)", style="yellow"))  # fmt: skip
    if s["layers_not_reached"]:
        n = len(s["layers_not_reached"])
        lines.append(Text(f"note: {n} BN layer(s) not run by the forward pass: {', '.join(s['layers_not_reached'][:3])}"
                          + (" ..." if n > 3 else ""), style="yellow"))  # fmt: skip
    th = ", ".join(f"{k}={v:g}" for k, v in observed.items())
    lines.append(Text(f"observed thresholds: {th}", style="dim"))
    return Panel(Group(*lines), title=title, title_align="left", expand=False)


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


def summary_panel(meta: dict[str, Any], summary: dict[str, Any], thresholds: dict[str, float]) -> Panel:
    """Model metadata and the headline numbers."""
    lines: list[Text] = []

    def kv(k: str, v: Any) -> None:
        if v in (None, "", [], {}):
            return
        lines.append(Text.assemble((f"{k:<14}", "bold cyan"), str(v)))

    kv("model", meta.get("path") or meta.get("source"))
    if meta.get("sha256"):
        kv("sha256", meta["sha256"])
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
    saved = " ".join(x for x in (meta.get("ultralytics_version"), meta.get("date")) if x)
    kv("saved by", f"ultralytics {saved}" if saved else None)
    ta = meta.get("train_args") or {}
    if ta:
        kv("trained", ", ".join(f"{k}={ta[k]}" for k in ("imgsz", "epochs", "batch", "data") if k in ta))
    kv("parameters", f"{meta.get('n_params', 0):,}")
    for n in meta.get("notes") or []:
        lines.append(Text(f"note: {n}", style="yellow"))

    lines.append(Text(""))
    s = summary
    by = s["dead_by_reason"]
    lines.append(
        Text.assemble(
            ("BatchNorm     ", "bold cyan"),
            f"{s['bn_layers']} layers, {s['channels']:,} channels",
            (f"  ({', '.join(f'{v} {k}' for k, v in s['bn_types'].items())})", "dim"),
        )
    )
    if s.get("eps"):
        lines.append(Text.assemble(("eps           ", "bold cyan"), _eps(s["eps"])))
    dead_style = "bold red" if s["dead"] else "bold green"
    lines.append(
        Text.assemble(
            ("dead          ", "bold cyan"),
            (f"{s['dead']:,} ({_pct(s['dead_share'])})", dead_style),
            f"  constant {by['constant']:,} · off {by['off']:,}  in {s['layers_with_dead']} layers",
        )
    )
    lines.append(
        Text.assemble(
            ("eps-dominated ", "bold cyan"),
            f"{s['eps_dominated']:,} ({_pct(s['eps_dominated_share'])}) channels with running_var < "
            f"{thresholds['eps_factor']:g}·eps",
        )
    )
    if s["worst_layers"]:
        worst = ", ".join(
            f"{w['name']} {w['dead']}/{w['channels']} dead"
            + (f" {_pct(w['eps_share'])} eps" if w["eps_share"] else "")
            for w in s["worst_layers"][:3]
        )
        lines.append(Text.assemble(("worst layers  ", "bold cyan"), worst))
    for f in s["model_findings"]:
        lines.append(Text(f"finding: {f}", style="yellow"))
    if s["findings_by_kind"]:
        kinds = ", ".join(f"{k.replace('_', ' ')} ×{v}" for k, v in s["findings_by_kind"].items())
        lines.append(Text.assemble(("findings      ", "bold cyan"), (kinds, "yellow")))
        for f in s["findings"][:5]:
            lines.append(Text(f"  {f['name']}: {f['finding']}", style="yellow"))
        if len(s["findings"]) > 5:
            lines.append(Text(f"  ... {len(s['findings']) - 5} more in the table and the JSON", style="dim"))
    else:
        lines.append(Text.assemble(("findings      ", "bold cyan"), ("none", "green")))
    th = ", ".join(f"{k}={v:g}" for k, v in thresholds.items())
    lines.append(Text(f"thresholds: {th}", style="dim"))
    return Panel(Group(*lines), title="yolobn inspect", title_align="left", expand=False)


# --------------------------------------------------------------------------------------------------
# swap, experiment, recalibrate


def _delta(d: float) -> str:
    style = "red" if d < -0.001 else ("green" if d > 0.001 else "")
    return f"[{style}]{d:+.4f}[/]" if style else f"{d:+.4f}"


def _ms(x: Any) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def variants_table(table: pd.DataFrame, metrics: tuple[str, ...], title: str, *, images: bool) -> Table:
    """``yolobn swap``/``experiment``: one row per variant (the table of ``run_variants``)."""
    t = Table(title=title)
    short = [k.replace("metrics/", "") for k in metrics]
    rows = table.to_dict(orient="records")
    agree = "top1_agreement" if any("top1_agreement" in r for r in rows) else "box_agreement"
    t.add_column("variant")
    t.add_column("BN swapped", justify="right")
    for k in short:
        t.add_column(k, justify="right")
        t.add_column("Δ", justify="right")
    t.add_column("max |Δout| (rel)", justify="right")
    if images:
        t.add_column(agree.replace("_", " "), justify="right")
    t.add_column("ms/img", justify="right")
    for r in rows:
        cells = []
        for k in short:
            cells += [f"{r[k]:.4f}", _delta(r[f"{k} delta"])]
        if images:
            a = r.get(agree)
            cells.append("-" if a is None else (f"{a:.1%}" if a == a else "no boxes"))
        t.add_row(
            r["variant"] + (" (cached)" if r["cached"] else ""),
            str(r["swapped"]),
            *cells[: 2 * len(short)],
            f"{r['max_abs_diff']:.3g} ({r['max_rel_diff']:.2g})",
            *cells[2 * len(short) :],
            _ms(r["ms_per_image"]),
        )
    return t


def sensitivity_table(sensitivity: pd.DataFrame, metric: str, top: int) -> Table:
    """The layers most sensitive to the swapped implementation, one at a time."""
    short = metric.replace("metrics/", "")
    st = Table(title=f"most sensitive BN layers to {sensitivity['impl'].iloc[0]} (one at a time)")
    for c in ("rank", "layer", short, "Δ"):
        st.add_column(c, justify="left" if c == "layer" else "right")
    for r in sensitivity.head(top).to_dict(orient="records"):
        st.add_row(str(r["rank"]), r["layer"], f"{r[metric]:.4f}", f"{r['delta']:+.4f}")
    return st


def before_after_table(rows: list[tuple[str, float, float]], title: str) -> Table:
    """Metrics before and after (``yolobn recalibrate --data``)."""
    t = Table(title=title)
    for c in ("metric", "before", "after", "Δ"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for k, b, a in rows:
        t.add_row(k, f"{b:.4f}", f"{a:.4f}", _delta(a - b))
    return t
