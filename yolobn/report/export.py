"""CSV and JSON files from an Inspection, written all-or-nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolobn.core.atomic import write_files
from yolobn.core.precision import FLOAT_FORMAT
from yolobn.core.text import visible

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["REPORT_FILES", "channels_csv", "csv_text", "layers_csv", "write_texts"]

REPORT_FILES = ("report.html", "layers.csv", "channels.csv", "summary.json")  # what ``yolobn report`` writes


def csv_text(table: pd.DataFrame, float_format: str = FLOAT_FORMAT) -> str:
    """``table`` as the CSV text yolobn writes. Strings (layer and class names, paths, labels: they can
    come from input files) have their control characters made visible (``core.text.visible``): CSV
    has no escape of its own, and a raw escape sequence would reach the terminal of whoever runs
    ``cat`` on the file."""
    import pandas as pd

    def cell(v: Any) -> Any:
        return visible(v) if isinstance(v, str) else v

    shown = table.rename(columns=lambda c: visible(str(c)))
    text_cols = [
        c for c in shown.columns if shown[c].dtype == object or pd.api.types.is_string_dtype(shown[c])
    ]
    if text_cols:
        shown = shown.assign(**{c: shown[c].map(cell) for c in text_cols})
    return str(shown.to_csv(index=False, float_format=float_format, lineterminator="\n"))


def layers_csv(layers: pd.DataFrame) -> str:
    return csv_text(layers)


def channels_csv(channels: pd.DataFrame) -> str:
    return csv_text(channels)


def write_texts(files: Mapping[Path, str], inputs: Mapping[Path, str] | None = None) -> list[Path]:
    """Write every file or none, none of them an input (``yolobn.core.atomic.write_files``)."""
    return write_files(files, inputs)
