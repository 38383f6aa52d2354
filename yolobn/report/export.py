"""CSV and JSON files from an Inspection, written all-or-nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

# The precision the data carries (float32/float16 tensors: about 7 significant digits), not more:
# the float64 digits beyond it differ between CPUs and thread counts (observed statistics, sums),
# so the written bytes are the same on every machine. SIGNIFICANT (JSON) matches it.
FLOAT_FORMAT = "%.7g"


def layers_csv(layers: pd.DataFrame) -> str:
    return layers.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def channels_csv(channels: pd.DataFrame) -> str:
    return channels.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def write_texts(files: Mapping[Path, str], inputs: Mapping[Path, str] | None = None) -> list[Path]:
    """Write every file or none, none of them an input (``yolobn.core.atomic.write_files``)."""
    from yolobn.core.atomic import write_files

    return write_files(files, inputs)


REPORT_FILES = ("report.html", "layers.csv", "channels.csv", "summary.json")


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
    """``doc`` as the JSON text yolobn writes: strict (no NaN), indented, 7 significant digits."""
    import json

    return json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n"
