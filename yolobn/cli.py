"""The ``yolobn`` command: the only module that prints.

Heavy imports (torch, ultralytics, pandas) happen inside the command functions, so that
``yolobn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from yolobn import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2

INSPECT_EXAMPLES = """\
examples:
  yolobn inspect                              # the bundled demo model (YOLO11n trained on synthetic shapes)
  yolobn inspect yolo11n.pt                   # any Ultralytics checkpoint on disk
  yolobn inspect yolo11x.yaml                 # an untrained model built from an Ultralytics yaml
  yolobn inspect best.pt --sort dead --top 15 # the 15 layers with the most dead channels
  yolobn inspect best.pt --layers 'model.2*' --layers backbone
  yolobn inspect best.pt --csv layers.csv --channels-csv channels.csv --json summary.json --quiet

dead-channel criteria (data-free; see README):
  constant       estimated BN output std |gamma|*sqrt(var/(var+eps)) < --const-std
  off            beta + --off-sigma * std < 0 before SiLU/ReLU: activation pinned at its floor
  eps-dominated  running_var < --eps-factor * eps (a finding, not dead)

exit codes: 0 success, 1 internal error, 2 bad input or usage
"""


REPORT_EXAMPLES = """\
examples:
  yolobn report                          # the bundled demo model -> reports/demo_yolo11n_shapes/
  yolobn report best.pt -o out/          # out/report.html, layers.csv, channels.csv, summary.json
  yolobn report best.pt --open           # and open it in the default browser
  yolobn report best.pt --layers backbone --off-sigma 2

exit codes: 0 success, 1 internal error, 2 bad input or usage
"""


SWAP_EXAMPLES = """\
examples:
  yolobn swap --impl reference --impl folded --impl identity     # demo model on the bundled shapes dataset
  yolobn swap best.pt --impl reference --data my_data.yaml
  yolobn swap best.pt --impl mypkg.norms:MyBatchNorm --data coco8.yaml --layers 'model.2*'
  yolobn swap best.pt --impl reference:eps=1e-5 --impl fixedpoint:bits=8 --impl lowp:dtype=bf16 --data data.yaml

exit codes: 0 success, 1 internal error, 2 bad input or usage
"""


EXPERIMENT_EXAMPLES = """\
examples:
  yolobn experiment examples/eps.yaml        # the demo model: reference, folded, identity, eps, fixed point, ...

file format:
  model: best.pt | null        data: shapes | data.yaml      imgsz: 160 (optional)
  variants: [{impl: reference}, {impl: reference:eps=1e-5, layers: [backbone], name: eps-bb}]
  sensitivity: {impl: reference:eps=1e-5, layers: ['model.2*'], top: 10}   (optional)
"""


ACTIVATIONS_EXAMPLES = """\
examples:
  yolobn activations                                    # demo model on the synthetic training images
  yolobn activations best.pt --images path/to/images/ --max-images 500
  yolobn activations best.pt --images a.jpg b.jpg --sort drift --top 15
  yolobn activations best.pt --images val/ --csv layers.csv --channels-csv channels.csv --json obs.json
  yolobn inspect best.pt --images path/to/images/       # data-free and observed side by side

what it reports (README, "Activations"):
  obs dead   post-activation std < --dead-std over all images and positions (flat), or, before
             SiLU/ReLU..., a share of positive pre-activations <= --min-positive (never positive)
  both / pred only / obs only: data-free prediction vs observation, per layer and overall
  drift      BN input on the images vs running_mean/var: |mean shift| in running std, |ln var ratio|,
             and their Gaussian KL (0: the stored statistics fit the images)

exit codes: 0 success, 1 internal error, 2 bad input or usage
"""


RECALIBRATE_EXAMPLES = """\
examples:
  yolobn recalibrate -o demo-recal.pt                   # demo model on its synthetic training images
  yolobn recalibrate best.pt --images path/to/target-domain/ -o best-recal.pt
  yolobn recalibrate best.pt --images imgs/ -o best-recal.pt --data data.yaml   # and mAP before/after

Re-estimates every BN's running mean and variance on the images (cumulative average of batch
statistics, PreciseBN/AdaBN); weights are untouched. The checkpoint loads with YOLO(path) and
records the recalibration in its metadata ('yolobn inspect' shows it). The input is never overwritten.

