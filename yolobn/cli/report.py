"""``yolobn report``: a self-contained HTML report with plots, plus the CSV and JSON files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn report                          # the bundled demo model -> reports/demo_yolo11n_shapes/
  yolobn report best.pt -o out/          # out/report.html, layers.csv, channels.csv, summary.json
  yolobn report best.pt --open           # and open it in the default browser
  yolobn report best.pt --layers backbone --off-sigma 2
"""

FILES = ("report.html", "layers.csv", "channels.csv", "summary.json")


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "report",
        help="self-contained HTML report with plots, plus CSV/JSON",
        description="Write report.html (plots, sortable per-layer table, per-channel details; works offline "
        "from file://), layers.csv, channels.csv and summary.json into one folder.",
        epilog=EXAMPLES,
    )
    o.model_argument(p)
    o.trust_argument(p, o.TRUST_MODEL)
    o.strict_argument(p)
    o.layers_argument(p, o.LAYERS_HELP)
    o.threshold_group(p)
    p.add_argument(
        "-o", "--out", type=Path, metavar="DIR", help="output folder (default: reports/<model-stem>/)"
    )
    p.add_argument("--open", action="store_true", help="open the report in the default browser")
    o.quiet_argument(p)
    o.image_group(p, optional=True)
    o.observed_threshold_group(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out_dir = args.out if args.out is not None else Path("reports") / o.model_stem(args.model)
    th = o.thresholds(args)
    if args.images is not None:
        o.observed_thresholds(args)
    images = o.early_images(args)
    o.check_out_dir(out_dir, list(FILES), "--out", o.input_files(args.model, images=images))
    _, err = o.consoles()
    result = o.inspect_with_status(args, th, err)
    o.warn_cannot_run(err, result.loaded, args.quiet)
    if args.images is not None:
        result = o.observe_images(args, result, err, images)
    from yolobn.report.export import report_files, write_texts

    written = write_texts(report_files(result, out_dir))
    if not args.quiet:
        for p in written:
            print(f"wrote {p}")
    if args.open:
        import webbrowser

        webbrowser.open((out_dir / "report.html").resolve().as_uri())
    return o.EXIT_OK
