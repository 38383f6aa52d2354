"""Benchmark: yolobn's observed ranking against Torch-Pruning's magnitude importance, at the same size.

1. Torch-Pruning itself (``pip install torch-pruning``; a benchmark-only dependency): its
   ``MagnitudePruner`` (L1, global, the Detect head ignored, as its YOLOv8 example sets it up but
   without that example's hand-rewritten C2f) on each model, in a child process under a memory cap
   (RLIMIT_AS) and a time limit, so that it cannot take the machine. What happened is recorded.
2. The demo: ``yolobn prune`` (observed ranking, the largest share within 0.005 mAP50-95), then the
   L1 ranking (Torch-Pruning's importance: each channel's filter L1 norm over its layer's mean) and
   |gamma| inside yolobn's own pruner, each at the share that gives the same parameter count, so
   every ranking cuts the same structure with the same folded constants. mAP50-95 before
   fine-tuning, and after the same short fine-tune (``yolobn.finetune``; the unpruned demo gets
   the same fine-tune as a control). Ratios: each ranking's mAP loss over the observed ranking's.
3. Structure: YOLOv8n and YOLO11n-pose built from Ultralytics' yamls with trained-looking
   BatchNorm statistics (no trained weights exist offline): what the pruner removes at 10%, what
   stays and why, and the border residual.

    python bench/bench_prune.py [--epochs 5] [--tp-cap-gb 6] [--tp-limit-s 300] [--json out.json]

Runs for about 15-30 minutes on 2 busy cores (most of it the fine-tunes and Torch-Pruning's limit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")


def build(name: str) -> Any:
    """The model of a benchmark row: the demo, or a yaml with trained-looking statistics."""
    import torch

    import yolobn

    if name == "demo":
        return yolobn.load()
    from ultralytics.nn import tasks

    cls = "PoseModel" if "pose" in name else "DetectionModel"
    torch.manual_seed(0)
    m = getattr(tasks, cls)(name, verbose=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):  # as tests/corpus.trained_statistics, plus gamma/beta
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
    return yolobn.load(m.eval())


# --------------------------------------------------------------------------------------------------
# 1. Torch-Pruning, capped


def tp_child(name: str, ratio: float, imgsz: int, out: str) -> None:
    """In the child: Torch-Pruning's MagnitudePruner on ``name``; prints one JSON line per stage."""
    t0 = time.time()
    import torch
    import torch_pruning as tp

    m = build(name).model.float().eval()
    for p in m.parameters():
        p.requires_grad_(True)
    before = sum(p.numel() for p in m.parameters())
    x = torch.randn(1, 3, imgsz, imgsz)
    pruner = tp.pruner.MagnitudePruner(
        m,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[m.model[-1]],
        global_pruning=True,
    )
    print(json.dumps({"stage": "graph built", "s": time.time() - t0}), flush=True)
    pruner.step()
    with torch.no_grad():
        m(x)
    torch.save(m, out)
    after = sum(p.numel() for p in m.parameters())
    print(json.dumps({"stage": "pruned", "s": time.time() - t0, "params": [before, after]}), flush=True)


