"""``yolobn prune``: the frontier turned into a smaller model of Ultralytics' own classes.

The channels are ranked as the frontier ranks them (``yolobn.sweeps.frontier.importance``) and
removed whole classes at a time (``yolobn.edit.prune``: residual adds and depthwise convolutions
tie channels together; attention widths, head outputs and unknown blocks stay). Each removed
channel's observed mean after the activation is folded into what reads it, so the pruned model
computes what the ablated one does, except at border pixels (zero padding; measured).

How much goes: ``share`` (a percentage of all BatchNorm channels), or the largest share within
``tolerance`` of the baseline metric. The search validates the pruned models themselves at the
frontier's shares, keeps the largest share such that it and every smaller one stay within the
tolerance, then bisects the gap to the first share that did not (``refine`` steps).

Criteria: ``observed`` (post-activation std on the images: the error the ablation itself adds),
``gamma`` (``|gamma|``, network slimming) and ``l1`` (the L1 norm of each channel's filter, divided
by its layer's mean: Torch-Pruning's ``MagnitudeImportance(p=1)`` with its mean normalizer and
group reduction), each cutting the same structure with the same constants.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from yolobn.bn.inspection import inspect
from yolobn.core.errors import YolobnError
from yolobn.core.precision import json_safe
from yolobn.core.text import metric_label
from yolobn.core.verdict import Verdict
from yolobn.edit.ablation import ablate, constants, plan_from
from yolobn.edit.prune import Selection, layer_table, remove, select
from yolobn.edit.prune_graph import Graph, build_graph
from yolobn.edit.prune_residual import border_residual
from yolobn.evaluate.cost import count_params, gflops, latency
from yolobn.evaluate.validation import KEY_METRICS, baseline, validate
from yolobn.io.checks import require_runnable
from yolobn.io.images import iter_batches, model_imgsz, model_stride
from yolobn.io.loader import LoadedModel, load
from yolobn.io.save import save_checkpoint
from yolobn.run.observation import observe
from yolobn.sweeps.frontier import importance

__all__ = ["CRITERIA", "SEARCH", "STALE_KEYS", "PruneResult", "criterion_scores", "prune"]

CRITERIA = ("observed", "gamma", "l1")
STALE_KEYS = (
    "train_metrics",
    "train_results",
    "best_fitness",
)  # the input's training results: not this model's
SEARCH = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0)  # the frontier's shares
Progress = Callable[[str, int, int], None]


@dataclass
class PruneResult:
    """The pruned model and everything measured about it.

    Attributes:
        loaded: the pruned model (a ``LoadedModel``; ``yolobn.save_checkpoint`` writes it).
        selection: the channels removed (BatchNorm name -> channels), their count and share.
        layers: per BatchNorm: ``name, role, block, channels, prunable, removed, kept,
            share_removed, fixed_reason``.
        metrics: ``metric`` (the Ultralytics key), ``baseline``, ``ablated`` (the same channels
            ablated), ``pruned``; NaN without a dataset.
        cost: before/after pairs: ``params``, ``gflops`` (Ultralytics' counter at ``imgsz``),
            ``latency_ms`` (CPU, fused, batch 1, one thread, the fastest of alternated runs), ``model_bytes`` (the
            module as a checkpoint stores it).
        search: the tolerance search, one row per validated share (empty with ``share``).
        residual: per folded layer, pruned vs ablated (``yolobn.edit.prune_residual``);
            ``residual_summary`` its maxima and the end-to-end output difference.
        fixed: the channels that cannot be removed, counted by reason.
    """

    loaded: Any
    selection: Selection
    layers: pd.DataFrame
    criterion: str
    metrics: dict[str, Any]
    cost: dict[str, tuple[float, float]]
    search: pd.DataFrame
    residual: pd.DataFrame
    residual_summary: dict[str, float]
    fixed: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        p = self.cost.get("params", (math.nan, math.nan))
        m = self.metrics
        return (
            f"PruneResult({self.criterion}: {self.selection.count} channels ({self.selection.share:.1f}%), "
            f"params {int(p[0]):,} -> {int(p[1]):,}; {m['metric'].replace('metrics/', '')} "
            f"{m['baseline']:.4f} -> {m['pruned']:.4f})"
        )

    def record(self) -> dict[str, Any]:
        """What the pruned checkpoint stores under ``yolobn.prune``: the summary and the channels removed."""
        return {"prune": json_safe({**self.summary(), "channels": self.selection.channels})}

    def save(self, path: str | os.PathLike[str], *, protect: Sequence[str | os.PathLike[str]] = ()) -> Path:
        """Write the pruned checkpoint (``YOLO(path)`` loads it, without yolobn); never over the input."""
        return save_checkpoint(self.loaded, path, protect=protect, record=self.record(), drop=STALE_KEYS)

    def verdicts(self, written: str | None = None, data: str | None = None) -> list[Verdict]:
        """The answer to "does the pruned model keep its accuracy", with ``yolobn finetune`` as the
        next step when it does not (``written``: where the pruned checkpoint went; ``data``: the
        dataset as the user gave it, for that command)."""
        q = "the pruned model keeps its accuracy"
        sel, m = self.selection, self.metrics
        if sel.count == 0:
            return [
                Verdict(
                    "pruned",
                    q,
                    "look",
                    "nothing could be removed within the tolerance: the checkpoint is the model as it was",
                )
            ]
        p = self.cost.get("params", (math.nan, math.nan))
        size = (
            f"{sel.count:,} channels removed ({sel.share:.1f}%), parameters ×{p[1] / p[0]:.3f}"
            if p[0]
            else ""
        )
        label = metric_label(str(m.get("metric", "")))
        b, after = float(m.get("baseline", math.nan)), float(m.get("pruned", math.nan))
        if not (math.isfinite(b) and math.isfinite(after)):
            return [
                Verdict(
                    "pruned",
                    q,
                    "look",
                    f"{size}; accuracy not measured: give a dataset (--data) to measure it",
                )
            ]
        drop = b - after
        tol = self.settings.get("tolerance")
        allowed = float(tol) if tol is not None else 0.005
        evidence = f"{size}; {label} {b:.4f} → {after:.4f} ({after - b:+.4f}, allowed {allowed:g})"
        if drop <= allowed:
            return [Verdict("pruned", q, "ok", evidence)]
        target = written or "PRUNED.pt"
        nxt = f"yolobn finetune {shlex.quote(target)} data={shlex.quote(data or 'DATA')} epochs=30"
        return [Verdict("pruned", q, "act", evidence + "; fine-tune it to win the accuracy back", nxt)]

    def summary(self) -> dict[str, Any]:
        """The headline numbers (what the checkpoint records under ``yolobn.prune`` and the JSON holds)."""
        cost = {
            k: {"before": b, "after": a, "ratio": a / b if b else math.nan} for k, (b, a) in self.cost.items()
        }
        return {
            "criterion": self.criterion,
            "channels_removed": self.selection.count,
            "channels_total": self.selection.total,
            "channels_prunable": self.selection.prunable,
            "share_removed": self.selection.share,
            "metrics": dict(self.metrics),
            "cost": cost,
            "border_residual": dict(self.residual_summary),
            "not_prunable": dict(self.fixed),
            "settings": dict(self.settings),
        }


def _settings(
    data: str | None,
    size: int,
    batch: int,
    images: int,
    share: float | None,
    tolerance: float,
    criterion: str,
) -> dict[str, Any]:
    """What a prune ran with (the report and the checkpoint's record say it)."""
    return {
        "data": data,
        "imgsz": size,
        "batch": batch,
        "images": images,
        "share_requested": share,
        "tolerance": tolerance if share is None else None,
        "criterion": criterion,
    }


def _check_request(criterion: str, share: float | None, data: str | None) -> None:
    """The request itself, before anything is loaded."""
    if criterion not in CRITERIA:
        raise YolobnError(f"prune: unknown criterion {criterion!r}; use {', '.join(CRITERIA)}")
    if share is not None and not 0 <= share < 100:
        raise YolobnError(f"prune: share {share:g}: a percentage from 0 to below 100")
    if share is None and data is None:
        raise YolobnError(
            "prune: give a dataset (data=) to find the largest share within the tolerance, or a share"
        )


def prune(
    model: Any = None,
    data: str | None = None,
    images: Sequence[str] | None = None,
    *,
    share: float | None = None,
    tolerance: float = 0.005,
    criterion: str = "observed",
    refine: int = 3,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 16,
    device: str = "cpu",
    trust: bool = False,
    strict: bool = False,
    measure: bool = True,
    progress: Progress | None = None,
) -> PruneResult:
    """Remove the lowest-ranked channels of ``model`` (module docstring).

    Args:
        model: anything ``yolobn.load`` takes. data: the validation dataset (needed for the
            tolerance search; optional with ``share``, then no metric is measured).
        images: where the channels are observed (the constants, and the observed criterion).
        share: the percentage of BatchNorm channels to remove; None: the largest within ``tolerance``.
        criterion: ``observed``, ``gamma`` or ``l1``. refine: bisection steps of the search.
        measure: also measure FLOPs, latency and the border residual.
    """

    _check_request(criterion, share, data)
    loaded = model if isinstance(model, LoadedModel) else load(model, trust=trust, strict=strict)
    require_runnable(loaded)
    if loaded.meta.fused:
        raise YolobnError("prune: the model is fused (no BatchNorm left): prune the unfused checkpoint")
    size = model_imgsz(loaded, imgsz)
    graph = build_graph(loaded.model)
    _step(progress, "observing", 0, 1)
    ins = observe(inspect(loaded), images, max_images=max_images, imgsz=size, batch=batch, device=device)
    scores = criterion_scores(ins, loaded.model, graph, criterion)

    consts = constants(ins)
    key = KEY_METRICS.get(loaded.meta.task or "detect", KEY_METRICS["detect"])[0]
    run = _Runner(loaded, graph, consts, data, dict(imgsz=size, batch=batch, device=device, trust=trust), key)
    base = math.nan
    if data is not None:
        _step(progress, "validating the baseline", 0, 1)
        base = float(
            baseline(loaded, data, imgsz=size, batch=batch, device=device, trust=trust)[0].get(key, math.nan)
        )
    total = sum(p.channels for p in graph.producers.values())
    if share is not None:
        sel, search = select(graph, scores, _count(total, share)), pd.DataFrame()
        pruned_metric = run.metric(sel) if data is not None else math.nan
    else:
        sel, pruned_metric, search = _search(run, graph, scores, total, base, tolerance, refine, progress)
    net = remove(loaded.model, graph, sel.channels, consts)
    metrics = {
        "metric": key,
        "baseline": base,
        "pruned": pruned_metric,
        "ablated": run.ablated(ins, sel) if data is not None else math.nan,
    }
    meta = dataclasses.replace(
        loaded.meta, sha256=None, n_params=int(sum(p.numel() for p in net.parameters()))
    )
    result = PruneResult(
        LoadedModel(net, meta),
        sel,
        _layers(graph, sel, ins),
        criterion,
        metrics,
        {},
        search,
        pd.DataFrame(),
        {},
        _fixed(graph),
        meta=loaded.meta.to_dict(),
    )
    result.settings = _settings(data, size, batch, len(ins.observation.images), share, tolerance, criterion)
    if measure:
        _step(progress, "measuring", 0, 1)
        _measure(result, loaded, ins, graph, size, batch)
    return result


def criterion_scores(ins: Any, model: nn.Module, graph: Graph, criterion: str) -> dict[str, np.ndarray]:
    """Per BatchNorm name, one score per channel: lower is removed first (module docstring)."""
    if criterion == "l1":
        mods = dict(model.named_modules())
        out = {}
        for name, p in graph.producers.items():
            conv: Any = mods.get(p.conv) if p.conv else None
            if conv is None:
                continue
            norm = conv.weight.detach().double().abs().flatten(1).sum(1).numpy()
            out[name] = norm / (norm.mean() or 1.0)
        return out

    score = importance(ins, criterion)
    ch = ins.channels
    return {str(n): score[idx] for n, idx in ch.groupby("name", sort=False).indices.items()}


def _count(total: int, share: float) -> int:
    return int(math.floor(total * share / 100 + 1e-9))


class _Runner:
    """Builds and validates pruned (and ablated) models with one dataloader kept between them."""

    def __init__(
        self, loaded: Any, graph: Graph, consts: Any, data: Any, kw: dict[str, Any], key: str
    ) -> None:
        self.loaded, self.graph, self.consts, self.data, self.kw, self.key = (
            loaded,
            graph,
            consts,
            data,
            kw,
            key,
        )
        self.loaders: dict[Any, Any] = {}

    def validate(self, net: nn.Module) -> float:

        m = validate(LoadedModel(net, self.loaded.meta), self.data, loaders=self.loaders, **self.kw)
        return float(m.get(self.key, math.nan))

    def metric(self, sel: Selection) -> float:
        return self.validate(remove(self.loaded.model, self.graph, sel.channels, self.consts))

    def ablated(self, ins: Any, sel: Selection) -> float:

        return self.validate(ablate(self.loaded, plan_from(sel.channels, ins)))


def _search(
    run: _Runner,
    graph: Graph,
    scores: dict[str, np.ndarray],
    total: int,
    base: float,
    tolerance: float,
    refine: int,
    progress: Progress | None,
) -> tuple[Selection, float, pd.DataFrame]:
    """The largest share within the tolerance (module docstring): its selection, metric and the points."""
    rows: list[dict[str, Any]] = []
    good: tuple[Selection, float] = (select(graph, scores, 0), base)
    bad: float | None = None
    last = -1

    def point(share: float) -> tuple[Selection, float, bool]:
        sel = select(graph, scores, _count(total, share))
        v = run.metric(sel)
        ok = v - base >= -tolerance
        rows.append(
            {
                "share": share,
                "channels": sel.count,
                "share_actual": sel.share,
                run.key: v,
                "delta": v - base,
                "within": ok,
            }
        )
        return sel, v, ok

    for k, s in enumerate(SEARCH):
        _step(progress, f"validating {s:g}%", k, len(SEARCH) + refine)
        sel = select(graph, scores, _count(total, s))
        if sel.count == last:  # nothing more can go
            break
        last = sel.count
        sel, v, ok = point(s)
        if not ok:
            bad = s
            break
        good = (sel, v)
    lo = good[0].share
    for k in range(refine if bad is not None else 0):
        mid = (lo + bad) / 2  # type: ignore[operator]
        _step(progress, f"validating {mid:.3g}%", len(SEARCH) + k, len(SEARCH) + refine)
        sel, v, ok = point(mid)
        if ok:
            good, lo = (sel, v), mid
        else:
            bad = mid
    search = pd.DataFrame(rows).sort_values("share", kind="stable").reset_index(drop=True)
    return good[0], good[1], search


def _layers(graph: Graph, sel: Selection, ins: Any) -> pd.DataFrame:
    ly = ins.layers.set_index("name")
    t = layer_table(graph, sel.channels, list(ins.layers["name"]))
    t.insert(1, "role", t["name"].map(ly["role"]).fillna(""))
    t.insert(2, "block", t["name"].map(ly["block"]).fillna(""))
    return t


def _fixed(graph: Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i, why in graph.why_fixed().items():
        if graph.owner[i][0]:
            counts[why] = counts.get(why, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _measure(result: PruneResult, loaded: Any, ins: Any, graph: Graph, size: int, batch: int) -> None:
    """Parameters, FLOPs, latency, serialized size, and the border residual on the first images."""

    before, after = loaded.model, result.loaded.model
    ms = latency([before, after], size)
    result.cost = {
        "params": (count_params(before), count_params(after)),
        "gflops": (gflops(before, size), gflops(after, size)),
        "latency_ms": (ms[0], ms[1]),
        "model_bytes": (
            _stored_bytes(before, loaded.meta.dtype_on_disk),
            _stored_bytes(after, loaded.meta.dtype_on_disk),
        ),
    }

    paths = [Path(p) for p in ins.observation.images[:8]]
    batches = [
        x for x, _ in iter_batches(paths, size, stride=model_stride(before), batch=8, task=loaded.meta.task)
    ]
    ablated = ablate(loaded, plan_from(result.selection.channels, ins))
    result.residual, result.residual_summary = border_residual(
        ablated, after, graph, result.selection.channels, batches
    )


def _stored_bytes(model: nn.Module, dtype: str | None) -> float:

    m = copy.deepcopy(model)
    if dtype == "float16":
        m = m.half()
    buf = io.BytesIO()
    torch.save({"model": m}, buf)
    return float(buf.tell())


def _step(progress: Progress | None, label: str, done: int, total: int) -> None:
    if progress is not None:
        progress(label, done, total)
