"""One runner for swap-and-validate: a list of variants against one (cached) baseline.

``yolobn swap`` and ``yolobn experiment`` (its variants and its per-layer sensitivity sweep) all
run through ``run_variants``: one row per variant, the same columns everywhere. Each variant is a
task of ``yolobn.sweeps.fanout`` (run here, or on Ray workers; rows kept and resumed), and is
swapped on a fresh copy of the model, compared with the original without labels (on images, or on
a fixed random batch) and, when a dataset is given, validated with Ultralytics' validator on an
unfused copy (``yolobn.evaluate.validation``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from yolobn.bn.answers import listed
from yolobn.bn.walk import find_blocks, matches
from yolobn.core import notebook
from yolobn.core.digest import sha256
from yolobn.core.errors import YolobnError
from yolobn.core.registry import Impl
from yolobn.core.text import metric_label
from yolobn.core.verdict import Verdict, command
from yolobn.edit.build import variant
from yolobn.edit.impls import parse
from yolobn.evaluate.agreement import agreement, output_difference
from yolobn.evaluate.validation import KEY_METRICS, baseline, metric_columns, validate
from yolobn.sweeps.fanout import CONTEXT, Task, execute, run_tasks

if TYPE_CHECKING:
    from yolobn.sweeps.fanout import Execution, Outcome, Task

__all__ = [
    "BASELINE",
    "RunProgress",
    "Settings",
    "Variant",
    "VariantsResult",
    "baseline_task",
    "check_layers",
    "custom_code",
    "evaluate",
    "measure",
    "measure_baseline",
    "metric_keys",
    "portable_spec",
    "run_variants",
    "variant_row",
    "variant_task",
    "variants_result",
]

BASELINE = "baseline (nn.BatchNorm2d)"
RunProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Variant:
    """One swap to measure: an implementation, on some BN layers (all by default), with a label."""

    impl: Impl
    layers: tuple[str, ...] = ()
    name: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return self.impl.label + (f" @ {','.join(self.layers)}" if self.layers else "")

    @classmethod
    def of(cls, impl: str | Impl, layers: Sequence[str] | None = None, name: str | None = None) -> Variant:
        spec = impl if isinstance(impl, Impl) else parse(impl)
        return cls(spec, tuple(layers or ()), name or "")


@dataclass
class Settings:
    """How every variant is measured (the same for the baseline)."""

    data: str | None = None  # dataset yaml / name / "shapes"; None: label-free only
    images: list[Path] | None = None  # label-free check on these images; None: a fixed random batch
    imgsz: int = 640
    batch: int = 16
    device: str = "cpu"
    trust: bool = False
    cache: bool = True


@dataclass
class VariantsResult:
    """The table of ``run_variants``: the baseline first, then one row per variant."""

    table: pd.DataFrame
    metrics: tuple[str, ...]  # Ultralytics metric keys validated ("metrics/mAP50-95(B)", ...)
    settings: Settings
    baseline: dict[str, float] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (variant, one-line reason)
    resumed: int = 0  # rows read from an earlier run of the same sweep

    @property
    def metric(self) -> str | None:
        """The main metric (the first key), or None when nothing was validated."""
        return self.metrics[0] if self.metrics else None

    def __repr__(self) -> str:
        what = self.settings.data or f"{len(self.settings.images or [])} images (label-free)"
        return f"VariantsResult({len(self.table) - 1} variants on {what})"

    def verdicts(self, model: str | None = None, tolerance: float = 0.005) -> list[Verdict]:
        """The answer to "does the model keep its accuracy under these variants" (``accuracy_verdicts``);
        ``model``: the model as the user gave it, for the next command."""
        return accuracy_verdicts(self.table, self.metric, len(self.failed), model, tolerance)

    def _repr_html_(self) -> str:
        metric = [k.replace("metrics/", "") for k in self.metrics[:1]]
        cols = [
            "variant",
            "swapped",
            *metric,
            *(f"{k} delta" for k in metric),
            "max_abs_diff",
            "box_agreement",
            "top1_agreement",
            "channels_ablated",
        ]
        items = [("data", self.settings.data), ("imgsz", self.settings.imgsz)]
        return (
            notebook.kv("yolobn swap", items)
            + notebook.answers(self.verdicts())
            + notebook.table(self.table, cols, 50)
        )


def accuracy_verdicts(
    table: pd.DataFrame, metric: str | None, failed: int, model: str | None = None, tolerance: float = 0.005
) -> list[Verdict]:
    """The answer to "does the model keep its accuracy under these variants" (swap, experiment): each
    variant's change of the main metric against ``tolerance`` (the baseline is ``table``'s first row);
    without a dataset, the agreement with the original (accuracy not measured). ``failed``: how many
    variants failed."""

    q = "the model keeps its accuracy under these BatchNorm variants"
    rows = table.iloc[1:]  # the baseline first
    failed_note = f"; {failed} failed (see the table)" if failed else ""
    if not len(rows):
        return []
    if metric is None:
        evidence = "accuracy not measured (label-free: no dataset)"
        for col, what in (("box_agreement", "box agreement"), ("top1_agreement", "top-1 agreement")):
            v = rows[col].astype(float) if col in rows else pd.Series(dtype=float)
            if v.notna().any():
                low = rows.loc[v.idxmin()]
                evidence += f"; the lowest {what} with the original {float(low[col]):.3f} ({low['variant']})"
                break
        else:
            d = rows["max_abs_diff"].astype(float) if "max_abs_diff" in rows else pd.Series(dtype=float)
            if d.notna().any():
                evidence += (
                    f"; the largest relative output difference {float(rows['max_rel_diff'].max()):.3g}"
                )
        return [
            Verdict("variants", q, "look", evidence + "; give a dataset (--data) to validate" + failed_note)
        ]
    key = f"{metric.replace('metrics/', '')} delta"
    deltas = rows[["variant", key]].dropna().sort_values(key, kind="stable")
    label = metric_label(metric)
    shown = listed(list(deltas["variant"]), [f"{d:+.4f}" for d in deltas[key]])
    beyond = deltas[deltas[key] < -tolerance]
    evidence = f"{label} change: {shown} (allowed {tolerance:g})" if len(deltas) else "nothing validated"
    if len(beyond):
        nxt = None
        if any(str(v).startswith(("reference:eps", "lowp", "fixedpoint")) for v in beyond["variant"]):
            # the port answer ranks the layers whose output moves most with eps 1e-5 or fp16
            nxt = command("inspect", model)
            evidence += "; inspect's port answer names the layers that move most"
        return [
            Verdict(
                "variants",
                q,
                "act",
                f"{len(beyond)} beyond the tolerance: " + evidence + failed_note,
                nxt,
            )
        ]
    return [Verdict("variants", q, "look" if failed or not len(deltas) else "ok", evidence + failed_note)]


def metric_keys(task: str | None, data: str | None) -> tuple[str, ...]:
    return KEY_METRICS.get(task or "detect", KEY_METRICS["detect"]) if data else ()


def run_variants(
    loaded: Any,
    variants: Sequence[Variant],
    settings: Settings,
    *,
    progress: RunProgress | None = None,
    total: int | None = None,
    done: int = 0,
    execution: Execution | None = None,
) -> VariantsResult:
    """Measure the baseline and every variant; see the module docstring.

    Args:
        loaded: a ``LoadedModel`` (never changed).
        variants: what to swap.
        settings: dataset, images, size, batch, device, trust, cache.
        progress: ``progress(label, done, total)``; ``total``/``done`` let a caller count more work.
        execution: where the variants run (here or on Ray) and whether rows are kept and resumed
            (``yolobn.sweeps.fanout.Execution``); default: here, nothing kept.

    Returns:
        ``VariantsResult`` whose ``table`` has the columns ``variant, impl, swapped``, for each
        metric its short name and ``<short> delta``, ``max_abs_diff, max_rel_diff``, the agreement
        columns with images, ``ms_per_image`` and ``cached`` (and ``error`` when a variant failed).
    """

    check_layers(loaded, variants)
    tasks = [baseline_task(), *(variant_task(v) for v in variants)]

    def step(label: str, d: int, t: int) -> None:
        if progress:
            # the label names the task that just finished (a cached baseline too), not one running now
            progress(f"{label} done" if d < t else "done", done + d, total if total is not None else t)

    outs = run_tasks(loaded, settings, tasks, execution, progress=step if progress else None)
    return variants_result(loaded, list(zip(variants, outs[1:], strict=True)), outs[0], settings)


def baseline_task() -> Task:
    """The unswapped model's validation (cached by ``yolobn.evaluate.validation.baseline``); it failing ends the run."""

    return Task("yolobn.sweeps.variants:measure_baseline", {}, "baseline", None, fatal=True)


