"""Small files that would cost gigabytes or hang (issue 18, section 3): the worst case per category.

Builds each input of tests/bombs.py at its full size (a 9-level alias bomb, 10^6 shared class
names, a zip record inflating to 3.5 GB, a 32000x32000 PNG, a 200-page TIFF, a 10 GB sparse .jpg,
...) and runs its command line as ``python -m yolobn.cli ...`` in a child process, one at a time, with
a wall-clock deadline and an address-space cap (so that a regression fails here instead of taking
the machine's memory). Prints, per case, the exit code, the child's peak resident memory
(``ru_maxrss``) and wall time, against a baseline in the same run (``yolobn inspect`` of the demo
model: the cost of starting Python, torch and Ultralytics), and whether the contract holds:

    exit 2 with one error line (an image: exit 0 and a warning that it was skipped), under 30 s,
    under 2 GB peak, nothing written.

    python bench/bench_bombs.py                      # every case, full size
    python bench/bench_bombs.py --only image --small # the test-suite sizes
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_BUDGET_MB = 2048
TIME_BUDGET_S = 30.0


def run_child(
    argv: list[str], cwd: Path, timeout: float, cap_gb: float, code: Path = ROOT
) -> tuple[int | None, float, float, str]:
    """(exit code or None on timeout, peak RSS in MB, seconds, stderr) of ``python -m yolobn.cli argv``."""

    def limit() -> None:
        cap = int(cap_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False", "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "yolobn.cli", *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limit,
    )
    deadline = t0 + timeout
    status = None
    while status is None:
        pid, st, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status = st
            break
        if time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            status = None
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status) if status is not None else None
    return code, usage.ru_maxrss / 1024, seconds, err


def verdict(bomb: object, code: int | None, err: str, peak: float, seconds: float, written: list[str]) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code is None:
        return "HANG"
    expect = getattr(bomb, "expect", "error")
    if expect == "error":
        if code != 2 or len(lines) != 1 or not lines[0].startswith("yolobn: error: "):
            return f"exit {code}, {len(lines)} stderr lines"
        if written:
            return f"wrote {written}"
    elif code != 0:
        return f"exit {code}"
    elif expect == "skip" and not any("skipped" in ln for ln in lines):
        return "no skip warning"
    if peak > PEAK_BUDGET_MB:
        return f"peak {peak:.0f} MB"
    if seconds > TIME_BUDGET_S:
        return f"{seconds:.0f} s"
    return "ok"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the cases whose name or category contains this")
    ap.add_argument("--small", action="store_true", help="the sizes of the test suite, not the worst cases")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--cap-gb", type=float, default=6.0, help="address-space cap of each child (GB)")
    ap.add_argument(
        "--code",
        type=Path,
        default=ROOT,
        help="the folder holding the yolobn package to run (e.g. an older release)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.bombs import BOMBS

    rows = []
    root = Path(tempfile.mkdtemp(prefix="yolobn-bombs-"))
    try:
        d = root / "baseline"
        d.mkdir()
        base = run_child(["inspect", "--json", "out.json"], d, args.timeout, args.cap_gb, args.code)
        print(
            f"baseline (yolobn inspect, demo model): exit {base[0]}, {base[1]:.0f} MB, {base[2]:.1f} s",
            flush=True,
        )
        for bomb in BOMBS:
            if args.only and args.only not in bomb.name and args.only not in bomb.category:
                continue
            d = root / bomb.name
            d.mkdir()
            t0 = time.perf_counter()
            argv = bomb.build(d, not args.small)
            built = time.perf_counter() - t0
            size = sum(p.stat().st_blocks * 512 for p in d.iterdir() if p.is_file())
            before = set(os.listdir(d))
            code, peak, seconds, err = run_child(argv, d, args.timeout, args.cap_gb, args.code)
            written = sorted(set(os.listdir(d)) - before)
            v = verdict(bomb, code, err, peak, seconds, written)
            line = (err.strip().splitlines() or [""])[-1][:150]
            rows.append((bomb.category, bomb.name, size, code, peak, seconds, v, line))
            print(
                f"{bomb.category:<16} {bomb.name:<26} {size / 1e6:>8.2f} MB on disk  exit {code!s:>4}  "
                f"{peak:>6.0f} MB ({peak / base[1]:.2f}x)  {seconds:>5.1f} s ({seconds / base[2]:.2f}x)  "
                f"built in {built:.1f} s  {v}\n    {line}",
                flush=True,
            )
            shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print("| category | worst case | on disk | exit | peak memory | time | contract |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cat, name, size, code, peak, seconds, v, _ in rows:
        print(f"| {cat} | {name} | {size / 1e6:.2f} MB | {code} | {peak:.0f} MB | {seconds:.1f} s | {v} |")
    print(f"| baseline | yolobn inspect (demo) | | {base[0]} | {base[1]:.0f} MB | {base[2]:.1f} s | |")
    bad = [r for r in rows if r[6] != "ok"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} cases within the contract")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
