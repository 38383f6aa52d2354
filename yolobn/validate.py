"""Ultralytics validation that measures the model it is given: never re-fused.

``model.val()`` builds an ``AutoBackend`` that calls ``model.fuse()``, which folds every attribute
named ``bn`` back into its conv with the standard formula: a swapped-in BatchNorm would silently
vanish and the validation would measure the original model. ``validate`` runs Ultralytics' own
validator for the model's task on a private copy whose ``fuse`` does nothing, and checks after
the run that every module it was given is still there.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from pathlib import Path
from typing import Any

from torch import nn

from yolobn.datasets import resolve_data
from yolobn.errors import YolobnError

_VALIDATORS = {
    "detect": ("ultralytics.models.yolo.detect", "DetectionValidator"),
    "segment": ("ultralytics.models.yolo.segment", "SegmentationValidator"),
    "classify": ("ultralytics.models.yolo.classify", "ClassificationValidator"),
    "pose": ("ultralytics.models.yolo.pose", "PoseValidator"),
    "obb": ("ultralytics.models.yolo.obb", "OBBValidator"),
}


def validate(
    model: Any,
    data: str | os.PathLike = "shapes",
    *,
    imgsz: int | None = None,
    batch: int = 16,
    device: str = "cpu",
    task: str | None = None,
    trust: bool = False,
) -> dict[str, float]:
    """Validate ``model`` with Ultralytics' validator for its task, without BN fusion.

    Args:
        model: a ``yolobn.LoadedModel`` (swapped or not) or an Ultralytics ``nn.Module``.
        data: ``"shapes"``, a dataset yaml path, or an Ultralytics dataset name.
        imgsz: image size; default the checkpoint's training imgsz, else 640.
        batch, device: as in Ultralytics.
        task: override the task (default: the model's).
        trust: give Ultralytics the dataset yaml as it is, which may run its ``download:`` script
            when the images are missing (see ``yolobn.datasets``). Only for yamls you trust.

    Returns:
        Ultralytics' metrics (``metrics/mAP50-95(B)``, ... or ``metrics/accuracy_top1`` ...), plus
        ``ms_per_image`` (inference time per image as Ultralytics measures it).

    Raises:
        YolobnError: unknown task, or a dataset that is not on disk and cannot be downloaded.
    """
    from yolobn.walk import unwrap

    meta = getattr(model, "meta", None)
    root = unwrap(model)
    task = task or getattr(meta, "task", None) or getattr(root, "task", None) or "detect"
    if task not in _VALIDATORS:
        raise YolobnError(f"task {task!r}: validation supports {', '.join(_VALIDATORS)}")
    if imgsz is None:
        imgsz = int((getattr(meta, "train_args", None) or {}).get("imgsz") or 640)
    data_arg = resolve_data(data, trust=trust)

    net = copy.deepcopy(root).eval()
    before = [type(m) for m in net.modules()]
    # The whole point: AutoBackend calls model.fuse(); on this private copy it does nothing.
    net.fuse = _no_fuse.__get__(net)
    import importlib

    mod, cls = _VALIDATORS[task]
    Validator = getattr(importlib.import_module(mod), cls)
    args = dict(
        data=data_arg,
        imgsz=imgsz,
        batch=batch,
        device=device,
        workers=0,
        plots=False,
        verbose=False,
        save_json=False,
        half=False,
        task=task,
        mode="val",
        rect=True,  # as model.val() does, so the numbers match Ultralytics' own validation
    )
    t0 = time.perf_counter()
    from yolobn.loader import _quiet_ultralytics

    with _quiet_ultralytics():
        try:
            validator = Validator(args=args)
            stats = validator(model=net)
        except (ConnectionError, OSError, FileNotFoundError) as e:
            raise YolobnError(
                f"--data {data}: the dataset is not on disk and could not be downloaded ({type(e).__name__}); "
                "pass a local dataset yaml, or 'shapes' for the bundled synthetic dataset"
            ) from None
        except Exception as e:
            if "download" in str(e).lower() or "not found" in str(e).lower():
                raise YolobnError(
                    f"--data {data}: the dataset is not on disk and could not be downloaded; pass a local "
                    "dataset yaml, or 'shapes' for the bundled synthetic dataset"
                ) from None
            raise
    after = [type(m) for m in net.modules()]
    if before != after:  # would mean something fused or replaced modules behind our back
        raise RuntimeError("the model changed during validation (fusion was not prevented)")
    out = {str(k): float(v) for k, v in dict(stats).items() if isinstance(v, (int, float))}
    speed = getattr(validator, "speed", {}) or {}
    out["ms_per_image"] = float(speed.get("inference", float("nan")))
    out["wall_s"] = time.perf_counter() - t0
    return out


def _no_fuse(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
    return self


# --------------------------------------------------------------------------------------------------
# swap-and-validate runs

KEY_METRICS = {
    "detect": ("metrics/mAP50-95(B)", "metrics/mAP50(B)", "metrics/precision(B)", "metrics/recall(B)"),
    "segment": ("metrics/mAP50-95(M)", "metrics/mAP50-95(B)", "metrics/mAP50(M)", "metrics/mAP50(B)"),
    "pose": ("metrics/mAP50-95(P)", "metrics/mAP50-95(B)", "metrics/mAP50(P)", "metrics/mAP50(B)"),
    "obb": ("metrics/mAP50-95(B)", "metrics/mAP50(B)", "metrics/precision(B)", "metrics/recall(B)"),
    "classify": ("metrics/accuracy_top1", "metrics/accuracy_top5"),
}


def metric_columns(m: dict[str, float], base: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    """Short metric names and their delta vs the baseline (``mAP50-95(B)``, ``mAP50-95(B) delta``)."""
    cols: dict[str, float] = {}
    for k in keys:
        short = k.replace("metrics/", "")
        cols[short] = float(m.get(k, float("nan")))
        cols[f"{short} delta"] = cols[short] - float(base.get(k, float("nan")))
    return cols


def output_difference(a: nn.Module, b: nn.Module, imgsz: int, seed: int = 0) -> dict[str, float]:
    """Largest absolute and relative difference of the raw head outputs on a fixed random batch."""
    import torch

    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))

    with torch.no_grad():
        ya, yb = _first(a.eval()(x)), _first(b.eval()(x))
    d = (ya - yb).abs().max().item()
    return {"max_abs_diff": d, "max_rel_diff": d / max(ya.abs().max().item(), 1e-12)}


def _cache_dir() -> Path:
    return Path(os.environ.get("YOLOBN_CACHE") or Path.home() / ".cache" / "yolobn") / "val"


def baseline(
    model: Any, data: str, *, imgsz: int | None, batch: int, device: str, trust: bool = False
) -> tuple[dict[str, float], bool]:
    """The unswapped model's metrics, cached by checkpoint sha256 + dataset + settings.

    Returns (metrics, from_cache). Models without a file (no sha256) are never cached.
    """
    import hashlib
    import json

    meta = getattr(model, "meta", None)
    sha = getattr(meta, "sha256", None)
    data_arg = resolve_data(data, trust=trust)
    key = None
    if sha:
        data_sig = data_arg
        p = Path(data_arg)
        if p.is_file():
            data_sig = hashlib.sha256(p.read_bytes()).hexdigest()
        raw = json.dumps([sha, data_sig, imgsz, batch, device, _ultra_version()], sort_keys=True)
        key = _cache_dir() / f"{hashlib.sha256(raw.encode()).hexdigest()[:24]}.json"
        if key.is_file():
            try:
                return json.loads(key.read_text()), True
            except (OSError, ValueError):
                pass  # a damaged cache entry is recomputed
    metrics = validate(model, data, imgsz=imgsz, batch=batch, device=device, trust=trust)
    if key is not None:
        with contextlib.suppress(OSError):
            key.parent.mkdir(parents=True, exist_ok=True)
            tmp = key.with_suffix(".tmp")
            tmp.write_text(json.dumps(metrics))
            os.replace(tmp, key)
    return metrics, False


def _ultra_version() -> str:
    import ultralytics

    return ultralytics.__version__


# --------------------------------------------------------------------------------------------------
# label-free agreement

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def default_images() -> list[Path]:
    """Ultralytics' bundled sample images (bus.jpg, zidane.jpg)."""
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    return sorted(p for p in assets.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def collect_images(paths: list[str] | None, limit: int | None = None) -> list[Path]:
    """Image files from files and folders (sorted, deterministic); Ultralytics' samples when empty."""
    if not paths:
        return default_images()
    out: list[Path] = []
    for text in paths:
        p = Path(text).expanduser()
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise YolobnError(f"--images {text}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.append(p)
        else:
            raise YolobnError(f"--images {text}: no such file or folder")
    if not out:
        raise YolobnError(f"--images {' '.join(paths)}: no images found")
    return out[:limit] if limit else out


def load_images(paths: list[Path], imgsz: int) -> Any:
    """Letterboxed, RGB, 0-1 float batch, as Ultralytics' predict preprocesses images."""
    import cv2
    import numpy as np
    import torch
    from ultralytics.data.augment import LetterBox

    lb = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=32)
    ims = []
    for p in paths:
        im = cv2.imread(str(p))
        if im is None:
            raise YolobnError(f"--images {p}: cannot be decoded as an image")
        ims.append(lb(image=im)[..., ::-1].transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(ims))).float() / 255


def agreement(
    a: Any, b: Any, images: list[Path], imgsz: int, *, conf: float = 0.25, iou: float = 0.5
) -> dict[str, float]:
    """Compare two models on real images without labels.

    Returns max absolute / relative difference of the raw head outputs and, for detection-style
    heads, the share of boxes matched by class at IoU >= ``iou`` after NMS (matched pairs divided by
    the larger of the two box counts, over all images); for classifiers, top-1 agreement.
    """
    import torch

    from yolobn.walk import unwrap

    ma, mb = unwrap(a).eval(), unwrap(b).eval()
    x = load_images(images, imgsz)
    with torch.no_grad():
        ya, yb = ma(x), mb(x)
    ta, tb = _first(ya), _first(yb)
    d = (ta - tb).abs().max().item()
    out = {
        "max_abs_diff": d,
        "max_rel_diff": d / max(ta.abs().max().item(), 1e-12),
        "images": float(len(images)),
    }
    task = getattr(ma, "task", None) or getattr(getattr(a, "meta", None), "task", None)
    if task == "classify" or ta.dim() == 2:
        out["top1_agreement"] = float((ta.argmax(1) == tb.argmax(1)).float().mean())
        return out
    from ultralytics.utils.metrics import box_iou

    try:
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:  # older ultralytics
        from ultralytics.utils.ops import non_max_suppression
    nc = len(getattr(ma, "names", {}) or {}) or None
    pa = non_max_suppression(ta, conf, 0.7, nc=nc or 0)
    pb = non_max_suppression(tb, conf, 0.7, nc=nc or 0)
    matched = total = 0
    for da, db in zip(pa, pb, strict=True):
        total += max(len(da), len(db))
        if len(da) and len(db):
            ious = box_iou(da[:, :4], db[:, :4])
            ious[da[:, 5][:, None] != db[:, 5][None, :]] = 0
            used = set()
            for i in torch.argsort(da[:, 4], descending=True).tolist():
                j = int(ious[i].argmax())
                if ious[i, j] >= iou and j not in used:
                    used.add(j)
                    matched += 1
    out["boxes_a"] = float(sum(len(p) for p in pa))
    out["boxes_b"] = float(sum(len(p) for p in pb))
    # No box on either side says nothing about agreement: NaN, not a perfect score.
    out["box_agreement"] = matched / total if total else float("nan")
    return out


def _first(t: Any) -> Any:
    while isinstance(t, (list, tuple)):
        t = t[0]
    if isinstance(t, dict):
        t = next(iter(t.values()))
    return t
