"""Benchmark: a whole sensitivity sweep, local vs Ray, Ray's cost per task, and the per-image costs
docs/scale.md projects from. Every ratio is between numbers measured in this run.

1. The demo's full sensitivity sweep (examples/eps.yaml: reference:eps=1e-5 on each of the 81 BN
   layers, one validation each, plus the baseline and one variant), run
   a. locally, one validation after the other (the default: this process, all cores to torch);
   b. on a local Ray instance with N workers (``ray.init(num_cpus=N)``; each task 1 CPU), cold
      (fresh workers: imports and model load included) and warm (the same instance again);
   then locally again; the speedup is the mean of the two local runs / Ray; the sensitivity tables
   must be equal.
2. Ray's overhead per task: a no-op task submitted and gathered (N at once, and one at a time),
   against a plain call of the same function; and against the median task of the sweep.
3. Per image: the demo's validation (wall time / images, and Ultralytics' preprocess / inference /
   postprocess split); a YOLO11x built from yolo11x.yaml, forward at 640 px (batch 1) on this
   machine's --device; decoding + letterboxing a photo to 640 px (the data loading of COCO).

    python bench/bench_sweep.py [--workers 2] [--layers 81] [--device cpu] [--skip-sweep] [--skip-yolo11x]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def sweep_config(layers: int) -> dict:
    from yolobn.sweeps.experiment import read_config

    cfg = read_config(Path(__file__).resolve().parent.parent / "examples" / "eps.yaml", trust=True)
    cfg["variants"] = [{"impl": "reference"}]  # the sweep is the point; one variant keeps the table shape
    if layers < 81:
        from yolobn.bn.walk import find_blocks
        from yolobn.io.loader import load

        cfg["sensitivity"]["layers"] = [b.name for b in find_blocks(load())][:layers]
    return cfg


def bench_sweep(args: argparse.Namespace) -> dict:
    import ray

    from yolobn.sweeps.experiment import run_experiment
    from yolobn.sweeps.fanout import Execution

    cfg = sweep_config(args.layers)
    load0 = os.getloadavg()[0]
    run_experiment({**cfg, "sensitivity": None})  # the baseline into its cache: the same start for both
    local, t_local = timed(run_experiment, cfg)
    import torch

    threads = torch.get_num_threads()  # what Ultralytics' validator set: min(8, cores - 1)
    _, t_init = timed(ray.init, num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    ex = Execution(ray="auto", resume=False, keep_rows=False)
    cold, t_cold = timed(run_experiment, cfg, execution=ex)
    warm, t_warm = timed(run_experiment, cfg, execution=ex)
    ray.shutdown()  # Ray's idle processes off the cores while the local run is measured again
    again, t_again = timed(run_experiment, cfg)  # before and after Ray: the machine's drift shows
    t_before, t_local = t_local, (t_local + t_again) / 2
    same = all(local.sensitivity.equals(x.sensitivity) for x in (cold, warm, again))
    n = len(local.sensitivity) + 2
    print(f"\n1. sensitivity sweep of the demo: {n - 2} layers + baseline + 1 variant = {n} validations")
    print(
        f"   (load average before / after: {load0:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        "others' work on the machine slows the parallel runs most)"
    )
    print(
        f"   local, sequential (torch threads: {threads})          {t_local:8.1f} s  ({t_local / n:.2f} s per task; "
        f"mean of {t_before:.1f} s before Ray and {t_again:.1f} s after)"
    )
    print(f"   ray.init(num_cpus={args.workers})                        {t_init:8.1f} s")
    print(f"   Ray, {args.workers} workers, cold (imports, model load)  {t_cold:8.1f} s")
    print(f"   Ray, {args.workers} workers, warm                        {t_warm:8.1f} s")
    print(
        f"   speedup local / Ray cold {t_local / t_cold:.2f}x, warm {t_local / t_warm:.2f}x, "
        f"with ray.init {t_local / (t_init + t_cold):.2f}x"
    )
    print(f"   sensitivity tables equal (local twice, Ray cold, Ray warm): {same}")
    return {"t_local": t_local, "n": n, "same": same}


def noop(x: int) -> int:
    return x


def bench_overhead(args: argparse.Namespace, task_s: float | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(noop).options(num_cpus=1)
    ray.get([remote.remote(i) for i in range(2 * args.workers)])  # workers up
    n, m = 400, 100
    per_plain = min(timed(lambda: [noop(i) for i in range(n)])[1] for _ in range(3)) / n
    # medians over repeats: the machine is shared, and a single slow round trip says little
    per_batch = statistics.median(
        timed(lambda: ray.get([remote.remote(i) for i in range(n)]))[1] / n for _ in range(3)
    )
    per_serial = statistics.median(timed(lambda i=i: ray.get(remote.remote(i)))[1] for i in range(m))
    print(f"\n2. Ray's overhead per task (no-op, {args.workers} workers)")
    print(f"   plain call                      {per_plain * 1e6:10.2f} us")
    print(
        f"   Ray, {n} submitted at once      {per_batch * 1e3:10.2f} ms  ({per_batch / per_plain:,.0f}x a plain call)"
    )
    print(
        f"   Ray, one at a time (round trip) {per_serial * 1e3:10.2f} ms  ({per_serial / per_plain:,.0f}x a plain call)"
    )
    if task_s:
        print(f"   round trip / one sweep task ({task_s:.2f} s): {per_serial / task_s:.2%}")


def bench_images(args: argparse.Namespace) -> None:
    import cv2
    import torch
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ASSETS

    import yolobn
    from yolobn.evaluate.validation import validate

    lm = yolobn.load()
    validate(lm, "shapes", imgsz=160)  # warm
    walls, speeds = [], []
    for _ in range(3):
        m = validate(lm, "shapes", imgsz=160)
        walls.append(m["wall_s"])
        speeds.append(m["ms_per_image"])
    print("\n3. per image on this machine")
    print(
        f"   demo validation (YOLO11n @160, 24 images): {statistics.median(walls):.2f} s a validation, "
        f"{statistics.median(walls) / 24 * 1e3:.1f} ms per image wall, inference {statistics.median(speeds):.1f} ms"
    )
    photos = [str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")]
    lb = LetterBox((640, 640), auto=False, stride=32)
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        for p in photos:
            lb(image=cv2.imread(p))
    print(
        f"   decode + letterbox a photo to 640 px (bus.jpg, zidane.jpg): {(time.perf_counter() - t) / (reps * 2) * 1e3:.1f} ms"
    )
    if args.skip_yolo11x:
        return
    from yolobn.bn.walk import find_blocks
    from yolobn.run.device import parse_device

    dev = parse_device(args.device)
    x11 = yolobn.load("yolo11x.yaml")
    net = x11.model.to(dev).eval()
    x = torch.rand(1, 3, 640, 640, device=dev)
    print(f"   YOLO11x (yolo11x.yaml, {len(find_blocks(x11))} BN layers), forward @640, batch 1, {dev}:")
    fwd = {}
    for threads in sorted({1, os.cpu_count() or 1}) if dev.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)  # Ultralytics' validations above left it at min(8, cores - 1)
        with torch.inference_mode():
            net(x)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                net(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        fwd[threads] = statistics.median(times)
        print(
            f"     {threads} thread(s): {fwd[threads] * 1e3:.0f} ms (median of {args.repeats}); one COCO val2017 "
            f"validation (5,000 images) = {5000 * fwd[threads] / 3600:.1f} h of forward passes"
        )
    if len(fwd) == 2:
        lo, hi = sorted(fwd)
        print(
            f"     {hi} threads / 1 thread: {fwd[lo] / fwd[hi]:.2f}x faster (1.0 = no gain from threads here)"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--layers", type=int, default=81, help="sensitivity layers (default all 81)")
    ap.add_argument("--device", default="cpu", help="device of the YOLO11x forward timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-yolo11x", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    with tempfile.TemporaryDirectory() as cache:
        os.environ.setdefault("YOLOBN_CACHE", cache)  # before ray.init: the workers inherit it
        res = None if args.skip_sweep else bench_sweep(args)
        bench_overhead(args, res["t_local"] / res["n"] if res else None)
        import ray

        ray.shutdown()
        bench_images(args)
    return 0 if res is None or res["same"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
