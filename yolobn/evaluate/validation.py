"""Ultralytics validation that measures the model it is given: never re-fused.

``model.val()`` builds an ``AutoBackend`` that calls ``model.fuse()``, which folds every attribute
named ``bn`` back into its conv with the standard formula: a swapped-in BatchNorm would silently
vanish and the validation would measure the original model. ``validate`` runs Ultralytics' own
validator for the model's task on a private copy whose ``fuse`` does nothing, and checks after
the run that every module it was given is still there. What differs between Ultralytics releases
(the validator classes, how fusing is reached, the fp32 argument, the metrics keys) comes from
``yolobn.io.ultra``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

from torch import nn

from yolobn.bn.walk import unwrap
from yolobn.core.atomic import write_files
from yolobn.core.digest import sha256, sha256_bytes
from yolobn.core.errors import YolobnError
from yolobn.evaluate.metrics import Metrics, details_of
from yolobn.io import ultra
from yolobn.io.datasets import resolve_data
from yolobn.io.images import model_imgsz
from yolobn.io.quiet import quiet_ultralytics
from yolobn.io.ultra import KEY_METRICS

__all__ = ["KEY_METRICS", "Metrics", "baseline", "metric_columns", "validate"]


def validate(
    model: Any,
    data: str | os.PathLike[str] = "shapes",
    *,
    imgsz: int | None = None,
    batch: int = 16,
    device: str = "cpu",
    task: str | None = None,
    trust: bool = False,
    loaders: dict[Any, Any] | None = None,
) -> Metrics:
    """Validate ``model`` with Ultralytics' validator for its task, without BN fusion.

    Args:
        model: a ``yolobn.LoadedModel`` (swapped or not) or an Ultralytics ``nn.Module``.
        data: ``"shapes"``, a dataset yaml path, or an Ultralytics dataset name.
        imgsz: image size; default the checkpoint's training imgsz, else 640.
        batch, device: as in Ultralytics.
        task: override the task (default: the model's).
        trust: give Ultralytics the dataset yaml as it is, which may run its ``download:`` script
            when the images are missing (see ``yolobn.io.datasets``). Only for yamls you trust.
        loaders: a cache of dataloaders kept between calls (``yolobn.sweeps.fanout``'s workers pass one):
            the dataset is built once per settings, not once per validation.

    Returns:
        ``Metrics``: named attributes like Ultralytics' (``.box.map``, ``.box.map50``, ``.seg.map``,
        ``.top1``, ``.ms_per_image``) and ``to_dict()``; also a dict of Ultralytics' raw keys
        (``metrics/mAP50-95(B)``, ...).

    Raises:
        YolobnError: unknown task, or a dataset that is not on disk and cannot be downloaded.
    """

    meta = getattr(model, "meta", None)
    root = unwrap(model)
    task = task or getattr(meta, "task", None) or getattr(root, "task", None) or "detect"
    if task not in ultra.VALIDATORS:
        raise YolobnError(f"task {task!r}: validation supports {', '.join(ultra.VALIDATORS)}")

    imgsz = model_imgsz(model, imgsz)
    data_arg = resolve_data(data, trust=trust)

    net = copy.deepcopy(root).eval()
    before = [type(m) for m in net.modules()]
    # The whole point: AutoBackend calls model.fuse(); on this private copy it does nothing.
    ultra.no_fuse(net)
    t0 = time.perf_counter()
    stride = getattr(root, "stride", None)
    lkey = (
        task,
        data_arg,
        imgsz,
        batch,
        str(device),
        str(stride.tolist() if stride is not None and hasattr(stride, "tolist") else stride),
    )
    # Popped while in use and put back only after a whole pass: a validation that raised midway
    # leaves its loader's iterator mid-epoch, and reusing it would shift every later batch.
    loader = loaders.pop(lkey, None) if loaders is not None else None
    args = dict(data=data_arg, imgsz=imgsz, batch=batch, device=device, task=task)
    validator, stats = _run_validator(net, args, loader, data)
    if loaders is not None:
        loaders[lkey] = validator.dataloader
    after = [type(m) for m in net.modules()]
    if before != after:  # would mean something fused or replaced modules behind our back
        raise RuntimeError("the model changed during validation (fusion was not prevented)")
    out = {str(k): float(v) for k, v in dict(stats).items() if isinstance(v, (int, float))}
    speed = getattr(validator, "speed", {}) or {}
    out["ms_per_image"] = float(speed.get("inference", float("nan")))
    out["wall_s"] = time.perf_counter() - t0
    return Metrics(out, details_of(validator))


def _run_validator(net: nn.Module, args: dict[str, Any], loader: Any, data: Any) -> tuple[Any, Any]:
    """Ultralytics' validator for ``args["task"]`` on ``net`` (settings as ``model.val()``); a missing
    dataset is a one-line YolobnError. Its save_dir is a private temporary folder, removed after the
    run: left to itself the validator makes ``runs/<task>/val*`` in the working folder."""
    import tempfile

    Validator = ultra.validator_class(args["task"])
    full = dict(
        **args,
        **ultra.fp32_args(),
        workers=0,
        plots=False,
        verbose=False,
        save_json=False,
        mode="val",
        rect=True,  # as model.val() does, so the numbers match Ultralytics' own validation
    )
    with quiet_ultralytics(), tempfile.TemporaryDirectory(prefix="yolobn-val-") as save_dir:
        try:
            validator = Validator(args=full, dataloader=loader, save_dir=Path(save_dir))
            return validator, validator(model=net)
        except (ConnectionError, OSError, FileNotFoundError) as e:
            raise YolobnError(
                f"dataset {data}: not on disk and could not be downloaded ({type(e).__name__}); "
                "pass a local dataset yaml, or 'shapes' for the bundled synthetic dataset"
            ) from None
        except Exception as e:
            if "download" in str(e).lower() or "not found" in str(e).lower():
                raise YolobnError(
                    f"dataset {data}: not on disk and could not be downloaded; pass a local "
                    "dataset yaml, or 'shapes' for the bundled synthetic dataset"
                ) from None
            raise


# --------------------------------------------------------------------------------------------------
# metrics and the cached baseline


def metric_columns(m: dict[str, float], base: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    """Short metric names and their delta vs the baseline (``mAP50-95(B)``, ``mAP50-95(B) delta``)."""
    cols: dict[str, float] = {}
    for k in keys:
        short = k.replace("metrics/", "")
        cols[short] = float(m.get(k, float("nan")))
        cols[f"{short} delta"] = cols[short] - float(base.get(k, float("nan")))
    return cols


def _cache_dir() -> Path:
    return Path(os.environ.get("YOLOBN_CACHE") or Path.home() / ".cache" / "yolobn") / "val"


def baseline(
    model: Any, data: str, *, imgsz: int | None, batch: int, device: str, trust: bool = False
) -> tuple[dict[str, float], bool]:
    """The unswapped model's metrics, cached by checkpoint sha256 + dataset + settings.

    Returns (metrics, from_cache). Models without a file (no sha256) are never cached.
    """
    meta = getattr(model, "meta", None)
    sha = getattr(meta, "sha256", None)

    imgsz = model_imgsz(model, imgsz)
    data_arg = resolve_data(data, trust=trust)
    key = None
    if sha:
        data_sig = data_arg
        p = Path(data_arg)
        if p.is_file():
            data_sig = sha256(p)
        raw = json.dumps([sha, data_sig, imgsz, batch, device, ultra.installed()], sort_keys=True)
        key = _cache_dir() / f"{sha256_bytes(raw.encode())[:24]}.json"
        cached = _cached(key, getattr(meta, "task", None))
        if cached is not None:
            return cached, True
    metrics = validate(model, data, imgsz=imgsz, batch=batch, device=device, trust=trust)
    if key is not None:
        # Unique temporary names (two runs may fill the same entry); a cache that cannot be written
        # costs a validation next time, nothing more.
        with contextlib.suppress(OSError, YolobnError):
            write_files({key: json.dumps(metrics)})
    return metrics, False


def _cached(key: Path, task: str | None) -> dict[str, float] | None:
    """A cache entry when it is a complete record (every key metric of the task a number), else
    None: anything else (damaged, edited, written by another version) is recomputed."""
    import json
    import numbers

    try:
        if not key.is_file():
            return None
        doc = json.loads(key.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    needed = (*KEY_METRICS.get(task or "detect", KEY_METRICS["detect"]), "ms_per_image")
    if not all(isinstance(doc.get(k), numbers.Real) and not isinstance(doc.get(k), bool) for k in needed):
        return None
    return {
        str(k): float(v) for k, v in doc.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)
    }
