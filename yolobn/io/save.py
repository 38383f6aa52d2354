"""Write Ultralytics checkpoints (the loader reads them): ``save_checkpoint``, ``checkpoint_payload``."""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import ultralytics

from yolobn.core.atomic import write_files
from yolobn.core.errors import CheckpointError
from yolobn.core.outputs import guard_outputs
from yolobn.io.loader import read_checkpoint, source_file

__all__ = ["checkpoint_payload", "save_checkpoint"]


def save_checkpoint(
    loaded: Any,
    path: str | os.PathLike[str],
    *,
    protect: Sequence[str | os.PathLike[str]] = (),
    record: Mapping[str, Any] | None = None,
    drop: Sequence[str] = (),
) -> Path:
    """Write ``loaded`` as an Ultralytics checkpoint (``YOLO(path)`` and ``yolobn inspect`` load it).

    Keeps everything the source checkpoint stored except the optimizer and EMA (re-read safely
    from ``meta.path`` when there is one) and the keys in ``drop`` (numbers that no longer
    describe the model), stores the model in its on-disk dtype, adds
    ``yolobn: {recalibration: ..., **record}``, and writes atomically (temporary file, then
    rename), or into an existing character device or FIFO (``/dev/null``) without replacing it.
    Never overwrites a path in ``protect`` or the model's own file (``yolobn.core.outputs``: links
    and hard links included); a full disk or any other write error is a ``YolobnError`` and leaves
    nothing.
    """
    out = Path(path).expanduser()
    src = source_file(loaded.meta)
    # Real paths and inodes (the demo's meta.path is package-relative; links, hard links or another
    # working folder must not let the output replace an input).
    inputs = {
        **{Path(p): "an input file" for p in protect if p},
        **({src: "the input checkpoint"} if src else {}),
    }
    guard_outputs({str(path): out}, inputs, stdout=False)
    ckpt = checkpoint_payload(loaded, record=record, drop=drop)
    write_files({out: lambda f: torch.save(ckpt, f)}, inputs)
    return out


def checkpoint_payload(
    loaded: Any, *, record: Mapping[str, Any] | None = None, drop: Sequence[str] = ()
) -> dict[str, Any]:
    """The dict ``save_checkpoint`` writes (``torch.save`` it, e.g. with other files in one
    all-or-nothing ``yolobn.core.atomic.write_files``)."""
    src = source_file(loaded.meta)
    base: dict[str, Any] = {}
    if src is not None and src.is_file():
        try:  # always the safe reader: a model loaded with --trust keeps only what yolobn knows of it
            raw = read_checkpoint(src, trust=False)
        except CheckpointError:
            raw = None
        if isinstance(raw, dict):
            gone = ("model", "ema", "optimizer", "updates", *drop)
            base = {k: v for k, v in raw.items() if k not in gone}
    if not base.get("train_args"):
        base["train_args"] = dict(loaded.meta.train_args)
    m = copy.deepcopy(loaded.model).cpu().eval()
    if loaded.meta.dtype_on_disk == "float16":
        m = m.half()
    for p in m.parameters():
        p.requires_grad = False
    return {
        **base,
        "date": datetime.datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "model": m,
        "ema": None,
        "optimizer": None,
        "updates": None,
        "yolobn": {
            "recalibration": loaded.meta.recalibration,
            "source_date": base.get("date"),
            **(record or {}),
        },
    }
