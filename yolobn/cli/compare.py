"""``yolobn compare``: what changed in the BatchNorm layers between checkpoints."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn compare best.pt best-recal.pt                  # e.g. runs/train/weights/last.pt and best.pt
  yolobn compare best.pt best-recal.pt --csv cmp-layers.csv --channels-csv cmp-channels.csv --json compare.json
  yolobn compare best.pt best-recal.pt --html compare.html   # a page with plots (works offline, from file://)
  yolobn compare best.pt best-recal.pt yolo11n.yaml yolo11s.yaml   # more than two, or other architectures: an audit table
  yolobn compare best.pt tests/fixtures/broken_finetune/weights/last.pt --images examples/images/ --data shapes
                                              # did the fine-tune break BN? drift of both on the same images,
                                              # and what recalibrating B recovers (docs/demo.md)

two checkpoints: layers matched by name; per channel the Gaussian KL (nats) of the running statistics
(kl_in) and of the estimated BN output (kl_out), exactly 0 when nothing changed; dead-channel
transitions (newly dead, revived, dead in both) with the same thresholds for both. The BN parameters
alone cannot show whether B's stored statistics still fit B's weights: --images runs both on the same
images and adds their drift (drift_a, drift_b, drift_rise; Gaussian KL of each BN input against its
running statistics, as 'yolobn activations'); --data then also validates A, B and B recalibrated on
the images (not written: 'yolobn recalibrate' does that), so the answer says what recalibrating
recovers.
"""


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "compare",
        help="compare the BatchNorm layers of two checkpoints (or audit several)",
        description="Match two checkpoints' BatchNorm layers by name and report what changed: distribution "
        "shifts, dead-channel transitions, eps-dominated changes. With more than two checkpoints, or different "
        "architectures, one row of headline numbers per checkpoint.",
        epilog=EXAMPLES,
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="checkpoints (.pt) or model yamls; A first")
    o.trust_argument(p, o.TRUST_MODEL)
    o.strict_argument(p)
    o.threshold_group(p)
    g = p.add_argument_group("display")
    g.add_argument(
        "--top",
        type=o.number(int),
        default=o.TOP,
        metavar="N",
        help=f"rows of the layer table (default {o.TOP})",
    )
    g.add_argument("--all", action="store_true", help="show every matched layer")
    o.quiet_argument(g)
    o.image_group(p, optional=True)
    p.add_argument(
        "--data",
        help="with --images: also validate A, B and B recalibrated on the images (a dataset yaml, or 'shapes')",
    )
    f = p.add_argument_group("output files")
    f.add_argument(
        "--csv", type=Path, metavar="FILE", help="per-layer changes (or the audit table) as CSV ('-': stdout)"
    )
    f.add_argument(
        "--channels-csv", type=Path, metavar="FILE", help="per-channel deltas as CSV ('-': stdout)"
    )
    f.add_argument(
        "--json", type=Path, metavar="FILE", help="metadata, summary and per-layer rows as JSON ('-': stdout)"
    )
    f.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="a self-contained HTML page: change along the depth, transitions, A-vs-B scatter (or the audit table)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from yolobn.core.errors import YolobnError

    if len(args.models) < 2:
        raise YolobnError("compare needs at least two checkpoints: yolobn compare A.pt B.pt")
    observed = args.images is not None
    if args.data is not None and not observed:
        raise YolobnError(
            "--data: needs --images (B is recalibrated on the images, then A, B and B recalibrated are validated)"
        )
    if observed and len(args.models) != 2:
        raise YolobnError("--images: compares two checkpoints on the same images; give exactly two")
    args.model = None
    inputs = {Path(m).expanduser(): "an input model" for m in args.models if Path(m).expanduser().exists()}
    images = o.early_images(args) if observed else None
    if args.data is not None:
        from yolobn.io.datasets import resolve_data

        resolve_data(args.data, trust=args.trust)  # a missing or unsafe dataset fails before any work
    for path, what in o.input_files(args.models[1], data=args.data, images=images).items():
        inputs.setdefault(path, what)  # the models keep their name: 'an input model'
    o.check_table_args(args, inputs)
    _check_html(args, inputs)
    th = o.thresholds(args)
    from yolobn.bn.comparison import audit, compare
    from yolobn.bn.inspection import inspect
    from yolobn.io.loader import load

    out, err = o.consoles(args.quiet)
    with err.status("loading and inspecting ...") if err.is_terminal and not args.quiet else _nothing():
        results = [inspect(load(m, trust=args.trust, strict=args.strict), thresholds=th) for m in args.models]
    for r in results:
        o.warn_cannot_run(err, r.loaded, args.quiet)
    pair = len(results) == 2 and _same_architecture(results[0], results[1])
    if observed and not pair:
        raise YolobnError(
            "--images: the two checkpoints have different architectures; drift is compared layer by layer"
        )
    if pair:
        cmp = compare(results[0], results[1], thresholds=th)
        if observed:
            cmp = _observe(args, cmp, images, err)
            inputs.update({Path(p): "an input image" for p in cmp.observed["files"]})
        written = o.write_outputs(args, cmp, inputs, extra=_html(args, cmp))
        if not args.quiet:
            _print_pair(args, cmp, out)
    else:
        table = audit(results, thresholds=th).table
        if args.channels_csv is not None:
            raise YolobnError(
                "--channels-csv: per-channel deltas need two checkpoints of the same architecture"
            )
        written = _write_audit(args, table, results, th, inputs)
        if not args.quiet:
            from yolobn.report.tables import audit_table

            if len(results) == 2:
                out.print("[yellow]the two checkpoints have different architectures: one row each[/]")
            out.print(audit_table(table, width=out.width))
    if not args.quiet:
        o.print_written(out, written)
    return o.EXIT_OK


