"""Benchmark: the cost of swapping BatchNorm, measured against baselines from the same run.

1. Whole-model inference of the demo model (batch 8 at its imgsz, CPU, unfused), `reference` BN vs
   `nn.BatchNorm2d`: target ratio <= 1.15; `folded` vs unfused nn.BatchNorm2d: target < 1.0.
2. `yolobn swap MODEL --impl reference --data shapes --no-cache` (a baseline and one variant: two
   validations) vs a fresh process doing two plain `YOLO(MODEL).val(...)` on the same data: <= 1.2.

    python bench/bench_swap.py [--repeats 5] [--check]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inspect import measure  # noqa: E402


def infer_time(model, x, repeats: int) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(2):  # warm-up
            model(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    import torch

    import yolobn
    from yolobn.data.synth import shapes_dataset

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    lm = yolobn.load()
    imgsz = int(lm.meta.train_args.get("imgsz") or 160)
    x = torch.rand(8, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    models = {
        "nn.BatchNorm2d": lm.model.eval(),
        "reference": yolobn.swap(lm, "reference").model.eval(),
        "folded": yolobn.swap(lm, "folded").model.eval(),
    }
    t = {k: [] for k in models}
    for _ in range(3):  # interleaved rounds, so drift hits every variant alike
        for k, m in models.items():
            t[k].append(infer_time(m, x, args.repeats))
    med = {k: statistics.median(v) for k, v in t.items()}
    r_ref, r_fold = med["reference"] / med["nn.BatchNorm2d"], med["folded"] / med["nn.BatchNorm2d"]
    print(f"inference, batch 8 @ {imgsz}: " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in med.items()))
    print(
        f"reference / nn.BatchNorm2d = {r_ref:.3f} (target <= 1.15); folded / unfused = {r_fold:.3f} (target < 1.0)"
    )

    exe = shutil.which("yolobn") or sys.exit("the yolobn console script is not on PATH (pip install -e .)")
    data = str(shapes_dataset())
    model = str(yolobn.demo_model_path())
    env = {**os.environ, "YOLO_VERBOSE": "False", "YOLO_OFFLINE": "1"}
    plain = (
        "from ultralytics import YOLO\n"
        f"for _ in range(2): YOLO({model!r}).val(data={data!r}, imgsz={imgsz}, batch=16, workers=0, plots=False, "
        "device='cpu', verbose=False)"
    )
    ours, base = [], []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(3):
            base.append(measure([sys.executable, "-c", plain], env)[0])
            ours.append(
                measure(
                    [exe, "swap", model, "--impl", "reference", "--data", data, "--no-cache", "-o", d], env
                )[0]
            )
    r_swap = statistics.median(ours) / statistics.median(base)
    print(
        f"yolobn swap (2 validations) {statistics.median(ours):.2f} s / two plain YOLO().val() "
        f"{statistics.median(base):.2f} s = {r_swap:.3f} (target <= 1.2)"
    )
    ok = r_ref <= 1.15 and r_fold < 1.0 and r_swap <= 1.2
    print("targets:", "met" if ok else "MISSED")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
