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
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from yolobn.bn.answers import SHOWN, given_model, listed
from yolobn.bn.walk import find_blocks, matches
from yolobn.core import notebook
from yolobn.core.errors import YolobnError
from yolobn.core.limits import MAX_BATCH, MAX_IMGSZ, MIN_IMGSZ
from yolobn.core.registry import is_custom
from yolobn.core.text import metric_label, one_line
from yolobn.core.verdict import Verdict
from yolobn.edit.impls import parse
from yolobn.io.checks import require_runnable
from yolobn.io.images import model_imgsz
from yolobn.io.loader import load
from yolobn.io.yamlfile import read_yaml
from yolobn.run.device import parse_device
from yolobn.sweeps.fanout import run_tasks
from yolobn.sweeps.variants import (
    Settings,
    Variant,
    accuracy_verdicts,
    baseline_task,
    check_layers,
    variant_task,
    variants_result,
)

if TYPE_CHECKING:
    from yolobn.sweeps.fanout import Execution

__all__ = ["ExperimentResult", "model_source", "read_config", "run_experiment"]

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
    failed: list[tuple[str, str]] = field(default_factory=list)  # (variant or layer, one-line reason)
    resumed: int = 0  # rows read from an earlier run of the same sweep

    def __repr__(self) -> str:
        sens = f", sensitivity over {len(self.sensitivity)} layers" if self.sensitivity is not None else ""
        return f"ExperimentResult({len(self.results) - 1} variants on {self.config.get('data')}{sens})"

    def verdicts(self, tolerance: float = 0.005) -> list[Verdict]:
        """The variants' answer (``yolobn.sweeps.variants.accuracy_verdicts``) and, with a sensitivity
        sweep, which layers carry the loss (one layer swapped at a time)."""
        m = self.meta or {}
        out = accuracy_verdicts(
            self.results,
            self.metric,
            len(self.failed),
            given_model(m.get("kind"), m.get("source")),
            tolerance,
        )
        sens = self.sensitivity
        if sens is not None and len(sens) and sens["delta"].notna().any():
            label = metric_label(self.metric)
            ranked = sens.dropna(subset=["delta"]).sort_values("delta", kind="stable")
            top = ranked.head(SHOWN)  # the worst three, named without "and N more"
            shown = listed(list(top["layer"]), [f"{d:+.4f}" for d in top["delta"]])
            beyond = ranked[ranked["delta"] < -tolerance]
            status = "act" if len(beyond) else "ok"
            evidence = f"one layer swapped at a time, {label}: {shown} (allowed {tolerance:g})"
            if len(beyond):
                n = len(beyond)
                evidence = f"{n} layer{'' if n == 1 else 's'} alone beyond the tolerance: " + evidence
            layers = tuple(str(n) for n in (beyond if len(beyond) else top)["layer"])
            out.append(Verdict("sensitivity", "which layers carry the loss", status, evidence, None, layers))
        return out

    def _repr_html_(self) -> str:
        short = self.metric.replace("metrics/", "")
        out = notebook.kv("yolobn experiment", [("data", self.config.get("data")), ("metric", short)])
        out += notebook.answers(self.verdicts())
        out += notebook.table(
            self.results, ["variant", "swapped", short, f"{short} delta", "max_abs_diff"], 50
        )
        if self.sensitivity is not None:
            cols = ["rank", "layer", self.metric, "delta"]
            out += "<h4>most sensitive layers</h4>" + notebook.table(self.sensitivity, cols)
        return out


