"""Everything the CLI does, as one call each (for notebooks and scripts). Nothing here prints.

>>> import yolobn
>>> ins = yolobn.inspect("best.pt")                                  # yolobn inspect
>>> obs = yolobn.observe(ins, ["val/images"])                        # yolobn activations
>>> html = yolobn.write_report(obs, "reports/best")                  # yolobn report --images
>>> res = yolobn.swap_validate("best.pt", ["reference", "reference:eps=1e-5"], data="data.yaml")
>>> exp = yolobn.run_experiment("examples/eps.yaml", trust=True)   # yolobn experiment
>>> cmp = yolobn.compare("last.pt", "best.pt")                       # yolobn compare
>>> cmp = yolobn.compare("base.pt", "tuned.pt", images=["train/images"], data="data.yaml")  # --images --data
>>> fr = yolobn.prune_frontier("best.pt", "data.yaml", ["val/images"])  # yolobn frontier
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yolobn.bn.comparison import Comparison
from yolobn.bn.comparison import compare as compare_parameters
from yolobn.bn.inspection import Inspection, inspect
from yolobn.core.errors import YolobnError
from yolobn.core.outputs import guard_folder, output_folder
from yolobn.core.thresholds import Thresholds
from yolobn.data import DEMO_STEM
from yolobn.evaluate.effect import recalibration_effect
from yolobn.io.images import collect_images, model_imgsz
from yolobn.io.loader import LoadedModel, load, source_file
from yolobn.report.export import REPORT_FILES, write_texts
from yolobn.report.html import report_files
from yolobn.run.drift import compare_images
from yolobn.run.observation import observe
from yolobn.sweeps import experiment as ex
from yolobn.sweeps.experiment import ExperimentResult
from yolobn.sweeps.frontier import Frontier, frontier
from yolobn.sweeps.variants import Settings, Variant, VariantsResult, run_variants

__all__ = ["compare", "prune_frontier", "run_experiment", "swap_validate", "write_report"]


def write_report(
    source: Any = None,
    out: str | os.PathLike[str] | None = None,
    *,
    images: Sequence[str | os.PathLike[str]] | None = None,
    thresholds: Any = None,
    select: Sequence[str] | None = None,
    exist_ok: bool = False,
    trust: bool = False,
) -> Path:
    """Write the report folder (report.html, layers.csv, channels.csv, summary.json).

    Args:
        source: an ``Inspection`` (observed or not) or anything ``yolobn.inspect`` takes.
        out: the folder; default ``reports/<model-stem>``, incremented (``...2``, ``...3``) when it
            exists unless ``exist_ok``.
        images: also observe on these images (files/folders) when ``source`` is not yet observed.
        thresholds, select, trust: as ``yolobn.inspect``.

    Returns:
        The path of report.html.
    """

    given = {Path(p): "an input image" for p in images or []}
    if isinstance(source, (str, os.PathLike)):
        given[Path(source)] = "the input model"
    if out is not None:  # before any work: the folder, and the files it would hold
        guard_folder(out, REPORT_FILES, "", given)
    ins = (
        source
        if isinstance(source, Inspection)
        else inspect(source, thresholds=thresholds, select=select, trust=trust)
    )
    if images is not None and ins.observation is None:
        ins = observe(ins, list(images) or None)
    stem = Path(ins.meta.path).stem if ins.meta.path else DEMO_STEM
    folder = output_folder(Path(out) if out is not None else None, Path("reports") / stem, exist_ok)
    inputs = {**given, **_report_inputs(ins)}
    guard_folder(folder, REPORT_FILES, "", inputs)
    write_texts(report_files(ins, folder), inputs)
    return folder / "report.html"


def _report_inputs(ins: Any) -> dict[Path, str]:
    """The input files behind an Inspection (its checkpoint, the images it was observed on):
    what its report may never replace."""
    inputs: dict[Path, str] = {}
    src = source_file(ins.meta)
    if src is not None:
        inputs[src] = "the input model"
    if ins.observation is not None:
        inputs.update({Path(p): "an input image" for p in ins.observation.images})
    return inputs


def swap_validate(
    model: Any = None,
    impls: Sequence[str] | str = ("reference",),
    *,
    data: str | None = None,
    images: Sequence[str | os.PathLike[str]] | None = None,
    layers: Sequence[str] | None = None,
    imgsz: int | None = None,
    batch: int = 16,
    device: str = "cpu",
    cache: bool = True,
    trust: bool = False,
) -> VariantsResult:
    """``yolobn swap``: each implementation against the (cached) baseline.

    Args:
        model: anything ``yolobn.load`` takes (default: the demo model).
        impls: implementation specs (``reference``, ``reference:eps=1e-5``, ``mypkg:MyBN``, ...).
        data: a dataset to validate on (default ``shapes`` for the demo model when no images).
        images: a label-free comparison on these images (files or folders) instead of, or beside,
            the validation.
        layers: the BN layers to swap (globs, block types, roles).

    Returns:
        ``yolobn.sweeps.variants.VariantsResult``: ``.table`` (one row per variant), ``.metrics``.
    """

    loaded = model if isinstance(model, LoadedModel) else load(model, trust=trust)
    if data is None and images is None:
        if loaded.meta.kind != "demo":
            raise YolobnError("swap_validate: give data= (a dataset yaml) or images= (a label-free check)")
        data = "shapes"
    specs = [impls] if isinstance(impls, str) else list(impls)
    variants = [Variant.of(s, layers) for s in specs]
    paths = collect_images([os.fspath(p) for p in images]) if images is not None else None
    settings = Settings(
        data=data,
        images=paths,
        imgsz=model_imgsz(loaded, imgsz),
        batch=batch,
        device=device,
        trust=trust,
        cache=cache,
    )
    return run_variants(loaded, variants, settings)


def run_experiment(
    config: str | os.PathLike[str] | dict[str, Any], *, trust: bool = False
) -> ExperimentResult:
    """``yolobn experiment``: an experiment file (path) or its content (a dict, as the file would hold).

    Returns:
        ``yolobn.sweeps.experiment.ExperimentResult`` (``.results``, ``.sensitivity``, ``.metric``).
    """
    import tempfile

    if isinstance(config, dict):
        import yaml

        with tempfile.TemporaryDirectory() as d:  # the same checks as a file
            p = Path(d) / "experiment.yaml"
            p.write_text(yaml.safe_dump(config))
            cfg = ex.read_config(p, trust=trust)
        return ex.run_experiment(cfg, base_dir=Path.cwd(), trust=trust)
    p = Path(config)
    cfg = ex.read_config(p, trust=trust)
    return ex.run_experiment(cfg, base_dir=p.resolve().parent, trust=trust)


def prune_frontier(
    model: Any = None, data: str = "shapes", images: Sequence[str] | None = None, **kwargs: Any
) -> Frontier:
    """``yolobn frontier`` (see ``yolobn.sweeps.frontier.frontier`` for the options)."""

    return frontier(model, data, images, **kwargs)


def compare(
    a: Any,
    b: Any,
    *,
    images: Sequence[str | os.PathLike[str]] | None = None,
    data: str | os.PathLike[str] | None = None,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 16,
    device: str = "cpu",
    thresholds: Thresholds | None = None,
    trust: bool = False,
) -> Comparison:
    """``yolobn compare A B [--images DIR [--data DATA]]``: what changed in the BN layers from A to B.

    Args:
        a, b: anything ``yolobn.inspect`` takes (path, LoadedModel, Inspection, ...). A is "before".
        images: also run both on these images (files/folders; ``[]``: B's default images) and add
            their drift (``drift_a``, ``drift_b``, ``drift_rise``): whether B's stored statistics
            still fit its weights, which the BN parameters alone cannot show.
        data: with ``images``: also validate A, B and B recalibrated on the images, on this dataset
            (``observed["effect"]``), so that the answer says what recalibrating recovers.
        max_images, imgsz, batch, device: how the images are run (imgsz: B's training imgsz).
        thresholds: dead-channel thresholds, the same for both. trust: full unpickle.

    Returns:
        ``yolobn.bn.comparison.Comparison`` (``.layers``, ``.channels``, ``.summary()``,
        ``.verdicts()``, ``.observed``).
    """
    if data is not None and images is None:
        raise YolobnError("compare: data= needs images= (B is recalibrated on the images, then validated)")
    cmp = compare_parameters(a, b, thresholds=thresholds, trust=trust)
    if images is None:
        return cmp
    cmp = compare_images(cmp, images, max_images=max_images, imgsz=imgsz, batch=batch, device=device)
    if data is not None:
        cmp = recalibration_effect(cmp, data, batch=batch, device=device, trust=trust)
    return cmp
