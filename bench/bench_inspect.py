"""Benchmark: `yolobn inspect` against a bare Ultralytics load of the same file, in the same run.

For the bundled demo model and for a YOLO11x built from Ultralytics' yaml (saved to a temporary
.pt the way Ultralytics saves checkpoints), each command runs in a fresh process, REPEATS times,
interleaved; the median wall time and the median peak RSS are compared with two baselines:

    load  = python -c "from ultralytics import YOLO; YOLO(MODEL)"          (a bare, unsafe load)
    info  = python -c "...; YOLO(MODEL).info(detailed=True)"               (the nearest thing Ultralytics offers)

Targets (issue 11): yolobn inspect <= 1.0x info on both models, <= 1.3x load on YOLO11x, and
`yolobn --help` under 0.5 s.

    python bench/bench_inspect.py [--repeats 3] [--check]
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
import time
from pathlib import Path

PY = sys.executable
# Runs a command as the only child of a fresh wrapper, so RUSAGE_CHILDREN's peak is that command's.
WRAP = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); "
    "dt = time.perf_counter() - t; "
    "sys.stderr.write(r.stderr.decode()[-2000:]) if r.returncode else None; "
    "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)"
)


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    out = subprocess.run([PY, "-c", WRAP, *cmd], capture_output=True, text=True, env=env, check=True)
    dt, rss_kb, rc = out.stdout.split()
    if rc != "0":
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}\n{out.stderr}")
    return float(dt), int(rss_kb) / 1024


def make_yolo11x(path: Path) -> None:
    """YOLO11x from Ultralytics' yaml, BN tensors filled with trained-looking random values (a model
    built from a yaml has identical values everywhere, which would flatter every size and time)."""
    code = f"""
import copy, datetime, torch, ultralytics
from ultralytics.nn.tasks import DetectionModel
m = DetectionModel("yolo11x.yaml", verbose=False)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for bn in (x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)):
        n = bn.num_features
        bn.weight.copy_(torch.randn(n, generator=g) * 0.3 + 1)
        bn.bias.copy_(torch.randn(n, generator=g) * 0.5)
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(torch.exp(torch.randn(n, generator=g) * 2 - 1))
torch.save({{"model": copy.deepcopy(m).half(), "ema": None, "date": datetime.datetime.now().isoformat(),
            "version": ultralytics.__version__, "train_args": {{"imgsz": 640}}}}, {str(path)!r})
"""
    subprocess.run([PY, "-c", code], check=True, env={**os.environ, "YOLO_VERBOSE": "False"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    import yolobn

    yolobn_exe = shutil.which("yolobn") or sys.exit(
        "the yolobn console script is not on PATH (pip install -e .)"
    )
    env = {**os.environ, "YOLO_VERBOSE": "False"}
    results = {}
    with tempfile.TemporaryDirectory() as d:
        x = Path(d) / "yolo11x.pt"
        make_yolo11x(x)
        models = {"demo (YOLO11n)": yolobn.demo_model_path(), "YOLO11x (from yaml)": x}
        # warm the file cache and Python's bytecode once, outside the timings
        measure([yolobn_exe, "inspect", str(x), "-q"], env)
        for label, path in models.items():
            base, info, ours = [], [], []
            for _ in range(args.repeats):  # interleaved, so drift hits every side alike
                base.append(measure([PY, "-c", f"from ultralytics import YOLO; YOLO({str(path)!r})"], env))
                info.append(
                    measure(
                        [PY, "-c", f"from ultralytics import YOLO; YOLO({str(path)!r}).info(detailed=True)"],
                        env,
                    )
                )
                ours.append(measure([yolobn_exe, "inspect", str(path)], env))
            bt, bm = statistics.median(t for t, _ in base), statistics.median(m for _, m in base)
            it = statistics.median(t for t, _ in info)
            ot, om = statistics.median(t for t, _ in ours), statistics.median(m for _, m in ours)
            results[label] = {
                "size_mb": path.stat().st_size / 1e6,
                "ultralytics_load_s": bt,
                "ultralytics_info_s": it,
                "yolobn_inspect_s": ot,
                "time_ratio": ot / bt,
                "info_ratio": ot / it,
                "ultralytics_peak_mb": bm,
                "yolobn_peak_mb": om,
                "memory_ratio": om / bm,
            }
    helps = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([yolobn_exe, "--help"], stdout=subprocess.DEVNULL, check=True)
        helps.append(time.perf_counter() - t)
    help_s = statistics.median(helps)

    print(
        f"{'model':<22}{'size MB':>8}{'YOLO() s':>10}{'info() s':>10}{'inspect s':>11}{'x load':>8}{'x info':>8}"
        f"{'YOLO() MB':>11}{'inspect MB':>12}{'mem x':>7}"
    )
    for label, r in results.items():
        print(
            f"{label:<22}{r['size_mb']:>8.1f}{r['ultralytics_load_s']:>10.2f}{r['ultralytics_info_s']:>10.2f}"
            f"{r['yolobn_inspect_s']:>11.2f}{r['time_ratio']:>8.2f}{r['info_ratio']:>8.2f}"
            f"{r['ultralytics_peak_mb']:>11.0f}{r['yolobn_peak_mb']:>12.0f}{r['memory_ratio']:>7.2f}"
        )
    print(f"yolobn --help: {help_s:.3f} s (median of 5)")
    print(json.dumps({"inspect": results, "help_s": help_s}, indent=1))
    x = results["YOLO11x (from yaml)"]
    ok = all(r["info_ratio"] <= 1.0 for r in results.values()) and x["time_ratio"] <= 1.3 and help_s < 0.5
    print(
        "targets (<= 1.0x info on both, <= 1.3x load on YOLO11x, --help < 0.5 s):", "met" if ok else "MISSED"
    )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
