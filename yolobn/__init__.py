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
    "load": "yolobn.io.loader",
    "LoadedModel": "yolobn.io.loader",
    "ModelMeta": "yolobn.io.loader",
    "demo_model_path": "yolobn.data",
    "find_blocks": "yolobn.bn.walk",
    "blocks_frame": "yolobn.bn.walk",
    "BNBlock": "yolobn.bn.walk",
    "bn_stats": "yolobn.bn.stats",
    "Thresholds": "yolobn.core.thresholds",
    "dead_channels": "yolobn.bn.stats",
    "Inspection": "yolobn.bn.inspection",
    "inspect": "yolobn.bn.inspection",
    "YolobnError": "yolobn.core.errors",
    "swap": "yolobn.edit.build:variant",  # the one dispatch: swaps, and the variants built from images
    "validate": "yolobn.evaluate.validation",
    "observe": "yolobn.run.observation",
    "recalibrate": "yolobn.run.recalibration",
    "save_checkpoint": "yolobn.io.save",
    "Observation": "yolobn.run.observation",
    "ObservedThresholds": "yolobn.core.thresholds",
    "track": "yolobn.integrations.tracking",
    "compare": "yolobn.api",
    "write_report": "yolobn.api",
    "swap_validate": "yolobn.api",
    "run_experiment": "yolobn.api",
    "prune_frontier": "yolobn.api",
    "audit": "yolobn.bn.comparison",
    "Audit": "yolobn.bn.comparison",
    "Metrics": "yolobn.evaluate.metrics",
    # the commands' own words (the names above stay: observe, run_experiment, prune_frontier)
    "activations": "yolobn.run.observation:observe",
    "experiment": "yolobn.api:run_experiment",
    "frontier": "yolobn.api:prune_frontier",
    "prune": "yolobn.sweeps.pruning",
    "PruneResult": "yolobn.sweeps.pruning",
    "finetune": "yolobn.integrations.finetune",
    "make_shapes": "yolobn.data.synth",
    "shapes_dataset": "yolobn.data.synth",
}

__all__ = sorted([*_LAZY, "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from yolobn.api import compare, prune_frontier, run_experiment, swap_validate, write_report
    from yolobn.api import prune_frontier as frontier
    from yolobn.api import run_experiment as experiment
    from yolobn.bn.comparison import Audit, audit
    from yolobn.bn.inspection import Inspection, inspect
    from yolobn.bn.stats import bn_stats, dead_channels
    from yolobn.bn.walk import BNBlock, blocks_frame, find_blocks
    from yolobn.core.errors import YolobnError
    from yolobn.core.thresholds import ObservedThresholds, Thresholds
    from yolobn.data import demo_model_path
    from yolobn.data.synth import make_shapes, shapes_dataset
    from yolobn.edit.build import variant as swap
    from yolobn.evaluate.metrics import Metrics
    from yolobn.evaluate.validation import validate
    from yolobn.integrations.finetune import finetune
    from yolobn.integrations.tracking import track
    from yolobn.io.loader import LoadedModel, ModelMeta, load
    from yolobn.io.save import save_checkpoint
    from yolobn.run.observation import Observation, observe
    from yolobn.run.observation import observe as activations
    from yolobn.run.recalibration import recalibrate
    from yolobn.sweeps.pruning import PruneResult, prune


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'yolobn' has no attribute {name!r}")
    module, _, attr = where.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