def _observe(args: argparse.Namespace, cmp: Any, images: list[Path] | None, err: Any) -> Any:
    """Both checkpoints on the same images (a progress bar over both passes); with --data, A, B and B
    recalibrated validated."""
    from yolobn.io.checks import require_runnable
    from yolobn.io.images import model_imgsz
    from yolobn.run.device import parse_device
    from yolobn.run.drift import compare_images

    for ins in (cmp.a, cmp.b):
        require_runnable(ins.loaded)  # before any image is read: one line naming the module that fails
    parse_device(args.device)
    model_imgsz(cmp.b.loaded, args.imgsz)
    with o.progress_bar(err, args.quiet) as bar:
        job = bar.add_task("running A and B on the images", total=None, unit="images")

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        cmp = compare_images(
            cmp,
            [str(p) for p in images] if images else None,
            max_images=args.max_images,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            progress=progress,
        )
    o.warn_skipped(err, cmp.observed["skipped"])
    if args.data is not None:
        from yolobn.evaluate.effect import recalibration_effect

        with o.status(err, args.quiet, "recalibrating B, validating A, B and B recalibrated ..."):
            cmp = recalibration_effect(cmp, args.data, batch=args.batch, device=args.device, trust=args.trust)
    if images is None:  # the defaults: the next command names the images only when the user did
        return cmp
    return dataclasses.replace(cmp, observed={**cmp.observed, "sources": list(args.images)})


def _print_pair(args: argparse.Namespace, cmp: Any, out: Any) -> None:
    from yolobn.bn.answers import comparison_verdicts
    from yolobn.report.console import verdict_table
    from yolobn.report.tables import compare_panel, compare_table

    out.print(verdict_table(comparison_verdicts(cmp, args.models[0], args.models[1])))
    out.print(compare_panel(cmp.summary()))
    key = "drift_rise" if cmp.observed is not None else "change"
    shown = cmp.layers.sort_values([key, "index"], ascending=[False, True], kind="stable", na_position="last")
    shown = shown if args.all else shown.head(args.top)
    if len(shown):
        out.print(compare_table(shown, width=out.width))
    more = len(cmp.layers) - len(shown)
    order = "drift rose most" if cmp.observed is not None else "most changed"
    out.print(
        f"{len(shown)} of {len(cmp.layers)} matched layers, {order} first"
        + (f"; {more} more: --all, --top N, or --csv" if more > 0 else ""),
        style="dim",
    )


def _same_architecture(a: Any, b: Any) -> bool:
    """Matched by name: the same BN layers with the same widths (at least nine in ten of them)."""
    wa = dict(zip(a.layers["name"], a.layers["channels"], strict=True))
    wb = dict(zip(b.layers["name"], b.layers["channels"], strict=True))
    same = sum(1 for n, c in wa.items() if wb.get(n) == c)
    return same >= 0.9 * max(len(wa), len(wb), 1)


def _check_html(args: argparse.Namespace, inputs: dict[Path, str]) -> None:
    """--html is a file (not stdout), distinct from the other outputs and the inputs; checked
    before any work."""
    from yolobn.core.errors import YolobnError
    from yolobn.core.outputs import guard_outputs

    if args.html is None:
        return
    if str(args.html) == "-":
        raise YolobnError("--html -: the page is a file; give a file name such as compare.html")
    guard_outputs({**o.table_outputs(args), f"--html {args.html}": args.html}, inputs)


def _html(args: argparse.Namespace, cmp: Any) -> dict[Path, str]:
    if args.html is None:
        return {}
    from yolobn.report.compare_page import render_html

    return {args.html: render_html(cmp)}


def _write_audit(
    args: argparse.Namespace, table: Any, results: list[Any], th: Any, inputs: dict[Path, str]
) -> list[Path]:
    import sys

    from yolobn.core.precision import json_text
    from yolobn.report.export import csv_text, write_texts

    texts = {}
    if args.html:
        from yolobn.report.compare_page import render_audit_html

        texts[args.html] = render_audit_html(table, results, th.to_dict())
    if args.csv:
        texts[args.csv] = csv_text(table)
    if args.json:
        doc = {"models": [r.meta.to_dict() for r in results], "audit": table.to_dict(orient="records")}
        texts[args.json] = json_text(doc)
    written = write_texts({p: t for p, t in texts.items() if str(p) != "-"}, inputs)
    for p, t in texts.items():
        if str(p) == "-":
            sys.stdout.write(t)
    return written


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
