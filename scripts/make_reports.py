"""Regenerate the examples under reports/demo_yolo11n_shapes/ from the bundled demo model.

    python scripts/train_demo.py --out runs/demo.pt --run-dir runs/demo-run   # optional, ~6 min
    python scripts/make_reports.py [--run runs/demo-run]

Writes, with the yolobn CLI (so the examples are exactly what a user gets):

- ``./``             ``yolobn report``: report.html, layers.csv, channels.csv, summary.json (golden files)
- ``observed/``      ``yolobn report --images``: the same with the observed columns (golden files)
- ``experiments/eps/``  ``yolobn experiment examples/eps.yaml --trust``
- ``frontier/``      ``yolobn frontier``: the prune frontier, 3 criteria x 8 shares
- ``prune/``         ``yolobn prune``: the largest share within 0.005 removed (the checkpoint: runs/demo-pruned.pt)
- ``compare/recalibrated/``  the demo against its recalibrated copy (``yolobn recalibrate``)
- ``compare/epoch10/`` and ``training/``, with ``--run``: the run folder that
  ``scripts/train_demo.py --run-dir`` keeps (its epoch-10 snapshot, and the epochs.csv that
  ``yolobn.track`` wrote during the training)

The snapshot itself is not committed (5 MB); retraining reproduces it (training is deterministic).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "demo_yolo11n_shapes"


def yolobn(*argv: str) -> None:
    from yolobn.cli import main

    print("yolobn", " ".join(argv), flush=True)
    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"yolobn {' '.join(argv)} failed with exit code {code}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="the run folder kept by scripts/train_demo.py --run-dir")
    args = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.chdir(ROOT)  # the demo's path in the reports is package-relative
    demo = "yolobn/data/demo_yolo11n_shapes.pt"
    yolobn("report", "-o", str(OUT), "--exist-ok", "-q")
    yolobn("report", "--images", "-o", str(OUT / "observed"), "-q")
    yolobn(
        "experiment",
        "examples/eps.yaml",
        "--trust",
        "-o",
        str(OUT / "experiments" / "eps"),
        "--no-resume",
        "-q",
    )
    yolobn("frontier", "-o", str(OUT / "frontier"), "--no-resume", "-q")
    # the pruned checkpoint goes to runs/ (git-ignored); its report is committed
    yolobn(
        "prune", "-o", "runs/demo-pruned.pt", "--force", "--report", str(OUT / "prune"), "--exist-ok", "-q"
    )
    # runs/ is git-ignored: the recalibrated copy is not committed, and its path in the reports is relative
    recal = "runs/demo-recalibrated.pt"
    yolobn("recalibrate", "-o", recal, "--force", "-q")
    _compare(demo, recal, OUT / "compare" / "recalibrated")
    if args.run is not None:
        snap = args.run / "weights" / "epoch10.pt"
        if not snap.is_file():
            raise SystemExit(f"{snap}: no epoch-10 snapshot in the run folder")
        _compare(str(snap), demo, OUT / "compare" / "epoch10")
        yolobn("report", "--run", str(args.run), "-o", str(OUT / "training"), "--exist-ok", "-q")
    return 0


def _compare(a: str, b: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # the per-channel CSV (--channels-csv) is left out here: 1.5 MB per comparison for an example
    yolobn(
        "compare",
        a,
        b,
        "--html",
        str(out / "compare.html"),
        "--csv",
        str(out / "layers.csv"),
        "--json",
        str(out / "compare.json"),
        "-q",
    )


if __name__ == "__main__":
    sys.exit(main())
