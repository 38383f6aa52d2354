"""``yolobn prune``: remove the lowest-ranked channels and write a smaller Ultralytics checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn prune -o pruned.pt                      # the demo: the largest share within 0.005 mAP50-95
  yolobn prune best.pt --data data.yaml --images val/images/ -o best-pruned.pt
  yolobn prune best.pt --images val/images/ --share 10 -o best-p10.pt   # a share, no validation needed
  yolobn prune best.pt --data data.yaml --images imgs/ --criterion gamma -o by-gamma.pt   # to compare
  yolobn finetune best-pruned.pt data=data.yaml epochs=30               # then train it at its new widths

Channels are ranked as 'yolobn frontier' ranks them (observed: the post-activation std on the
images) and removed physically: each removed channel's observed mean after its activation is
folded into what reads it, so the pruned model computes what the ablated one does except at
border pixels (measured: the border residual). Channels tied by a residual add go together,
C2f/C3k2 halves lose as many channels each, attention widths and head outputs stay. The result
uses only Ultralytics' classes: YOLO(path) loads, validates and exports it without yolobn. Train
it with 'yolobn finetune' (YOLO(path).train() would rebuild the model from its yaml, at the old
widths). The input is never overwritten.
"""


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "prune",
        help="remove the lowest-ranked channels physically and write a smaller Ultralytics checkpoint",
        description="Rank every channel (observed on images, as in 'yolobn frontier'), remove the lowest ones "
        "physically with their constant folded into what reads them, and write a smaller checkpoint of "
        "Ultralytics' own classes; report parameters, FLOPs, latency and the metric before and after.",
        epilog=EXAMPLES,
    )
    o.model_argument(p, "checkpoint (.pt)")
    p.add_argument(
        "-o", "--out", type=Path, required=True, metavar="FILE", help="the pruned checkpoint (.pt)"
    )
    p.add_argument("--force", action="store_true", help="replace FILE if it exists (never the input)")
    p.add_argument(
        "--data", help="dataset yaml, or 'shapes' (default for the demo model); needed without --share"
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument("--share", type=o.number(float, 0, 99.9), metavar="K",
                     help="remove K%% of the BatchNorm channels (default: the largest share within --tolerance)")  # fmt: skip
    how.add_argument("--tolerance", type=o.number(float), default=0.005,
                     help="largest metric drop allowed when searching for the share (default 0.005, as frontier)")  # fmt: skip
    p.add_argument("--criterion", default="observed", choices=("observed", "gamma", "l1"),
                   help="ranking: observed (post-activation std), gamma (|gamma|), l1 (filter L1 norm, as "
                   "Torch-Pruning's magnitude importance); default observed")  # fmt: skip
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="the report folder (default: reports/<model-stem>/prune/)")  # fmt: skip
    o.exist_ok_argument(p)
    o.image_group(p, optional=False)
    o.trust_argument(p, o.TRUST_DATA)
    o.strict_argument(p)
    o.quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from yolobn.core.atomic import check_not_inputs, check_writable
    from yolobn.core.errors import YolobnError

    out_path: Path = args.out.expanduser()
    check_not_inputs({f"-o {args.out}": out_path}, o.input_files(args.model, data=args.data))
    if out_path.is_dir():
        raise YolobnError(f"-o {args.out}: is a folder; give the name of the .pt file to write")
    if out_path.exists() and not args.force:
        raise YolobnError(f"-o {args.out}: exists; pass --force to replace it, or choose another name")
    check_writable(out_path, "-o")
    if args.data is None and args.share is None:
        if args.model is not None:
            raise YolobnError("--data is needed to find the share within --tolerance (a dataset yaml, or 'shapes'); "
                              "or give --share")  # fmt: skip
        args.data = "shapes"
    if args.data is not None:
        from yolobn.io.datasets import resolve_data

        resolve_data(args.data, trust=args.trust)
    images = o.early_images(args)
    inputs = o.input_files(args.model, data=args.data, images=images)
    check_not_inputs({f"-o {args.out}": out_path}, inputs)
    report = o.output_dir(args.report, Path("reports") / o.model_stem(args.model) / "prune", args.exist_ok)
    names = ["prune.html", "prune.json", "layers.csv", "residual.csv", "search.csv"]
    o.check_out_dir(report, names, "--report", inputs)
    if out_path.resolve() in {(report / n).resolve() for n in names}:
        raise YolobnError(f"-o {args.out}: is one of the report's files; choose another name")
    out, err = o.consoles(args.quiet)
    with o.progress_bar(err, args.quiet) as bar:
        job = bar.add_task("loading", total=None)

        def progress(label: str, done: int, total: int) -> None:
            bar.update(job, description=label, completed=done, total=total)

        from yolobn.sweeps.pruning import prune

        r = prune(
            args.model, args.data, [str(p) for p in images] if images else None, share=args.share,
            tolerance=args.tolerance, criterion=args.criterion, max_images=args.max_images, imgsz=args.imgsz,
            batch=args.batch, device=args.device, trust=args.trust, strict=args.strict, progress=progress,
        )  # fmt: skip
    written = _write(args, r, out_path, report)
    if args.quiet:
        return o.EXIT_OK
    from yolobn.report.tables import prune_table

    out.print(prune_table(r))
    if r.selection.count == 0:
        err.print("[yellow]warning:[/] nothing could be removed within the tolerance; the checkpoint is the "
                  "model as it was", soft_wrap=True)  # fmt: skip
    before = r.meta.get("size_bytes")
    out.print(f"the pruned checkpoint is {out_path.stat().st_size / 1e6:.2f} MB on disk"
              + (f" (the input: {before / 1e6:.2f} MB)" if before else ""))  # fmt: skip
    o.print_written(out, written)
    return o.EXIT_OK


def _write(args: argparse.Namespace, r: Any, out_path: Path, report: Path) -> list[Path]:
    """The checkpoint and the report, all or nothing."""
    import json

    import torch

    from yolobn.core.atomic import write_files
    from yolobn.io.save import checkpoint_payload
    from yolobn.report.export import json_safe
    from yolobn.report.prune_page import render_html

    s = r.summary()
    record = {"prune": json_safe({**s, "channels": r.selection.channels})}
    # the training results stored in the input describe the unpruned model
    ckpt = checkpoint_payload(
        r.loaded, record=record, drop=("train_metrics", "train_results", "best_fitness")
    )
    doc = {
        "model": r.meta,
        "written": str(out_path),
        "summary": s,
        "layers": r.layers.to_dict(orient="records"),
    }
    csv = {"float_format": "%.7g", "lineterminator": "\n", "index": False}
    files: dict[Path, Any] = {
        out_path: lambda tmp: torch.save(ckpt, tmp),
        report / "prune.html": render_html(r, str(out_path)),
        report / "prune.json": json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n",
        report / "layers.csv": r.layers.to_csv(**csv),
        report / "residual.csv": r.residual.to_csv(**csv),
    }
    if len(r.search):
        files[report / "search.csv"] = r.search.to_csv(**csv)
    return write_files(files)
