"""Option groups shared by the commands, and their conversion into the library's objects.

Declaring an option here (once) keeps its flag, default and help the same in every command; the
threshold options come from the dataclass fields in ``yolobn.core.thresholds``. Nothing here imports
torch at parser-building time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

# the terminal's helpers, re-exported (pyproject: implicit_reexport here): commands call them as options.X
from yolobn.cli.terminal import (  # noqa: F401
    consoles,
    file_link,
    print_written,
    progress_bar,
    status,
    unit_of,
    warn_cannot_run,
    warn_failed,
    warn_skipped,
)
from yolobn.core.limits import MAX_BATCH, MAX_IMGSZ, MIN_IMGSZ
from yolobn.core.thresholds import ObservedThresholds, Thresholds, options
from yolobn.data import DEMO_STEM, demo_model_path

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
EXIT_PIPE = 141  # 128 + SIGPIPE: the reader of stdout closed it, as a shell reports for cat or git
EXIT_CODES = (
    "exit codes: 0 success, 1 internal error, 2 bad input or usage, 141 stdout closed by its reader\n"
)
TOP = 15  # rows of a layer table by default: the rest is in the files, or --all


class Parser(argparse.ArgumentParser):
    """yolobn's parser: one-line errors, and no prefix matching (``--tru`` is not ``--trust``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """One line, exit 2, like every other bad input: ``yolobn: error: --top -1: must be at least 0``."""
        m = re.fullmatch(r"argument ([^:/\s]+)(?:/\S+)?: (.*)", message, flags=re.S)
        if m and not m.group(2).startswith(("expected", "invalid choice", "ignored")):
            message = f"{m.group(1)} {m.group(2)}"
        self.exit(EXIT_USAGE, f"yolobn: error: {message} (see {self.prog} --help)\n")


def debug_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error (the exit code stays the same)",
    )
    return p


