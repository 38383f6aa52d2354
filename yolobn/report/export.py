"""CSV and JSON files from an Inspection, written all-or-nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from yolobn.core.atomic import write_files
from yolobn.core.precision import FLOAT_FORMAT

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["REPORT_FILES", "channels_csv", "layers_csv", "write_texts"]

REPORT_FILES = ("report.html", "layers.csv", "channels.csv", "summary.json")  # what ``yolobn report`` writes


def layers_csv(layers: pd.DataFrame) -> str:
    return str(layers.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))


def channels_csv(channels: pd.DataFrame) -> str:
    return str(channels.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n"))


def write_texts(files: Mapping[Path, str], inputs: Mapping[Path, str] | None = None) -> list[Path]:
    """Write every file or none, none of them an input (``yolobn.core.atomic.write_files``)."""
    return write_files(files, inputs)