exit codes: 0 success, 1 internal error, 2 bad input or usage
"""


THRESHOLD_OPTIONS = [
    ("--const-std", 1e-3, "X", "constant below this output std (default 1e-3)"),
    ("--off-sigma", 3.0, "K", "off when beta + K*std < 0 (default 3)"),
    ("--eps-factor", 0.1, "F", "eps-dominated when var < F*eps (default 0.1)"),
    ("--eps-share", 0.5, "S", "layer finding at this eps-dominated share (default 0.5)"),
    ("--extreme-scale", 100.0, "X", "layer finding when |scale| exceeds this (default 100)"),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(kind: type):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not v >= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p = _Parser(
        prog="yolobn",
        description="See what the BatchNorm layers of an Ultralytics YOLO checkpoint are doing.",
        epilog="run 'yolobn inspect --help' for the inspection options and examples",
        parents=[debug],
    )
    p.add_argument("--version", action="version", version=f"yolobn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "model",
        nargs="?",
        default=None,
        help="checkpoint (.pt) or model yaml; default: the bundled demo model",
    )
    common.add_argument(
        "--trust",
        action="store_true",
        help="trust the input files: full unpickle of a .pt, Python in a model yaml (runs code: trusted files only)",
    )
    common.add_argument(
        "--layers",
        action="append",
        metavar="PATTERN",
        help="keep BN layers whose name matches this glob ('model.2*'), or whose block type or role "
        "is this (C3k2, backbone); repeatable",
    )
    t = common.add_argument_group("dead-channel thresholds")
    for flag, default, meta, text in THRESHOLD_OPTIONS:
        t.add_argument(flag, type=_positive(float), default=default, metavar=meta, help=text)

    def table_options(parser: argparse.ArgumentParser, sort_keys: list[str], layers_what: str) -> None:
        g = parser.add_argument_group("display")
        g.add_argument(
            "--sort", default="index", choices=sort_keys, help="table order (default: model order)"
        )
        g.add_argument("--top", type=int, metavar="N", help="show only the first N rows of the table")
        g.add_argument(
            "-q", "--quiet", action="store_true", help="print nothing on success (files are still written)"
        )
        o = parser.add_argument_group("output files")
        o.add_argument("--csv", type=Path, metavar="FILE", help=f"{layers_what} as CSV")
        o.add_argument("--channels-csv", type=Path, metavar="FILE", help="per-channel statistics as CSV")
        o.add_argument(
            "--json", type=Path, metavar="FILE", help="metadata, summary and per-layer rows as JSON"
        )

    def image_options(parser: argparse.ArgumentParser, optional: bool, batch: int = 16) -> None:
        g = parser.add_argument_group("images")
        g.add_argument(
            "--images",
            nargs="*",
            metavar="PATH",
            help=(
                "also observe activations on these images (files or folders); "
                if optional
                else "images (files or folders); "
            )
            + "with no PATH: the synthetic training images for the demo model, Ultralytics' bus.jpg and zidane.jpg "
            "otherwise. Put MODEL before --images",
        )
        g.add_argument("--max-images", type=int, metavar="N", help="use at most N images (the first, sorted)")
        g.add_argument(
            "--imgsz", type=int, help="inference size (default: the checkpoint's training imgsz, else 640)"
        )
        g.add_argument("--batch", type=int, default=batch, help=f"images per forward pass (default {batch})")
        g.add_argument("--device", default="cpu", help="cpu, 0, cuda:0 (default cpu)")

    def observed_thresholds(parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("observed dead-channel thresholds")
        g.add_argument("--dead-std", type=_positive(float), default=1e-3, metavar="X",
                       help="flat when the post-activation std is below X (default 1e-3)")  # fmt: skip
        g.add_argument("--min-positive", type=_positive(float), default=0.0, metavar="S",
                       help="never positive when at most this share of pre-activations is > 0 (default 0)")  # fmt: skip

    ins = sub.add_parser(
        "inspect",
        parents=[debug, common],
        help="BatchNorm statistics and data-free dead channels of a model",
        description="Load a YOLO checkpoint safely, find every BatchNorm and report its statistics, "
        "dead channels and health findings.",
        epilog=INSPECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    table_options(
        ins,
        ["index", "name", "dead", "dead_share", "eps", "eps_share", "channels", "scale", "gamma", "var"],
        "per-layer statistics",
    )
    image_options(ins, optional=True)
    observed_thresholds(ins)
    ins.set_defaults(func=cmd_inspect)

    rep = sub.add_parser(
        "report",
        parents=[debug, common],
        help="self-contained HTML report with plots, plus CSV/JSON",
        description="Write report.html (plots, sortable per-layer table, per-channel details; works offline "
        "from file://), layers.csv, channels.csv and summary.json into one folder.",
        epilog=REPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument(
        "-o", "--out", type=Path, metavar="DIR", help="output folder (default: reports/<model-stem>/)"
    )
    rep.add_argument("--open", action="store_true", help="open the report in the default browser")
    rep.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    image_options(rep, optional=True)
    observed_thresholds(rep)
    rep.set_defaults(func=cmd_report)

    act = sub.add_parser(
        "activations",
        parents=[debug, common],
        help="observe the BN layers on real images: observed dead channels, predicted vs observed, BN drift",
        description="Run images through the model (preprocessed as Ultralytics' predict does), with hooks on "
        "every BatchNorm and its block, and report per channel what it does on the data: observed dead channels "
        "against the data-free prediction, and how far the stored running statistics are from the data (drift).",
        epilog=ACTIVATIONS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    image_options(act, optional=False)
    observed_thresholds(act)
    table_options(
        act,
        ["index", "name", "drift", "drift_max", "mean_shift", "log_var", "obs_dead", "obs_only", "pred_only"],
        "per-layer table (data-free + observed)",
    )
    act.set_defaults(func=cmd_activations)

    rec = sub.add_parser(
        "recalibrate",
        parents=[debug],
        help="re-estimate the BN running statistics on images and write a new checkpoint",
        description="Re-estimate every BatchNorm's running mean and variance on the images (BN layers in training "
        "mode, cumulative average of batch statistics weighted by batch size, as PreciseBN/AdaBN do); weights "
        "untouched. Writes an Ultralytics checkpoint that YOLO(path) loads.",
        epilog=RECALIBRATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rec.add_argument(
        "model", nargs="?", default=None, help="checkpoint (.pt); default: the bundled demo model"
    )
    rec.add_argument("-o", "--out", type=Path, required=True, metavar="FILE", help="the new checkpoint (.pt)")
    rec.add_argument("--force", action="store_true", help="replace FILE if it exists (never the input)")
    rec.add_argument(
        "--layers", action="append", metavar="PATTERN", help="only these BN layers (glob, block type or role)"
    )
    image_options(rec, optional=False, batch=32)
    rec.add_argument("--seed", type=int, default=0, help="image order shuffle seed (default 0)")
    rec.add_argument("--data", help="also validate before and after on this dataset (yaml, or 'shapes')")
    rec.add_argument(
        "--trust",
        action="store_true",
        help="trust the input files: full unpickle, the dataset yaml's download script (trusted files only)",
    )
    rec.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    rec.set_defaults(func=cmd_recalibrate)

    sw = sub.add_parser(
        "swap",
        parents=[debug],
        help="swap BatchNorm implementations and re-validate with Ultralytics' validator (never re-fused)",
        description="Replace BatchNorm layers by another implementation and measure accuracy with "
        "Ultralytics' own validator on the swapped model (fusion is prevented, so the swapped code is what runs).",
        epilog=SWAP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sw.add_argument(
        "model", nargs="?", default=None, help="checkpoint (.pt); default: the bundled demo model"
    )
    sw.add_argument(
        "--impl",
        action="append",
        required=True,
        metavar="SPEC",
        help="implementation: reference, frozen, folded, identity, lowp:dtype=fp16|bf16, fixedpoint:bits=8, "
        "reference:eps=1e-5, recalibrated:images=PATH, or module.path:Class / file.py:Class; repeatable",
    )
    sw.add_argument(
        "--data", help="dataset yaml, an Ultralytics dataset name, or 'shapes' (default for the demo model)"
    )
    sw.add_argument(
        "--layers", action="append", metavar="PATTERN", help="BN layers to swap (glob, block type or role)"
    )
    sw.add_argument(
        "--images",
        nargs="*",
        metavar="PATH",
        help="label-free check on images (files or folders): raw output difference and box agreement; "
        "with no PATH: Ultralytics' bus.jpg and zidane.jpg (the shapes val images for the demo model)",
    )
    sw.add_argument(
        "--max-images", type=int, default=64, metavar="N", help="use at most N images (default 64)"
    )
    sw.add_argument(
        "--imgsz", type=int, help="validation image size (default: the checkpoint's training imgsz)"
    )
    sw.add_argument("--batch", type=int, default=16, help="validation batch size (default 16)")
    sw.add_argument("--device", default="cpu", help="cpu, 0, cuda:0 ... (default cpu)")
    sw.add_argument(
        "-o", "--out", type=Path, metavar="DIR", help="output folder (default: reports/<model-stem>/swap/)"
    )
    sw.add_argument("--no-cache", action="store_true", help="re-validate the baseline even if cached")
    sw.add_argument(
        "--trust",
        action="store_true",
        help="trust the input files: full unpickle, the dataset yaml's download script (trusted files only)",
    )
    sw.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    sw.set_defaults(func=cmd_swap)

    ex = sub.add_parser(
        "experiment",
        parents=[debug],
        help="run many swap variants (and a per-layer sensitivity sweep) from a YAML file",
        description="Run the variants of an experiment file against one (cached) baseline and write one "
        "results table: results.csv, results.json, sensitivity.csv (if any) and experiment.html.",
        epilog=EXPERIMENT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("file", type=Path, help="experiment YAML (see examples/eps.yaml)")
    ex.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: reports/<model-stem>/experiments/<file-stem>/)",
    )
    ex.add_argument(
        "--trust",
        action="store_true",
        help="trust the experiment file and what it names: full unpickle of its model, custom impl files, "
        "dataset download scripts",
    )
    ex.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    ex.set_defaults(func=cmd_experiment)
    return p


def _check_table_args(args: argparse.Namespace) -> None:
    """--top and the output files of inspect and activations, checked before any work; and the
    checkpoint's hash started in a thread while torch and pandas import (the loader picks it up)."""
    from yolobn.errors import YolobnError

    if args.top is not None and args.top < 0:
        raise YolobnError(f"--top {args.top}: must be 0 or more")
    model_path = Path(args.model) if args.model else None
    from yolobn import digest

    if model_path and model_path.suffix.lower() not in (".yaml", ".yml"):
        digest.prefetch(model_path)
    from yolobn.report.export import check_output_paths

    outputs = {"--csv": args.csv, "--channels-csv": args.channels_csv, "--json": args.json}
    check_output_paths(outputs, protect=[model_path] if model_path and model_path.exists() else [])


