"""Benchmark: `yolobn activations` against plain Ultralytics inference on the same images, same run.

Each command runs in a fresh process (start-up, model load and image decoding included on both
sides), REPEATS times, interleaved; medians are compared:

    time ratio   = yolobn activations MODEL --images DIR  /  YOLO(MODEL).predict(DIR, stream=True)
    steady state = the same two calls, both warmed up in one process: the per-image cost alone (no
                   imports, loading or first-call kernel set-up, which flatter the fresh-process ratio)
    memory ratio = peak RSS of yolobn activations on 10x the images / on 1x the images

Both sides use the same imgsz and batch size. Ultralytics' predict runs the fused model (BN folded
into the convolutions); yolobn has to run the unfused model, since the BN layers are what it hooks.

Workloads: the bundled demo model (YOLO11n) on its 96 synthetic training images at 160 px (what
`yolobn activations` does with no argument), and the same model at 640 px on copies of
Ultralytics' bus.jpg / zidane.jpg (realistic photo sizes).

Targets (issue #5): time ratio <= 1.3; memory at 10x the images within 10% of memory at 1x.

    python bench/bench_activations.py [--repeats 3] [--images 64] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inspect import PY, measure  # noqa: E402

WARM = """
import json, time, yolobn
from ultralytics import YOLO
y, m = YOLO({model!r}), yolobn.load({model!r})
run = {{"predict": lambda: list(y.predict({photos!r}, imgsz=640, batch=16, stream=True, verbose=False)),
       "activations": lambda: yolobn.observe(m, [{photos!r}], imgsz=640, batch=16)}}
out = {{k: [] for k in run}}
for k in run:
    run[k]()
for _ in range({repeats}):
    for k in run:
        t = time.perf_counter(); run[k](); out[k].append(time.perf_counter() - t)
print(json.dumps(out))
"""


def activations_cmd(exe: str, model: str, folder: Path, imgsz: int) -> list[str]:
    return [exe, "activations", model, "--images", str(folder), "--imgsz", str(imgsz), "--batch", "16", "-q"]


def copies(src: list[Path], n: int, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for i in range(n):
        s = src[i % len(src)]
        shutil.copy(s, dest / f"{i:05d}{s.suffix}")
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=64, help="images of the 640 px workload (default 64)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    import yolobn
    from yolobn.io.images import sample_images as default_images

    exe = shutil.which("yolobn") or sys.exit("the yolobn console script is not on PATH (pip install -e .)")
    env = {**os.environ, "YOLO_VERBOSE": "False", "YOLO_OFFLINE": "1"}
    model = str(yolobn.demo_model_path())
    shapes = yolobn.shapes_dataset().parent / "images" / "train"
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        photos = copies(default_images(), args.images, Path(d) / "photos")
        workloads = {
            f"demo, {len(list(shapes.iterdir()))} shapes @160": (shapes, 160),
            f"demo, {args.images} photos @640": (photos, 640),
        }
        for label, (folder, imgsz) in workloads.items():
            predict = (
                "from ultralytics import YOLO; "
                f"list(YOLO({model!r}).predict({str(folder)!r}, imgsz={imgsz}, batch=16, stream=True, verbose=False))"
            )
            ours_cmd = activations_cmd(exe, model, folder, imgsz)
            measure(ours_cmd, env)  # warm the file cache and bytecode once, outside the timings
            base, ours = [], []
            for _ in range(args.repeats):
                base.append(measure([PY, "-c", predict], env))
                ours.append(measure(ours_cmd, env))
            bt, ot = statistics.median(t for t, _ in base), statistics.median(t for t, _ in ours)
            results[label] = {
                "predict_s": bt,
                "activations_s": ot,
                "time_ratio": ot / bt,
                "predict_peak_mb": statistics.median(m for _, m in base),
                "activations_peak_mb": statistics.median(m for _, m in ours),
            }

        # memory: the same command on 10x the images (photos at 320 px, 32 and 320 of them, so that both
        # runs have full batches of 16 and only the number of images differs)
        small = copies(default_images(), 32, Path(d) / "x1")
        large = copies(default_images(), 320, Path(d) / "x10")
        mem = {}
        for tag, folder in (("x1", small), ("x10", large)):
            cmd = activations_cmd(exe, model, folder, 320)
            mem[tag] = statistics.median(m for _, m in (measure(cmd, env) for _ in range(2)))
        memory = {
            "images_x1": 32,
            "images_x10": 320,
            "peak_mb_x1": mem["x1"],
            "peak_mb_x10": mem["x10"],
            "memory_ratio": mem["x10"] / mem["x1"],
        }

        # steady state: both warmed up in one process (imports, loading, first-call set-up excluded)
        r = subprocess.run(
            [PY, "-c", WARM.format(model=model, photos=str(photos), repeats=args.repeats)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        w = json.loads(r.stdout.strip().splitlines()[-1])
        warm = {
            "predict_s": statistics.median(w["predict"]),
            "activations_s": statistics.median(w["activations"]),
        }
        warm["time_ratio"] = warm["activations_s"] / warm["predict_s"]

    print(
        f"{'workload':<28}{'predict s':>10}{'activations s':>15}{'time x':>8}{'predict MB':>12}{'activ. MB':>11}"
    )
    for label, r in results.items():
        print(
            f"{label:<28}{r['predict_s']:>10.2f}{r['activations_s']:>15.2f}{r['time_ratio']:>8.2f}"
            f"{r['predict_peak_mb']:>12.0f}{r['activations_peak_mb']:>11.0f}"
        )
    print(
        f"steady state, {args.images} photos @640, both warmed up in one process: predict {warm['predict_s']:.2f} s, "
        f"activations {warm['activations_s']:.2f} s, ratio {warm['time_ratio']:.2f}"
    )
    print(
        f"peak memory, 32 vs 320 photos @320: {memory['peak_mb_x1']:.0f} MB vs {memory['peak_mb_x10']:.0f} MB "
        f"(ratio {memory['memory_ratio']:.3f})"
    )
    print(json.dumps({"time": results, "steady_state": warm, "memory": memory}, indent=1))
    time_ok = all(r["time_ratio"] <= 1.3 for r in [*results.values(), warm])
    mem_ok = memory["memory_ratio"] <= 1.10
    print(
        "targets: time ratio <= 1.3:",
        "met" if time_ok else "MISSED",
        "| memory 10x within 10%:",
        "met" if mem_ok else "MISSED",
    )
    return 0 if (time_ok and mem_ok) or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