def variant_task(v: Variant) -> Task:
    """A variant as a task: its implementation as a spec string (paths made absolute, so that any
    worker finds them) and what decides its result (for the row key: a custom class's source too)."""

    spec, code = portable_spec(v.impl), custom_code(v.impl)
    CONTEXT.impls[f"{spec}@{code}"] = v.impl  # run here: the class as the caller imported it, not again
    ident = {"kind": "variant", "impl": spec, "code": code, "layers": list(v.layers)}
    return Task(
        "yolobn.sweeps.variants:measure",
        {"impl": spec, "code": code, "layers": list(v.layers)},
        v.label,
        ident,
    )


def portable_spec(impl: Impl) -> str:
    """``impl`` as a spec string with every path absolute (a custom file, an ``images=`` folder)."""
    import os

    if impl.is_custom:
        target, _, cls = impl.name.rpartition(":")
        return f"{os.path.abspath(os.path.expanduser(target))}:{cls}" if target.endswith(".py") else impl.name
    kinds = {o.name: o.kind for o in (impl.record.options if impl.record else ())}
    opts = {
        k: os.path.abspath(os.path.expanduser(v)) if kinds.get(k) == "path" else v
        for k, v in impl.options.items()
    }
    return Impl(impl.name, opts).label


def custom_code(impl: Impl) -> str | None:
    """sha256 of the file a custom class comes from (so an edited class is measured again)."""
    if not impl.is_custom:
        return None
    target = impl.name.rpartition(":")[0]
    f = (
        Path(target).expanduser()
        if target.endswith(".py")
        else getattr(sys.modules.get(target), "__file__", None)
    )
    try:
        return sha256(f) if f else None
    except OSError:
        return None


