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

from yolobn._version import __version__

_LAZY = {
    "load": "yolobn.loader",
    "LoadedModel": "yolobn.loader",
    "ModelMeta": "yolobn.loader",
    "demo_model_path": "yolobn.loader",
    "find_blocks": "yolobn.walk",
    "blocks_frame": "yolobn.walk",
    "BNBlock": "yolobn.walk",
    "bn_stats": "yolobn.stats",
    "Thresholds": "yolobn.thresholds",
    "dead_channels": "yolobn.stats",
    "Inspection": "yolobn.inspection",
    "inspect": "yolobn.inspection",
    "YolobnError": "yolobn.errors",
    "swap": "yolobn.swapping",
    "validate": "yolobn.validation",
    "observe": "yolobn.observation",
    "recalibrate": "yolobn.recalibration",
    "save_checkpoint": "yolobn.checkpoint",
    "Observation": "yolobn.observation",
    "ObservedThresholds": "yolobn.thresholds",
    "track": "yolobn.tracking",
    "compare": "yolobn.comparison",
    "write_report": "yolobn.api",
    "swap_validate": "yolobn.api",
    "run_experiment": "yolobn.api",
    "prune_frontier": "yolobn.api",
    "make_shapes": "yolobn.data.synth",
    "shapes_dataset": "yolobn.data.synth",
}

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from yolobn.api import prune_frontier, run_experiment, swap_validate, write_report
    from yolobn.checkpoint import save_checkpoint
    from yolobn.comparison import compare
    from yolobn.data.synth import make_shapes, shapes_dataset
    from yolobn.errors import YolobnError
    from yolobn.inspection import Inspection, inspect
    from yolobn.loader import LoadedModel, ModelMeta, demo_model_path, load
    from yolobn.observation import Observation, observe
    from yolobn.recalibration import recalibrate
    from yolobn.stats import bn_stats, dead_channels
    from yolobn.swapping import swap
    from yolobn.thresholds import ObservedThresholds, Thresholds
    from yolobn.tracking import track
    from yolobn.validation import validate
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
