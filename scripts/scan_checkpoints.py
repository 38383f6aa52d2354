"""Which globals do the checkpoints of the installed Ultralytics release pickle?

Builds one model per shipped model yaml (the ``n`` scale, untrained, offline), saves it as the trainer
saves ``best.pt`` (``ema`` in fp16, ``train_args`` from ``get_cfg``, ``train_metrics`` as numpy floats),
and lists every ``module.name`` the pickles refer to, read with ``yolobn.io.sniff.scan_pickle`` (nothing
is unpickled). The allow-list in ``yolobn.io.allowlist`` was checked against this list for 8.3.0 and
8.4.190 (docs/compat.md). Run it in each release's environment:

    python scripts/scan_checkpoints.py OUT_DIR   # writes OUT_DIR/<release>/<yaml>.pt and globals.json
"""

from __future__ import annotations

import copy
import json
import os
import sys
from datetime import datetime
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import ultralytics  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.nn.tasks import (  # noqa: E402
    ClassificationModel,
    DetectionModel,
    OBBModel,
    PoseModel,
    RTDETRDetectionModel,
    SegmentationModel,
)
from ultralytics.utils import DEFAULT_CFG  # noqa: E402

from yolobn.io.sniff import read_pickle_bytes, scan_pickle  # noqa: E402

YAMLS = {  # yaml -> (model class, task); the families each release ships, where they build offline
    "yolov8n.yaml": (DetectionModel, "detect"),
    "yolov8n-seg.yaml": (SegmentationModel, "segment"),
    "yolov8n-pose.yaml": (PoseModel, "pose"),
    "yolov8n-obb.yaml": (OBBModel, "obb"),
    "yolov8n-cls.yaml": (ClassificationModel, "classify"),
    "yolo11n.yaml": (DetectionModel, "detect"),
    "yolo11n-seg.yaml": (SegmentationModel, "segment"),
    "yolo11n-pose.yaml": (PoseModel, "pose"),
    "yolo11n-obb.yaml": (OBBModel, "obb"),
    "yolo11n-cls.yaml": (ClassificationModel, "classify"),
    "yolov10n.yaml": (DetectionModel, "detect"),
    "yolov9t.yaml": (DetectionModel, "detect"),
    "rtdetr-l.yaml": (RTDETRDetectionModel, "detect"),
    "yolo12n.yaml": (DetectionModel, "detect"),
    "yolo26n.yaml": (DetectionModel, "detect"),
    "yolo26n-seg.yaml": (SegmentationModel, "segment"),
}


def save_like_the_trainer(model: torch.nn.Module, task: str, path: Path) -> None:
    args = get_cfg(DEFAULT_CFG, {"model": path.stem + ".yaml", "task": task, "data": "data.yaml"})
    model.args = vars(args)
    ckpt = {
        "epoch": -1,
        "best_fitness": None,
        "model": None,
        "ema": copy.deepcopy(model).half(),
        "updates": 1,
        "optimizer": None,
        "train_args": vars(args),
        "train_metrics": {"metrics/mAP50-95(B)": np.float64(0.5), "fitness": np.float64(0.5)},
        "train_results": {"epoch": [1.0]},
        "date": datetime.now().isoformat(),
        "version": ultralytics.__version__,
    }
    torch.save(ckpt, path)


def main(out: Path) -> None:
    out = out / ultralytics.__version__
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[str]] = {}
    for name, (cls, task) in YAMLS.items():
        try:
            model = cls(name, nc=2, verbose=False) if task != "classify" else cls(name, nc=2, verbose=False)
        except Exception as e:  # not shipped by this release, or needs a download
            print(f"{name}: not built ({type(e).__name__}: {str(e)[:80]})")
            continue
        p = out / name.replace(".yaml", ".pt")
        save_like_the_trainer(model, task, p)
        found[name] = scan_pickle(read_pickle_bytes(p) or b"").globals
        print(f"{name}: {len(found[name])} globals")
    (out / "globals.json").write_text(json.dumps(found, indent=1))
    every = sorted({g for gs in found.values() for g in gs})
    print(f"ultralytics {ultralytics.__version__}: {len(every)} distinct globals")
    for g in every:
        if not g.startswith(("ultralytics.nn.", "torch.nn.modules.")):
            print("  ", g)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/yolobn-scan"))
