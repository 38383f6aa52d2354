"""CSV and JSON files from an Inspection, written all-or-nothing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from yolobn.core.atomic import write_files
from yolobn.core.errors import YolobnError
from yolobn.core.precision import FLOAT_FORMAT

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["channels_csv", "check_output_paths", "layers_csv", "write_texts"]


def layers_csv(layers: pd.DataFrame) -> str:
    return layers.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def channels_csv(channels: pd.DataFrame) -> str:
    return channels.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


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

    return write_files(files)
