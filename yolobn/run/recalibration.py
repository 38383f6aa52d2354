"""Re-estimate the BatchNorm running statistics on images (``yolobn recalibrate``).

What is estimated: every selected BN's running mean and variance become the mean and the
*population* variance (squared deviations / n) of its input over every position of every image, as
the recalibrated model itself sees them in eval mode; ``yolobn activations`` on the same images then
finds no drift. Population, not PyTorch's unbiased variance: the drift and every eval-mode output use
it, and with n = images x positions the two differ by n/(n-1) anyway. Batch moments are merged
exactly in float64 (``recording.Moments``), so batch size, image order and the grouping of images by
letterboxed shape change nothing.

Why layer by layer: a BN's input depends on the statistics of the BNs before it; the answer is the
fixed point of S = F(S), F = "statistics of the BN inputs under S". Whole-model passes that update
every layer at once (Jacobi) diverge: the error grows 2-10x per level of depth, and on the demo the
largest layer drift went 0.18 -> 2.6 -> 3e37 -> NaN in three passes. Training-mode estimates (the
previous ``recalibrate``: batch statistics averaged over batches) describe a training-mode model and
miss the variance between batch means (demo, batch 8: layer drift up to 19). Setting the statistics
in dependency order is exact:

1. A forward pass of one image with autograd: a zero "probe" is added to every selected BN's output;
   the autograd graph of each BN input says which BNs it depends on. Level = 1 + the deepest of those.
2. One pass over the images per level (demo: 64 levels, 81 BNs): the level's BNs, whose upstream
   BNs are all final, get their statistics; the forward pass stops after the level's last BN.
3. Modules whose output can no longer change are kept (their output per batch) and replayed in later
   passes, as are the decoded images, within ``cache_mb``; once nothing reads a kept output, a zero
   stand-in replaces it (``yolobn.run.layerwise``). Without the cache each level costs a forward pass up
   to that level: about 30 full passes instead of 3-9 (measured below).
4. A final plain full pass measures the drift left (``meta.recalibration["drift_after"]``).

Measured (``bench/bench_recalibrate.py``; demo model, its 96 training images at 160 px, one CPU
thread on the shared 2-core machine; "passes" = time / one plain forward pass over the images, for
65 passes run: 64 levels, most of them short, and the check):

    estimator                      batch  time    passes  cache   largest layer drift after  mAP50-95
    stored statistics (trained)       -      -       -       -    0.18                       0.629
    exact (this module)              32   3.0 s     3.7   138 MB  6e-16                      0.620
    exact                             8   4.2 s     5.4   138 MB  9e-15                      0.620
    exact                             1  10.0 s     6.6   138 MB  8e-14                      0.620
    exact without cache (cache_mb=0) 32  32.7 s    28.6     0     6e-16                      0.620
    previous train-mode average      32      -       1       -    0.30                       0.617
    previous train-mode average       8      -       1       -    19                         0.604
    Jacobi whole-model passes        32      -    1..4       -    0.18, 2.6, 3e37, inf       -

The statistics at batch 1 and 8 equal those at 32 to 1e-6 (variance, relative; mean, in running
standard deviations). 32 photos at 640 px (bus.jpg/zidane.jpg): 2.7 passes, 498 MB of cache.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.bn.answers import Paths
from yolobn.bn.walk import find_blocks, matches, unwrap
from yolobn.core.errors import YolobnError
from yolobn.core.text import metric_label
from yolobn.core.verdict import Verdict, command
from yolobn.io.images import Progress, check_decoded, model_stride
from yolobn.io.loader import LoadedModel
from yolobn.run.layerwise import Budget, Images, LevelRun, dependency_plan
from yolobn.run.observation import prepare

METHOD = "exact"
METHOD_TEXT = (
    "eval-mode population mean and variance (/ n) of each BN input, set layer by layer in dependency order"
)
CACHE_MB = 2048


def recalibrate(
    model: Any = None,
    images: Sequence[str | os.PathLike[str]] | None = None,
    *,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 32,
    device: str | torch.device | None = "cpu",
    select: Sequence[str] | None = None,
    trust: bool = False,
    cache_mb: float = CACHE_MB,
    progress: Progress | None = None,
) -> LoadedModel:
    """Set every BatchNorm's running mean and variance to what it sees on ``images`` in eval mode.

    Each selected BN gets the mean and population variance of its input over all images and
    positions, every BN before it already recalibrated: ``yolobn.observe`` on the same images finds
    no drift (the demo: below 1e-12), whatever ``batch`` (memory and speed only), image order or
    grouping by shape. Weights, eps, momentum and ``num_batches_tracked`` are unchanged; BNs without
    running statistics and those not in ``select`` keep theirs. One pass per dependency level (64
    on YOLO11n), most of them short thanks to a cache of ``cache_mb`` megabytes (module docstring).

    Args:
        model: checkpoint path, model yaml, nn.Module, ultralytics.YOLO, LoadedModel, None (demo).
        images: image files and/or folders; default: the demo's training images, else Ultralytics'
            samples. max_images: the first N only. imgsz: default the checkpoint's training imgsz.
        batch: images per forward pass. device: ``cpu``, ``0``, ``cuda:0``...
        select: BN layer patterns (as ``--layers``); default every BN.
        cache_mb: memory for decoded images and finished module outputs between passes (0: none).
        progress: called as ``progress(done, total)`` in image forward passes.

    Returns:
        A new ``LoadedModel`` (the input is untouched) whose ``meta.recalibration`` records what ran.
    """

    if not cache_mb >= 0:
        raise YolobnError(f"cache_mb {cache_mb}: must be at least 0")
    start = time.perf_counter()
    loaded, dev, paths, size = prepare(model, images, max_images, imgsz, batch, device, trust)
    root = copy.deepcopy(unwrap(loaded)).to(dev).eval()
    targets, untracked = _targets(root, select)
    budget = Budget(int(cache_mb * 2**20))
    source = Images(paths, size, model_stride(root), batch, loaded.meta.task, dev, budget)
    run = LevelRun(root, targets, source, budget, progress, len(paths))
    if progress:
        progress(0, len(paths))
    plan = dependency_plan(root, source.first(), targets)
    run.total = len(paths) * (len(plan.levels) + 1)
    with torch.no_grad():  # not inference_mode: the cache needs version counters
        for level in plan.levels:
            run.level(level, plan)
        drift = run.verify(plan)
    check_decoded(source.count, source.skipped)
    meta = copy.deepcopy(loaded.meta)
    meta.recalibration = {
        "method": METHOD,
        "method_text": METHOD_TEXT,
        "variance": "population (divided by n, the count of values per channel)",
        "images": source.count,
        "images_skipped": [str(p) for p in source.skipped],
        "image_files": [str(p) for p in paths[:20]] + (["..."] if len(paths) > 20 else []),
        "imgsz": size,
        "batch": batch,
        **run.record(plan),
        "untracked_skipped": untracked,
        "drift_after": drift,
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(dev),
        "from_sha256": loaded.meta.sha256,
        "from_path": loaded.meta.path,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    n = meta.recalibration["layers"]
    meta.notes.append(
        f"running statistics of {n} BN layers recalibrated ({METHOD}) on {source.count} images at {size}"
    )
    meta.trained = True
    return LoadedModel(root.to("cpu"), meta)


def _targets(root: nn.Module, select: Sequence[str] | None) -> tuple[dict[str, _BatchNorm], list[str]]:
    """The selected BNs with running statistics, by name, and the names of those without."""

    bns = {n: m for n, m in root.named_modules() if isinstance(m, _BatchNorm)}
    blocks = [b for b in find_blocks(root) if not select or matches(b, select)]
    if select and not blocks:
        raise YolobnError(f"layers {' '.join(select)}: matches none of the BN layers")
    untracked = [b.name for b in blocks if not bns[b.name].track_running_stats]
    targets = {b.name: bns[b.name] for b in blocks if bns[b.name].track_running_stats}
    if not targets:
        raise YolobnError(
            "none of the selected BN layers keeps running statistics (track_running_stats=False): "
            "nothing to recalibrate"
        )
    return targets, untracked


__all__ = ["CACHE_MB", "METHOD", "recalibrate", "recalibration_verdicts"]


def recalibration_verdicts(info: dict[str, Any], paths: Paths, written: str) -> list[Verdict]:
    """The answer of ``recalibrate``: did the re-estimated statistics help on the validation data?
    ``info``: the checkpoint's ``meta.recalibration`` (with ``validation`` when a dataset was given);
    ``written``: where the recalibrated checkpoint went, as the user wrote it."""
    q = "the recalibrated statistics help on the validation data"
    n, left = info.get("images", 0), float(info.get("drift_after", {}).get("max_layer_mean", math.nan))
    done = f"statistics of {info.get('layers', 0)} layers re-estimated on {n} images (drift left {left:.1g})"
    val = info.get("validation")
    if not val:
        nxt = command(
            "recalibrate",
            paths.model,
            images=paths.images_arg(),
            data=paths.data_arg() or ("shapes" if paths.demo else "DATA"),
            o=written,
            force=True,
        )
        return [
            Verdict("recalibrated", q, "look", f"{done}; accuracy not measured: give a dataset (--data)", nxt)
        ]
    keys = [k[: -len(" before")] for k in val if k.endswith(" before")]
    if not keys:
        return [Verdict("recalibrated", q, "look", f"{done}; the validation gave no metric")]
    head = keys[0]
    b, a = float(val[f"{head} before"]), float(val[f"{head} after"])
    label = metric_label(head)
    evidence = f"{done}; {label} {b:.4f} → {a:.4f} ({a - b:+.4f})"
    if a >= b:
        return [Verdict("recalibrated", q, "ok", f"{evidence}: use {written}")]
    return [
        Verdict(
            "recalibrated",
            q,
            "act",
            f"{evidence}: the stored statistics fit this model better than these images do; keep the "
            "original unless the data has changed",
        )
    ]
