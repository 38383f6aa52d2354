"""Rich renderables for the terminal. Builds them only: the CLI decides what to print."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def _g(x: Any, digits: int = 3) -> str:
    """``digits`` significant digits, trailing zeros kept (1.00, 0.0349, 28.1, 1.00e-05)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:#.{digits}g}"


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


@dataclass(frozen=True)
class Col:
    """A table column: its header, alignment, and when it is dropped to fit the width.

    ``drop``: 0 never (names and the numbers the table is for); otherwise columns with a higher
    value are dropped first when the table would be wider than the terminal.
    """

    header: str
    justify: str = "right"
    drop: int = 0
    style: str = ""


def fit_table(
    cols: list[Col], rows: list[list[str]], *, width: int, title: str = "", caption: str = ""
) -> Table:
    """A table no wider than ``width``: minor columns are dropped (highest ``drop`` first) until it
    fits; no cell is ever wrapped or cut, so a layer name always appears whole."""
    from rich.console import Console

    keep = list(range(len(cols)))
    measure = Console(width=100_000, file=_NullFile())  # the natural width, uncapped
    while True:
        t = Table(
            title=title or None, box=box.SIMPLE_HEAVY, header_style="bold", pad_edge=False, expand=False
        )
        for k in keep:
            c = cols[k]
            t.add_column(c.header, justify=c.justify, style=c.style or None, no_wrap=True, overflow="fold")
        for r in rows:
            t.add_row(*(r[k] for k in keep))
        droppable = [k for k in keep if cols[k].drop]
        if measure.measure(t).maximum <= width or not droppable:
            break
        keep.remove(max(droppable, key=lambda k: (cols[k].drop, k)))
    dropped = [cols[k].header for k in range(len(cols)) if k not in keep]
    t.caption = caption + (f" · hidden to fit {width} columns: {', '.join(dropped)}" if dropped else "")
    return t


class _NullFile:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


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
    ("non-finite", "non-finite"), ("negative running_var", "negative var"), ("untrained", "untrained stats"),
    ("still at init", "at init"), ("near init", "near init"), ("eps-dominated", "eps-dominated"),
    ("extreme scale", "extreme scale"), ("all channels dead", "all dead"),
)  # fmt: skip


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


def layer_table(layers: pd.DataFrame, title: str = "BatchNorm layers", *, width: int = 200) -> Table:
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
        act = (r.act or "-") + ("*" if r.act_shared else "")
        rows.append(
            [
                str(r.index), r.name, r.block if r.block == r.owner or not r.owner else f"{r.block}/{r.owner}",
                r.role, _conv(r), act, str(r.channels), f"{_g(r.gamma_mean)}±{_g(r.gamma_std, 2)}",
                _g(r.beta_mean), _g(r.running_var_p50), _g(r.max_abs_scale), dead,
                f"{r.eps_dominated}" if r.eps_dominated else "·",
                *((_obs_dead(r), _drift(r.drift)) if observed else ()), _tags(r),
            ]
        )  # fmt: skip
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
    return f"[{style}]{x:.3g}[/]" if style else f"{x:.3g}"


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
        act = (r.act or "-") + ("*" if r.act_shared else "")
        if not r.obs_count:
            rows.append(
                [
                    str(r.index),
                    r.name,
                    r.block,
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
                str(r.index), r.name, r.block, act, str(r.channels), f"{r.dead}" if r.dead else "·", _obs_dead(r),
                f"{r.dead_both}" if r.dead_both else "·",
                f"[yellow]{r.dead_predicted_only}[/]" if r.dead_predicted_only else "·",
                f"[yellow]{r.dead_observed_only}[/]" if r.dead_observed_only else "·",
                _g(r.mean_shift_abs), _g(r.log_var_ratio_abs), _drift(r.drift), _drift(r.drift_max),
            ]
        )  # fmt: skip
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
    if not (isinstance(d, (int, float)) and math.isfinite(d)):
        return "-"
    if abs(d) < 5e-5:  # what +/-0.0000 would show: no change at this precision
        return "0.0000"
    style = "red" if d < -0.001 else ("green" if d > 0.001 else "")
    return f"[{style}]{d:+.4f}[/]" if style else f"{d:+.4f}"


