"""``yolobn activations``: what the BatchNorm channels do on real images."""

from __future__ import annotations

import argparse
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn activations                                    # demo model on the synthetic training images
  yolobn activations best.pt --images examples/images/ --max-images 500
  yolobn activations best.pt --images examples/images/shape_00000.png examples/images/shape_00001.png --sort drift --top 15
  yolobn activations best.pt --images examples/images/ --csv obs-layers.csv --channels-csv obs-channels.csv --json obs.json
  yolobn inspect best.pt --images examples/images/      # data-free and observed side by side

what it reports (docs/numbers.md, "On images: observed statistics"):
  obs dead   post-activation std < --dead-std over all images and positions (flat), or, before
             SiLU/ReLU..., a share of positive pre-activations <= --min-positive (never positive)
  both / pred only / obs only: data-free prediction vs observation, per layer and overall
  drift      BN input on the images vs running_mean/var: |mean shift| in running std, |ln var ratio|,
             and their Gaussian KL (0: the stored statistics fit the images)
"""

SORT = {
    "rank": ("rank", False),
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


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "activations",
        help="observe the BN layers on real images: observed dead channels, predicted vs observed, BN drift",
        description="Run images through the model (preprocessed as Ultralytics' predict does), with hooks on "
        "every BatchNorm and its block, and report per channel what it does on the data: observed dead channels "
        "against the data-free prediction, and how far the stored running statistics are from the data (drift).",
        epilog=EXAMPLES,
    )
    o.model_argument(p)
    o.trust_argument(p, o.TRUST_MODEL)
    o.strict_argument(p)
    o.layers_argument(p, o.LAYERS_HELP)
    o.threshold_group(p)
    o.image_group(p, optional=False)
    o.observed_threshold_group(p)
    o.table_group(p, list(SORT), "per-layer table (data-free + observed)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    o.check_table_args(args)
    th = o.thresholds(args)
    o.observed_thresholds(args)
    images = o.early_images(args)
    inputs = o.protect_inputs(args, images)
    out, err = o.consoles()
    result = o.observe_images(args, o.inspect_with_status(args, th, err), err, images)
    written = o.write_outputs(args, result, inputs)
    if args.quiet:
        return o.EXIT_OK
    from yolobn.report.console import observed_panel, observed_table, verdict_table

    out.print(verdict_table(o.verdicts(args, result)))
    out.print(
        observed_panel(
            result.observed_summary(),
            result.observation.thresholds.to_dict(),
            f"yolobn activations · {result.meta.path or result.meta.source}",
        )
    )
    shown, line = o.layer_rows(args, result.layers, SORT)
    if len(shown):
        n = len(result.observation.images)
        out.print(observed_table(shown, title=f"BatchNorm layers on {n} images", width=out.width))
    out.print(line, style="dim")
    o.print_written(out, written)
    return o.EXIT_OK
