"""The bundled demo checkpoint (YOLO11n trained on the synthetic shapes dataset) and the dataset's
generator (``yolobn.data.synth``). Torch-free: the CLI names the demo without importing torch."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from yolobn.core.digest import sha256

__all__ = ["DEMO_FILE", "DEMO_STEM", "demo_model_path", "demo_sha256", "is_demo"]

DEMO_STEM = "demo_yolo11n_shapes"
DEMO_FILE = f"{DEMO_STEM}.pt"


def demo_model_path() -> Path:
    """Path of the bundled demo checkpoint (YOLO11n trained on the synthetic shapes dataset)."""
    return Path(__file__).resolve().parent / DEMO_FILE


@cache
def demo_sha256() -> str:
    """The SHA-256 of the bundled demo checkpoint."""
    return sha256(demo_model_path())


def is_demo(model: str | os.PathLike[str] | None) -> bool:
    """Whether ``model`` is the bundled demo: left out (None), or a file with the demo's bytes (its
    path, or a copy: the same size, then the same sha256). Then its dataset and images are the
    defaults, as when the model is left out."""
    if model is None:
        return True
    try:
        p = Path(model).expanduser()
        if not p.is_file() or p.stat().st_size != demo_model_path().stat().st_size:
            return False
        return sha256(p) == demo_sha256()
    except OSError:
        return False
