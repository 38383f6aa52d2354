"""The bundled demo checkpoint (YOLO11n trained on the synthetic shapes dataset) and the dataset's
generator (``yolobn.data.synth``). Torch-free: the CLI names the demo without importing torch."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_FILE", "DEMO_STEM", "demo_model_path"]

DEMO_STEM = "demo_yolo11n_shapes"
DEMO_FILE = f"{DEMO_STEM}.pt"


def demo_model_path() -> Path:
    """Path of the bundled demo checkpoint (YOLO11n trained on the synthetic shapes dataset)."""
    return Path(__file__).resolve().parent / DEMO_FILE
