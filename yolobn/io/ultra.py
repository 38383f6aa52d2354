"""What differs between the Ultralytics releases yolobn supports, in one place.

yolobn runs with Ultralytics 8.3.0 (the first release with YOLO11) up to the newest 8.x; CI tests
8.3.0 and the newest release (docs/compat.md). Every other module asks this one instead of testing
a version or an attribute itself. What moves, release by release (read from the installed
sources of 8.3.0 and 8.4.190):

=====================  ===========================================  ===========================================
what                   8.3.0 (to 8.3.x)                             8.4.x (checked on 8.4.190)
=====================  ===========================================  ===========================================
safe loading           ``torch_safe_load(safe_only=True)`` swaps     ``safe_only=True`` is a ``weights_only``
                       unknown classes for a do-nothing stand-in     allow-list (``_SafeLoad``, registered for
                       (the model comes back as ``SafeClass``) and   the whole process). yolobn uses neither:
                       unpickles ``builtins`` freely. yolobn uses    ``yolobn.io.allowlist``, the same on both
                       neither: ``yolobn.io.allowlist``
legacy renames         ``temporary_modules`` exists; its attribute   ``temporary_modules`` restores what it
                       renames are never undone                      changed. yolobn: ``legacy_renames`` below
restricted yaml build  none: ``parse_model`` ``eval()``s             ``_SafeLoad.restricted`` (no ``eval``);
                       ``activation:`` (yolobn checks first)         yolobn checks first and switches it on
default activation     a yaml's ``activation:`` stays on ``Conv``      restored after the build
                       for later builds (yolobn restores it)
stride probe (build)   one forward pass in train mode: BatchNorm     in eval mode: statistics untouched
                       running statistics move (yolobn resets them)
validator fusing       ``AutoBackend(weights=model, fuse=True)``     ``AutoBackend(model=model, fuse=True)``
                       calls ``model.fuse(verbose=...)``             -> ``backends/pytorch.py`` calls
                                                                     ``model.fuse(verbose=...)``
fp32 validation        ``half=False``                                ``quantize=None`` (``half`` is deprecated,
                                                                     mapped onto ``quantize`` with a warning)
metrics keys           ``metrics/mAP50-95(B)`` ... ``(M)``, ``(P)``,  the same
                       ``metrics/accuracy_top1``/``top5``,
                       ``fitness``
AP (``compute_ap``)    101-point interpolation to recall 1 after     precision 0 after the last recall: mAP
                       the last recall: a higher mAP                 slightly lower (demo 0.6294 vs 0.6308)
fitness                0.1 mAP50 + 0.9 mAP50-95                      mAP50-95
RT-DETR head           ``anchors``/``valid_mask`` not stored;        class attributes, cast by ``_apply``;
                       ``topk(num_queries)``: needs >= 300 anchors   clamped to the anchors there are
``is_fused()``         fewer than 10 torch norm layers: a model      no ``Conv`` with a ``bn`` left: a fully
                       whose BNs are all swapped is never fused,     swapped model is fused too
                       a partly swapped one is
non_max_suppression    ``ultralytics.utils.ops``                     ``ultralytics.utils.nms``
trainer callbacks      ``on_fit_epoch_end`` after every epoch, and   the same, but ``trainer.epoch`` is one
                       again after ``final_eval`` with the last      past the last epoch then
                       epoch's ``trainer.epoch``
dataset check          ``check_det_dataset(dataset, autodownload)``  ``check_det_dataset(dataset, autodownload,
                                                                     split)``; both ``exec()`` a ``download:``
                                                                     script when allowed to download
model families         YOLOv3-v10, YOLO11, RT-DETR, YOLO-World       + YOLO12 (8.3.78), YOLOE, YOLO26 (8.4.0)
numpy                  ``numpy<2`` (pickles ``numpy.core``)          numpy 2 (pickles ``numpy._core``)
=====================  ===========================================  ===========================================
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from yolobn.core.errors import YolobnError

__all__ = [
    "EPOCH_END_CALLBACK",
    "FIRST_RELEASE",
    "KEY_METRICS",
    "LEGACY_ATTRIBUTES",
    "LEGACY_MODULES",
    "NEWEST_MAJOR",
    "OLDEST",
    "PIP_RANGE",
    "SUPPORTED",
    "TRAIN_START_CALLBACK",
    "VALIDATORS",
    "ap_closes_at_last_recall",
    "check_det_dataset",
    "check_supported",
    "fp32_args",
    "installed",
    "keep_default_act",
    "legacy_renames",
    "missing_classes_message",
    "no_fuse",
    "non_max_suppression",
    "probe_size",
    "release",
    "restricted_build",
    "rtdetr_head_tensors",
    "runs_it",
    "undo_stride_probe",
    "validator_class",
]

OLDEST = (8, 3, 0)  # the first release with YOLO11
NEWEST_MAJOR = 8  # the newest major release yolobn knows; CI tests the newest 8.x
SUPPORTED = "8.3.0 to 8.x"
PIP_RANGE = "ultralytics>=8.3.0,<9"

# The first release that has a class, for the families added after 8.3.0 (read from the released
# sources). A checkpoint that needs one of these names the release that runs it.
FIRST_RELEASE = {
    **dict.fromkeys(("A2C2f", "AAttn", "ABlock"), "8.3.78"),  # YOLO12
    # YOLO26: none of these is in 8.3.253, the last 8.3 release
    **dict.fromkeys(("Segment26", "Proto26", "Pose26", "OBB26", "YOLOESegment26", "RealNVP"), "8.4.0"),
}

# Module and attribute renames Ultralytics applies when it unpickles old checkpoints
# (``temporary_modules`` in ``ultralytics.nn.tasks``, the same list in 8.3.0 and 8.4.x).
LEGACY_MODULES = {
    "ultralytics.yolo.utils": "ultralytics.utils",
    "ultralytics.yolo.v8": "ultralytics.models.yolo",
    "ultralytics.yolo.data": "ultralytics.data",
}
LEGACY_ATTRIBUTES = {
    "ultralytics.nn.modules.block.Silence": "torch.nn.Identity",  # YOLOv9e
    "ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel",  # YOLOv10
    "ultralytics.utils.loss.v10DetectLoss": "ultralytics.utils.loss.E2EDetectLoss",  # YOLOv10
}

VALIDATORS = {
    "detect": ("ultralytics.models.yolo.detect", "DetectionValidator"),
    "segment": ("ultralytics.models.yolo.segment", "SegmentationValidator"),
    "classify": ("ultralytics.models.yolo.classify", "ClassificationValidator"),
    "pose": ("ultralytics.models.yolo.pose", "PoseValidator"),
    "obb": ("ultralytics.models.yolo.obb", "OBBValidator"),
}

# The keys Ultralytics' validators return, per task (the same from 8.3.0 to 8.4.x).
KEY_METRICS = {
    "detect": ("metrics/mAP50-95(B)", "metrics/mAP50(B)", "metrics/precision(B)", "metrics/recall(B)"),
    "segment": ("metrics/mAP50-95(M)", "metrics/mAP50-95(B)", "metrics/mAP50(M)", "metrics/mAP50(B)"),
    "pose": ("metrics/mAP50-95(P)", "metrics/mAP50-95(B)", "metrics/mAP50(P)", "metrics/mAP50(B)"),
    "obb": ("metrics/mAP50-95(B)", "metrics/mAP50(B)", "metrics/precision(B)", "metrics/recall(B)"),
    "classify": ("metrics/accuracy_top1", "metrics/accuracy_top5"),
}

# The trainer's callback yolobn.track registers: called after each epoch's validation, and once
# more after the final validation of best.pt (see the table above for its epoch).
EPOCH_END_CALLBACK = "on_fit_epoch_end"
# Called once before the first epoch, after the EMA and the data loaders exist (8.3.0 and 8.4 alike):
# yolobn.track records the start model there (epoch 0) and picks its fixed sample of training images.
TRAIN_START_CALLBACK = "on_train_start"


def installed() -> str:
    """The installed Ultralytics release (``"8.4.190"``)."""
    import ultralytics

    return str(ultralytics.__version__)


def release(text: Any) -> tuple[int, ...] | None:
    """``"8.3.0"`` -> ``(8, 3, 0)``; None for anything that is not a release number."""
    m = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text)) if text is not None else None
    return tuple(int(g or 0) for g in m.groups()) if m else None


def check_supported(version: str | None = None) -> None:
    """YolobnError (one line) when the installed Ultralytics is outside the supported range."""
    version = version or installed()
    got = release(version)
    if got is None or got < OLDEST:
        raise YolobnError(
            f"yolobn needs Ultralytics {SUPPORTED}, and {version} is installed; upgrade it in this environment "
            f"(pip install '{PIP_RANGE}')"
        )
    if got[0] > NEWEST_MAJOR:
        raise YolobnError(
            f"yolobn supports Ultralytics {SUPPORTED}, and {version} is installed, a release it does not know; "
            f"install one it supports (pip install '{PIP_RANGE}') or a newer yolobn"
        )


def runs_it(missing: list[str], saved: str | None) -> str:
    """Which releases run a checkpoint that needs the classes ``missing`` (``module.Class`` names):
    the first release that has them all, else the release that saved it, and anything newer."""
    firsts = [FIRST_RELEASE[n.rpartition(".")[2]] for n in missing if n.rpartition(".")[2] in FIRST_RELEASE]
    known = len(firsts) == len(missing) and firsts
    if known:
        first = max(firsts, key=lambda v: release(v) or ())
        return f"Ultralytics {first} or newer runs it (pip install 'ultralytics>={first},<9')"
    if saved and release(saved):
        return f"Ultralytics {saved}, which saved it, or a newer 8.x runs it (pip install 'ultralytics>={saved},<9')"
    return "the Ultralytics release that saved it runs it"


def missing_classes_message(path: Any, missing: list[str], saved: str | None) -> str:
    """The one line for a checkpoint that needs classes the installed release does not have."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    by = f"saved by Ultralytics {saved}" if saved else "saved by an unknown Ultralytics release"
    return (
        f"{path}: {by}, needs classes that the installed Ultralytics {installed()} does not have "
        f"({shown}); {runs_it(missing, saved)}"
    )


