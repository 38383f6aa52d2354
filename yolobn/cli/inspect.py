"""``yolobn inspect``: BatchNorm statistics and data-free dead channels, in the terminal and as files."""

from __future__ import annotations

import argparse
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn inspect                              # the bundled demo model (YOLO11n trained on synthetic shapes)
  yolobn inspect best.pt                      # any Ultralytics checkpoint on disk
  yolobn inspect yolo11x.yaml                 # an untrained model built from an Ultralytics yaml
  yolobn inspect best.pt --sort dead --top 15 # the 15 layers with the most dead channels
  yolobn inspect best.pt --layers 'model.2*' --layers backbone
  yolobn inspect best.pt --csv layers.csv --channels-csv channels.csv --json summary.json --quiet

dead-channel criteria (data-free; see docs/numbers.md):
  constant       estimated BN output std |gamma|*sqrt(var/(var+eps)) < --const-std
  off            beta + --off-sigma * std < 0 before SiLU/ReLU: activation pinned at its floor
  eps-dominated  running_var < --eps-factor * eps (a finding, not dead)
"""

SORT_KEYS = [
    "rank",
    "index",
    "name",
    "dead",
    "dead_share",
    "eps",
    "eps_share",
    "channels",
    "scale",
    "gamma",
    "var",
]


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "inspect",
        help="BatchNorm statistics and data-free dead channels of a model",
        description="Load a YOLO checkpoint safely, find every BatchNorm and report its statistics, "
        "dead channels and health findings.",
        epilog=EXAMPLES,
    )
    o.model_argument(p)
    o.trust_argument(p, o.TRUST_MODEL)
    o.strict_argument(p)
    o.layers_argument(p, o.LAYERS_HELP)
    o.threshold_group(p)
    o.table_group(p, SORT_KEYS, "per-layer statistics")
    o.image_group(p, optional=True)
    o.observed_threshold_group(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    o.check_table_args(args)
    th = o.thresholds(args)
    if args.images is not None:
        o.observed_thresholds(args)  # bad thresholds fail before any work
    images = o.early_images(args)
    inputs = o.protect_inputs(args, images)
    out, err = o.consoles()
    result = o.inspect_with_status(args, th, err)
    o.warn_cannot_run(err, result.loaded, args.quiet)
    if args.trust and not args.quiet:
        err.print(
            "[yellow]warning:[/] --trust: the model file was fully trusted; only do this for files you trust"
        )
    if args.images is not None:
        result = o.observe_images(args, result, err, images)
    written = o.write_outputs(args, result, inputs)
    if args.quiet:
        return o.EXIT_OK
    from yolobn.report.console import layer_table, observed_panel, summary_panel, verdict_table

    out.print(verdict_table(o.verdicts(args, result)))
    out.print(summary_panel(result.meta.to_dict(), result.summary(), th.to_dict()))
    if result.observation is not None:
        out.print(
            observed_panel(
                result.observed_summary(), result.observation.thresholds.to_dict(), "observed on the images"
            )
        )
    shown, line = o.layer_rows(args, result.layer_table)
    if len(shown):
        out.print(layer_table(shown, title="BatchNorm layers", width=out.width))
    out.print(line, style="dim")
    o.print_written(out, written)
    return o.EXIT_OK
