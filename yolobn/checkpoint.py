"""Write Ultralytics checkpoints (the loader reads them): ``save_checkpoint``."""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from yolobn.errors import YolobnError


def save_checkpoint(
    loaded: Any, path: str | os.PathLike, *, protect: Sequence[str | os.PathLike] = ()
) -> Path:
    """Write ``loaded`` as an Ultralytics checkpoint (``YOLO(path)`` and ``yolobn inspect`` load it).

    Keeps everything the source checkpoint stored except the optimizer and EMA (re-read safely
    from ``meta.path`` when there is one), stores the model in its on-disk dtype, adds
    ``yolobn: {recalibration: ...}``, and writes atomically (temporary file, then rename).
    Never overwrites a path in ``protect`` or the model's own file.
    """
    import ultralytics

    out = Path(path).expanduser()
    guarded = {Path(p).expanduser().resolve() for p in [*protect, loaded.meta.path] if p}
    if out.resolve() in guarded:
        raise YolobnError(f"-o {out}: is the input checkpoint; write the recalibrated model to another file")
    if out.is_dir():
        raise YolobnError(f"-o {out}: is a folder; give a file name such as {out / 'recalibrated.pt'}")
    base: dict[str, Any] = {}
    if loaded.meta.path and Path(loaded.meta.path).is_file():
        from yolobn.errors import CheckpointError
        from yolobn.loader import read_checkpoint

        try:  # always the safe reader: a model loaded with --trust keeps only what yolobn knows of it
            raw = read_checkpoint(Path(loaded.meta.path), trust=False)
        except CheckpointError:
            raw = None
        if isinstance(raw, dict):
            base = {k: v for k, v in raw.items() if k not in ("model", "ema", "optimizer", "updates")}
    if not base.get("train_args"):
        base["train_args"] = dict(loaded.meta.train_args)
    m = copy.deepcopy(loaded.model).cpu().eval()
    if loaded.meta.dtype_on_disk == "float16":
        m = m.half()
    for p in m.parameters():
        p.requires_grad = False
    ckpt = {
        **base,
        "date": datetime.datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "model": m,
        "ema": None,
        "optimizer": None,
        "updates": None,
        "yolobn": {"recalibration": loaded.meta.recalibration, "source_date": base.get("date")},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise YolobnError(f"-o {out}: cannot write ({e.strerror or e}); nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
