"""One runner for swap-and-validate: a list of variants against one (cached) baseline.

``yolobn swap`` and ``yolobn experiment`` (its variants and its per-layer sensitivity sweep) all
run through ``run_variants``: one row per variant, the same columns everywhere. Each variant is
swapped on a fresh copy of the model, compared with the original without labels (on images, or on
a fixed random batch) and, when a dataset is given, validated with Ultralytics' validator on an
unfused copy (``yolobn.validation``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from yolobn.registry import Impl, parse_impl

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
        spec = impl if isinstance(impl, Impl) else parse_impl(impl)
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

    @property
    def metric(self) -> str | None:
        """The main metric (the first key), or None when nothing was validated."""
        return self.metrics[0] if self.metrics else None

    def __repr__(self) -> str:
        what = self.settings.data or f"{len(self.settings.images or [])} images (label-free)"
        return f"VariantsResult({len(self.table) - 1} variants on {what})"

    def _repr_html_(self) -> str:
        from yolobn.report.notebook import variants_html

        return variants_html(self)


def metric_keys(task: str | None, data: str | None) -> tuple[str, ...]:
    from yolobn.validation import KEY_METRICS

    return KEY_METRICS.get(task or "detect", KEY_METRICS["detect"]) if data else ()


def run_variants(
    loaded: Any,
    variants: Sequence[Variant],
    settings: Settings,
    *,
    progress: RunProgress | None = None,
    total: int | None = None,
    done: int = 0,
) -> VariantsResult:
    """Measure the baseline and every variant; see the module docstring.

    Args:
        loaded: a ``LoadedModel`` (never changed).
        variants: what to swap.
        settings: dataset, images, size, batch, device, trust, cache.
        progress: ``progress(label, done, total)``; ``total``/``done`` let a caller count more work.

    Returns:
        ``VariantsResult`` whose ``table`` has the columns ``variant, impl, swapped``, for each
        metric its short name and ``<short> delta``, ``max_abs_diff, max_rel_diff``, the agreement
        columns with images, ``ms_per_image`` and ``cached``.
    """
    from yolobn.validation import baseline, validate

    keys = metric_keys(loaded.meta.task, settings.data)
    total = total if total is not None else 1 + len(variants)
    if progress:
        progress("baseline", done, total)
    base: dict[str, float] = {}
    cached = False
    s = settings
    if s.data is not None:
        if s.cache:
            base, cached = baseline(
                loaded, s.data, imgsz=s.imgsz, batch=s.batch, device=s.device, trust=s.trust
            )
        else:
            base = validate(loaded, s.data, imgsz=s.imgsz, batch=s.batch, device=s.device, trust=s.trust)
    rows = [_row(BASELINE, "", 0, base, base, keys, {"max_abs_diff": 0.0, "max_rel_diff": 0.0}, cached)]
    for i, v in enumerate(variants):
        if progress:
            progress(f"validating {v.label}", done + 1 + i, total)
        rows.append(evaluate(loaded, v, s, base, keys))
    refs = [r.pop("_ms_ref") for r in rows if "_ms_ref" in r]
    if s.images is not None and refs:
        # Label-free: the baseline's own forward time, measured beside each variant's; the least of
        # them (the first one also pays for warming up).
        rows[0]["ms_per_image"] = min(refs)
    return VariantsResult(pd.DataFrame(rows), keys, s, base)


def evaluate(
    loaded: Any, v: Variant, s: Settings, base: dict[str, float], keys: tuple[str, ...]
) -> dict[str, Any]:
    """One variant's row: swap, compare without labels, validate when there is a dataset."""
    from yolobn.agreement import agreement, output_difference
    from yolobn.swapping import swap
    from yolobn.validation import validate

    swapped = swap(loaded, v.impl, layers=list(v.layers) or None)
    if s.images is not None:
        diff = agreement(loaded, swapped, s.images, s.imgsz, batch=s.batch)
    else:
        diff = output_difference(loaded.model, swapped.model, s.imgsz)
    m = (
        validate(swapped, s.data, imgsz=s.imgsz, batch=s.batch, device=s.device, trust=s.trust)
        if s.data
        else {}
    )
    row = _row(v.label, v.impl.label, len(swapped.swap.replaced), m, base, keys, diff, False)
    row.update(swapped.swap.detail)  # e.g. channels_ablated for ablate
    return row


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
    from yolobn.validation import metric_columns

    row: dict[str, Any] = {"variant": label, "impl": impl, "swapped": n, **metric_columns(m, base, keys)}
    row.update({k: v for k, v in diff.items() if k != "ms_per_image"})
    # Validated: Ultralytics' own inference timing; label-free: the forward time in the agreement run.
    row["ms_per_image"] = float(m.get("ms_per_image", diff.get("ms_per_image", math.nan)))
    if "ms_per_image_ref" in diff:
        row["_ms_ref"] = row.pop("ms_per_image_ref")
    row["cached"] = cached
    return row
