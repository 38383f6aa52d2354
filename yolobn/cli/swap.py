"""``yolobn swap``: swap BatchNorm implementations and re-validate (never re-fused)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o
from yolobn.core.limits import MAX_BATCH, MAX_IMGSZ, MIN_IMGSZ

EXAMPLES = """\
examples:
  yolobn swap --impl reference --impl folded --impl identity     # demo model on the bundled shapes dataset
  yolobn swap best.pt --impl reference --data shapes             # or --data your_data.yaml
  yolobn swap best.pt --impl examples/custom_bn.py:PerTensorInt8BatchNorm --trust --layers 'model.2*'
  yolobn swap best.pt --impl reference:eps=1e-5 --impl fixedpoint:bits=8 --impl lowp:dtype=bf16 --data shapes
"""


def add_parser(sub: Any) -> None:
    from yolobn.core.registry import impl_help

    p = o.command(
        sub,
        "swap",
        help="swap BatchNorm implementations and re-validate with Ultralytics' validator (never re-fused)",
        description="Replace BatchNorm layers by another implementation and measure accuracy with "
        "Ultralytics' own validator on the swapped model (fusion is prevented, so the swapped code is what runs).",
        epilog=EXAMPLES,
    )
    o.model_argument(p, "checkpoint (.pt)")
    p.add_argument(
        "--impl", action="append", required=True, metavar="SPEC", help="implementation: " + impl_help()
    )
    p.add_argument(
        "--data", help="dataset yaml, an Ultralytics dataset name, or 'shapes' (default for the demo model)"
    )
    o.layers_argument(p, "BN layers to swap (glob, block type or role)")
    p.add_argument(
        "--images",
        nargs="*",
        metavar="PATH",
        help="label-free check on images (files or folders): raw output difference and box agreement; "
        "with no PATH: Ultralytics' bus.jpg and zidane.jpg (the shapes val images for the demo model)",
    )
    p.add_argument(
        "--max-images",
        type=o.number(int, 1),
        default=64,
        metavar="N",
        help="use at most N images (default 64)",
    )
    p.add_argument(
        "--imgsz",
        type=o.number(int, MIN_IMGSZ, MAX_IMGSZ),
        help="validation image size (default: the checkpoint's training imgsz)",
    )
    p.add_argument(
        "--batch", type=o.number(int, 1, MAX_BATCH), default=16, help="validation batch size (default 16)"
    )
    p.add_argument("--device", default="cpu", help="cpu, 0, cuda:0 ... (default cpu)")
    p.add_argument(
        "-o", "--out", type=Path, metavar="DIR", help="output folder (default: reports/<model-stem>/swap/)"
    )
    p.add_argument("--no-cache", action="store_true", help="re-validate the baseline even if cached")
    o.exist_ok_argument(p)
    o.trust_argument(p, o.TRUST_DATA)
    o.fanout_group(p)
    p.add_argument(
        "--wide", action="store_true", help="every metric, the output difference and ms/img in the table"
    )
    o.strict_argument(p)
    o.quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from yolobn.core.errors import YolobnError
    from yolobn.report.export import write_texts

    out, err = o.consoles(args.quiet)
    execution = o.execution(args, err)  # a missing Ray fails here, before any work
    if args.data is None and args.images is None:
        if not o.is_demo(args.model):
            raise YolobnError(
                "--data or --images is required for a model other than the demo (a dataset yaml, 'shapes', "
                "or --images for a label-free check)"
            )
        args.data = "shapes"
    variants = _variants(args)
    if args.data is not None:
        from yolobn.io.datasets import resolve_data

        resolve_data(args.data, trust=args.trust)  # a missing or unsafe dataset fails here, before any work
    images = _images(args)
    out_dir = o.output_dir(args.out, Path("reports") / o.model_stem(args.model) / "swap", args.exist_ok)
    from yolobn.core.outputs import guard_folder

    inputs = o.input_files(args.model, data=args.data, images=images)
    guard_folder(out_dir, ["swap.csv", "swap.json", "swap.html"], "--out", inputs)

    from yolobn.io.checks import require_runnable
    from yolobn.io.images import model_imgsz
    from yolobn.io.loader import load
    from yolobn.run.device import parse_device
    from yolobn.sweeps.variants import Settings, run_variants

    # checked before any work (Ultralytics gets the canonical name); with --ray the validations run on
    # the cluster's machines, not this one
    device = parse_device(args.device) if args.ray is None else args.device
    loaded = load(args.model, trust=args.trust, strict=args.strict)
    require_runnable(loaded)
    settings = Settings(
        data=args.data,
        images=images,
        imgsz=model_imgsz(loaded, args.imgsz),
        batch=args.batch,
        device=str(device),
        trust=args.trust,
        cache=not args.no_cache,
    )
    with o.progress_bar(err, args.quiet) as bar:
        job = bar.add_task("validating", total=len(variants) + 1, unit="validations")

        def progress(label: str, done: int, total: int) -> None:
            bar.update(job, description=label, completed=done, total=total)

        res = run_variants(loaded, variants, settings, progress=progress, execution=execution)
    o.warn_failed(res.failed, len(variants))
    table = res.table
    verdicts = res.verdicts(args.model)
    written = write_texts(_files(args, res, loaded, images, out_dir, verdicts), inputs)
    if args.quiet:
        return o.EXIT_OK
    from yolobn.report.console import verdict_table
    from yolobn.report.tables import variants_table

    out.print(verdict_table(verdicts))
    where = args.data if args.data else f"{len(images or [])} images (label-free)"
    title = f"swap-and-validate · {loaded.meta.path or loaded.meta.source} on {where} @ {settings.imgsz}"
    out.print(
        variants_table(table, res.metrics, title, images=images is not None, width=out.width, wide=args.wide)
    )
    o.print_written(out, written)
    return o.EXIT_OK


def _images(args: argparse.Namespace) -> list[Path] | None:
    """--images: the files given, the shapes val images for the demo model, or None (validate only)."""
    if args.images is None:
        return None
    from yolobn.io.images import collect_images

    if not args.images and o.is_demo(args.model):  # the demo model sees shapes, not buses
        from yolobn.data.synth import shapes_dataset

        return collect_images([str(shapes_dataset().parent / "images" / "val")], args.max_images)
    return collect_images(args.images, args.max_images)


def _variants(args: argparse.Namespace) -> list[Any]:
    """Every --impl spec parsed (checked before any work), each variant once."""
    from yolobn.core.errors import YolobnError
    from yolobn.sweeps.variants import Variant

    variants = [Variant.of(s, args.layers) for s in args.impl]
    labels = [v.label for v in variants]
    if len(set(labels)) < len(labels):
        dup = next(x for x in labels if labels.count(x) > 1)
        raise YolobnError(f"--impl {dup}: given twice; each variant once")
    return variants


def _files(
    args: argparse.Namespace,
    res: Any,
    loaded: Any,
    images: list[Path] | None,
    out_dir: Path,
    verdicts: list[Any],
) -> dict[Path, Any]:
    """swap.csv, swap.json and swap.html; swap.json says whether anything was validated."""
    import json

    from yolobn.report.export import csv_text
    from yolobn.report.variants_page import render_html

    note = (
        "validated with Ultralytics' validator, model.fuse() disabled on the validated copy"
        if args.data
        else "label-free: nothing was validated; the outputs of the swapped and the original model were compared"
    )
    doc = {
        "model": loaded.meta.to_dict(),
        "data": args.data,
        "images": [str(p) for p in images] if images is not None else None,
        "imgsz": res.settings.imgsz,
        "layers": args.layers or [],
        "note": note,
        "verdicts": [v.to_dict() for v in verdicts],
        "results": json.loads(res.table.to_json(orient="records")),
    }
    return {
        out_dir / "swap.csv": csv_text(res.table, "%.6g"),
        out_dir / "swap.json": json.dumps(doc, indent=2) + "\n",
        out_dir / "swap.html": render_html(
            res, doc["model"], layers=args.layers, note=note, verdicts=verdicts
        ),
    }
