"""Benchmark: `yolobn report` on a YOLO11x built from its yaml (saved as a .pt like Ultralytics does).

Prints, measured in the same run:
- in-process: load time, then inspection + HTML/CSV/JSON rendering time (the "time beyond loading"),
  and the size of report.html;
- fresh processes: `yolobn report X.pt` wall time divided by `yolobn inspect X.pt` wall time.

Targets (issue #3): time beyond loading <= 5 s, report.html <= 3 MB.

    python bench/bench_report.py [--repeats 3] [--check]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inspect import make_yolo11x, measure  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    import os

    import yolobn
    from yolobn.report.html import report_files

    exe = shutil.which("yolobn") or sys.exit("the yolobn console script is not on PATH (pip install -e .)")
    env = {**os.environ, "YOLO_VERBOSE": "False"}
    with tempfile.TemporaryDirectory() as d:
        x = Path(d) / "yolo11x.pt"
        make_yolo11x(x)
        loads, beyond, sizes = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            lm = yolobn.load(x)
            t1 = time.perf_counter()
            files = report_files(yolobn.inspect(lm), Path(d) / "out")
            t2 = time.perf_counter()
            loads.append(t1 - t0)
            beyond.append(t2 - t1)
            sizes.append(len(files[Path(d) / "out" / "report.html"].encode()))
        rep, ins = [], []
        for _ in range(args.repeats):
            ins.append(measure([exe, "inspect", str(x), "-q"], env)[0])
            rep.append(measure([exe, "report", str(x), "-o", str(Path(d) / "cli"), "-q"], env)[0])
    load_s, beyond_s, html_mb = statistics.median(loads), statistics.median(beyond), max(sizes) / 1e6
    ratio = statistics.median(rep) / statistics.median(ins)
    print(
        f"YOLO11x: load {load_s:.2f} s, inspection + report rendering beyond loading {beyond_s:.2f} s, "
        f"report.html {html_mb:.2f} MB"
    )
    print(
        f"yolobn report / yolobn inspect (fresh processes, median of {args.repeats}): "
        f"{statistics.median(rep):.2f} s / {statistics.median(ins):.2f} s = {ratio:.2f}"
    )
    ok = beyond_s <= 5 and html_mb <= 3
    print("targets (beyond loading <= 5 s, html <= 3 MB):", "met" if ok else "MISSED")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
