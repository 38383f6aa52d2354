"""``yolobn finetune``: train a pruned checkpoint at its own widths with Ultralytics' trainer."""

from __future__ import annotations

import argparse
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn finetune pruned.pt data=shapes epochs=1 imgsz=160 project=runs name=ft   # the demo, pruned by 'yolobn prune'
  yolobn finetune best-pruned.pt data=shapes epochs=1 imgsz=160 batch=16 cos_lr project=runs name=p10   # cos_lr: a bare switch turns it on

The arguments are Ultralytics' training arguments (key=value, as 'yolo train'), checked as Ultralytics
checks them. Why not YOLO("pruned.pt").train(): Ultralytics' trainer rebuilds the model from its yaml,
at the original widths, and copies only the tensors whose shapes still match ("Transferred N/M
items"): a pruned model silently starts from mostly new weights. This command runs the same
trainer on the pruned model itself; runs/<task>/train*/weights/last.pt and best.pt keep the pruned
widths (fine-tune them again with this command, not with resume=True).
"""


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "finetune",
        help="train a pruned checkpoint at its own widths (Ultralytics' trainer, key=value arguments)",
        description="Fine-tune a checkpoint written by 'yolobn prune' with Ultralytics' own trainer for its task, "
        "training the pruned model itself instead of a model rebuilt from its yaml; last.pt and best.pt keep the "
        "pruned widths.",
        epilog=EXAMPLES,
    )
    p.add_argument("model", help="the pruned checkpoint (.pt)")
    p.add_argument(
        "train", nargs="*", metavar="KEY=VALUE", help="Ultralytics training arguments (data= is required)"
    )
    o.trust_argument(p, o.TRUST_DATA)
    o.strict_argument(p)
    o.quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    # Training takes a while: Ultralytics shows its own progress (set before it is first imported).
    os.environ["YOLO_VERBOSE"] = "False" if args.quiet else "True"
    from yolobn.core.errors import YolobnError
    from yolobn.integrations.finetune import finetune, parse_train_args

    train = parse_train_args(args.train)
    data = train.pop("data", None)
    if data is None:
        raise YolobnError("data= is required: the dataset to train on (a dataset yaml, or 'shapes')")
    out, _ = o.consoles(args.quiet)
    r = finetune(args.model, data, trust=args.trust, strict=args.strict, **train)
    if args.quiet:
        return o.EXIT_OK
    from yolobn.io.loader import load

    kept = [(p, load(p).meta.n_params) for p in (r.last, r.best) if p.is_file()]
    out.print(f"trained the pruned model ({r.params:,} parameters) for its task with Ultralytics' trainer")
    for p, n in kept:
        same = "the pruned widths" if n == r.params else f"NOT the {r.params:,} trained"
        out.print(f"{o.file_link(p)}: {n:,} parameters ({same})", soft_wrap=True)
    if any(n != r.params for _, n in kept):
        return o.EXIT_INTERNAL
    return o.EXIT_OK
