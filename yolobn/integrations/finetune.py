"""Fine-tune a pruned model at its own widths with Ultralytics' trainer (``yolobn finetune``).

``YOLO("pruned.pt").train()`` hands the trainer ``get_model(cfg=model.yaml, weights=model)``: a
fresh model built from the yaml (the original widths), into which only the tensors whose shapes
still match are copied (``intersect_dicts``; the log says "Transferred N/M items"). A pruned model
trained that way silently starts from mostly new weights. The checkpoint cannot prevent it: the
yaml describes widths by rows (``make_divisible(c2 * width, 8)`` per block, hidden widths derived
from ratios), which cannot express per-layer channel counts inside the blocks.

``finetune`` runs the task's own trainer, unchanged except for ``get_model``, which returns the
pruned module itself: the optimizer, the EMA, the loss, validation and checkpointing are
Ultralytics', and ``last.pt``/``best.pt`` keep the pruned widths. The pruned checkpoint is read
with yolobn's safe loader; the dataset yaml goes through ``yolobn.io.datasets`` (its ``download:``
never runs without ``trust``).
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from yolobn.core.errors import YolobnError
from yolobn.core.outputs import guard_folder
from yolobn.io.checks import require_runnable
from yolobn.io.datasets import resolve_data
from yolobn.io.loader import LoadedModel, load, source_file

__all__ = ["REFUSED", "TRAINERS", "TRAIN_FILES", "FinetuneResult", "finetune", "parse_train_args"]

# what the trainer writes into its save_dir that could replace an input (checked before training)
TRAIN_FILES = ("args.yaml", "results.csv", "weights/last.pt", "weights/best.pt")

TRAINERS = {
    "detect": ("ultralytics.models.yolo.detect", "DetectionTrainer"),
    "segment": ("ultralytics.models.yolo.segment", "SegmentationTrainer"),
    "classify": ("ultralytics.models.yolo.classify", "ClassificationTrainer"),
    "pose": ("ultralytics.models.yolo.pose", "PoseTrainer"),
    "obb": ("ultralytics.models.yolo.obb", "OBBTrainer"),
}
REFUSED = {
    "model": "the pruned checkpoint is the first argument",
    "cfg": "give the training arguments themselves (key=value)",
    "resume": "resuming would rebuild the model from its yaml; fine-tune again from last.pt instead",
    "mode": "this is training",
    "task": "the task is the model's",
    "pretrained": "the pruned model is the starting point",
}


@dataclass
class FinetuneResult:
    """Where the trainer wrote its checkpoints and what it measured.

    ``params`` is the parameter count of the model that was trained (the pruned one);
    ``metrics`` the validation of the last epoch, as Ultralytics reports it."""

    save_dir: Path
    last: Path
    best: Path
    params: int
    metrics: dict[str, float] = field(default_factory=dict)


def parse_train_args(tokens: Sequence[str]) -> dict[str, Any]:
    """Ultralytics' command-line style: ``key=value`` (values read as Python literals, else
    strings; never evaluated) and a bare ``key`` for a switch that is on by default False."""
    defaults = _defaults()
    out: dict[str, Any] = {}
    for tok in tokens:
        key, eq, text = tok.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if key not in defaults:
            near = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise YolobnError(f"{tok}: not an Ultralytics training argument{hint}")
        if key in REFUSED:
            raise YolobnError(f"{tok}: {REFUSED[key]}")
        if not eq:
            if not isinstance(defaults[key], bool):
                raise YolobnError(f"{tok}: needs a value ({key}=...)")
            out[key] = True
            continue
        out[key] = _literal(text)
    return out


def _defaults() -> dict[str, Any]:
    """Ultralytics' training arguments and their defaults (``ultralytics.cfg.DEFAULT_CFG_DICT``)."""
    return dict(importlib.import_module("ultralytics.cfg").DEFAULT_CFG_DICT)