def check_layers(loaded: Any, variants: Sequence[Variant]) -> None:
    """A layer selection that matches no BN layer is a usage error, found before any work."""

    chosen = [v for v in variants if v.layers]
    if not chosen:
        return
    blocks = find_blocks(loaded)
    for v in chosen:
        if not any(matches(b, list(v.layers)) for b in blocks):
            raise YolobnError(f"layers {' '.join(v.layers)}: matches none of the {len(blocks)} BN layers")


def measure_baseline(loaded: Any, s: Settings, spec: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Task: the baseline's metrics, from the baseline cache when ``s.cache``."""

    if s.data is None:
        return {"metrics": {}, "cached": False}
    if s.cache:
        m, cached = baseline(loaded, s.data, imgsz=s.imgsz, batch=s.batch, device=s.device, trust=s.trust)
        return {"metrics": m, "cached": cached}
    m = validate(
        loaded, s.data, imgsz=s.imgsz, batch=s.batch, device=s.device, trust=s.trust, loaders=ctx.loaders
    )
    return {"metrics": m, "cached": False}


def measure(loaded: Any, s: Settings, spec: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Task: one variant: swap, compare without labels, validate when there is a dataset."""

    swapped = variant(loaded, ctx.impl(spec["impl"], spec.get("code")), layers=list(spec["layers"]) or None)
    if s.images is not None:
        diff = agreement(loaded, swapped, s.images, s.imgsz, batch=s.batch)
    else:
        diff = output_difference(loaded.model, swapped.model, s.imgsz)
    m: dict[str, float] = {}
    if s.data:
        m = validate(
            swapped, s.data, imgsz=s.imgsz, batch=s.batch, device=s.device, trust=s.trust, loaders=ctx.loaders
        )
    return {
        "metrics": m,
        "diff": diff,
        "swapped": len(swapped.swap.replaced),
        "detail": dict(swapped.swap.detail),
    }


def variants_result(
    loaded: Any, done: Sequence[tuple[Variant, Outcome]], base_out: Outcome, s: Settings
) -> VariantsResult:
    """The table from the outcomes: the baseline first, then each variant (failed ones with ``error``)."""
    keys = metric_keys(loaded.meta.task, s.data)
    base = base_out.value["metrics"]
    rows = [
        _row(
            BASELINE,
            "",
            0,
            base,
            base,
            keys,
            {"max_abs_diff": 0.0, "max_rel_diff": 0.0},
            base_out.value["cached"],
        )
    ]
    failed = []
    for v, o in done:
        rows.append(variant_row(v, o, base, keys))
        if not o.ok:
            failed.append((v.label, o.error))
    refs = [r.pop("_ms_ref") for r in rows if "_ms_ref" in r]
    if s.images is not None and refs:
        # Label-free: the baseline's own forward time, measured beside each variant's; the least of
        # them (the first one also pays for warming up).
        rows[0]["ms_per_image"] = min(refs)
    table = pd.DataFrame(rows)
    if failed:
        table["error"] = table["error"].fillna("")
    resumed = sum(o.resumed for _, o in done)
    return VariantsResult(table, keys, s, base, failed=failed, resumed=resumed)


def variant_row(v: Variant, o: Outcome, base: dict[str, float], keys: tuple[str, ...]) -> dict[str, Any]:
    """One variant's row from its outcome (NaN metrics and the reason when it failed)."""
    if not o.ok:
        row = _row(
            v.label,
            v.impl.label,
            0,
            {},
            base,
            keys,
            {"max_abs_diff": math.nan, "max_rel_diff": math.nan},
            False,
        )
        row["error"] = o.error
        return row
    val = o.value
    row = _row(v.label, v.impl.label, val["swapped"], val["metrics"], base, keys, val["diff"], False)
    row.update(val["detail"])  # e.g. channels_ablated for ablate
    return row


def evaluate(
    loaded: Any, v: Variant, s: Settings, base: dict[str, float], keys: tuple[str, ...]
) -> dict[str, Any]:
    """One variant's row, measured here: swap, compare without labels, validate when there is a dataset."""

    return variant_row(v, execute(loaded, s, variant_task(v), CONTEXT), base, keys)


def _row(
    label: str,
    impl: str,
    n: int,
    m: dict[str, float],
    base: dict[str, float],
    keys: tuple[str, ...],
    diff: dict[str, float],
    cached: bool,
) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": label, "impl": impl, "swapped": n, **metric_columns(m, base, keys)}
    row.update({k: v for k, v in diff.items() if k != "ms_per_image"})
    # Validated: Ultralytics' own inference timing; label-free: the forward time in the agreement run.
    row["ms_per_image"] = float(m.get("ms_per_image", diff.get("ms_per_image", math.nan)))
    if "ms_per_image_ref" in diff:
        row["_ms_ref"] = row.pop("ms_per_image_ref")
    row["cached"] = cached
    return row
