"""``yolobn recalibrate``: re-estimate the BN running statistics on images, write a new checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn recalibrate -o demo-recal.pt                   # demo model on its synthetic training images
  yolobn recalibrate best.pt --images path/to/target-domain/ -o best-recal.pt
  yolobn recalibrate best.pt --images imgs/ -o best-recal.pt --data data.yaml   # and mAP before/after

Re-estimates every BN's running mean and variance on the images (cumulative average of batch
statistics, PreciseBN/AdaBN); weights are untouched. The checkpoint loads with YOLO(path) and
records the recalibration in its metadata ('yolobn inspect' shows it). The input is never overwritten.
"""


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "recalibrate",
        help="re-estimate the BN running statistics on images and write a new checkpoint",
        description="Re-estimate every BatchNorm's running mean and variance on the images (BN layers in training "
        "mode, cumulative average of batch statistics weighted by batch size, as PreciseBN/AdaBN do); weights "
        "untouched. Writes an Ultralytics checkpoint that YOLO(path) loads.",
        epilog=EXAMPLES,
    )
    o.model_argument(p, "checkpoint (.pt)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="FILE", help="the new checkpoint (.pt)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists (never the input)")
    o.layers_argument(p, "only these BN layers (glob, block type or role)")
    o.image_group(p, optional=False, batch=32)
    p.add_argument("--seed", type=o.number(int), default=0, help="image order shuffle seed (default 0)")
    p.add_argument("--data", help="also validate before and after on this dataset (yaml, or 'shapes')")
    o.trust_argument(p, o.TRUST_DATA)
    o.strict_argument(p)
    o.quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from yolobn.atomic import check_not_inputs, check_writable
    from yolobn.errors import YolobnError

    out_path: Path = args.out.expanduser()
    if args.batch < 2:
        raise YolobnError(f"--batch {args.batch}: recalibration needs batches of at least 2 images")
    # Every input, by its real path (the demo's too): the output never replaces one of them.
    check_not_inputs({f"-o {args.out}": out_path}, o.input_files(args.model, data=args.data))
    if out_path.is_dir():
        raise YolobnError(f"-o {args.out}: is a folder; give the name of the .pt file to write")
    if out_path.exists() and not args.force:
        raise YolobnError(f"-o {args.out}: exists; pass --force to replace it, or choose another name")
    check_writable(out_path, "-o")
    if args.data is not None:
        from yolobn.datasets import resolve_data

        resolve_data(args.data, trust=args.trust)
    images = o.early_images(args)
    check_not_inputs({f"-o {args.out}": out_path}, o.input_files(args.model, images=images))

    from yolobn.checkpoint import save_checkpoint
    from yolobn.checks import require_runnable
    from yolobn.device import parse_device
    from yolobn.images import model_imgsz
    from yolobn.loader import load
    from yolobn.recalibration import recalibrate

    parse_device(args.device)
    out, err = o.consoles(args.quiet)
    loaded = load(args.model, trust=args.trust, strict=args.strict)
    require_runnable(loaded)
    model_imgsz(loaded, args.imgsz)
    with o.progress_bar(err, args.quiet) as bar:
        job = bar.add_task("recalibrating", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        rec = recalibrate(
            loaded, [str(p) for p in images] if images else None, max_images=args.max_images,
            imgsz=args.imgsz, batch=args.batch, device=args.device, select=args.layers, seed=args.seed,
            progress=progress,
        )  # fmt: skip
    o.warn_skipped(err, rec.meta.recalibration["images_skipped"])
    metrics = None
    if args.data is not None:
        from yolobn.validation import KEY_METRICS, validate

        keys = KEY_METRICS.get(loaded.meta.task or "detect", KEY_METRICS["detect"])
        with err.status("validating before and after ..."):
            before = validate(loaded, args.data, imgsz=args.imgsz, device=args.device, trust=args.trust)
            after = validate(rec, args.data, imgsz=args.imgsz, device=args.device, trust=args.trust)
        nan = float("nan")
        metrics = [(k.replace("metrics/", ""), before.get(k, nan), after.get(k, nan)) for k in keys]
        rec.meta.recalibration["validation"] = {
            "data": args.data,
            **{f"{k} before": b for k, b, _ in metrics},
            **{f"{k} after": a for k, _, a in metrics},
        }
    written = save_checkpoint(
        rec, out_path, protect=list(o.input_files(args.model, data=args.data, images=images))
    )
    if args.quiet:
        return o.EXIT_OK
    r = rec.meta.recalibration
    out.print(
        f"recalibrated the running statistics of {r['layers']} BN layers on {r['images']} images "
        f"(imgsz {r['imgsz']}, batch {r['batch']}); weights unchanged"
    )
    if metrics:
        from yolobn.report.console import before_after_table

        out.print(before_after_table(metrics, f"validation on {args.data}"))
    out.print(f"wrote {written}")
    return o.EXIT_OK