def cmd_inspect(args: argparse.Namespace) -> int:
    _check_table_args(args)

    from rich.console import Console

    err = Console(stderr=True)
    th = _thresholds(args)

    from yolobn.inspection import sort_layers

    early_images = _early_images(args)
    result = _inspect_with_status(args, th, err)
    if args.trust and not args.quiet:
        err.print(
            "[yellow]warning:[/] --trust: the checkpoint was fully unpickled; only do this for files you trust"
        )
    if args.images is not None:
        _attach_observed(result, _observe(args, result, err, early_images))

    written = _write_outputs(args, result)

    if args.quiet:
        return EXIT_OK
    from yolobn.report.console import layer_table, summary_panel

    out = Console(width=None if sys.stdout.isatty() else 200)
    layers = sort_layers(result.layers, args.sort)
    shown = layers if args.top is None else layers.head(args.top)
    if len(shown):
        title = (
            f"BatchNorm layers ({len(shown)} of {len(layers)})"
            if len(shown) < len(layers)
            else "BatchNorm layers"
        )
        out.print(layer_table(shown, title=title))
    out.print(summary_panel(result.meta.to_dict(), result.summary(), th.to_dict()))
    if result.observed is not None:
        from yolobn.report.console import observed_panel

        out.print(
            observed_panel(
                result.observed.summary(), result.observed.observed.to_dict(), "observed on the images"
            )
        )
    for p in written:
        out.print(f"wrote {p}")
    return EXIT_OK


