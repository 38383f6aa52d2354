"""``yolobn recalibrate``: re-estimate the BN running statistics on images, write a new checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o

CACHE_MB = 2048  # yolobn.run.recalibration.CACHE_MB (not imported: --help must not import torch)
DRIFT_LEFT = 1e-4  # largest layer drift after recalibration that is not worth a warning

EXAMPLES = """\
examples:
  yolobn recalibrate -o demo-recal.pt                   # demo model on its synthetic training images
  yolobn recalibrate best.pt --images examples/images/ -o best-recal.pt   # your target domain's images
  yolobn recalibrate best.pt --images examples/images/ -o best-recal2.pt --data shapes   # and mAP before/after

Every BN's running mean and variance become the mean and population variance of its input over
all the images, as the recalibrated model sees them in eval mode (inference): 'yolobn activations'
on the same images then shows no drift. The result does not depend on --batch (memory and speed
only) or on the image order. The BNs are set in dependency order, one pass over the images per
level of depth (64 for YOLO11n); most passes are short, since finished layers are replayed from
memory (--cache-mb; YOLO11n needs about 1.5 MB per 160-px image, 15 MB per 640-px photo; beyond
that, passes get longer). Weights, eps and momentum are untouched. It fits the statistics to these
images, not to the weights: on the images the model was trained on it usually costs a little
accuracy (--data measures it, and warns). The checkpoint loads with YOLO(path) and records what ran
in its metadata ('yolobn inspect' shows it). The input is never overwritten.
"""


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "recalibrate",
        help="re-estimate the BN running statistics on images and write a new checkpoint",
        description="Set every BatchNorm's running mean and variance to the exact statistics of its input over "
        "the images, as the recalibrated model sees them in eval mode (layer by layer in dependency order; "
        "independent of --batch and image order); weights untouched. Writes an Ultralytics checkpoint that "
        "YOLO(path) loads.",
        epilog=EXAMPLES,
    )
    o.model_argument(p, "checkpoint (.pt)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="FILE", help="the new checkpoint (.pt)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists (never the input)")
    o.layers_argument(p, "only these BN layers (glob, block type or role)")
    o.image_group(p, optional=False, batch=32)
    p.add_argument(
        "--cache-mb",
        type=o.number(float),
        default=CACHE_MB,
        metavar="MB",
        help=f"memory (on --device) for decoded images and finished layer outputs kept between passes "
        f"(default {CACHE_MB}; 0: none, much slower; the result is the same)",
    )
    p.add_argument("--data", help="also validate before and after on this dataset (yaml, or 'shapes')")
    o.trust_argument(p, o.TRUST_DATA)
    o.strict_argument(p)
    o.quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from yolobn.core.errors import YolobnError
    from yolobn.core.outputs import guard_outputs

    out_path: Path = args.out.expanduser()
    label = f"-o {args.out}"
    # Every input, by its real path and inode (the demo's too): the output never replaces one of them.
    (target,) = guard_outputs(
        {label: out_path}, o.input_files(args.model, data=args.data), stdout=False
    ).values()
    if out_path.exists() and not target.stream and not args.force:
        raise YolobnError(f"{label}: exists; pass --force to replace it, or choose another name")
    if args.data is not None:
        from yolobn.io.datasets import resolve_data

        resolve_data(args.data, trust=args.trust)
    images = o.early_images(args)
    inputs = o.input_files(args.model, data=args.data, images=images)
    guard_outputs({label: out_path}, inputs, probe=False, stdout=False)

    from yolobn.io.checks import require_runnable
    from yolobn.io.images import model_imgsz
    from yolobn.io.loader import load
    from yolobn.io.save import save_checkpoint
    from yolobn.report.fit import markup_safe
    from yolobn.run.device import parse_device
    from yolobn.run.recalibration import recalibrate

    parse_device(args.device)
    out, err = o.consoles(args.quiet)
    loaded = load(args.model, trust=args.trust, strict=args.strict)
    require_runnable(loaded)
    model_imgsz(loaded, args.imgsz)
    with o.progress_bar(err, args.quiet) as bar:
        job = bar.add_task("recalibrating", total=None, unit="image passes")

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        rec = recalibrate(
            loaded,
            [str(p) for p in images] if images else None,
            max_images=args.max_images,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            select=args.layers,
            cache_mb=args.cache_mb,
            progress=progress,
        )
    info: dict[str, Any] = rec.meta.recalibration or {}
    o.warn_skipped(err, info["images_skipped"])
    left = info["drift_after"]
    if left["max_layer_mean"] > DRIFT_LEFT:  # exact would leave ~1e-13: something in the model is not handled
        err.print(
            f"[yellow]warning:[/] after recalibration {markup_safe(left['worst_layer'])} still drifts by "
            f"{left['max_layer_mean']:.2g} on these images (expected about 0); this model's forward pass "
            "is not fully handled, check with 'yolobn activations'",
            soft_wrap=True,
        )
    metrics = _validate(args, loaded, rec, err) if args.data is not None else None
    used = [Path(p) for p in info.get("image_files") or [] if p != "..."]
    written = save_checkpoint(rec, out_path, protect=[*inputs, *used])
    if args.quiet:
        return o.EXIT_OK
    from yolobn.report.console import verdict_table
    from yolobn.run.recalibration import recalibration_verdicts

    given = o.given_paths(args, loaded.meta.kind == "demo")
    out.print(verdict_table(recalibration_verdicts(info, given, str(args.out))))
    r = info
    out.print(
        f"recalibrated the running statistics of {r['layers']} BN layers on {r['images']} images "
        f"(imgsz {r['imgsz']}, batch {r['batch']}; exact, {r['passes']} passes, drift left "
        f"{r['drift_after']['max_layer_mean']:.1g}); weights unchanged"
    )
    if metrics:
        from yolobn.report.tables import before_after_table

        out.print(before_after_table(metrics, f"validation on {args.data}"))
    o.print_written(out, [written])
    return o.EXIT_OK


def _validate(args: argparse.Namespace, loaded: Any, rec: Any, err: Any) -> list[tuple[str, float, float]]:
    """Metrics before and after (recorded in the metadata); one warning line when the headline fell."""
    from yolobn.evaluate.validation import KEY_METRICS, validate

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
    head, b, a = metrics[0]
    if a < b:
        name = head.replace("(B)", "")
        err.print(
            f"[yellow]warning:[/] recalibration lowered {name} by {b - a:.3f}: the stored statistics fit this "
            "model better than these images do; keep the original unless the data has changed",
            soft_wrap=True,
        )
    return metrics
