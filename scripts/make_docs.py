"""Write docs/commands.md from the CLI's own parsers (and the implementation table from the registry).

    python scripts/make_docs.py         # tests/test_docs.py fails when docs/commands.md is stale

The reference is generated so that it cannot drift from the options: every option, its default
and its help come from ``yolobn.cli.build_parser()``; the ``--impl`` table from
``yolobn.core.registry.markdown_table()``. The hand-written notes per command live in NOTES below.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOTES = {
    "inspect": "Loads the model safely (see [safety](safety.md)), finds every BatchNorm and prints a summary "
    "and the layers most worth a look. How every number is computed: [numbers](numbers.md).",
    "report": "One self-contained `report.html` (works offline from `file://`, no network request, under 3 MB "
    "for a YOLO11x) with the plots, a sortable and filterable layer table with per-channel details, and the "
    "CSV/JSON beside it, written from the same data. `--run DIR` renders a training tracked with "
    "`yolobn.track(model)` instead (training.html).",
    "activations": "Observes every BatchNorm on real images (preprocessed exactly as Ultralytics' predict), "
    "and scores the data-free prediction against what the channels do: observed dead channels, recall and "
    "precision of the prediction, drift of the stored statistics.",
    "recalibrate": "Sets every BN's running mean and variance to the mean and population variance of its input "
    "over all the images, as the recalibrated model sees them in eval mode; afterwards `yolobn activations` "
    "on the same images shows no drift. The result does not depend on `--batch` (only memory and speed), on "
    "image order or sizes. It works layer by layer in dependency order, replaying finished layers from memory "
    "(`--cache-mb`); on the demo it costs about 4 forward passes. On the demo, recalibrating on the training "
    "images gives mAP50-95 0.620 instead of 0.629: the stored statistics came from augmented batches the "
    "weights co-adapted with; with `--data` the command measures this and warns. Recalibrate when the data "
    "has moved (high drift, a new domain, pruned or fine-tuned layers), not as a routine step. A model whose "
    "statistics were reset (mAP 0) comes back to 0.620.",
    "swap": "Validates with Ultralytics' own validator on a private copy whose `fuse()` does nothing: "
    "`model.val()` would fold any swapped-in BN back into the conv and measure the original model. The "
    "baseline is cached by checkpoint sha256 + dataset + settings. Every row is kept as it finishes and a "
    "rerun resumes (`--no-resume` to redo); `--ray` runs each validation as a Ray task "
    "(see [scale](scale.md)). Writes swap.csv, swap.json and swap.html.",
    "experiment": "Runs the variants of a YAML file (and an optional one-layer-at-a-time sensitivity sweep) "
    "against one cached baseline; results.csv, results.json, sensitivity.csv and experiment.html. A file "
    "that names a custom class (Python code) needs `--trust`.",
    "compare": "Two checkpoints of the same architecture: layers matched by name; per channel the Gaussian KL "
    "of the running statistics and of the BN output (exactly 0 when nothing changed), dead-channel "
    "transitions. More than two, or different architectures: an audit table.",
    "frontier": "Ranks every channel by a criterion, ablates the lowest k % (replaced after their activation "
    "by their observed mean) and validates each point; the largest share removable within the tolerance, per "
    "criterion and per role.",
    "prune": "Removes the channels the frontier would ablate, physically: a dependency graph over Ultralytics' "
    "blocks ties channels that must go together (residual adds, depthwise convolutions, the two halves of a "
    "C2f split) and keeps what cannot go (attention widths, head outputs, blocks it has no rule for), and each "
    "removed channel's observed mean after its activation is folded into what reads it. The pruned model equals "
    "the ablated one except at border pixels (zero padding): the border residual is measured and reported "
    "([numbers](numbers.md#pruning-removal-that-equals-ablation)). Writes the checkpoint and, in the report "
    "folder, prune.html, prune.json, layers.csv, residual.csv and search.csv, all or nothing.",
    "finetune": "Runs the task's own Ultralytics trainer on the pruned model itself (its `get_model` returns "
    'it): `YOLO("pruned.pt").train()` would rebuild the model from its yaml at the original widths. The '
    "checkpoint is read with the safe loader and the dataset yaml's `download:` never runs without `--trust`.",
}


def _default(a: argparse.Action) -> str:
    if a.default is None or a.default is False or a.default == argparse.SUPPRESS or a.nargs == 0:
        return ""
    if isinstance(a.default, list):
        return ""
    return f"`{a.default}`"


def _flags(a: argparse.Action) -> str:
    if not a.option_strings:
        return f"`{a.metavar or a.dest.upper()}`"
    meta = ""
    if a.nargs != 0:
        meta = " " + (a.metavar if isinstance(a.metavar, str) else a.dest.upper())
        if a.nargs in ("*", "?"):
            meta = f" [{meta.strip()} ...]" if a.nargs == "*" else f" [{meta.strip()}]"
    return ", ".join(
        f"`{s}{meta if s.startswith('--') or len(a.option_strings) == 1 else ''}`" for s in a.option_strings
    )


def command_section(name: str, p: argparse.ArgumentParser) -> str:
    lines = [f"## {name}", "", p.description or "", ""]
    if name in NOTES:
        lines += [NOTES[name], ""]
    if p.epilog:
        lines += ["```text", p.epilog.rstrip(), "```", ""]
    lines += ["| option | default | meaning |", "| --- | --- | --- |"]
    for a in p._actions:
        if isinstance(a, argparse._HelpAction) or a.help == argparse.SUPPRESS:
            continue
        text = (a.help or "").replace("|", "\\|").replace("%%", "%")
        if a.choices and not isinstance(a.choices, dict):
            text += f" (one of: {', '.join(map(str, a.choices))})"
        lines.append(f"| {_flags(a)} | {_default(a)} | {text} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    from yolobn.cli import build_parser
    from yolobn.core.registry import markdown_table

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = [
        "# Command reference",
        "",
        "Generated from the CLI's own parsers by `python scripts/make_docs.py` (a test keeps it in step). "
        "Every command accepts Ultralytics-style `key=value` arguments too (`yolobn swap model=best.pt "
        "data=data.yaml impl=reference`): a value is always a value, never a flag (`model=--trust` names a "
        "file called `--trust`), a switch takes `true` or `false` (`exist_ok=true`), and `trust=` is refused: "
        "trust is given only by typing `--trust`. Options are never matched by a prefix (`--tru` is an "
        "error, not `--trust`). Every command prints one line and exits 2 on bad input (1 is a bug; "
        "`--debug` adds the traceback and keeps the exit code), and writes its files all or nothing, never "
        "over an input, never over a device or pipe (`/dev/null`, a FIFO: written into, not replaced; see "
        "[safety](safety.md#outputs)). `-` as the file of `--csv`, `--channels-csv` or `--json` writes that "
        "file to stdout alone. Terminal output fits the terminal's width (80 columns and up); piped, it is "
        "`COLUMNS` wide when that is set, else up to 200 columns.",
        "",
        "Every example runs as written from the repository's root, in order (a test runs them all), after "
        "`cp yolobn/data/demo_yolo11n_shapes.pt best.pt` (a copy of the demo is still the demo: its images "
        "and its dataset are the defaults). `shapes` is the demo's synthetic dataset and `examples/images/` "
        "eight of its validation images; with your own model, give your images and dataset yaml.",
        "",
        "Contents: " + " · ".join(f"[{n}](#{n})" for n in sub.choices),
        "",
    ]
    for name, p in sub.choices.items():
        parts.append(command_section(name, p))
        if name == "swap":
            parts += [
                "### BatchNorm implementations (`--impl`)",
                "",
                "<!-- impl-table -->",
                markdown_table(),
                "<!-- /impl-table -->",
                "",
                CUSTOM,
                "",
            ]
    return "\n".join(parts).rstrip() + "\n"


CUSTOM = """**Your own class.** `--impl module.path:Class` or `--impl path/to/file.py:Class` (Python code you
chose to run; inside an experiment file it needs `--trust`). Give either a classmethod
`from_batchnorm(bn)` returning your module, or a constructor with BatchNorm2d's arguments
(`num_features, eps=, momentum=, affine=, track_running_stats=`) whose instance accepts
`load_state_dict(bn.state_dict())`. The module must return a tensor of the input's shape; a class
that cannot be imported, is not an `nn.Module`, fails to build or returns the wrong shape gets one
line saying which. `examples/custom_bn.py` is a worked example (an int8 multiply-add BN with one
power-of-two exponent per layer)."""


if __name__ == "__main__":
    out = ROOT / "docs" / "commands.md"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