def _literal(text: str) -> Any:
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def finetune(
    model: Any,
    data: str | os.PathLike[str] | None = None,
    *,
    trust: bool = False,
    strict: bool = False,
    **train: Any,
) -> FinetuneResult:
    """Train ``model`` (a pruned checkpoint, or anything ``yolobn.load`` takes) at its own widths.

    Args:
        model: the model to train. data: the dataset (yaml, or ``shapes``); required.
        trust: read the checkpoint with a full unpickle and let the dataset yaml's ``download:`` run.
        **train: Ultralytics' training arguments (``epochs=30``, ``imgsz=640``, ``batch=16``,
            ``device=0``, ``project=``, ``name=``, ...), checked as Ultralytics checks them.

    Returns:
        ``FinetuneResult`` (``last``/``best`` checkpoints, the trained parameter count, metrics).
    """
    ucfg = importlib.import_module("ultralytics.cfg")
    bad = [k for k in train if k not in _defaults() or k in REFUSED]
    if bad:
        raise YolobnError(
            f"finetune: {bad[0]}: {REFUSED.get(bad[0], 'not an Ultralytics training argument')}"
        )
    if data is None:
        raise YolobnError("finetune: give the dataset to train on (data=... a dataset yaml, or 'shapes')")
    dev = train.get("device")
    if isinstance(dev, (list, tuple)) or "," in str(dev or ""):
        raise YolobnError(
            f"finetune: device={dev}: one device at a time (multi-GPU training, which Ultralytics "
            "runs in new processes, is not tested with a pruned model)"
        )
    loaded = model if isinstance(model, LoadedModel) else load(model, trust=trust, strict=strict)
    require_runnable(loaded)
    task = loaded.meta.task or "detect"
    if task not in TRAINERS:
        raise YolobnError(f"finetune: task {task!r}; training supports {', '.join(TRAINERS)}")
    overrides = {
        **train,
        "data": resolve_data(data, trust=trust),
        "task": task,
        "mode": "train",
        "model": loaded.meta.path or "pruned.pt",
    }
    if "imgsz" not in overrides and loaded.meta.train_args.get("imgsz"):
        overrides["imgsz"] = loaded.meta.train_args["imgsz"]
    try:
        cfg = ucfg.get_cfg(
            overrides=dict(overrides)
        )  # Ultralytics' own type and range checks, before any work
    except (TypeError, ValueError, SyntaxError) as e:
        raise YolobnError(f"finetune: {e}".splitlines()[0]) from None
    # The trainer's folder (project=/name=/exist_ok=/save_dir=) never lets last.pt replace an input.
    # the path as given too: a copy of the demo is read as the demo, whose source_file is the package's
    given = [Path(model).expanduser()] if isinstance(model, (str, os.PathLike)) else []
    inputs = {Path(overrides["data"]): "the dataset yaml"}
    inputs |= {p: "the input checkpoint" for p in [*given, source_file(loaded.meta)] if p is not None}
    guard_folder(ucfg.get_save_dir(cfg), TRAIN_FILES, "finetune: save_dir", inputs)
    trainer = _trainer(task, loaded.model)(overrides=overrides)
    guard_folder(trainer.save_dir, TRAIN_FILES, "finetune: save_dir", inputs)
    nc = int(trainer.data.get("nc", -1))
    if loaded.meta.nc is not None and nc != loaded.meta.nc:
        raise YolobnError(
            f"finetune: the dataset has {nc} classes, the model {loaded.meta.nc}; "
            "a pruned model keeps its head: train it on data with the same classes"
        )
    trainer.model = trainer.get_model()
    params = int(sum(p.numel() for p in trainer.model.parameters()))
    trainer.train()
    metrics = {
        str(k): float(v)
        for k, v in (getattr(trainer, "metrics", None) or {}).items()
        if isinstance(v, (int, float))
    }
    return FinetuneResult(Path(trainer.save_dir), Path(trainer.last), Path(trainer.best), params, metrics)


def _trainer(task: str, pruned: nn.Module) -> Any:
    """The task's Ultralytics trainer whose ``get_model`` returns (a trainable copy of) ``pruned``."""
    mod, name = TRAINERS[task]
    base = getattr(importlib.import_module(mod), name)

    def get_model(self: Any, cfg: Any = None, weights: Any = None, verbose: bool = True) -> nn.Module:
        m = copy.deepcopy(pruned).float()
        for p in m.parameters():
            p.requires_grad = True
        return m

    return type(f"Pruned{name}", (base,), {"get_model": get_model, "__doc__": __doc__})