def tp_attempt(name: str, ratio: float, imgsz: int, cap_gb: float, limit_s: float) -> dict[str, Any]:
    """Torch-Pruning in a child process under RLIMIT_AS and a wall-clock limit; peak RSS sampled."""
    with tempfile.NamedTemporaryFile(suffix=".pt", delete=False) as f:
        out = f.name
    cap = int(cap_gb * (1 << 30))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.time()
    p = subprocess.Popen(
        [sys.executable, __file__, "--tp-child", name, str(ratio), str(imgsz), out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    peak, killed = 0, False
    while p.poll() is None:
        try:
            rss = next(
                int(ln.split()[1])
                for ln in Path(f"/proc/{p.pid}/status").read_text().splitlines()
                if ln.startswith("VmRSS")
            )
            peak = max(peak, rss * 1024)
        except (OSError, StopIteration):
            pass
        if time.time() - t0 > limit_s:
            p.kill()
            killed = True
        time.sleep(0.5)
    stdout, stderr = p.communicate()
    stages = [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]
    res = {
        "model": name,
        "ratio": ratio,
        "seconds": round(time.time() - t0, 1),
        "peak_rss_gb": round(peak / 2**30, 2),
        "cap_gb": cap_gb,
        "returncode": p.returncode,
        "stages": stages,
    }
    if killed:
        res["outcome"] = (
            f"stopped at the {limit_s:g} s limit before finishing ({stages[-1]['stage'] if stages else 'no graph yet'})"
        )
    elif p.returncode != 0:
        last = (stderr.strip().splitlines() or ["?"])[-1]
        res["outcome"] = f"failed: {last[:200]}"
    else:
        res["outcome"] = "pruned"
        res["file"] = out
    return res


# --------------------------------------------------------------------------------------------------
# 2. the demo


def same_params(loaded: Any, ins: Any, graph: Any, criterion: str, target: int) -> tuple[Any, float]:
    """The selection of ``criterion`` whose pruned parameter count is closest to ``target`` (bisection on share)."""
    from yolobn.edit.ablation import constants
    from yolobn.edit.prune import remove, select
    from yolobn.evaluate.cost import count_params
    from yolobn.sweeps.pruning import criterion_scores

    scores = criterion_scores(ins, loaded.model, graph, criterion)
    consts = constants(ins)
    total = sum(p.channels for p in graph.producers.values())
    lo, hi, best = 0.0, 60.0, None
    for _ in range(14):
        mid = (lo + hi) / 2
        sel = select(graph, scores, int(total * mid / 100))
        n = count_params(remove(loaded.model, graph, sel.channels, consts))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (sel, n)
        lo, hi = (mid, hi) if n > target else (lo, mid)
    assert best is not None
    return best[0], float(best[1])


def demo_rows(epochs: int, tmp: Path, tune: dict[str, Any]) -> dict[str, Any]:
    import yolobn
    from yolobn.bn.inspection import inspect
    from yolobn.edit.ablation import constants
    from yolobn.edit.prune import remove
    from yolobn.edit.prune_graph import build_graph
    from yolobn.evaluate.cost import count_params, gflops, latency
    from yolobn.io.loader import LoadedModel
    from yolobn.run.observation import observe

    key = "metrics/mAP50-95(B)"
    demo = yolobn.load()
    t0 = time.time()
    r = yolobn.prune(demo, "shapes")  # observed, the largest share within 0.005
    prune_s = time.time() - t0
    ins = observe(inspect(demo))
    graph = build_graph(demo.model)
    consts = constants(ins)
    models = {"observed": r.loaded.model}
    rows: dict[str, dict[str, Any]] = {
        "observed": {"share": r.selection.share, "channels": r.selection.count}
    }
    for crit in ("l1", "gamma"):
        sel, _ = same_params(demo, ins, graph, crit, r.cost["params"][1])
        models[crit] = remove(demo.model, graph, sel.channels, consts)
        rows[crit] = {"share": sel.share, "channels": sel.count}
    base = yolobn.validate(demo, "shapes")[key]
    for name, net in models.items():
        rows[name].update(
            params=count_params(net),
            gflops=gflops(net, 160),
            map=yolobn.validate(LoadedModel(net, demo.meta), "shapes")[key],
        )
    ms160 = latency([demo.model, *models.values()], 160)
    ms640 = latency([demo.model, *models.values()], 640, repeats=7)
    for k, name in enumerate(models):
        rows[name].update(latency_ms_160=ms160[k + 1], latency_ms_640=ms640[k + 1])
    ft = {
        "epochs": epochs,
        "imgsz": 160,
        "batch": 16,
        "workers": 0,
        "plots": False,
        "warmup_epochs": 0,
        "project": str(tmp / "runs"),
        "exist_ok": True,
        "seed": 0,
        "deterministic": True,
        **tune,
    }
    for name, net in [("unpruned", demo.model), *models.items()]:
        t = time.time()
        f = yolobn.finetune(LoadedModel(net, demo.meta), "shapes", name=name, **ft)
        got = yolobn.validate(yolobn.load(f.last), "shapes")[key]  # last.pt: no selection on the val split
        rows.setdefault(name, {}).update(
            map_finetuned=got, finetune_s=time.time() - t, finetuned_params=f.params
        )
    return {
        "baseline": {
            "map": base,
            "params": count_params(demo.model),
            "gflops": gflops(demo.model, 160),
            "latency_ms_160": ms160[0],
            "latency_ms_640": ms640[0],
        },
        "prune_seconds": prune_s,
        "search": r.search.to_dict(orient="records"),
        "residual": r.residual_summary,
        "rows": rows,
        "finetune": ft,
    }


# --------------------------------------------------------------------------------------------------
# 3. structure


def structure_row(name: str) -> dict[str, Any]:
    import yolobn

    loaded = build(name)
    r = yolobn.prune(
        loaded, share=10, imgsz=320, max_images=2
    )  # observed on Ultralytics' bus.jpg, zidane.jpg
    s = r.summary()
    return {
        "model": name,
        "share": r.selection.share,
        "params": s["cost"]["params"],
        "gflops": s["cost"]["gflops"],
        "latency_ms": s["cost"]["latency_ms"],
        "border_residual": s["border_residual"],
        "not_prunable": s["not_prunable"],
        "prunable_share": 100 * r.selection.prunable / r.selection.total,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5, help="fine-tune epochs, the same for every model")
    ap.add_argument("--tp-cap-gb", type=float, default=6.0)
    ap.add_argument("--tp-limit-s", type=float, default=300.0)
    ap.add_argument(
        "--optimizer", default="AdamW", help="fine-tune optimizer (Ultralytics' 'auto' picks AdamW here)"
    )
    ap.add_argument(
        "--lr0",
        type=float,
        default=1e-4,
        help="fine-tune learning rate (default 1e-4: the demo ended its training near 1e-5; 'auto' "
        "would restart at 1.4e-3, which costs the unpruned demo 0.05 mAP50-95 in 5 epochs)",
    )
    ap.add_argument("--skip-tp", action="store_true")
    ap.add_argument("--skip-structure", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tp-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tp_child:
        name, ratio, imgsz, out = args.tp_child
        tp_child(name, float(ratio), int(imgsz), out)
        return 0
    result: dict[str, Any] = {"tp": []}
    with tempfile.TemporaryDirectory() as d:
        demo = demo_rows(args.epochs, Path(d), {"optimizer": args.optimizer, "lr0": args.lr0})
        result["demo"] = demo
        report_demo(demo)
    for name in () if args.skip_structure else ("yolov8n.yaml", "yolo11n-pose.yaml"):
        result.setdefault("structure", []).append(structure_row(name))
        print(json.dumps(result["structure"][-1], indent=1, default=str), flush=True)
    if not args.skip_tp:
        for name, imgsz in (("demo", 160), ("yolov8n.yaml", 320), ("yolo11n-pose.yaml", 320)):
            ratio = (
                1 - demo["rows"]["observed"]["params"] / demo["baseline"]["params"] if name == "demo" else 0.1
            )
            res = tp_attempt(name, round(ratio, 4), imgsz, args.tp_cap_gb, args.tp_limit_s)
            result["tp"].append(res)
            print(
                f"Torch-Pruning on {name}: {res['outcome']} after {res['seconds']} s, peak RSS {res['peak_rss_gb']} GB "
                f"(cap {res['cap_gb']} GB)",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0


def report_demo(demo: dict[str, Any]) -> None:
    """The demo's table. Losses are against the unpruned demo (0.6294): before fine-tuning, and
    after it (the unpruned demo's own fine-tune is the control row: what the protocol alone does)."""
    b = demo["baseline"]
    print(
        f"demo: baseline mAP50-95 {b['map']:.4f}, {b['params']:,} params, {b['gflops']:.3f} GFLOPs, "
        f"{b['latency_ms_160']:.1f} ms @160, {b['latency_ms_640']:.1f} ms @640 (1 thread); prune took "
        f"{demo['prune_seconds']:.0f} s; fine-tune {json.dumps(demo['finetune'])}"
    )
    rows = demo["rows"]
    obs = rows["observed"]
    loss0, loss1 = b["map"] - obs["map"], b["map"] - obs["map_finetuned"]
    print(
        f"{'ranking':10} {'share':>6} {'params':>10} {'GFLOPs':>7} {'ms@160':>7} {'ms@640':>7} {'mAP':>7} {'loss':>7} "
        f"{'x obs':>6} {'mAP ft':>7} {'loss ft':>8} {'x obs':>6}"
    )
    ctl = rows.get("unpruned", {}).get("map_finetuned", math.nan)
    print(
        f"{'unpruned':10} {'':>6} {b['params']:>10,} {b['gflops']:7.3f} {b['latency_ms_160']:7.1f} "
        f"{b['latency_ms_640']:7.1f} {b['map']:7.4f} {'':>7} {'':>6} {ctl:7.4f} {b['map'] - ctl:8.4f}"
    )
    for name, r in rows.items():
        if name == "unpruned":
            continue
        lb, lf = b["map"] - r["map"], b["map"] - r["map_finetuned"]
        print(
            f"{name:10} {r['share']:5.1f}% {r['params']:>10,} {r['gflops']:7.3f} {r['latency_ms_160']:7.1f} "
            f"{r['latency_ms_640']:7.1f} {r['map']:7.4f} {lb:7.4f} {_x(lb, loss0):>6} {r['map_finetuned']:7.4f} "
            f"{lf:8.4f} {_x(lf, loss1):>6}"
        )
    print(f"border residual: {json.dumps(demo['residual'])}", flush=True)


def _x(a: float, b: float) -> str:
    return f"{a / b:.1f}" if b > 0 and math.isfinite(a / b) else "-"


if __name__ == "__main__":
    sys.exit(main())
