"""Re-estimate the BatchNorm running statistics on images (``yolobn recalibrate``).

BN layers run in training mode (batch statistics), every other module in eval mode, without
gradients; each BN's running statistics become the cumulative average of its batch statistics
weighted by batch size (PreciseBN/AdaBN), not a momentum average. Weights are untouched.
"""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from yolobn.errors import YolobnError
from yolobn.images import Progress, check_decoded, iter_batches, model_stride
from yolobn.observation import prepare

# --------------------------------------------------------------------------------------------------
# recalibration


def recalibrate(
    model: Any = None,
    images: Sequence[str | os.PathLike] | None = None,
    *,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 32,
    device: str | torch.device | None = "cpu",
    select: Sequence[str] | None = None,
    trust: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> Any:
    """Re-estimate the running mean and variance of every BatchNorm on ``images``.

    BN layers run in training mode (batch statistics, as during training), every other module in
    eval mode, without gradients; each BN's running statistics become the average of its batch
    statistics weighted by batch size (PreciseBN / AdaBN), not a momentum average. Weights, eps and
    momentum are unchanged. Images are shuffled (``seed``) so that batches mix the set, as
    training's batches do: a folder of consecutive video frames would otherwise give batches of
    near-identical images and biased batch statistics. Larger batches give statistics closer to
    the population's (what eval-mode inference sees).

    Returns:
        A new ``LoadedModel`` (the input is untouched) whose ``meta.recalibration`` records how.

    Raises:
        YolobnError: a BN sees one value per channel in a batch (use a larger ``batch``/``imgsz``).
    """
    import random

    from yolobn.loader import LoadedModel
    from yolobn.walk import find_blocks, matches, unwrap

    loaded, dev, paths, size = prepare(model, images, max_images, imgsz, batch, device, trust)
    order = list(paths)
    random.Random(seed).shuffle(order)
    root = copy.deepcopy(unwrap(loaded)).to(dev)
    modules = dict(root.named_modules())
    blocks = [b for b in find_blocks(root) if not select or matches(b, select)]
    if select and not blocks:
        raise YolobnError(f"--layers {' '.join(select)}: matches none of the BN layers")
    bns = [modules[b.name] for b in blocks]
    untracked = [b.name for b, bn in zip(blocks, bns, strict=True) if not bn.track_running_stats]
    bns = [bn for bn in bns if bn.track_running_stats]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
    root.eval()
    seen = 0
    skipped: list[Path] = []
    stride = model_stride(root)
    if progress:
        progress(0, len(paths))
    try:
        for bn in bns:
            bn.train()
        with torch.no_grad():
            batches = iter_batches(
                order, size, stride=stride, batch=batch, task=loaded.meta.task, skipped=skipped
            )
            for x, names in batches:
                b = len(names)
                for bn in bns:  # cumulative average weighted by batch size
                    bn.momentum = b / (seen + b)
                try:
                    root(x.to(dev))
                except ValueError as e:
                    if "more than 1 value per channel" in str(e):
                        raise YolobnError(
                            f"a BatchNorm saw a single value per channel in a batch of {b} image(s) at imgsz "
                            f"{size}; use a larger --batch (batch statistics need more than one value)"
                        ) from None
                    raise
                seen += b
                if progress:
                    progress(seen + len(skipped), len(paths))
        check_decoded(seen, skipped)
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        root.eval()
    root = root.to("cpu")
    meta = copy.deepcopy(loaded.meta)
    meta.recalibration = {
        "images": seen,
        "images_skipped": [str(p) for p in skipped],
        "image_files": [str(p) for p in paths[:20]] + (["..."] if len(paths) > 20 else []),
        "imgsz": size,
        "batch": batch,
        "seed": seed,
        "layers": len(bns),
        "untracked_skipped": untracked,
        "from_sha256": loaded.meta.sha256,
        "from_path": loaded.meta.path,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": "cumulative average of batch statistics (PreciseBN/AdaBN), BN in train mode, rest in eval",
    }
    meta.notes.append(f"running statistics of {len(bns)} BN layers recalibrated on {seen} images at {size}")
    meta.trained = True
    return LoadedModel(root, meta)
