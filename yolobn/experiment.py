"""Experiments: many swap variants (and an optional per-layer sensitivity sweep) in one table.

A YAML file::

    model: best.pt          # or null for the bundled demo model
    data: shapes            # dataset yaml, Ultralytics dataset name, or shapes
    imgsz: 160              # optional (default: the checkpoint's training imgsz)
    batch: 16               # optional
    device: cpu             # optional
    variants:
      - impl: reference
      - impl: reference:eps=1e-5
        layers: [backbone]  # optional: which BN layers (globs, block types, roles)
        name: eps-backbone  # optional label
    sensitivity:            # optional: swap one BN layer at a time, rank layers by the drop
      impl: reference:eps=1e-5
      layers: ['model.2*']  # optional: limit the sweep
      top: 10               # rows shown in the console (all rows are written)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from yolobn.errors import YolobnError

_KEYS = {"model", "data", "imgsz", "batch", "device", "variants", "sensitivity"}
_VARIANT_KEYS = {"impl", "layers", "name"}
_SENS_KEYS = {"impl", "layers", "top"}


@dataclass
class ExperimentResult:
    config: dict[str, Any]
    meta: dict[str, Any]
    metric: str
    results: pd.DataFrame
    sensitivity: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def read_config(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Read and check an experiment file; one-line YolobnError on any problem.

    The file is untrusted input: a custom ``impl`` (a Python file or module it names) is imported
    only with ``trust=True``, and the file cannot grant trust itself.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise YolobnError(f"{path}: no such experiment file")
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise YolobnError(f"{path}: not valid YAML{where}") from None
    if not isinstance(cfg, dict):
        raise YolobnError(f"{path}: expected a mapping with 'variants' (see yolobn experiment --help)")
    if "trust" in cfg:
        raise YolobnError(f"{path}: 'trust' cannot be set by the file; pass --trust on the command line")
    unknown = set(cfg) - _KEYS
    if unknown:
        raise YolobnError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}"
        )
    variants = cfg.get("variants")
    if not isinstance(variants, list) or not variants:
        raise YolobnError(f"{path}: 'variants' must be a non-empty list of {{impl: ...}} entries")

    for i, v in enumerate(variants):
        if isinstance(v, str):
            variants[i] = v = {"impl": v}
        if not isinstance(v, dict) or "impl" not in v:
            raise YolobnError(f"{path}: variant {i + 1} needs an 'impl'")
        bad = set(v) - _VARIANT_KEYS
        if bad:
            raise YolobnError(f"{path}: variant {i + 1}: unknown key(s) {', '.join(sorted(bad))}")
        _check_impl(str(v["impl"]), path, trust)
        if "layers" in v and isinstance(v["layers"], str):
            v["layers"] = [v["layers"]]
    sens = cfg.get("sensitivity")
    if sens is not None:
        if not isinstance(sens, dict) or "impl" not in sens:
            raise YolobnError(f"{path}: 'sensitivity' needs an 'impl'")
        bad = set(sens) - _SENS_KEYS
        if bad:
            raise YolobnError(f"{path}: sensitivity: unknown key(s) {', '.join(sorted(bad))}")
        _check_impl(str(sens["impl"]), path, trust)
        if isinstance(sens.get("layers"), str):
            sens["layers"] = [sens["layers"]]
    if cfg.get("model") is not None and cfg.get("data") is None:
        raise YolobnError(f"{path}: 'data' is required for a model other than the demo")
    return cfg


def _check_impl(spec: str, path: str | Path, trust: bool) -> None:
    from yolobn.swap import REGISTRY, parse_impl

    if spec.strip().partition(":")[0] not in REGISTRY and not trust:
        raise YolobnError(
            f"{path}: impl {spec}: a custom implementation is Python code named by the file; yolobn imports "
            "it only with --trust (or pass it yourself: yolobn swap --impl ...)"
        )
    parse_impl(spec)


def run_experiment(
    cfg: dict[str, Any],
    *,
    base_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    trust: bool = False,
) -> ExperimentResult:
    """Run every variant (and the sensitivity sweep) against one cached baseline.

    Args:
        cfg: a config from ``read_config``.
        base_dir: folder relative paths in the config are resolved against (the file's folder
            for ``model``; ``impl`` files are resolved against the working directory as on the CLI).
        progress: ``callback(label, done, total)`` for the CLI's progress bar.
        trust: full unpickle of the model and the dataset yaml's download script (see ``--trust``).
    """
    from yolobn.loader import load
    from yolobn.swap import parse_impl, swap
    from yolobn.validate import KEY_METRICS, baseline, output_difference, validate

    model_src = cfg.get("model")
    if model_src is not None and base_dir is not None and not Path(model_src).is_absolute():
        cand = base_dir / model_src
        model_src = str(cand) if cand.exists() else model_src
    loaded = load(model_src, trust=trust)
    data = cfg.get("data") or "shapes"
    imgsz = int(cfg.get("imgsz") or loaded.meta.train_args.get("imgsz") or 640)
    batch = int(cfg.get("batch") or 16)
    device = str(cfg.get("device") or "cpu")
    task = loaded.meta.task or "detect"
    keys = KEY_METRICS.get(task, KEY_METRICS["detect"])
    metric = keys[0]

    sens = cfg.get("sensitivity")
    sens_layers: list[str] = []
    if sens:
        from yolobn.walk import find_blocks, matches

        sens_layers = [b.name for b in find_blocks(loaded) if matches(b, sens.get("layers") or ["*"])]
    total = 1 + len(cfg["variants"]) + len(sens_layers)
    done = 0

    def tick(label: str) -> None:
        nonlocal done
        if progress:
            progress(label, done, total)
        done += 1

    tick("baseline")
    base, cached = baseline(loaded, data, imgsz=imgsz, batch=batch, device=device, trust=trust)
    rows = [
        _row("baseline (nn.BatchNorm2d)", "", 0, base, base, keys, {"max_abs_diff": 0.0, "max_rel_diff": 0.0})
    ]
    rows[0]["cached"] = cached
    for v in cfg["variants"]:
        spec = parse_impl(str(v["impl"]))
        label = str(v.get("name") or spec.label + (f" @ {','.join(v['layers'])}" if v.get("layers") else ""))
        tick(label)
        sw = swap(loaded, spec, layers=v.get("layers"))
        diff = output_difference(loaded.model, sw.model, imgsz)
        m = validate(sw, data, imgsz=imgsz, batch=batch, device=device, trust=trust)
        rows.append(_row(label, spec.label, len(sw.swap.replaced), m, base, keys, diff))
    results = pd.DataFrame(rows)

    sensitivity = None
    if sens:
        spec = parse_impl(str(sens["impl"]))
        srows = []
        for name in sens_layers:
            tick(f"sensitivity {name}")
            sw = swap(loaded, spec, layers=[name])
            m = validate(sw, data, imgsz=imgsz, batch=batch, device=device, trust=trust)
            srows.append({"layer": name, "impl": spec.label, metric: m.get(metric, math.nan),
                          "delta": m.get(metric, math.nan) - base.get(metric, math.nan)})  # fmt: skip
        sensitivity = (
            pd.DataFrame(srows).sort_values(["delta", "layer"], kind="stable").reset_index(drop=True)
        )
        sensitivity.insert(0, "rank", range(1, len(sensitivity) + 1))
    if progress:
        progress("done", total, total)
    resolved = {**cfg, "data": data, "imgsz": imgsz, "batch": batch, "device": device}
    return ExperimentResult(resolved, loaded.meta.to_dict(), metric, results, sensitivity)


def _row(
    label: str, impl: str, n: int, m: dict, base: dict, keys: tuple[str, ...], diff: dict
) -> dict[str, Any]:
    from yolobn.validate import metric_columns

    row: dict[str, Any] = {"variant": label, "impl": impl, "swapped": n, **metric_columns(m, base, keys)}
    row.update(max_abs_diff=diff["max_abs_diff"], max_rel_diff=diff["max_rel_diff"])
    row["ms_per_image"] = float(m.get("ms_per_image", math.nan))
    row["cached"] = False
    return row


def render_html(res: ExperimentResult) -> str:
    """A self-contained page: the results table and, if run, the sensitivity ranking as bars."""
    from html import escape

    from yolobn.report.svg import REASON_COLORS, Axes

    def table(df: pd.DataFrame) -> str:
        head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(_fmt(v))}</td>" for v in r) + "</tr>"
            for r in df.itertuples(index=False)
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [
        f"<h1>yolobn experiment — {escape(str(res.meta.get('path') or res.meta.get('source')))}</h1>",
        f"<p>data {escape(str(res.config['data']))} · imgsz {res.config['imgsz']} · validated with Ultralytics' "
        "validator on unfused copies (the swapped modules are what ran)</p>",
        "<h2>Variants</h2>",
        table(res.results),
    ]
    if res.sensitivity is not None and len(res.sensitivity):
        s = res.sensitivity
        n = len(s)
        lo = min(float(s["delta"].min()), 0.0)
        ax = Axes(1000, 60 + 14 * n, (lo * 1.05 if lo < 0 else -0.01, 0.0), (0, n), margin=(28, 20, 40, 260))
        for i, r in enumerate(s.itertuples()):
            y = ax.y(n - i)
            x0, x1 = ax.x(min(r.delta, 0)), ax.x(0)
            ax.add(
                f'<rect x="{x0:.1f}" y="{y + 2:.1f}" width="{max(x1 - x0, 0.5):.1f}" height="10" fill="{REASON_COLORS["constant"]}"/>'
            )
            ax.add(
                f'<text x="{ax.ml - 6}" y="{y + 11:.1f}" class="tick" text-anchor="end">{escape(r.layer)}</text>'
            )
        ax.frame(f"change in {res.metric} when only this layer is swapped", "", yticks=[], grid=False)
        parts += [
            "<h2>Per-layer sensitivity</h2>",
            ax.svg(f"Sensitivity to {s['impl'].iloc[0]}, one BN layer at a time", "plot-sensitivity"),
            table(s),
        ]
    css = (
        "body{font:14px system-ui,sans-serif;max-width:1100px;margin:auto;padding:16px}table{border-collapse:collapse;"
        "font-size:12.5px;margin:8px 0}td,th{border-bottom:1px solid #e3e7ec;padding:3px 8px;text-align:right}"
        "th{background:#f3f5f8}td:first-child,th:first-child{text-align:left}svg .tick{font-size:11px;fill:#444}"
        "svg .label{font-size:12px}svg .title{font-size:13px;font-weight:600}svg .frame{fill:none;stroke:#8893a2}"
        "svg .axis{stroke:#555}svg .grid{stroke:#e3e7ec}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>yolobn experiment</title><style>{css}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)