def command(sub: Any, name: str, *, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand parser with ``--debug`` and the examples epilog kept as written."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        parents=[debug_parent()],
        help=help,
        description=description,
        epilog=epilog + ("\n" if not epilog.endswith("\n") else "") + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return p


def number(kind: type, least: float = 0, most: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` number from ``least`` to ``most`` (one-line error otherwise)."""

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not v >= least:  # also NaN
            raise argparse.ArgumentTypeError(f"{text}: must be at least {least:g}")
        if most is not None and v > most:
            raise argparse.ArgumentTypeError(f"{text}: must be at most {most:g}")
        if kind is float and v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text}: must be finite")
        return v

    return parse


# --------------------------------------------------------------------------------------------------
# arguments and groups


def model_argument(p: argparse.ArgumentParser, what: str = "checkpoint (.pt) or model yaml") -> None:
    p.add_argument("model", nargs="?", default=None, help=f"{what}; default: the bundled demo model")


def trust_argument(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--trust", action="store_true", help=f"trust the input files: {what} (runs code: trusted files only)"
    )


def strict_argument(p: Any) -> None:
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a damaged checkpoint (zip records that fail their CRC check) instead of noting it",
    )


TRUST_MODEL = "full unpickle of a .pt, Python in a model yaml"
TRUST_DATA = "full unpickle of a .pt, the dataset yaml's download script"


def layers_argument(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--layers", action="append", metavar="PATTERN", help=help)


LAYERS_HELP = (
    "keep BN layers whose name matches this glob ('model.2*'), or whose block type or role is this "
    "(C3k2, backbone); repeatable"
)


def quiet_argument(p: Any) -> None:
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing on success (files are still written)"
    )


def threshold_group(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dead-channel thresholds")
    for _, flag, default, metavar, text in options(Thresholds):
        g.add_argument(flag, type=number(float), default=default, metavar=metavar, help=text)


def observed_threshold_group(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("observed dead-channel thresholds")
    for _, flag, default, metavar, text in options(ObservedThresholds):
        g.add_argument(flag, type=number(float), default=default, metavar=metavar, help=text)


def table_group(p: argparse.ArgumentParser, sort_keys: list[str], layers_what: str) -> None:
    g = p.add_argument_group("display")
    g.add_argument(
        "--sort",
        default="rank",
        choices=sort_keys,
        help="table order (default rank: the layers most worth a look first; index: model order)",
    )
    g.add_argument(
        "--top",
        type=number(int),
        default=TOP,
        metavar="N",
        help=f"show the first N rows of the table (default {TOP})",
    )
    g.add_argument("--all", action="store_true", help="show every layer in the table")
    quiet_argument(g)
    o = p.add_argument_group("output files")
    o.add_argument("--csv", type=Path, metavar="FILE", help=f"{layers_what} as CSV ('-': stdout)")
    o.add_argument(
        "--channels-csv", type=Path, metavar="FILE", help="per-channel statistics as CSV ('-': stdout)"
    )
    o.add_argument(
        "--json", type=Path, metavar="FILE", help="metadata, summary and per-layer rows as JSON ('-': stdout)"
    )


def image_group(p: argparse.ArgumentParser, *, optional: bool, batch: int = 16) -> None:
    g = p.add_argument_group("images")
    g.add_argument(
        "--images",
        nargs="*",
        metavar="PATH",
        help=(
            "also observe activations on these images (files or folders); "
            if optional
            else "images (files or folders); "
        )
        + "with no PATH: the synthetic training images for the demo model, Ultralytics' bus.jpg "
        "and zidane.jpg otherwise. Put MODEL before --images",
    )
    g.add_argument(
        "--max-images", type=number(int, 1), metavar="N", help="use at most N images (the first, sorted)"
    )
    g.add_argument(
        "--imgsz",
        type=number(int, MIN_IMGSZ, MAX_IMGSZ),
        help="inference size (default: the checkpoint's training imgsz, else 640)",
    )
    g.add_argument(
        "--batch",
        type=number(int, 1, MAX_BATCH),
        default=batch,
        help=f"images per forward pass (default {batch})",
    )
    g.add_argument("--device", default="cpu", help="cpu, 0, cuda:0 (default cpu)")


# --------------------------------------------------------------------------------------------------
# conversions


def thresholds(args: argparse.Namespace) -> Thresholds:
    t: Thresholds = _build(Thresholds, args)
    return t


def observed_thresholds(args: argparse.Namespace) -> ObservedThresholds:
    t: ObservedThresholds = _build(ObservedThresholds, args)
    return t


def _build(cls: Any, args: argparse.Namespace) -> Any:
    from yolobn.core.errors import YolobnError

    try:
        return cls(**{name: getattr(args, name) for name, *_ in options(cls)})
    except ValueError as e:
        raise YolobnError(str(e)) from None


def model_stem(model: str | None) -> str:
    return Path(model).stem if model else DEMO_STEM


def table_outputs(args: argparse.Namespace) -> dict[str, Path | None]:
    """--csv, --channels-csv and --json, labelled as errors name them (``--json out.json``)."""
    opts = {"--csv": args.csv, "--channels-csv": args.channels_csv, "--json": args.json}
    return {f"{k} {v}": v for k, v in opts.items()}


def check_table_args(args: argparse.Namespace, inputs: dict[Path, str] | None = None) -> dict[Path, str]:
    """The output files of inspect, activations and compare, checked before any work (the output
    guard, against ``inputs``, default the model's); and the checkpoint's hash started in a thread
    while torch and pandas import (the loader picks it up). Returns the inputs checked against."""
    from yolobn.core import digest
    from yolobn.core.errors import YolobnError
    from yolobn.core.outputs import guard_outputs

    model_path = Path(args.model) if args.model else None
    if model_path and model_path.suffix.lower() not in (".yaml", ".yml"):
        digest.prefetch(model_path)
    outputs = {"--csv": args.csv, "--channels-csv": args.channels_csv, "--json": args.json}
    to_stdout = [k for k, v in outputs.items() if v is not None and str(v) == "-"]
    if len(to_stdout) > 1:
        raise YolobnError(f"{' and '.join(to_stdout)}: only one output can go to stdout ('-')")
    if to_stdout:
        args.quiet = True  # stdout carries the data alone
    inputs = input_files(args.model) if inputs is None else inputs
    guard_outputs(table_outputs(args), inputs)
    return inputs


def protect_inputs(args: argparse.Namespace, images: list[Path] | None) -> dict[Path, str]:
    """No --csv/--channels-csv/--json may be an input file (the model, an image): the inputs."""
    from yolobn.core.outputs import guard_outputs

    inputs = input_files(args.model, images=images)
    guard_outputs(table_outputs(args), inputs, probe=False)
    return inputs


def input_files(
    model: str | None,
    *,
    data: str | None = None,
    images: list[Path] | None = None,
    more: dict[Path, str] | None = None,
) -> dict[Path, str]:
    """Every input file of a command (what no output may replace): the model file (the bundled
    demo when none is given), the dataset yaml, the images, and ``more`` (path -> what it is)."""
    files: dict[Path, str] = {}
    model_path = Path(model).expanduser() if model else demo_model_path()
    if model_path.exists():
        yaml = model_path.suffix.lower() in (".yaml", ".yml")
        files[model_path] = "the input model yaml" if yaml else "the input checkpoint"
    if data and data != "shapes" and Path(data).expanduser().is_file():
        files[Path(data).expanduser()] = "the dataset yaml"
    for p in images or []:
        files[Path(p)] = "an input image"
    for p, what in (more or {}).items():
        if p is not None and Path(p).expanduser().exists():
            files[Path(p).expanduser()] = what
    return files


def early_images(args: argparse.Namespace) -> list[Path] | None:
    """Explicit --images checked before any loading (a typo fails at once); None means the defaults."""
    if not getattr(args, "images", None):
        return None
    from yolobn.core.errors import YolobnError
    from yolobn.io.images import collect_images

    for p in args.images:
        if p.lower().endswith((".pt", ".pth", ".yaml", ".yml")):
            raise YolobnError(f"--images {p}: is a model, not an image; put MODEL before --images")
    return collect_images(args.images, args.max_images)


def write_outputs(
    args: argparse.Namespace, result: Any, inputs: dict[Path, str], extra: dict[Path, str] | None = None
) -> list[Path]:
    """--csv, --channels-csv and --json of inspect, activations and compare (and ``extra`` files),
    all or nothing, none of them an input (``inputs``, and the images the result was observed on)."""
    from yolobn.report.export import channels_csv, layers_csv, write_texts

    texts: dict[Path, str] = dict(extra or {})
    if args.csv:
        texts[args.csv] = layers_csv(result.layers)
    if args.channels_csv:
        texts[args.channels_csv] = channels_csv(result.channels)
    if args.json:
        texts[args.json] = result.to_json()
    observation = getattr(result, "observation", None)
    seen = {Path(p): "an input image" for p in observation.images} if observation is not None else {}
    files = {p: t for p, t in texts.items() if str(p) != "-"}
    written = write_texts(files, {**seen, **inputs}) if files else []
    for p, t in texts.items():
        if str(p) == "-":  # after the files: nothing reaches stdout unless every file was written
            sys.stdout.write(t)
            sys.stdout.flush()
    return written


def inspect_with_status(args: argparse.Namespace, th: Thresholds, err: Any) -> Any:
    """Run the inspection, with a spinner on stderr when it is a terminal (inspect and report)."""
    from yolobn.bn.inspection import inspect
    from yolobn.io.loader import load

    def run() -> Any:
        loaded = load(args.model, trust=args.trust, strict=args.strict)
        return inspect(loaded, thresholds=th, select=args.layers)

    if args.quiet or not err.is_terminal:
        return run()
    with err.status(f"loading and inspecting {args.model or 'the demo model'} ..."):
        return run()


def observe_images(args: argparse.Namespace, inspection: Any, err: Any, images: list[Path] | None) -> Any:
    """observe() on an Inspection's tables, with a progress bar over the images (stderr, terminal only)."""
    from yolobn.io.checks import require_runnable
    from yolobn.io.images import model_imgsz
    from yolobn.run.device import parse_device
    from yolobn.run.observation import observe

    require_runnable(inspection.loaded)  # before any image is read: one line naming the module that fails
    parse_device(args.device)
    model_imgsz(inspection.loaded, args.imgsz)

    with progress_bar(err, getattr(args, "quiet", False)) as bar:
        job = bar.add_task("observing activations", total=None, unit="images")

        def progress(done: int, total: int) -> None:
            bar.update(job, completed=done, total=total)

        result = observe(
            inspection,
            [str(p) for p in images] if images else None,
            max_images=args.max_images,
            imgsz=args.imgsz,
            batch=args.batch,
            device=args.device,
            observed=observed_thresholds(args),
            progress=progress,
        )
    warn_skipped(err, result.observation.skipped)
    return result


def layer_rows(
    args: argparse.Namespace, layers: Any, keys: dict[str, tuple[str, bool]] | None = None
) -> tuple[Any, str]:
    """The rows a layer table shows (``--sort``, ``--top``, ``--all``) and the line that says what
    is left out."""
    from yolobn.bn.inspection import sort_layers

    ordered = sort_layers(layers, args.sort, keys)
    shown = ordered if args.all else ordered.head(args.top)
    rule = (
        "most worth a look first (findings, then dead, eps-dominated and drift; see docs/numbers.md)"
        if args.sort == "rank"
        else f"sorted by {args.sort}"
    )
    more = len(ordered) - len(shown)
    if more <= 0:
        return shown, f"{len(shown)} layers, {rule}"
    return shown, f"{len(shown)} of {len(ordered)} layers, {rule}; {more} more: --all, or --top N"


def exist_ok_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="write into the default output folder even if it exists (default: a new folder, <name>2, <name>3, ...)",
    )


def output_dir(out: Path | None, default: Path, exist_ok: bool) -> Path:
    """``-o DIR`` as given, else ``default`` incremented (``reports/best2``, ...) unless ``--exist-ok``."""
    from yolobn.core.outputs import output_folder

    return output_folder(out, default, exist_ok, "--out")


def fanout_group(p: argparse.ArgumentParser) -> None:
    """``--ray`` and ``--resume``: where the many validations of a sweep run, and whether finished rows are reused."""
    g = p.add_argument_group("many validations (yolobn.sweeps.fanout)")
    g.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="run each validation as a Ray task: 'auto' (no value: the cluster this machine knows, else a new "
        "local one), 'local', or a cluster address (head:6379, ray://head:10001); pip install 'yolobn[ray]'",
    )
    g.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip the rows an earlier run of the same sweep finished, e.g. before Ctrl-C or a crash "
        "(default; --no-resume measures them again)",
    )


def execution(args: argparse.Namespace, err: Any) -> Any:
    """The ``Execution`` of ``--ray``/``--resume``; a missing Ray is a one-line error, before any work."""
    from yolobn.sweeps.fanout import Execution, require_ray
    from yolobn.sweeps.rayconnect import parse_ray_address

    if args.ray is not None:
        parse_ray_address(args.ray)  # a malformed address or a model file: one line, before any work
        require_ray()

    def notify(line: str) -> None:
        err.print(line, soft_wrap=True, highlight=False, markup=False)

    return Execution(ray=args.ray, resume=args.resume, notify=notify)


def given_paths(args: argparse.Namespace, demo: bool) -> Any:
    """The model, images and dataset as this command was given them (``yolobn.bn.answers.Paths``),
    for the next commands of its answers. 'shapes' is implied only for the demo; another model
    given --data shapes keeps it."""
    from yolobn.bn.answers import Paths

    images = tuple(args.images) if getattr(args, "images", None) else None
    data = getattr(args, "data", None)
    return Paths(args.model, images, None if demo and data == "shapes" else data, demo)


def verdicts(args: argparse.Namespace, result: Any) -> Any:
    """The answers of an inspection, with the next commands written with this command's own paths."""
    return result.verdicts(given_paths(args, result.meta.kind == "demo"))


def is_demo(model: str | None) -> bool:
    """The bundled demo: MODEL left out, or given by its path or a copy (same bytes)."""
    from yolobn.data import is_demo as same_bytes

    return same_bytes(model)