# --------------------------------------------------------------------------------------------------
# renames for the full (trusted) unpickle

_renames_lock = threading.Lock()


@contextlib.contextmanager
def legacy_renames() -> Iterator[None]:
    """Ultralytics' legacy module and attribute renames for a full unpickle, undone on exit.

    8.3.0's own ``temporary_modules`` never undoes its attribute renames, so yolobn applies them
    itself: the same table on every release, and nothing left behind.
    """
    missing = object()
    undo: list[tuple[Any, str, Any]] = []
    undo_modules: list[tuple[str, Any]] = []
    with _renames_lock:
        try:
            for old, new in LEGACY_ATTRIBUTES.items():
                target = _resolve_attr(new)
                if target is None:
                    continue  # not in this release
                module = importlib.import_module(old.rpartition(".")[0])
                undo.append(
                    (module, old.rpartition(".")[2], module.__dict__.get(old.rpartition(".")[2], missing))
                )
                setattr(module, old.rpartition(".")[2], target)
            for old, new in LEGACY_MODULES.items():
                undo_modules.append((old, sys.modules.get(old, missing)))
                sys.modules[old] = importlib.import_module(new)
            yield
        finally:
            for name, prior in reversed(undo_modules):
                if prior is missing:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = prior
            for module, attr, prior in reversed(undo):
                if prior is missing:
                    with contextlib.suppress(AttributeError):
                        delattr(module, attr)
                else:
                    setattr(module, attr, prior)