def _write_outputs(args: argparse.Namespace, result) -> list[Path]:
    """--csv, --channels-csv and --json of inspect and activations, all or nothing."""
    from yolobn.report.export import channels_csv, layers_csv, write_texts

    files = {}
    if args.csv:
        files[args.csv] = layers_csv(result.layers)
    if args.channels_csv:
        files[args.channels_csv] = channels_csv(result.channels)
    if args.json:
        files[args.json] = result.to_json()
    return write_texts(files) if files else []


def _early_images(args: argparse.Namespace):
    """Explicit --images checked before any loading (a typo fails at once); None means the defaults."""
    from yolobn.validate import collect_images

    if getattr(args, "images", None):
        from yolobn.errors import YolobnError

        if args.max_images is not None and args.max_images < 1:
            raise YolobnError(f"--max-images {args.max_images}: must be at least 1")
        for p in args.images:
            if p.lower().endswith((".pt", ".pth", ".yaml", ".yml")):
                raise YolobnError(f"--images {p}: is a model, not an image; put MODEL before --images")
        return collect_images(args.images, args.max_images)
    return None


def _obs_thresholds(args: argparse.Namespace):
    from yolobn.activations import ObservedThresholds
    from yolobn.errors import YolobnError

    try:
        return ObservedThresholds(dead_std=args.dead_std, min_positive=args.min_positive)
    except ValueError as e:
        raise YolobnError(str(e)) from None


