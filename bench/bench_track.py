"""Benchmark: the cost of yolobn.track per training epoch, against the same training without it.

Trains YOLO11n from yolo11n.yaml on the bundled shapes dataset (96 images) with and without the
callback, same seed, alternating, and prints:

    callback time per epoch (measured inside the callback), and of it the drift on the fixed sample
    of training images (``--drift-images``, 32 by default; 0: no drift)
    epoch time ratio = tracked training / plain training (same run, same settings)

Usage: python bench/bench_track.py [--epochs 5] [--imgsz 160] [--repeats 2] [--drift-images 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("YOLO_OFFLINE", "1")


def train(data: str, project: str, name: str, tracked: bool, epochs: int, imgsz: int, drift_images: int):
    from ultralytics import YOLO

    import yolobn

    m = YOLO("yolo11n.yaml")
    tracker = yolobn.track(m, drift_images=drift_images) if tracked else None
    t0 = time.perf_counter()
    m.train(
        data=data,
        epochs=epochs,
        imgsz=imgsz,
        batch=16,
        workers=0,
        plots=False,
        seed=0,
        deterministic=True,
        project=project,
        name=name,
        exist_ok=True,
        verbose=False,
        amp=False,
        device="cpu",
    )
    return (
        time.perf_counter() - t0,
        (tracker.seconds if tracker else []),
        (tracker.drift_seconds if tracker else []),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--drift-images", type=int, default=32, help="training images in the drift sample")
    a = ap.parse_args()
    import yolobn

    data = str(yolobn.shapes_dataset())
    plain, tracked, cb, drift = [], [], [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.repeats):
            for is_tracked in (False, True) if r % 2 == 0 else (True, False):
                t, secs, dsecs = train(
                    data, d, f"r{r}{int(is_tracked)}", is_tracked, a.epochs, a.imgsz, a.drift_images
                )
                (tracked if is_tracked else plain).append(t)
                cb += secs
                drift += dsecs
    p, t = statistics.median(plain), statistics.median(tracked)
    print(f"YOLO11n, {a.epochs} epochs at imgsz {a.imgsz}, 96 images, {a.repeats} runs each (medians)")
    print(f"plain training      {p:8.2f} s   ({p / a.epochs:.2f} s/epoch)")
    print(f"tracked training    {t:8.2f} s   ({t / a.epochs:.2f} s/epoch)")
    print(
        f"callback per epoch  {statistics.median(cb) * 1000:8.1f} ms  (median of {len(cb)} calls, epoch 0 included)"
    )
    print(
        f"  of which drift    {statistics.median(drift) * 1000:8.1f} ms  ({a.drift_images} training images)"
    )
    print(f"ratio tracked/plain {t / p:8.3f}")


if __name__ == "__main__":
    main()