def _resolve_attr(full: str) -> Any:
    module, _, attr = full.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None


# --------------------------------------------------------------------------------------------------
# validation, datasets, training


def validator_class(task: str) -> Any:
    """Ultralytics' validator class for ``task`` (``DetectionValidator``...)."""
    module, name = VALIDATORS[task]
    return getattr(importlib.import_module(module), name)


def no_fuse(model: Any) -> None:
    """Make ``model.fuse`` do nothing on this instance.

    Both 8.3.0 (``AutoBackend(weights=model)``) and 8.4.x (``AutoBackend(model=model)``, then the
    PyTorch backend) call ``model.fuse(verbose=...)`` on the model they are given; a method bound
    on the instance answers both without patching any Ultralytics class.
    """
    model.fuse = _return_self.__get__(model)


def _return_self(self: Any, *args: Any, **kwargs: Any) -> Any:
    return self


def fp32_args() -> dict[str, Any]:
    """The validator argument for fp32 inference: ``quantize=None`` where the release has it (8.4),
    else ``half=False``."""
    defaults = importlib.import_module("ultralytics.cfg").DEFAULT_CFG_DICT
    return {"quantize": None} if "quantize" in defaults else {"half": False}


def check_det_dataset(path: str) -> dict[str, Any]:
    """Ultralytics' dataset check with downloads off (it then never runs a ``download:`` script).

    ``autodownload`` is the second argument in 8.3.0 and 8.4.x; 8.4 adds ``split``.
    """
    from ultralytics.data.utils import check_det_dataset as check

    return dict(check(path, autodownload=False))


