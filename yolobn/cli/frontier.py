"""``yolobn frontier``: how much of a model can be ablated before accuracy drops, by criterion."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o
from yolobn.core.limits import MAX_SEEDS

EXAMPLES = """\
examples:
  yolobn frontier                                   # the demo model on the bundled shapes dataset
  yolobn frontier best.pt --data shapes --images examples/images/ --max-images 500 --shares 0,5 --criteria observed
  yolobn frontier best.pt --data shapes --shares 0,5,10,20 --criteria observed,gamma
  yolobn frontier best.pt --data shapes --shares 0,5 --criteria observed --ray   # each point a Ray task

criteria: observed = post-activation std on the images (the error ablation adds), gamma = |gamma|
(network slimming, Torch-Pruning), random = a control averaged over --seeds rankings. Every
criterion replaces the chosen channels by their observed mean after the activation.
"""


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "frontier",
        help="ablate the lowest k%% of channels by each criterion and validate: the prune frontier",
        description="Rank every channel by a criterion, replace the lowest k% by their observed mean after the "
        "activation, validate each point with Ultralytics' validator (never fused), and report the largest "
        "share removable within a tolerance, per criterion and per role.",
        epilog=EXAMPLES,
    )
    o.model_argument(p, "checkpoint (.pt)")
    p.add_argument("--data", help="dataset yaml, or 'shapes' (default for the demo model)")
    p.add_argument(
        "--shares",
        type=_floats,
        default=None,
        metavar="K,K,...",
        help="percentages (default 0,1,2,5,10,20,30,50)",
    )
    p.add_argument(
        "--criteria", default="observed,gamma,random", help="observed, gamma, random (default all three)"
    )
    p.add_argument(
        "--seeds", type=o.number(int, 1, MAX_SEEDS), default=3, help="random rankings averaged (default 3)"
    )
    p.add_argument(
        "--tolerance", type=o.number(float), default=0.005, help="metric drop still removable (default 0.005)"
    )
    p.add_argument(
        "--no-roles", action="store_true", help="skip the per-role frontiers of the observed criterion"
    )
    o.image_group(p, optional=False)
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: reports/<model-stem>/frontier/)",
    )
    o.exist_ok_argument(p)
    o.trust_argument(p, o.TRUST_DATA)
    o.strict_argument(p)
    o.fanout_group(p)
    o.quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from yolobn.core.errors import YolobnError
    from yolobn.core.outputs import guard_folder
    from yolobn.report.export import write_texts
    from yolobn.sweeps.frontier import CRITERIA, SHARES, frontier

    out, err = o.consoles(args.quiet)
    execution = o.execution(args, err)  # a missing Ray fails here, before any work
    if args.data is None:
        if not o.is_demo(args.model):
            raise YolobnError(
                "--data is required for a model other than the demo (a dataset yaml, or 'shapes')"
            )
        args.data = "shapes"
    criteria = [c.strip() for c in args.criteria.split(",") if c.strip()]
    bad = [c for c in criteria if c not in CRITERIA]
    if bad or not criteria:
        raise YolobnError(f"--criteria {args.criteria}: use some of {', '.join(CRITERIA)}")
    shares = args.shares if args.shares is not None else list(SHARES)
    if not shares or any(not 0 <= s < 100 for s in shares):
        raise YolobnError(f"--shares {args.shares}: percentages from 0 to below 100")
    from yolobn.io.datasets import resolve_data

    resolve_data(args.data, trust=args.trust)
    images = o.early_images(args)
    out_dir = o.output_dir(args.out, Path("reports") / o.model_stem(args.model) / "frontier", args.exist_ok)
    names = ("frontier.csv", "points.csv", "frontier.json", "frontier.html")
    inputs = o.input_files(args.model, data=args.data, images=images)
    guard_folder(out_dir, names, "--out", inputs)
    with o.progress_bar(err, args.quiet) as bar:
        job = bar.add_task("loading the model", total=None, unit="")

        def progress(label: str, done: int, total: int) -> None:
            bar.update(job, description=label, completed=done, total=total, unit=o.unit_of(label))

        fr = frontier(
            args.model,
            args.data,
            [str(p) for p in images] if images else None,
            shares=shares,
            criteria=criteria,
            seeds=args.seeds,
            roles=not args.no_roles,
            tolerance=args.tolerance,
            max_images=args.max_images,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            trust=args.trust,
            strict=args.strict,
            progress=progress,
            execution=execution,
        )
    o.warn_failed(fr.failed, int((fr.points["share"] > 0).sum()))
    verdicts = fr.verdicts(o.given_paths(args, fr.meta.get("kind") == "demo"))
    written = write_texts(_files(fr, verdicts, out_dir), inputs)
    if args.quiet:
        return o.EXIT_OK
    from yolobn.report.console import verdict_table
    from yolobn.report.tables import frontier_table

    out.print(verdict_table(verdicts))
    out.print(frontier_table(fr, width=out.width))
    o.print_written(out, written)
    return o.EXIT_OK


def _files(fr: Any, verdicts: list[Any], out_dir: Path) -> dict[Path, str]:
    """frontier.csv (the curve), points.csv, frontier.json and frontier.html."""
    from yolobn.core.precision import json_text
    from yolobn.report.export import csv_text
    from yolobn.report.frontier_page import render_html

    doc = {
        "model": fr.meta,
        "settings": fr.settings,
        "verdicts": [v.to_dict() for v in verdicts],
        "summary": fr.summary(),
        "curve": fr.curve.to_dict(orient="records"),
        "layers": fr.layers.to_dict(orient="records"),
    }
    return {
        out_dir / "frontier.csv": csv_text(fr.curve),
        out_dir / "points.csv": csv_text(fr.points),
        out_dir / "frontier.json": json_text(doc),
        out_dir / "frontier.html": render_html(fr, verdicts),
    }