def _metric(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _ms(x: Any) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _sci(x: Any) -> str:
    return f"{x:.1e}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


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
        cells = [r["variant"] + (" (cached)" if r["cached"] else ""), str(r["swapped"])]
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
    return fit_table(cols, rows, width=width, title=title, caption=caption)


def sensitivity_table(sensitivity: pd.DataFrame, metric: str, top: int) -> Table:
    """The layers most sensitive to the swapped implementation, one at a time."""
    short = metric.replace("metrics/", "")
    st = Table(title=f"most sensitive BN layers to {sensitivity['impl'].iloc[0]} (one at a time)")
    for c in ("rank", "layer", short, "Δ"):
        st.add_column(c, justify="left" if c == "layer" else "right")
    for r in sensitivity.head(top).to_dict(orient="records"):
        st.add_row(str(r["rank"]), r["layer"], _metric(r[metric]), _delta(r["delta"]))
    return st


def before_after_table(rows: list[tuple[str, float, float]], title: str) -> Table:
    """Metrics before and after (``yolobn recalibrate --data``)."""
    t = Table(title=title)
    for c in ("metric", "before", "after", "Δ"):
        t.add_column(c, justify="left" if c == "metric" else "right")
    for k, b, a in rows:
        t.add_row(k, _metric(b), _metric(a), _delta(a - b))
    return t


# --------------------------------------------------------------------------------------------------
# compare


def compare_panel(s: dict[str, Any]) -> Panel:
    """Headline numbers of a two-checkpoint comparison."""
    lines = [
        Text.assemble(("A (before)    ", "bold cyan"), s["a"]),
        Text.assemble(("B (after)     ", "bold cyan"), s["b"]),
        Text.assemble(
            ("matched       ", "bold cyan"),
            f"{s['matched_layers']} BN layers, {s['matched_channels']:,} channels",
        ),
    ]
    if s["identical"]:
        lines.append(
            Text.assemble(("change        ", "bold cyan"), ("none: every BN tensor is identical", "green"))
        )
    else:
        lines.append(
            Text.assemble(
                ("change        ", "bold cyan"),
                f"{s['changed_layers']} layers changed, mean {_g(s['change_mean'])} nats "
                "(Gaussian KL of running stats + BN output)",
            )
        )
    t, e = s["transitions"], s["eps_transitions"]
    lines.append(
        Text.assemble(
            ("dead channels ", "bold cyan"),
            (f"newly dead {t['newly_dead']:,}", "bold red" if t["newly_dead"] else ""),
            f" · revived {t['revived']:,} · dead in both {t['dead_both']:,}",
        )
    )
    lines.append(
        Text.assemble(
            ("eps-dominated ", "bold cyan"),
            f"newly {e['newly_eps_dominated']:,} · no longer {e['no_longer_eps_dominated']:,}",
        )
    )
    if s["most_changed"]:
        top = ", ".join(f"{d['name']} {_g(d['change'])}" for d in s["most_changed"][:3])
        lines.append(Text.assemble(("most changed  ", "bold cyan"), top))
    for key, what in (("only_a", "only in A"), ("only_b", "only in B"), ("mismatched", "other width")):
        if s[key]:
            names = ", ".join(s[key][:3]) + (" ..." if len(s[key]) > 3 else "")
            lines.append(Text(f"note: {len(s[key])} layer(s) {what}: {names}", style="yellow"))
    return Panel(Group(*lines), title="yolobn compare", title_align="left", expand=False)


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
    """The matched layers of a comparison, in the order given (most changed first)."""
    rows = []
    for r in layers.itertuples():
        rows.append(
            [
                r.name, r.block, str(r.channels), f"{_g(r.gamma_p50_a)}→{_g(r.gamma_p50_b)}",
                f"{_g(r.running_var_p50_a)}→{_g(r.running_var_p50_b)}", _g(r.kl_in), _g(r.kl_out),
                f"[red]{r.newly_dead}[/]" if r.newly_dead else "·", str(r.revived) if r.revived else "·",
                f"+{r.newly_eps_dominated}/-{r.no_longer_eps_dominated}"
                if r.newly_eps_dominated or r.no_longer_eps_dominated else "·",
            ]
        )  # fmt: skip
    caption = (
        "kl in / kl out: mean channel Gaussian KL (nats) of the running statistics / the BN output, B vs A"
    )
    return fit_table(COMPARE_COLS, rows, width=width, title="most changed BN layers", caption=caption)


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
    """One row per checkpoint (``yolobn.comparison.audit``)."""
    rows = [
        [
            str(r.source), str(r.task or "-"), str(r.family or "-"), str(r.classes or "-"), str(r.bn_layers),
            f"{r.channels:,}", f"{r.dead:,} ({_pct(r.dead_share)})" if r.dead else "·",
            f"{r.eps_dominated:,}" if r.eps_dominated else "·", str(r.findings) if r.findings else "·",
            _g(r.gamma_p50), _pct(r.near_initial_share), str(r.eps),
        ]
        for r in table.itertuples()
    ]  # fmt: skip
    return fit_table(AUDIT_COLS, rows, width=width, title="BatchNorm audit", caption="")


# --------------------------------------------------------------------------------------------------
# frontier


def frontier_table(fr: Any, *, width: int = 200) -> Group:
    """The metric change at each share ablated, one column per criterion, and the removable shares."""
    c = fr.curve[fr.curve["scope"] == "all"]
    from yolobn.frontier import CRITERIA

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
        caption="random: mean over seeds (min..max)",
    )
    s = fr.summary()
    lines = [
        Text.assemble(
            ("removable     ", "bold cyan"),
            " · ".join(f"{k} {v:g}%" for k, v in s["removable"].items()),
            (f"  (within {fr.tolerance:g} {short}, every smaller share too)", "dim"),
        )
    ]
    if s["removable_by_role"]:
        lines.append(
            Text.assemble(
                ("by role       ", "bold cyan"),
                " · ".join(f"{k} {v:g}%" for k, v in s["removable_by_role"].items()),
                ("  (observed criterion, within each role)", "dim"),
            )
        )
    if s["most_prunable_layers"]:
        top = ", ".join(f"{d['name']} {d['ablated']}/{d['channels']}" for d in s["most_prunable_layers"][:3])
        lines.append(Text.assemble(("most prunable ", "bold cyan"), top))
    return Group(t, Panel(Group(*lines), title="yolobn frontier", title_align="left", expand=False))
