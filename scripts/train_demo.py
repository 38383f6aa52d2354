"""Train the bundled demo detector: YOLO11n from scratch on the synthetic shapes dataset.

Usage (from the repository root)::

    python scripts/train_demo.py [--epochs 60] [--imgsz 160] [--out yolobn/data/demo_yolo11n_shapes.pt]
                                 [--run-dir DIR]

Everything runs offline on the CPU. Ultralytics logs go to stderr; the final
validation metrics and timing are printed to stdout as one JSON object.

``yolobn.track`` watches the BatchNorm layers during the run (it does not change the
weights: tests/test_track.py), and Ultralytics saves a snapshot every ``--save-period``
epochs. With ``--run-dir`` the run folder (weights/epoch*.pt, yolobn/epochs.csv) is kept
there: ``scripts/make_reports.py`` turns it into the committed training timeline and the
comparison of the demo with an earlier epoch of its own training.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Must be set before ultralytics is imported: skips the online check, so no hub events,
# update checks or downloads are attempted.
os.environ.setdefault("YOLO_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yolobn.data.synth import make_shapes  # noqa: E402

METRIC_KEYS = {
    "mAP50-95": "metrics/mAP50-95(B)",
    "mAP50": "metrics/mAP50(B)",
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--out", type=Path, default=ROOT / "yolobn" / "data" / "demo_yolo11n_shapes.pt")
    parser.add_argument(
        "--run-dir", type=Path, help="keep the run folder (snapshots, yolobn/epochs.csv) here"
    )
    parser.add_argument("--save-period", type=int, default=10, help="a snapshot every N epochs (default 10)")
    args = parser.parse_args(argv)

    import torch
    import ultralytics
    import ultralytics.data.utils
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    # check_det_dataset() always calls check_font(), which probes github.com for Arial.ttf even
    # with YOLO_OFFLINE=1. Fonts are only needed for plots, and plots are off.
    ultralytics.data.utils.check_font = lambda *args, **kwargs: None
    for handler in LOGGER.handlers:  # keep stdout for the JSON result (progress bars use sys.stdout too)
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="yolobn-demo-") as tmp, contextlib.redirect_stdout(sys.stderr):
        data_yaml = make_shapes(Path(tmp) / "shapes")
        model = YOLO("yolo11n.yaml")  # architecture only: trained from scratch
        import yolobn

        yolobn.track(model, snapshots=[args.save_period, args.epochs])  # reads only: the weights are the same
        model.train(
            data=str(data_yaml),
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=16,
            workers=0,
            device="cpu",
            plots=False,
            seed=0,
            deterministic=True,
            amp=False,
            # Tuned for 96 tiny images on 2 CPU cores (SGD with the default nominal batch of 64 barely
            # moves in 360 steps): AdamW at a small lr, one optimizer step per batch, no mosaic at 160 px.
            optimizer="AdamW",
            lr0=0.004,
            nbs=16,
            mosaic=0.0,
            scale=0.2,
            translate=0.05,
            val=True,
            save_period=args.save_period,
            project=str(Path(tmp) / "runs"),
            name="demo",
            exist_ok=True,
            verbose=False,
        )
        trainer = model.trainer
        best = Path(trainer.best)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, args.out)
        metrics = {k: round(float(trainer.metrics[v]), 4) for k, v in METRIC_KEYS.items()}
        if args.run_dir is not None:
            if args.run_dir.exists():
                shutil.rmtree(args.run_dir)
            shutil.copytree(trainer.save_dir, args.run_dir)
    wall = time.perf_counter() - t0

    result = {
        **metrics,
        "wall_time_s": round(wall, 1),
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "out": str(args.out),
        "size_bytes": args.out.stat().st_size,
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
