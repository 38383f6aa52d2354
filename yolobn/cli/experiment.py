"""``yolobn experiment``: many swap variants (and a per-layer sensitivity sweep) from a YAML file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from yolobn.cli import options as o

EXAMPLES = """\
examples:
  yolobn experiment examples/eps.yaml --trust   # the demo model: reference, folded, eps, fixed point, ...
                                                # (--trust: the file names a custom impl, examples/custom_bn.py)
  yolobn experiment examples/eps.yaml --trust --ray            # each variant and layer a Ray task
                                                # (--ray HOST:PORT: on a running Ray cluster, see docs/scale.md)

A rerun of the same file continues where an interrupted one stopped (finished rows are kept in
$YOLOBN_CACHE/sweeps/); --no-resume measures everything again.

file format:
  model: best.pt | null        data: shapes | data.yaml      imgsz: 160 (optional)
  variants: [{impl: reference}, {impl: reference:eps=1e-5, layers: [backbone], name: eps-bb}]
  sensitivity: {impl: reference:eps=1e-5, layers: ['model.2*'], top: 10}   (optional)
"""


def add_parser(sub: Any) -> None:
    p = o.command(
        sub,
        "experiment",
        help="run many swap variants (and a per-layer sensitivity sweep) from a YAML file",
        description="Run the variants of an experiment file against one (cached) baseline and write one "
        "results table: results.csv, results.json, sensitivity.csv (if any) and experiment.html.",
        epilog=EXAMPLES,
    )
    p.add_argument("file", type=Path, help="experiment YAML (see examples/eps.yaml)")
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default: reports/<model-stem>/experiments/<file-stem>/)",
    )
    o.exist_ok_argument(p)
    o.trust_argument(
        p, "full unpickle of its model, the custom impl files and dataset download scripts it names"
    )
    p.add_argument(
        "--wide", action="store_true", help="every metric, the output difference and ms/img in the table"
    )
    o.fanout_group(p)
    o.strict_argument(p)
    o.quiet_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from yolobn.io.datasets import resolve_data
    from yolobn.report.export import csv_text, write_texts
    from yolobn.sweeps.experiment import model_source, read_config, run_experiment

    out, err = o.consoles(args.quiet)
    execution = o.execution(args, err)  # a missing Ray fails here, before any work
    cfg = read_config(args.file, trust=args.trust)
    resolve_data(cfg.get("data") or "shapes", trust=args.trust)
    stem = o.model_stem(cfg.get("model"))
    out_dir = o.output_dir(args.out, Path("reports") / stem / "experiments" / args.file.stem, args.exist_ok)
    names = ["results.csv", "results.json", "experiment.html"] + (
        ["sensitivity.csv"] if cfg.get("sensitivity") else []
    )
    base_dir = args.file.resolve().parent
    impl_files = {
        Path(str(v["impl"]).rpartition(":")[0]): "a custom impl file"
        for v in [*cfg["variants"], cfg.get("sensitivity") or {"impl": ""}]
        if str(v["impl"]).rpartition(":")[0].endswith(".py")
    }
    inputs = o.input_files(
        model_source(cfg, base_dir),
        data=cfg.get("data"),
        more={args.file: "the experiment file", **impl_files},
    )
    from yolobn.core.outputs import guard_folder

    guard_folder(out_dir, names, "--out", inputs)

    with o.progress_bar(err, args.quiet) as bar:
        job = bar.add_task("experiment", total=None, unit="validations")

        def progress(label: str, done: int, total: int) -> None:
            bar.update(job, description=label, completed=done, total=total)

        res = run_experiment(
            cfg,
            base_dir=base_dir,
            progress=progress,
            trust=args.trust,
            strict=args.strict,
            execution=execution,
        )
    n_sens = 0 if res.sensitivity is None else len(res.sensitivity)
    o.warn_failed(res.failed, len(res.results) - 1 + n_sens)
    from yolobn.report.experiment_page import render_html

    def records(df: Any) -> Any:
        return json.loads(df.to_json(orient="records")) if df is not None else None

    verdicts = res.verdicts()
    doc = {
        "config": res.config,
        "model": res.meta,
        "metric": res.metric,
        "verdicts": [v.to_dict() for v in verdicts],
        "results": records(res.results),
        "sensitivity": records(res.sensitivity),
    }
    files = {
        out_dir / "results.csv": csv_text(res.results, "%.6g"),
        out_dir / "results.json": json.dumps(doc, indent=2) + "\n",
        out_dir / "experiment.html": render_html(res),
    }
    if res.sensitivity is not None:
        files[out_dir / "sensitivity.csv"] = csv_text(res.sensitivity, "%.6g")
    written = write_texts(files, inputs)
    if args.quiet:
        return o.EXIT_OK
    from yolobn.report.console import verdict_table
    from yolobn.report.tables import sensitivity_table, variants_table

    out.print(verdict_table(verdicts))
    title = (
        f"experiment {args.file} · {res.meta.get('path') or res.meta.get('source')} on {res.config['data']}"
    )
    out.print(
        variants_table(res.results, (res.metric,), title, images=False, width=out.width, wide=args.wide)
    )
    if res.sensitivity is not None:
        out.print(sensitivity_table(res.sensitivity, res.metric, int(cfg["sensitivity"].get("top") or 10)))
    o.print_written(out, written)
    return o.EXIT_OK
