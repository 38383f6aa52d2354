"""Write Ultralytics checkpoints (the loader reads them): ``save_checkpoint``."""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from yolobn.core.errors import YolobnError


def save_checkpoint(
    loaded: Any,
    path: str | os.PathLike,
    *,
    protect: Sequence[str | os.PathLike] = (),
    record: Mapping[str, Any] | None = None,
    drop: Sequence[str] = (),
) -> Path:
    """Write ``loaded`` as an Ultralytics checkpoint (``YOLO(path)`` and ``yolobn inspect`` load it).

    Keeps everything the source checkpoint stored except the optimizer and EMA (re-read safely
    from ``meta.path`` when there is one) and the keys in ``drop`` (numbers that no longer
    describe the model), stores the model in its on-disk dtype, adds
    ``yolobn: {recalibration: ..., **record}``, and writes atomically (temporary file, then
    rename). Never overwrites a path in ``protect`` or the model's own file.
    """
    from yolobn.core.atomic import check_not_inputs, write_files
    from yolobn.io.loader import source_file

    out = Path(path).expanduser()
    src = source_file(loaded.meta)
    # Real resolved paths: the demo's meta.path is package-relative, and links or another working
    # folder must not let the output replace an input.
    check_not_inputs(
        {f"-o {path}": out},
        {
            **{Path(p): "an input file" for p in protect if p},
            **({src: "the input checkpoint"} if src else {}),
        },
    )
    if out.is_dir():
        raise YolobnError(f"-o {path}: is a folder; give the name of the .pt file to write")
    ckpt = checkpoint_payload(loaded, record=record, drop=drop)
    write_files({out: lambda tmp: torch.save(ckpt, tmp)})
    return out


def checkpoint_payload(
    loaded: Any, *, record: Mapping[str, Any] | None = None, drop: Sequence[str] = ()
) -> dict[str, Any]:
    """The dict ``save_checkpoint`` writes (``torch.save`` it, e.g. with other files in one
    all-or-nothing ``yolobn.core.atomic.write_files``)."""
    import ultralytics

    from yolobn.io.loader import source_file

    src = source_file(loaded.meta)
    base: dict[str, Any] = {}
    if src is not None and src.is_file():
        from yolobn.core.errors import CheckpointError
        from yolobn.io.loader import read_checkpoint

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
