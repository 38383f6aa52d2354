"""Benchmark: the size and rendering time of the pages beside report.html, on large inputs.

- compare.html of a YOLO11x (trained-looking random BN values, bench_inspect.make_yolo11x) against a
  perturbed copy (gamma x N(1, 0.05), running var x U(1, 1.1), 5 channels zeroed in every 7th layer);
- training.html of a synthetic epochs.csv with YOLO11x's 167 BN layers over 300 epochs.

Target: each page at most 3 MB (like report.html).

    python bench/bench_pages.py [--check]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inspect import make_yolo11x  # noqa: E402

LIMIT_MB = 3.0


def compare_page(path: Path) -> tuple[float, float, int]:
    import torch

    import yolobn
    from yolobn.bn.comparison import compare
    from yolobn.io.loader import LoadedModel
    from yolobn.report.compare_page import render_html

    a = yolobn.load(path)
    b = LoadedModel(copy.deepcopy(a.model), a.meta)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, bn in enumerate(m for m in b.model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.mul_(1 + 0.05 * torch.randn(bn.weight.shape, generator=g))
            bn.running_var.mul_(1 + 0.1 * torch.rand(bn.running_var.shape, generator=g))
            if i % 7 == 3:
                bn.weight[:5] = 0.0
    cmp = compare(a, b)
    t0 = time.perf_counter()
    html = render_html(cmp)
    return len(html.encode()) / 1e6, time.perf_counter() - t0, len(cmp.channels)


def training_page(layers: int = 167, epochs: int = 300) -> tuple[float, float]:
    import numpy as np
    import pandas as pd

    from yolobn.integrations.tracking import EPOCH_COLUMNS
    from yolobn.report.run_page import render_html

    rng = np.random.default_rng(0)
    e, i = np.meshgrid(np.arange(1, epochs + 1), np.arange(layers), indexing="ij")
    g = 1 - 0.8 * (e / epochs) * (i / layers) + rng.normal(0, 0.01, e.shape)
    df = pd.DataFrame({c: 0 for c in EPOCH_COLUMNS}, index=range(e.size))
    df = df.assign(
        epoch=e.ravel(),
        index=i.ravel(),
        name=[f"model.{k // 3}.m.{k % 3}.bn" for k in i.ravel()],
        layer=i.ravel() // 3,
        block="C3k2",
        role="backbone",
        channels=256,
        eps=1e-3,
        gamma_p05=(g - 0.3).ravel(),
        gamma_p50=g.ravel(),
        gamma_p95=(g + 0.3).ravel(),
        dead=np.maximum(0, e - epochs // 2).ravel() * (i.ravel() % 7 == 0),
        findings="",
    )
    t0 = time.perf_counter()
    html = render_html(df[EPOCH_COLUMNS], "runs/detect/train")
    return len(html.encode()) / 1e6, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        x = Path(d) / "yolo11x.pt"
        make_yolo11x(x)
        cmp_mb, cmp_s, n = compare_page(x)
    run_mb, run_s = training_page()
    print(
        f"compare.html, YOLO11x vs a perturbed copy ({n:,} channels): {cmp_mb:.2f} MB, rendered in {cmp_s:.2f} s"
    )
    print(f"training.html, 167 BN layers x 300 epochs: {run_mb:.2f} MB, rendered in {run_s:.2f} s")
    print(f"target: each at most {LIMIT_MB:g} MB")
    return 1 if args.check and max(cmp_mb, run_mb) > LIMIT_MB else 0


if __name__ == "__main__":
    sys.exit(main())