def non_max_suppression() -> Callable[..., Any]:
    """Ultralytics' NMS: ``ultralytics.utils.nms`` from 8.4, ``ultralytics.utils.ops`` before."""
    try:
        nms: Callable[..., Any] = importlib.import_module("ultralytics.utils.nms").non_max_suppression
    except (ImportError, AttributeError):
        nms = importlib.import_module("ultralytics.utils.ops").non_max_suppression
    return nms


def undo_stride_probe(model: Any) -> None:
    """Give a model just built from a yaml its initial BatchNorm statistics back.

    Building a detection model probes its strides with one forward pass of a zero image: 8.3.x runs
    it in train mode, which moves every BatchNorm's running statistics (``num_batches_tracked``
    1, running_var 0.97 ...); 8.4 runs it in eval mode. Resetting the layers the probe touched
    gives the same untrained model on every release.
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    for m in model.modules():
        tracked = getattr(m, "num_batches_tracked", None)
        if isinstance(m, _BatchNorm) and tracked is not None and int(tracked) == 1:
            m.reset_running_stats()


@contextlib.contextmanager
def keep_default_act() -> Iterator[None]:
    """Building a yaml with ``activation:`` sets ``Conv.default_act`` for the whole process; 8.4
    restores it after the build, 8.3 leaves it (every later model gets that activation). yolobn
    restores it on every release."""
    from ultralytics.nn.modules.conv import Conv

    act = Conv.default_act
    try:
        yield
    finally:
        Conv.default_act = act


def ap_closes_at_last_recall() -> bool:
    """Whether the installed validator's AP drops the precision to 0 right after the last recall
    (8.4: ``compute_ap`` adds a ``(recall[-1], 0)`` point) rather than drawing a straight line to
    recall 1 (8.3, which gives a slightly higher mAP: 0.6308 against 0.6294 on the demo)."""
    from ultralytics.utils.metrics import compute_ap

    return bool(compute_ap([0.5], [1.0])[0] < 0.6)


def rtdetr_head_tensors() -> tuple[str, ...]:
    """The tensors of an ``RTDETRDecoder`` that ``BaseModel._apply`` (``float()``, ``to()``) casts:
    ``anchors`` and ``valid_mask`` in 8.4 (class attributes there); none in 8.3, whose decoder
    computes them in each forward pass and does not store them."""
    from ultralytics.nn.modules import RTDETRDecoder

    return tuple(a for a in ("anchors", "valid_mask") if hasattr(RTDETRDecoder, a))


def probe_size(model: Any, smallest: int = 64) -> int:
    """The image size of the forward check after loading: ``smallest``, or for an RT-DETR head the
    smallest multiple of 32 with at least ``num_queries`` anchors (at strides 8, 16, 32). 8.4 clamps
    its query selection to the anchors there are; 8.3 asks ``topk`` for all ``num_queries`` and fails
    on a small image ("selected index k out of range")."""
    from ultralytics.nn.modules import RTDETRDecoder

    head = next((m for m in model.modules() if isinstance(m, RTDETRDecoder)), None)
    queries = int(getattr(head, "num_queries", 0) or 0) if head is not None else 0
    size = smallest
    while queries and sum((size // s) ** 2 for s in (8, 16, 32)) < queries and size < 2048:
        size += 32
    return size


def restricted_build() -> Any:
    """8.4's restricted model build (``_SafeLoad``: no ``eval`` of a yaml's strings), or None (8.3)."""
    try:
        from ultralytics.nn.tasks import _SafeLoad
    except ImportError:
        return None
    return _SafeLoad
