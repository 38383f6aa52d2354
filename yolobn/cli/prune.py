"""``yolobn prune``: remove the lowest-ranked channels and write a smaller Ultralytics checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn prune -o pruned.pt                      # the demo: the largest share within 0.005 mAP50-95
  yolobn prune best.pt --data shapes --images examples/images/ -o best-pruned.pt   # or --data your_data.yaml
  yolobn prune best.pt --images examples/images/ --share 10 --criterion gamma -o by-gamma.pt   # a share: no validation
  # then: yolobn finetune best-pruned.pt data=... epochs=30 (below)

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
    how.add_argument(
        "--share",
        type=o.number(float, 0, 99.9),
        metavar="K",
        help="remove K%% of the BatchNorm channels (default: the largest share within --tolerance)",
    )
    how.add_argument(
        "--tolerance",
        type=o.number(float),
        default=0.005,
        help="largest metric drop allowed when searching for the share (default 0.005, as frontier)",
    )
    p.add_argument(
        "--criterion",
        default="observed",
        choices=("observed", "gamma", "l1"),
        help="ranking: observed (post-activation std), gamma (|gamma|), l1 (filter L1 norm, as "
        "Torch-Pruning's magnitude importance); default observed",
    )
    p.add_argument(
        "--report", type=Path, metavar="DIR", help="the report folder (default: reports/<model-stem>/prune/)"
    )
    o.exist_ok_argument(p)
    o.image_group(p, optional=False)
    o.trust_argument(p, o.TRUST_DATA)
    o.strict_argument(p)
    o.quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from yolobn.core.errors import YolobnError
    from yolobn.core.outputs import guard_folder, guard_outputs

    out_path: Path = args.out.expanduser()
    label = f"-o {args.out}"
    # Every input, by its real path and inode (the demo's too): the output never replaces one of them.
    (target,) = guard_outputs(
        {label: out_path}, o.input_files(args.model, data=args.data), stdout=False
    ).values()
    if out_path.exists() and not target.stream and not args.force:
        raise YolobnError(f"{label}: exists; pass --force to replace it, or choose another name")
    if args.data is None and args.share is None:
        if not o.is_demo(args.model):
            raise YolobnError(
                "--data is needed to find the share within --tolerance (a dataset yaml, or 'shapes'); "
                "or give --share"
            )
        args.data = "shapes"
    if args.data is not None:
        from yolobn.io.datasets import resolve_data

        resolve_data(args.data, trust=args.trust)
    images = o.early_images(args)
    inputs = o.input_files(args.model, data=args.data, images=images)
    report = o.output_dir(args.report, Path("reports") / o.model_stem(args.model) / "prune", args.exist_ok)
    names = [*REPORT_FILES, "search.csv"]
    guard_folder(report, names, "--report", inputs)
    # the checkpoint against the images too, and never one of the report's files
    guard_outputs(
        {label: out_path, **{f"--report {report}: {n}": report / n for n in names}},
        inputs,
        probe=False,
        stdout=False,
    )
    out, err = o.consoles(args.quiet)
    with o.progress_bar(err, args.quiet) as bar:
        job = bar.add_task("loading", total=None, unit="")

        def progress(label: str, done: int, total: int) -> None:
            bar.update(job, description=label, completed=done, total=total, unit=o.unit_of(label))

        from yolobn.sweeps.pruning import prune

        r = prune(
            args.model,
            args.data,
            [str(p) for p in images] if images else None,
            share=args.share,
            tolerance=args.tolerance,
            criterion=args.criterion,
            max_images=args.max_images,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            trust=args.trust,
            strict=args.strict,
            progress=progress,
        )
    verdicts = r.verdicts(str(args.out), args.data)
    written = _write(r, out_path, report, inputs, verdicts)
    if args.quiet:
        return o.EXIT_OK
    from yolobn.report.console import verdict_table
    from yolobn.report.tables import prune_table

    out.print(verdict_table(verdicts))
    out.print(prune_table(r))
    if r.selection.count == 0:
        err.print(
            "[yellow]warning:[/] nothing could be removed within the tolerance; the checkpoint is the "
            "model as it was",
            soft_wrap=True,
        )
    before = r.meta.get("size_bytes")
    if not target.stream:
        out.print(
            f"the pruned checkpoint is {out_path.stat().st_size / 1e6:.2f} MB on disk"
            + (f" (the input: {before / 1e6:.2f} MB)" if before else "")
        )
    o.print_written(out, written)
    return o.EXIT_OK


REPORT_FILES = ("prune.html", "prune.json", "layers.csv", "residual.csv")


def _write(r: Any, out_path: Path, report: Path, inputs: dict[Path, str], verdicts: list[Any]) -> list[Path]:
    """The checkpoint and the report, all or nothing (none of them an input)."""
    import torch

    from yolobn.core.atomic import write_files
    from yolobn.core.precision import json_text
    from yolobn.io.save import checkpoint_payload
    from yolobn.report.prune_page import render_html
    from yolobn.sweeps.pruning import STALE_KEYS

    ckpt = checkpoint_payload(r.loaded, record=r.record(), drop=STALE_KEYS)
    doc = {
        "model": r.meta,
        "written": str(out_path),
        "verdicts": [v.to_dict() for v in verdicts],
        "summary": r.summary(),
        "layers": r.layers.to_dict(orient="records"),
    }
    csv = {"float_format": "%.7g", "lineterminator": "\n", "index": False}
    files: dict[Path, Any] = {
        out_path: lambda f: torch.save(ckpt, f),
        report / "prune.html": render_html(r, str(out_path), verdicts),
        report / "prune.json": json_text(doc),
        report / "layers.csv": r.layers.to_csv(**csv),
        report / "residual.csv": r.residual.to_csv(**csv),
    }
    if len(r.search):
        files[report / "search.csv"] = r.search.to_csv(**csv)
    return write_files(files, inputs)
