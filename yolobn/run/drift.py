"""Drift where a data-free answer cannot see: two checkpoints on the same images, and a fixed sample of
training images each epoch.

Drift is ``yolobn.run.observation``'s: per channel the Gaussian KL of a BN's input on the images
against its stored running statistics (nats), per layer the mean over its channels. A layer's stored
statistics can stop fitting its weights without any BN parameter moving much: a fine-tune whose
steps are too large changes the convolutions faster than the running averages (momentum 0.03 per
step in Ultralytics) can follow. Only images show it.

``compare_images``
    ``yolobn compare A B --images DIR``: both checkpoints observed on the same image files at the
    same imgsz; the comparison's layer table gains ``drift_a``, ``drift_b``, ``drift_rise`` (B - A)
    and its channel table ``drift_a``, ``drift_b``.
``sample_drift``
    The training callback: one model (the EMA Ultralytics saves) on a small fixed sample of the
    training images (``sample_files``), per layer ``drift`` and ``drift_max``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from yolobn.bn.comparison import Comparison
from yolobn.core.thresholds import ObservedThresholds
from yolobn.io.images import Progress, model_imgsz, resolve_images, run_images
from yolobn.run.observation import add_observed, observe
from yolobn.run.recording import recording

__all__ = ["DRIFT_COLUMNS", "SAMPLE", "compare_images", "sample_drift", "sample_files"]

SAMPLE = 32  # training images the callback runs each epoch
DRIFT_COLUMNS = ("drift_a", "drift_b", "drift_rise")


def sample_files(files: Sequence[str | os.PathLike[str]], n: int = SAMPLE) -> list[Path]:
    """``n`` files spread evenly over ``files`` sorted by name (all of them when there are fewer):
    the same sample every epoch and every run, and not only the first folder of a large split."""
    ordered = sorted(Path(os.fspath(f)) for f in files)
    if n <= 0 or not ordered:
        return []
    if len(ordered) <= n:
        return ordered
    return [ordered[(i * len(ordered)) // n] for i in range(n)]


def sample_drift(
    model: nn.Module,
    layers: pd.DataFrame,
    channels: pd.DataFrame,
    files: Sequence[Path],
    *,
    imgsz: int,
    task: str | None,
    batch: int = 16,
) -> pd.DataFrame:
    """Per BN layer of ``layers`` (``bn_stats`` of ``model``): ``drift`` (mean over channels),
    ``drift_max`` and ``drift_images`` (how many of ``files`` decoded) for ``model`` in eval mode on
    ``files``. The model's mode is restored and its tensors are never written."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    skipped: list[Path] = []
    with recording(model) as rec:
        done = run_images(
            model, list(files), imgsz=imgsz, batch=batch, device=device, task=task, skipped=skipped
        )
        records = rec.records()
    ly, _ = add_observed(layers, channels, records, dict(model.named_modules()), ObservedThresholds())
    return pd.DataFrame(
        {"name": ly["name"], "drift": ly["drift"], "drift_max": ly["drift_max"], "drift_images": done}
    )


def compare_images(
    cmp: Comparison,
    images: Sequence[str | os.PathLike[str]] | None,
    *,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 16,
    device: str | torch.device | None = "cpu",
    progress: Progress | None = None,
) -> Comparison:
    """A ``Comparison`` with drift: both checkpoints observed on the same images at the same imgsz.

    Args:
        cmp: ``yolobn.bn.comparison.Comparison`` (data-free).
        images: files and folders; None or empty: B's default images (``yolobn activations``'s).
        imgsz: inference size for both (default: B's training imgsz).
        progress: called as ``progress(images_done, images_total)`` over both passes.

    Returns:
        A new Comparison whose ``a``/``b`` are the observed Inspections, whose layer and channel tables
        carry ``drift_a``, ``drift_b`` (and ``drift_rise`` per layer), and whose ``observed`` says how
        the images were run. ``cmp`` itself is left as it was.
    """
    files = resolve_images(cmp.b.loaded, images, max_images)
    size = model_imgsz(cmp.b.loaded, imgsz)
    total = 2 * len(files)

    def part(offset: int) -> Progress | None:
        return None if progress is None else (lambda done, _n: progress(offset + done, total))

    oa = observe(cmp.a, files, imgsz=size, batch=batch, device=device, progress=part(0))
    ob = observe(cmp.b, files, imgsz=size, batch=batch, device=device, progress=part(len(files)))
    layers, channels = cmp.layers.copy(), cmp.channels.copy()
    for side, ins in (("a", oa), ("b", ob)):
        by_layer = ins.layers.set_index("name")["drift"]
        layers[f"drift_{side}"] = by_layer.reindex(layers["name"]).to_numpy(dtype=float)
        by_channel = ins.channels.set_index(["name", "channel"])["drift"]
        keys = pd.MultiIndex.from_arrays([channels["name"], channels["channel"]])
        channels[f"drift_{side}"] = by_channel.reindex(keys).to_numpy(dtype=float)
    layers["drift_rise"] = layers["drift_b"] - layers["drift_a"]
    obs = ob.observation
    observed = {
        "sources": [os.fspath(p) for p in images] if images else [],
        "images": len(obs.images),
        "files": obs.images,
        "skipped": obs.skipped,
        "imgsz": size,
        "batch": batch,
        "device": obs.device,
        "drift_mean_a": _mean(layers["drift_a"]),
        "drift_mean_b": _mean(layers["drift_b"]),
        "effect": None,
    }
    return dataclasses.replace(cmp, a=oa, b=ob, layers=layers, channels=channels, observed=observed)


def _mean(values: pd.Series) -> float:
    v = values.to_numpy(dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
