"""CSV and JSON files from an Inspection, written all-or-nothing."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from yolobn.core.errors import YolobnError
from yolobn.core.text import visible

# The precision the data carries (float32/float16 tensors: about 7 significant digits), not more:
# the float64 digits beyond it differ between CPUs and thread counts (observed statistics, sums),
# so the written bytes are the same on every machine. SIGNIFICANT (JSON) matches it.
FLOAT_FORMAT = "%.7g"


def csv_text(table: pd.DataFrame, float_format: str = FLOAT_FORMAT) -> str:
    """``table`` as the CSV text yolobn writes. Strings (layer and class names, paths, labels: they can
    come from input files) have their control characters made visible (``core.text.visible``): CSV
    has no escape of its own, and a raw escape sequence would reach the terminal of whoever runs
    ``cat`` on the file."""

    def cell(v: Any) -> Any:
        return visible(v) if isinstance(v, str) else v

    shown = table.rename(columns=lambda c: visible(str(c)))
    text_cols = [
        c for c in shown.columns if shown[c].dtype == object or pd.api.types.is_string_dtype(shown[c])
    ]
    if text_cols:
        shown = shown.assign(**{c: shown[c].map(cell) for c in text_cols})
    return shown.to_csv(index=False, float_format=float_format, lineterminator="\n")


def layers_csv(layers: pd.DataFrame) -> str:
    return csv_text(layers)


def channels_csv(channels: pd.DataFrame) -> str:
    return csv_text(channels)


def check_output_paths(paths: Mapping[str, Path | None], protect: list[Path] | None = None) -> None:
    """Fail early, before any work, on output paths that cannot be written.

    Args:
        paths: option name -> path (None entries are skipped).
        protect: input files that must never be overwritten.
    """
    seen: dict[Path, str] = {}
    protected = {p.resolve() for p in (protect or []) if p}
    for opt, p in paths.items():
        if p is None:
            continue
        r = p.expanduser().resolve()
        if r.is_dir():
            raise YolobnError(f"{opt} {p}: is a directory; give a file name such as {p / 'out.csv'}")
        if r in protected:
            raise YolobnError(f"{opt} {p}: is the input model; choose another output file")
        if r in seen:
            raise YolobnError(f"{opt} {p}: same file as {seen[r]}; give each output its own file")
        seen[r] = opt
        parent = r.parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise YolobnError(f"{opt} {p}: cannot write in {parent}; choose a writable location")


def write_texts(files: Mapping[Path, str]) -> list[Path]:
    """Write every file or none (``yolobn.core.atomic.write_files``: temporary siblings, then renames)."""
    from yolobn.core.atomic import write_files

    return write_files(files)


def report_files(inspection: Any, out_dir: Path) -> dict[Path, str]:
    """The four files of ``yolobn report``: one source of truth (the Inspection) for all of them."""
    from yolobn.report.html import render_html

    return {
        out_dir / "report.html": render_html(inspection),
        out_dir / "layers.csv": layers_csv(inspection.layers),
        out_dir / "channels.csv": channels_csv(inspection.channels),
        out_dir / "summary.json": inspection.to_json(),
    }


SIGNIFICANT = 7  # digits written for a float in JSON: the precision of float32 data (as FLOAT_FORMAT)


def json_safe(obj: Any) -> Any:
    """JSON-safe values: numpy scalars to Python, NaN/inf to None (strict JSON has no NaN), floats
    rounded to ``SIGNIFICANT`` digits (the last float64 bits differ between machines)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float):
        return float(f"{obj:.{SIGNIFICANT}g}") if math.isfinite(obj) else None
    return obj


def json_text(doc: Any) -> str:
    """``doc`` as the JSON text yolobn writes: strict (no NaN), indented, 7 significant digits, ASCII
    only (``ensure_ascii``: control and bidi characters from input files are ``\\uXXXX`` escapes)."""
    import json

    return json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n"