def read_config(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """Read and check an experiment file; one-line YolobnError on any problem.

    The file is untrusted input: every key is checked for its type and range before anything
    runs, a custom ``impl`` (a Python file or module it names) is imported only with
    ``trust=True``, and the file cannot grant trust itself.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise YolobnError(f"{path}: no such experiment file")
    cfg = read_yaml(p, str(path), hint=" with 'variants' (see yolobn experiment --help)")
    if "trust" in cfg:
        raise YolobnError(
            f"{path}: 'trust' cannot be set by the file; give trust=True in Python or --trust on the command line"
        )
    unknown = set(map(str, cfg)) - _KEYS
    if unknown:
        raise YolobnError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}"
        )
    _check_settings(cfg, path)
    variants = cfg.get("variants")
    if not isinstance(variants, list) or not variants:
        raise YolobnError(f"{path}: 'variants' must be a non-empty list of {{impl: ...}} entries")
    labels: dict[str, int] = {}
    for i, v in enumerate(variants):
        if isinstance(v, str):
            variants[i] = v = {"impl": v}
        if not isinstance(v, dict) or "impl" not in v:
            raise YolobnError(f"{path}: variant {i + 1} needs an 'impl'")
        bad = set(map(str, v)) - _VARIANT_KEYS
        if bad:
            raise YolobnError(f"{path}: variant {i + 1}: unknown key(s) {', '.join(sorted(bad))}")
        where = f"{path}: variant {i + 1}"
        v["impl"] = _text(v["impl"], f"{where}: impl")
        if "layers" in v:
            v["layers"] = _patterns(v["layers"], f"{where}: layers")
        if v.get("name") is not None:
            v["name"] = _text(v["name"], f"{where}: name")
        label = _label(_check_impl(v["impl"], path, trust), v.get("layers"), v.get("name"))
        if label in labels:
            raise YolobnError(
                f"{where}: '{label}' is also variant {labels[label] + 1}; give each variant its own 'name'"
            )
        labels[label] = i
    sens = cfg.get("sensitivity")
    if sens is not None:
        if not isinstance(sens, dict) or "impl" not in sens:
            raise YolobnError(f"{path}: 'sensitivity' needs an 'impl'")
        bad = set(map(str, sens)) - _SENS_KEYS
        if bad:
            raise YolobnError(f"{path}: sensitivity: unknown key(s) {', '.join(sorted(bad))}")
        sens["impl"] = _text(sens["impl"], f"{path}: sensitivity: impl")
        _check_impl(sens["impl"], path, trust)
        if "layers" in sens:
            sens["layers"] = _patterns(sens["layers"], f"{path}: sensitivity: layers")
        if sens.get("top") is not None:
            sens["top"] = _whole(sens["top"], f"{path}: sensitivity: top", least=1)
    if cfg.get("model") is not None and cfg.get("data") is None:
        raise YolobnError(f"{path}: 'data' is required for a model other than the demo")
    return cfg


def _check_settings(cfg: dict[str, Any], path: str | Path) -> None:
    """model, data, imgsz, batch and device: their types and ranges, as the CLI options check them."""

    for key in ("model", "data"):
        if cfg.get(key) is not None:
            cfg[key] = _text(cfg[key], f"{path}: {key}")
    if cfg.get("imgsz") is not None:
        cfg["imgsz"] = _whole(cfg["imgsz"], f"{path}: imgsz", least=MIN_IMGSZ, most=MAX_IMGSZ)
    if cfg.get("batch") is not None:
        cfg["batch"] = _whole(cfg["batch"], f"{path}: batch", least=1, most=MAX_BATCH)
    if cfg.get("device") is not None:
        dev = cfg["device"]
        if isinstance(dev, bool) or not isinstance(dev, (str, int)):
            raise YolobnError(f"{path}: device {dev!r}: use cpu, 0 or cuda:0")

        try:
            cfg["device"] = str(parse_device(str(dev)))
        except YolobnError as e:
            raise YolobnError(f"{path}: {e}") from None


def _text(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise YolobnError(f"{what}: expected a non-empty string, got {one_line(_shown(v), 40)}")
    return v


def _patterns(v: Any, what: str) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise YolobnError(
            f"{what}: expected a list of layer patterns (['model.2*', 'backbone']), got {one_line(_shown(v), 40)}"
        )
    return v


def _whole(v: Any, what: str, *, least: int, most: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise YolobnError(f"{what}: expected a whole number, got {one_line(_shown(v), 40)}")
    if v < least or (most is not None and v > most):
        limit = f"from {least} to {most}" if most is not None else f"at least {least}"
        raise YolobnError(f"{what}: {v} must be {limit}")
    return v


def _shown(v: Any) -> str:
    s = _REPR.repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


_REPR = reprlib.Repr()  # bounded in size and depth, whatever the file holds
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def _label(impl: Any, layers: list[str] | None, name: str | None) -> str:
    return Variant(impl, tuple(layers or ()), name or "").label


def _check_impl(spec: str, path: str | Path, trust: bool) -> Any:
    if is_custom(spec) and not trust:
        raise YolobnError(
            f"{path}: impl {spec}: a custom implementation is Python code named by the file; yolobn imports "
            "it only with --trust (or pass it yourself: yolobn swap --impl ...)"
        )
    return parse(spec)


def model_source(cfg: dict[str, Any], base_dir: Path | None) -> str | None:
    """The config's ``model``, relative paths resolved against ``base_dir`` when the file is there."""
    model_src = cfg.get("model")
    if model_src is not None and base_dir is not None and not Path(model_src).is_absolute():
        cand = base_dir / model_src
        model_src = str(cand) if cand.exists() else model_src
    return model_src


def run_experiment(
    cfg: dict[str, Any],
    *,
    base_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    trust: bool = False,
    execution: Execution | None = None,
    strict: bool = False,
) -> ExperimentResult:
    """Run every variant (and the sensitivity sweep) against one cached baseline.

    Args:
        cfg: a config from ``read_config``.
        base_dir: folder relative paths in the config are resolved against (the file's folder
            for ``model``; ``impl`` files are resolved against the working directory as on the CLI).
        progress: ``callback(label, done, total)`` for the CLI's progress bar.
        trust: full unpickle of the model and the dataset yaml's download script (see ``--trust``).
        execution: where the variants and layers run (here, or one Ray task each) and whether
            finished rows are kept and resumed (``yolobn.sweeps.fanout.Execution``; default: here, nothing kept).
        strict: refuse a damaged checkpoint (see ``yolobn.load``).
    """
    if execution is None or execution.ray is None:  # with Ray the validations run on the cluster's machines
        parse_device(str(cfg.get("device") or "cpu"))  # a device this machine lacks: one line, before loading
    loaded = load(model_source(cfg, base_dir), trust=trust, strict=strict)
    require_runnable(loaded)
    settings = Settings(
        data=cfg.get("data") or "shapes",
        imgsz=model_imgsz(loaded, cfg.get("imgsz")),
        batch=int(cfg.get("batch") or 16),
        device=str(cfg.get("device") or "cpu"),
        trust=trust,
    )
    variants = [Variant.of(str(v["impl"]), v.get("layers"), v.get("name")) for v in cfg["variants"]]
    check_layers(loaded, variants)
    sens = cfg.get("sensitivity")
    sens_layers: list[str] = []
    if sens:
        sens_layers = [b.name for b in find_blocks(loaded) if matches(b, sens.get("layers") or ["*"])]
    layer_variants = [Variant(Variant.of(str(sens["impl"])).impl, (n,)) for n in sens_layers] if sens else []
    tasks = [baseline_task(), *(variant_task(v) for v in variants + layer_variants)]

    def step(label: str, done: int, total: int) -> None:
        if progress:
            progress(label if done < total else "done", done, total)

    outs = run_tasks(loaded, settings, tasks, execution, progress=step if progress else None)
    n = len(variants)
    res = variants_result(loaded, list(zip(variants, outs[1 : 1 + n], strict=True)), outs[0], settings)
    metric = res.metric or ""
    sensitivity = None
    failed = list(res.failed)
    if sens:
        srows = []
        for v, o in zip(layer_variants, outs[1 + n :], strict=True):
            value = float(o.value["metrics"].get(metric, math.nan)) if o.ok else math.nan
            srows.append(
                {
                    "layer": v.layers[0],
                    "impl": v.impl.label,
                    metric: value,
                    "delta": value - res.baseline.get(metric, math.nan),
                }
            )
            if not o.ok:
                srows[-1]["error"] = o.error
                failed.append((f"sensitivity {v.layers[0]}", o.error))
        sensitivity = pd.DataFrame(srows)
        if "error" in sensitivity.columns:
            sensitivity["error"] = sensitivity["error"].fillna("")
        # worst first; a failed layer (NaN) last
        sensitivity = sensitivity.sort_values(["delta", "layer"], kind="stable").reset_index(drop=True)
        sensitivity.insert(0, "rank", range(1, len(sensitivity) + 1))
    resolved = {
        **cfg,
        "data": settings.data,
        "imgsz": settings.imgsz,
        "batch": settings.batch,
        "device": settings.device,
    }
    notes = [f"{label}: failed: {why}" for label, why in failed]
    resumed = sum(o.resumed for o in outs)
    return ExperimentResult(
        resolved, loaded.meta.to_dict(), metric, res.table, sensitivity, notes, failed, resumed
    )