def _observe(args: argparse.Namespace, inspection, err, images):
    """observe() on an Inspection's tables, with a progress bar over the images (stderr, terminal only)."""
    from yolobn.activations import observe

    quiet = getattr(args, "quiet", False)
    with _progress(err, quiet) as bar:
        job = bar.add_task("observing activations", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        act = observe(
            inspection, [str(p) for p in images] if images else None, max_images=args.max_images,
            imgsz=args.imgsz, batch=args.batch, device=args.device, observed=_obs_thresholds(args),
            progress=progress,
        )  # fmt: skip
    _warn_skipped(err, act.skipped)
    return act


def _warn_skipped(err, skipped) -> None:
    if skipped:
        err.print(
            f"[yellow]warning:[/] {len(skipped)} image(s) could not be decoded and were skipped "
            f"(first: {skipped[0]})",
            soft_wrap=True,
        )


def _attach_observed(result, act) -> None:
    """inspect/report --images: the observed columns join the data-free tables (same rows)."""
    result.layers = act.layers
    result.channels = act.channels
    result.observed = act


def _inspect_with_status(args: argparse.Namespace, th, err):
    """Run the inspection, with a spinner on stderr when it is a terminal (inspect and report)."""
    from yolobn.inspection import inspect

    run = lambda: inspect(args.model, thresholds=th, select=args.layers, trust=args.trust)  # noqa: E731
    if args.quiet or not err.is_terminal:
        return run()
    with err.status(f"loading and inspecting {args.model or 'the demo model'} ..."):
        return run()


def _progress(err, quiet: bool):
    """The progress bar of swap and experiment (stderr, only on a terminal, gone when done)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=err, transient=True, disable=quiet or not err.is_terminal,
    )  # fmt: skip


def _thresholds(args: argparse.Namespace):
    from yolobn.dead import Thresholds
    from yolobn.errors import YolobnError

    try:
        return Thresholds(
            const_std=args.const_std,
            off_sigma=args.off_sigma,
            eps_factor=args.eps_factor,
            eps_share=args.eps_share,
            extreme_scale=args.extreme_scale,
        )
    except ValueError as e:
        raise YolobnError(str(e)) from None


def cmd_report(args: argparse.Namespace) -> int:
    from yolobn.errors import YolobnError
    from yolobn.report.export import check_output_paths

    if args.out is not None:
        out_dir = args.out
    else:
        stem = Path(args.model).stem if args.model else "demo_yolo11n_shapes"
        out_dir = Path("reports") / stem
    if out_dir.exists() and not out_dir.is_dir():
        raise YolobnError(f"--out {out_dir}: is a file, not a folder; give a folder name")
    names = {
        "report.html": "report",
        "layers.csv": "layers",
        "channels.csv": "channels",
        "summary.json": "summary",
    }
    paths = {f"{out_dir / n}": out_dir / n for n in names}
    model_path = Path(args.model) if args.model else None
    check_output_paths(paths, protect=[model_path] if model_path and model_path.exists() else [])
    th = _thresholds(args)

    from rich.console import Console

    err = Console(stderr=True)
    early_images = _early_images(args)
    result = _inspect_with_status(args, th, err)
    if args.images is not None:
        _attach_observed(result, _observe(args, result, err, early_images))
    from yolobn.report.export import report_files, write_texts

    written = write_texts(report_files(result, out_dir))
    html = out_dir / "report.html"
    if not args.quiet:
        for p in written:
            print(f"wrote {p}")
    if args.open:
        import webbrowser

        webbrowser.open(html.resolve().as_uri())
    return EXIT_OK


def cmd_swap(args: argparse.Namespace) -> int:
    import json

    from yolobn.datasets import resolve_data
    from yolobn.errors import YolobnError
    from yolobn.report.export import check_output_paths, write_texts
    from yolobn.swap import parse_impl
    from yolobn.validate import collect_images

    if args.data is None and args.images is None:
        if args.model is not None:
            raise YolobnError(
                "--data or --images is required for a model other than the demo (a dataset yaml, 'shapes', "
                "or --images for a label-free check)"
            )
        args.data = "shapes"
    specs = [parse_impl(s) for s in args.impl]  # every spec checked before any work
    if args.data is not None:
        resolve_data(args.data, trust=args.trust)  # a missing or unsafe dataset fails here, before any work
    images = None
    if args.images is not None:
        if not args.images and args.model is None:  # the demo model sees shapes, not buses
            from yolobn.data.synth import shapes_dataset

            images = collect_images([str(shapes_dataset().parent / "images" / "val")], args.max_images)
        else:
            images = collect_images(args.images, args.max_images)
    stem = Path(args.model).stem if args.model else "demo_yolo11n_shapes"
    out_dir = args.out if args.out is not None else Path("reports") / stem / "swap"
    if out_dir.exists() and not out_dir.is_dir():
        raise YolobnError(f"--out {out_dir}: is a file, not a folder")
    paths = {
        str(out_dir / "swap.csv"): out_dir / "swap.csv",
        str(out_dir / "swap.json"): out_dir / "swap.json",
    }
    check_output_paths(paths)

    import pandas as pd
    from rich.console import Console

    from yolobn.loader import load
    from yolobn.swap import swap
    from yolobn.validate import KEY_METRICS, agreement, baseline, metric_columns, output_difference, validate

    err = Console(stderr=True, quiet=args.quiet)
    loaded = load(args.model, trust=args.trust)
    task = loaded.meta.task or "detect"
    keys = KEY_METRICS.get(task, KEY_METRICS["detect"]) if args.data else ()
    imgsz = args.imgsz or int(loaded.meta.train_args.get("imgsz") or 640)
    nan = float("nan")
    rows = []
    with _progress(err, args.quiet) as bar:
        job = bar.add_task("baseline", total=len(specs) + 1)
        if args.data is None:
            base, cached = {}, False
        elif args.no_cache:
            base, cached = (
                validate(
                    loaded, args.data, imgsz=imgsz, batch=args.batch, device=args.device, trust=args.trust
                ),
                False,
            )
        else:
            base, cached = baseline(
                loaded, args.data, imgsz=imgsz, batch=args.batch, device=args.device, trust=args.trust
            )
        bar.advance(job)
        rows.append({"variant": "baseline (nn.BatchNorm2d)", "swapped": 0, **metric_columns(base, base, keys),
                     "max_abs_diff": 0.0, "max_rel_diff": 0.0, "ms_per_image": base.get("ms_per_image", nan),
                     "cached": cached})  # fmt: skip
        for spec in specs:
            bar.update(job, description=f"validating {spec.label}")
            swapped = swap(loaded, spec, layers=args.layers)
            if images is not None:
                diff = agreement(loaded, swapped, images, imgsz)
            else:
                diff = output_difference(loaded.model, swapped.model, imgsz)
            m = (
                validate(
                    swapped, args.data, imgsz=imgsz, batch=args.batch, device=args.device, trust=args.trust
                )
                if args.data
                else {}
            )
            rows.append({"variant": spec.label, "swapped": len(swapped.swap.replaced), **metric_columns(m, base, keys),
                         **diff, "ms_per_image": m.get("ms_per_image", nan), "cached": False})  # fmt: skip
            bar.advance(job)
    table = pd.DataFrame(rows)
    doc = {
        "model": loaded.meta.to_dict(),
        "data": args.data,
        "images": [str(p) for p in images] if images is not None else None,
        "imgsz": imgsz,
        "layers": args.layers or [],
        "note": "validated with Ultralytics' validator, model.fuse() disabled on the validated copy",
        "results": json.loads(table.to_json(orient="records")),
    }
    written = write_texts({
        out_dir / "swap.csv": table.to_csv(index=False, float_format="%.6g", lineterminator="\n"),
        out_dir / "swap.json": json.dumps(doc, indent=2) + "\n",
    })  # fmt: skip
    if args.quiet:
        return EXIT_OK
    from rich.table import Table

    where = args.data if args.data else f"{len(images)} images (label-free)"
    t = Table(title=f"swap-and-validate · {loaded.meta.path or loaded.meta.source} on {where} @ {imgsz}")
    short = {k: k.replace("metrics/", "") for k in keys}
    agree = "top1_agreement" if any("top1_agreement" in r for r in rows) else "box_agreement"
    t.add_column("variant")
    t.add_column("BN swapped", justify="right")
    for k in keys:
        t.add_column(short[k], justify="right")
        t.add_column("Δ", justify="right")
    t.add_column("max |Δout| (rel)", justify="right")
    if images is not None:
        t.add_column(agree.replace("_", " "), justify="right")
    t.add_column("ms/img", justify="right")
    for r in rows:
        cells = []
        for k in keys:
            d = r[f"{short[k]} delta"]
            style = "red" if d < -0.001 else ("green" if d > 0.001 else "")
            cells += [f"{r[short[k]]:.4f}", f"[{style}]{d:+.4f}[/]" if style else f"{d:+.4f}"]
        if images is not None:
            a = r.get(agree)
            cells.append("-" if a is None else (f"{a:.1%}" if a == a else "no boxes"))
        t.add_row(
            r["variant"] + (" (cached)" if r["cached"] else ""),
            str(r["swapped"]),
            *cells[: 2 * len(keys)],
            f"{r['max_abs_diff']:.3g} ({r['max_rel_diff']:.2g})",
            *cells[2 * len(keys) :],
            f"{r['ms_per_image']:.1f}" if r["ms_per_image"] == r["ms_per_image"] else "-",
        )
    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(t)
    for p in written:
        out.print(f"wrote {p}")
    return EXIT_OK


ACT_SORT = {
    "index": ("index", True),
    "name": ("name", True),
    "drift": ("drift", False),
    "drift_max": ("drift_max", False),
    "mean_shift": ("mean_shift_abs", False),
    "log_var": ("log_var_ratio_abs", False),
    "obs_dead": ("obs_dead", False),
    "obs_only": ("dead_observed_only", False),
    "pred_only": ("dead_predicted_only", False),
}


def cmd_activations(args: argparse.Namespace) -> int:
    _check_table_args(args)
    th = _thresholds(args)
    _obs_thresholds(args)
    early_images = _early_images(args)

    from rich.console import Console

    err = Console(stderr=True)
    act = _observe(args, _inspect_with_status(args, th, err), err, early_images)
    loaded = act.loaded
    written = _write_outputs(args, act)
    if args.quiet:
        return EXIT_OK
    from yolobn.report.console import observed_panel, observed_table

    out = Console(width=None if sys.stdout.isatty() else 200)
    from yolobn.inspection import sort_layers

    layers = sort_layers(act.layers, args.sort, ACT_SORT)
    shown = layers if args.top is None else layers.head(args.top)
    if len(shown):
        title = f"BatchNorm layers on {len(act.images)} images" + (
            f" ({len(shown)} of {len(layers)})" if len(shown) < len(layers) else ""
        )
        out.print(observed_table(shown, title=title))
    out.print(
        observed_panel(
            act.summary(),
            act.observed.to_dict(),
            f"yolobn activations · {loaded.meta.path or loaded.meta.source}",
        )
    )
    for p in written:
        out.print(f"wrote {p}")
    return EXIT_OK


def cmd_recalibrate(args: argparse.Namespace) -> int:
    from yolobn.errors import YolobnError

    out_path: Path = args.out.expanduser()
    model_path = Path(args.model).expanduser() if args.model else None
    if model_path is not None and model_path.exists() and out_path.resolve() == model_path.resolve():
        raise YolobnError(
            f"-o {args.out}: is the input checkpoint; write the recalibrated model to another file"
        )
    if out_path.is_dir():
        raise YolobnError(
            f"-o {args.out}: is a folder; give a file name such as {out_path / 'recalibrated.pt'}"
        )
    if out_path.exists() and not args.force:
        raise YolobnError(f"-o {args.out}: exists; pass --force to replace it, or choose another name")
    from yolobn.report.export import check_output_paths

    check_output_paths({"-o": out_path})
    if args.batch < 2:
        raise YolobnError(f"--batch {args.batch}: recalibration needs batches of at least 2 images")
    if args.data is not None:
        from yolobn.datasets import resolve_data

        resolve_data(args.data, trust=args.trust)
    early_images = _early_images(args)

    from rich.console import Console

    from yolobn.activations import recalibrate, save_checkpoint
    from yolobn.loader import load

    err = Console(stderr=True, quiet=args.quiet)
    loaded = load(args.model, trust=args.trust)
    with _progress(err, args.quiet) as bar:
        job = bar.add_task("recalibrating", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        rec = recalibrate(
            loaded, [str(p) for p in early_images] if early_images else None, max_images=args.max_images,
            imgsz=args.imgsz, batch=args.batch, device=args.device, select=args.layers, seed=args.seed,
            progress=progress,
        )  # fmt: skip
    _warn_skipped(err, rec.meta.recalibration["images_skipped"])
    metrics = None
    if args.data is not None:
        from yolobn.validate import KEY_METRICS, validate

        keys = KEY_METRICS.get(loaded.meta.task or "detect", KEY_METRICS["detect"])
        with err.status("validating before and after ..."):
            before = validate(loaded, args.data, imgsz=args.imgsz, device=args.device, trust=args.trust)
            after = validate(rec, args.data, imgsz=args.imgsz, device=args.device, trust=args.trust)
        metrics = [
            (k.replace("metrics/", ""), before.get(k, float("nan")), after.get(k, float("nan"))) for k in keys
        ]
        rec.meta.recalibration["validation"] = {
            "data": args.data,
            **{f"{k} before": b for k, b, _ in metrics},
            **{f"{k} after": a for k, _, a in metrics},
        }
    written = save_checkpoint(rec, out_path, protect=[model_path] if model_path else [])
    if args.quiet:
        return EXIT_OK
    r = rec.meta.recalibration
    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(
        f"recalibrated the running statistics of {r['layers']} BN layers on {r['images']} images "
        f"(imgsz {r['imgsz']}, batch {r['batch']}); weights unchanged"
    )
    if metrics:
        from rich.table import Table

        t = Table(title=f"validation on {args.data}")
        for c in ("metric", "before", "after", "Δ"):
            t.add_column(c, justify="left" if c == "metric" else "right")
        for k, b, a in metrics:
            d = a - b
            style = "red" if d < -0.001 else ("green" if d > 0.001 else "")
            t.add_row(k, f"{b:.4f}", f"{a:.4f}", f"[{style}]{d:+.4f}[/]" if style else f"{d:+.4f}")
        out.print(t)
    out.print(f"wrote {written}")
    return EXIT_OK


def cmd_experiment(args: argparse.Namespace) -> int:
    import json

    from yolobn.errors import YolobnError
    from yolobn.experiment import read_config, render_html, run_experiment
    from yolobn.report.export import check_output_paths, write_texts

    cfg = read_config(args.file, trust=args.trust)
    from yolobn.datasets import resolve_data

    resolve_data(cfg.get("data") or "shapes", trust=args.trust)
    stem = Path(cfg["model"]).stem if cfg.get("model") else "demo_yolo11n_shapes"
    out_dir = args.out if args.out is not None else Path("reports") / stem / "experiments" / args.file.stem
    if out_dir.exists() and not out_dir.is_dir():
        raise YolobnError(f"--out {out_dir}: is a file, not a folder")
    names = ["results.csv", "results.json", "experiment.html"] + (
        ["sensitivity.csv"] if cfg.get("sensitivity") else []
    )
    check_output_paths({str(out_dir / n): out_dir / n for n in names})

    from rich.console import Console

    err = Console(stderr=True, quiet=args.quiet)
    with _progress(err, args.quiet) as bar:
        job = bar.add_task("experiment", total=None)

        def progress(label: str, done: int, total: int) -> None:
            bar.update(job, description=label, completed=done, total=total)

        res = run_experiment(cfg, base_dir=args.file.resolve().parent, progress=progress, trust=args.trust)
    files = {
        out_dir / "results.csv": res.results.to_csv(index=False, float_format="%.6g", lineterminator="\n"),
        out_dir / "results.json": json.dumps(
            {"config": res.config, "model": res.meta, "metric": res.metric,
             "results": json.loads(res.results.to_json(orient="records")),
             "sensitivity": json.loads(res.sensitivity.to_json(orient="records")) if res.sensitivity is not None else None},
            indent=2,
        ) + "\n",
        out_dir / "experiment.html": render_html(res),
    }  # fmt: skip
    if res.sensitivity is not None:
        files[out_dir / "sensitivity.csv"] = res.sensitivity.to_csv(
            index=False, float_format="%.6g", lineterminator="\n"
        )
    written = write_texts(files)
    if args.quiet:
        return EXIT_OK
    from rich.table import Table

    out = Console(width=None if sys.stdout.isatty() else 200)
    short = res.metric.replace("metrics/", "")
    t = Table(
        title=f"experiment {args.file} · {res.meta.get('path') or res.meta.get('source')} on {res.config['data']}"
    )
    for c in ("variant", "BN swapped", short, "Δ", "max |Δout| (rel)", "ms/img"):
        t.add_column(c, justify="left" if c == "variant" else "right")
    for r in res.results.to_dict(orient="records"):
        d = r[f"{short} delta"]
        style = "red" if d < -0.001 else ("green" if d > 0.001 else "")
        t.add_row(
            r["variant"] + (" (cached)" if r["cached"] else ""), str(r["swapped"]), f"{r[short]:.4f}",
            f"[{style}]{d:+.4f}[/]" if style else f"{d:+.4f}",
            f"{r['max_abs_diff']:.3g} ({r['max_rel_diff']:.2g})", f"{r['ms_per_image']:.1f}",
        )  # fmt: skip
    out.print(t)
    if res.sensitivity is not None:
        top = int(cfg["sensitivity"].get("top") or 10)
        st = Table(title=f"most sensitive BN layers to {res.sensitivity['impl'].iloc[0]} (one at a time)")
        for c in ("rank", "layer", short, "Δ"):
            st.add_column(c, justify="left" if c == "layer" else "right")
        for r in res.sensitivity.head(top).to_dict(orient="records"):
            st.add_row(str(r["rank"]), r["layer"], f"{r[res.metric]:.4f}", f"{r['delta']:+.4f}")
        out.print(st)
    for p in written:
        out.print(f"wrote {p}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    # Ultralytics logs to stdout; the CLI speaks for it.
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("yolobn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from yolobn.errors import YolobnError

        if debug:
            raise
        if isinstance(e, YolobnError):
            print(f"yolobn: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"yolobn: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
