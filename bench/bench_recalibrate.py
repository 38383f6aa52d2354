"""Benchmark: exact recalibration against plain forward passes over the same images, same run.

On the bundled demo model and its 96 training images at 160 px (what `yolobn recalibrate` does
with no image argument), all in one warmed-up process:

    pass ratio   = recalibrate(batch=b) time / one plain eval forward pass over the images (batch b):
                   the cost in forward-pass equivalents (64 dependency levels + the final check)
    no cache     = the same with cache_mb=0 (each level recomputes the model up to it)
    drift        = largest per-layer mean drift `yolobn.observe` finds on the same images afterwards
    equality     = largest difference between the statistics at batch 1/8/32 (relative for the
                   variance; for the mean in running standard deviations, as means near 0 have no
                   meaningful relative error)

and, for comparison, the two estimators the module docstring rejects: whole-model passes that
update every BN at once (Jacobi, from the stored statistics: the drift before each update) and the
previous train-mode estimate (BN in train mode, cumulative average of batch statistics). With
--map, mAP50-95 on the shapes val split before and after each (the stored statistics: 0.629).

Targets (issue 9): drift < 0.01 in every layer at batch 1, 8 and 32; statistics equal to 1e-4.

    python bench/bench_recalibrate.py [--map] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch.nn.modules.batchnorm import _BatchNorm

import yolobn
from yolobn.io.images import iter_batches, model_stride, resolve_images, run_images
from yolobn.run.observation import observe
from yolobn.run.recalibration import recalibrate
from yolobn.run.recording import Moments, Scratch

KEY = "metrics/mAP50-95(B)"


def timed(f):
    t, c = time.perf_counter(), time.process_time()
    out = f()
    return out, time.perf_counter() - t, time.process_time() - c


def plain_pass(m, paths, batch: int) -> float:
    run_images(m.model, paths, imgsz=160, batch=batch, device=torch.device("cpu"), task="detect")  # warm
    return min(
        timed(
            lambda: run_images(
                m.model, paths, imgsz=160, batch=batch, device=torch.device("cpu"), task="detect"
            )
        )[1]
        for _ in range(3)
    )


def drift(m) -> tuple[float, float]:
    obs = observe(m)
    return float(obs.layers["drift"].max()), float(obs.layers["drift_max"].max())


def equality(a, b) -> tuple[float, float]:
    """Largest relative variance difference, largest mean difference in running std."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    dv = dm = 0.0
    for k, v in sa.items():
        if k.endswith("running_var"):
            dv = max(dv, float(((v.double() - sb[k].double()).abs() / v.double().clamp(min=1e-12)).max()))
        elif k.endswith("running_mean"):
            var = sa[k.replace("running_mean", "running_var")].double()
            dm = max(dm, float(((v.double() - sb[k].double()).abs() / (var + 1e-3).sqrt()).max()))
    return dv, dm


def jacobi(m, paths, passes: int) -> list[float]:
    """Whole-model eval passes, every BN set at once to what it saw: the largest layer drift before
    each update (the same drift as `observe`)."""
    root = copy.deepcopy(m.model).eval()
    bns = [(n, b) for n, b in root.named_modules() if isinstance(b, _BatchNorm)]
    batches = [x for x, _ in iter_batches(paths, 160, stride=model_stride(root), batch=32)]
    out = []
    for _ in range(passes):
        mom = {n: Moments(b.num_features) for n, b in bns}
        sc = Scratch()
        hs = [
            b.register_forward_pre_hook(lambda mod, a, n=n, mom=mom, sc=sc: mom[n].add_values(a[0], sc))
            for n, b in bns
        ]
        with torch.no_grad():
            for x in batches:
                root(x)
        for h in hs:
            h.remove()
        worst = 0.0
        for n, b in bns:
            d = b.running_var.double() + b.eps
            r = (mom[n].var + b.eps) / d
            s = (mom[n].mean - b.running_mean.double()) / d.sqrt()
            worst = max(worst, float((0.5 * (r + s * s - 1 - r.log())).mean()))
            with torch.no_grad():
                b.running_mean.copy_(mom[n].mean)
                b.running_var.copy_(mom[n].var)
        out.append(worst)
    return out


def train_mode(m, paths, batch: int):
    """The previous estimator: BN in train mode, running stats = cumulative average of the batch
    statistics (momentum b/(seen+b)), images shuffled with seed 0."""
    import random

    order = list(paths)
    random.Random(0).shuffle(order)
    out = copy.deepcopy(m)
    root = out.model.eval()
    bns = [b for b in root.modules() if isinstance(b, _BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.train()
    seen = 0
    with torch.no_grad():
        for x, names in iter_batches(order, 160, stride=model_stride(root), batch=batch):
            for bn in bns:
                bn.momentum = len(names) / (seen + len(names))
            root(x)
            seen += len(names)
    for bn in bns:
        bn.momentum = 0.1
    root.eval()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--map", action="store_true", help="also validate each result on the shapes val split")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    m = yolobn.load()
    paths = resolve_images(m, None, None)
    validate = None
    if args.map:
        from yolobn.evaluate.validation import validate

        print(f"stored statistics: mAP50-95 {validate(m, 'shapes')[KEY]:.4f}, drift {drift(m)[0]:.3g}")
    recalibrate(m, max_images=8)  # warm-up
    results = {}
    print(
        "| estimator | batch | wall s | cpu s | pass ratio | passes | cache MB | max layer drift | max channel drift |"
        + (" mAP50-95 |" if args.map else "")
    )
    for b in (32, 8, 1):
        base = plain_pass(m, paths, b)
        rec, wall, cpu = timed(lambda b=b: recalibrate(m, batch=b))
        results[b] = rec
        r = rec.meta.recalibration
        d = drift(rec)
        mp = f" {validate(rec, 'shapes')[KEY]:.4f} |" if validate else ""
        print(
            f"| exact | {b} | {wall:.2f} | {cpu:.2f} | {wall / base:.1f} (pass {base:.2f} s) | {r['passes']} "
            f"| {r['cache_mb']} | {d[0]:.2g} | {d[1]:.2g} |{mp}"
        )
    base = plain_pass(m, paths, 32)
    rec, wall, cpu = timed(lambda: recalibrate(m, batch=32, cache_mb=0))
    print(
        f"| exact, cache_mb=0 | 32 | {wall:.2f} | {cpu:.2f} | {wall / base:.1f} | {rec.meta.recalibration['passes']} "
        f"| 0 | {drift(rec)[0]:.2g} | | "
    )
    for b in (8, 32):
        old = train_mode(m, paths, b)
        d = drift(old)
        mp = f" {validate(old, 'shapes')[KEY]:.4f} |" if validate else ""
        print(f"| previous train-mode average | {b} | | | | 1 | | {d[0]:.2g} | {d[1]:.2g} |{mp}")
    print(
        "Jacobi (whole-model passes from the stored statistics), max layer drift before each update:",
        ", ".join(f"{x:.3g}" for x in jacobi(m, paths, 4)),
    )
    for b in (8, 1):
        dv, dm = equality(results[32], results[b])
        print(f"batch {b} vs 32: variance differs by {dv:.2g} relative, mean by {dm:.2g} running std")


if __name__ == "__main__":
    main()
