"""``yolobn report``: a self-contained HTML report with plots, plus the CSV and JSON files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn report                          # the bundled demo model -> reports/demo_yolo11n_shapes/ (or ...2, 3)
  yolobn report best.pt -o out/          # out/report.html, layers.csv, channels.csv, summary.json
  yolobn report best.pt --layers backbone --off-sigma 2   # --open: and open it in the default browser
  yolobn report best.pt --images examples/images/ --data shapes   # observed columns, observed-dead ablation
  yolobn report --run tests/fixtures/broken_finetune -o reports/broken   # a tracked training: a fine-tune that broke BN
"""

FILES = ("report.html", "layers.csv", "channels.csv", "summary.json")  # = report.export.REPORT_FILES


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
    p.add_argument(
        "--run",
        type=Path,
        metavar="DIR",
        dest="run_dir",
        help="instead of a checkpoint: the save_dir of a training tracked with yolobn.track(model); prints whether "
        "the saved model's running statistics fit the training images and writes training.html (drift, dead "
        "channels and gamma per epoch) into reports/<run-folder-name>/ (or -o)",
    )
    o.exist_ok_argument(p)
    o.quiet_argument(p)
    o.image_group(p, optional=True)
    p.add_argument(
        "--data",
        help="with --images: also validate with the observed-dead channels ablated (a dataset yaml, or 'shapes')",
    )
    o.observed_threshold_group(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.run_dir is not None:
        return _training(args)
    out_dir = o.output_dir(args.out, Path("reports") / o.model_stem(args.model), args.exist_ok)
    th = o.thresholds(args)
    if args.data is not None:
        from yolobn.core.errors import YolobnError
        from yolobn.io.datasets import resolve_data

        if args.images is None:
            raise YolobnError("--data: needs --images (the channels are observed dead on the images first)")
        resolve_data(args.data, trust=args.trust)  # a missing or unsafe dataset fails before any work
    if args.images is not None:
        o.observed_thresholds(args)
    images = o.early_images(args)
    from yolobn.core.outputs import guard_folder

    inputs = o.input_files(args.model, data=args.data, images=images)
    guard_folder(out_dir, FILES, "--out", inputs)
    _, err = o.consoles()
    result = o.inspect_with_status(args, th, err)
    o.warn_cannot_run(err, result.loaded, args.quiet)
    if args.images is not None:
        result = o.observe_images(args, result, err, images)
        if args.data is not None:
            from yolobn.edit.ablation import ablation_effect

            with o.status(err, args.quiet, "validating with the observed-dead channels ablated ..."):
                result.observation.ablation = ablation_effect(
                    result, args.data, imgsz=args.imgsz, device=args.device, trust=args.trust
                )
    from yolobn.report.export import write_texts
    from yolobn.report.html import report_files

    if result.observation is not None:  # the images actually read, defaults included
        inputs = {**{Path(p): "an input image" for p in result.observation.images}, **inputs}
    written = write_texts(report_files(result, out_dir), inputs)
    if not args.quiet:
        out, _ = o.consoles()
        o.print_written(out, written)
    if args.open:
        import webbrowser

        webbrowser.open((out_dir / "report.html").resolve().as_uri())
    return o.EXIT_OK


def _training(args: argparse.Namespace) -> int:
    """``--run DIR``: training.html from DIR/yolobn/epochs.csv."""
    from yolobn.core.errors import YolobnError
    from yolobn.core.outputs import guard_folder
    from yolobn.integrations.tracking import read_run
    from yolobn.report.export import write_texts
    from yolobn.report.run_page import render_html, run_grids, run_verdicts

    if args.model is not None:
        raise YolobnError("--run: give the run folder or a MODEL, not both")
    if args.images is not None:
        raise YolobnError("--run: --images observes a checkpoint; it does not apply to a training run")
    run_dir = args.run_dir.expanduser()
    name = run_dir.resolve().name or "run"
    out_dir = o.output_dir(args.out, Path("reports") / name, args.exist_ok)
    page_path = out_dir / "training.html"
    inputs = {run_dir / "yolobn" / "epochs.csv": "the training's epochs.csv"}
    guard_folder(out_dir, ["training.html"], "--out", inputs)
    epochs = read_run(run_dir)
    source = str(args.run_dir)
    written = write_texts({page_path: render_html(epochs, source)}, inputs)
    if not args.quiet:
        from yolobn.report.console import verdict_table

        out, _ = o.consoles()
        out.print(verdict_table(run_verdicts(run_grids(epochs, f"{source}/yolobn/epochs.csv"), source)))
        o.print_written(out, written)
    if args.open:
        import webbrowser

        webbrowser.open(page_path.resolve().as_uri())
    return o.EXIT_OK
