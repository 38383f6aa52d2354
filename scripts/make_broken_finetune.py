"""Make the broken fine-tune fixture: the demo detector fine-tuned 3 epochs with too high a learning rate.

Usage (from the repository root)::

    python scripts/make_broken_finetune.py [--out tests/fixtures/broken_finetune] [--lr0 0.05] [--epochs 3]

Fine-tunes ``yolobn/data/demo_yolo11n_shapes.pt`` on the synthetic shapes dataset
(``yolobn.shapes_dataset()``) with SGD at lr0 0.05, no warmup, imgsz 160, batch 16, ``workers=0``,
``plots=False``, seed 0, deterministic, with ``yolobn.track(model)`` attached (32 training images
for the drift). The steps are large enough to move the convolutions faster than BatchNorm's running
averages (momentum 0.03 per step) follow: the BN parameters barely move (``yolobn compare``: a
mean change of about 0.007 nats), but the stored statistics no longer fit the weights, and accuracy
collapses; recalibrating the statistics on the training images recovers most of it. lr0 0.1 breaks
the weights themselves (mAP50-95 0.000, recalibrated 0.06); 0.01-0.03 break less (drift 0.6-0.7).

Writes into ``--out`` (a run folder in Ultralytics' layout, what ``yolobn report --run`` reads):
``weights/last.pt`` (stripped, fp16, as Ultralytics saves it), ``yolobn/epochs.csv`` (the tracker's
rows, epoch 0 = the demo model), ``results.csv`` (Ultralytics' per-epoch metrics). Then it measures,
and prints as JSON on stdout: mAP50-95 on the shapes val split of the demo, the fine-tune and the
fine-tune recalibrated on the 96 training images, and the drift of the fine-tune on those images.
About 2 minutes on 2 CPU cores. docs/demo.md records the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Before ultralytics is imported: no hub events, update checks or downloads.
os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRIC = "metrics/mAP50-95(B)"


def train(out: Path, lr0: float, epochs: int) -> float:
    """The fine-tune, with the tracker attached; keeps last.pt, epochs.csv and results.csv in ``out``."""
    import ultralytics.data.utils
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    import yolobn

    ultralytics.data.utils.check_font = lambda *args, **kwargs: None  # plots are off; no font download
    for handler in LOGGER.handlers:  # stdout is for the JSON result
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yolobn-broken-") as tmp, contextlib.redirect_stdout(sys.stderr):
        model = YOLO(str(yolobn.demo_model_path()))
        yolobn.track(model)  # reads only: the weights are the same without it (tests/test_track.py)
        model.train(
            data=str(yolobn.shapes_dataset()),
            epochs=epochs,
            imgsz=160,
            batch=16,
            workers=0,
            device="cpu",
            plots=False,
            seed=0,
            deterministic=True,
            amp=False,
            optimizer="SGD",
            lr0=lr0,
            warmup_epochs=0,
            mosaic=0.0,
            val=False,  # validation draws random numbers: with it the same seed trains other weights
            project=tmp,
            name="broken_finetune",
            exist_ok=True,
            verbose=False,
        )
        run = Path(model.trainer.save_dir)
        if out.exists():
            shutil.rmtree(out)
        (out / "weights").mkdir(parents=True)
        (out / "yolobn").mkdir()
        shutil.copyfile(run / "weights" / "last.pt", out / "weights" / "last.pt")
        shutil.copyfile(run / "yolobn" / "epochs.csv", out / "yolobn" / "epochs.csv")
        shutil.copyfile(run / "results.csv", out / "results.csv")
    return time.perf_counter() - t0


def measure(out: Path) -> dict[str, object]:
    """mAP50-95 of the demo, the fine-tune and the fine-tune recalibrated; the fine-tune's drift."""
    import numpy as np

    import yolobn

    train_images = [str(yolobn.shapes_dataset().parent / "images" / "train")]
    demo, broken = yolobn.load(), yolobn.load(str(out / "weights" / "last.pt"))
    obs = yolobn.observe(broken, train_images)
    drift = obs.layers["drift"].to_numpy(float)
    worst = int(np.nanargmax(drift))
    recal = yolobn.recalibrate(broken, train_images)
    return {
        "mAP50-95": {
            "demo": round(float(yolobn.validate(demo, "shapes")[METRIC]), 4),
            "finetune": round(float(yolobn.validate(broken, "shapes")[METRIC]), 4),
            "finetune_recalibrated": round(float(yolobn.validate(recal, "shapes")[METRIC]), 4),
        },
        "drift_on_96_training_images": {
            "mean": round(float(np.nanmean(drift)), 3),
            "worst_layer": str(obs.layers["name"][worst]),
            "worst": round(float(drift[worst]), 2),
        },
        "compare_change_mean": round(float(yolobn.compare(demo, broken).summary()["change_mean"]), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "broken_finetune")
    ap.add_argument("--lr0", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args(argv)
    seconds = train(a.out, a.lr0, a.epochs)
    with contextlib.redirect_stdout(sys.stderr):
        result = measure(a.out)
    import torch
    import ultralytics

    last = a.out / "weights" / "last.pt"
    result.update(
        {
            "train_s": round(seconds, 1),
            "lr0": a.lr0,
            "epochs": a.epochs,
            "size_bytes": last.stat().st_size,
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__,
        }
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
