"""yolobn: see what the BatchNorm layers of an Ultralytics YOLO checkpoint are doing.

The public API is imported lazily so that ``import yolobn`` (and ``yolobn --help``) stays fast:
torch and ultralytics are only imported when a function that needs them is first used.

Example:
    >>> import yolobn
    >>> m = yolobn.load()                    # the bundled demo model
    >>> layers, channels = yolobn.bn_stats(m)
    >>> dead = yolobn.dead_channels(m)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load": "yolobn.loader",
    "LoadedModel": "yolobn.loader",
    "ModelMeta": "yolobn.loader",
    "demo_model_path": "yolobn.loader",
    "find_blocks": "yolobn.walk",
    "blocks_frame": "yolobn.walk",
    "BNBlock": "yolobn.walk",
    "bn_stats": "yolobn.stats",
    "Thresholds": "yolobn.dead",
    "dead_channels": "yolobn.dead",
    "Inspection": "yolobn.inspection",
    "inspect": "yolobn.inspection",
    "YolobnError": "yolobn.errors",
    "swap": "yolobn.swap",
    "validate": "yolobn.validate",
    "observe": "yolobn.activations",
    "recalibrate": "yolobn.activations",
    "save_checkpoint": "yolobn.activations",
    "Activations": "yolobn.activations",
    "ObservedThresholds": "yolobn.activations",
    "make_shapes": "yolobn.data.synth",
    "shapes_dataset": "yolobn.data.synth",
}

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from yolobn.activations import Activations, ObservedThresholds, observe, recalibrate, save_checkpoint
    from yolobn.data.synth import make_shapes, shapes_dataset
    from yolobn.dead import Thresholds, dead_channels
    from yolobn.errors import YolobnError
    from yolobn.inspection import Inspection, inspect
    from yolobn.loader import LoadedModel, ModelMeta, demo_model_path, load
    from yolobn.stats import bn_stats
    from yolobn.swap import swap
    from yolobn.validate import validate
    from yolobn.walk import BNBlock, blocks_frame, find_blocks


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'yolobn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
