"""Resumable sweeps: every result row is written to disk the moment it finishes.

A sweep (the variants and sensitivity layers of an experiment, the points of a frontier, the
variants of a swap) is many independent measurements of one checkpoint. Each finished
measurement is appended as one JSON line to a rows file under ``$YOLOBN_CACHE/sweeps/``, keyed by
everything that decides its value: the checkpoint's sha256, the variant (implementation, options,
the sha256 of a custom class's source, the layers) or the ablation plan, the dataset (the sha256
of its yaml), the settings (imgsz, batch, device, images), and the versions of yolobn's own source,
Ultralytics and torch. A rerun after Ctrl-C, a crash or a lost machine reads the file and skips
every row that finished; nothing is ever reused across a change of any of those.

The file is append-only, one line per row, flushed and fsynced per line: a line cut short by a
crash is skipped when read; the last line of a key wins. Failed rows are written too (with their
one-line reason) but never reused: a rerun tries them again. This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Row", "RowStore", "canonical", "code_version", "digest", "row_key", "sweeps_dir"]


@dataclass
class Row:
    """One finished measurement.

    Attributes:
        key: the row key (see ``row_key``). label: what it measured, for people reading the file.
        ok: False when it failed; ``error`` then says why, in one line.
        value: what the task returned (metrics, output differences, counts): JSON-able.
        seconds: how long the task took. worker: where (``host:pid``).
    """

    key: str
    label: str
    ok: bool
    value: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = math.nan
    worker: str = ""


def canonical(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the text a key is hashed from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


def row_key(identity: dict[str, Any], task: dict[str, Any]) -> str:
    """The key of one row: the sweep's identity (checkpoint, dataset, settings, versions) + the task's."""
    return digest([identity, task])


_CODE: str | None = None


def code_version() -> str:
    """sha256 over yolobn's own Python source: a row measured by other code is never reused."""
    global _CODE
    if _CODE is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for p in sorted(root.rglob("*.py")):
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
        _CODE = h.hexdigest()
    return _CODE


def sweeps_dir() -> Path:
    return Path(os.environ.get("YOLOBN_CACHE") or Path.home() / ".cache" / "yolobn") / "sweeps"


class RowStore:
    """The rows file of one sweep identity (append-only JSON lines); ``path=None`` keeps nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: Any = None

    @classmethod
    def for_identity(cls, identity: dict[str, Any] | None, root: Path | None = None) -> RowStore:
        """The store of a sweep identity under ``root`` (default ``$YOLOBN_CACHE/sweeps``); a model
        without a file (no sha256, ``identity=None``) keeps no rows."""
        if identity is None:
            return cls(None)
        return cls((root or sweeps_dir()) / f"{digest(identity)[:24]}.jsonl")

    def finished(self, keys: Iterable[str] | None = None) -> dict[str, Row]:
        """The rows that finished without failing (the last line of a key wins), among ``keys``."""
        rows: dict[str, Row] = {}
        if self.path is None or not self.path.is_file():
            return rows
        want = set(keys) if keys is not None else None
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    d = json.loads(line)
                    row = Row(**{k: d[k] for k in Row.__dataclass_fields__ if k in d})
                except (ValueError, TypeError, KeyError):
                    continue  # a line cut short by a crash, or not ours
                if want is None or row.key in want:
                    rows[row.key] = row
        return {k: r for k, r in rows.items() if r.ok}

    def write(self, row: Row) -> None:
        """Append one row and make it durable before returning (a crash right after keeps it)."""
        if self.path is None:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        d = asdict(row)
        d["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._fh.write(json.dumps(d, default=_plain) + "\n")
        self._fh.flush()
        with contextlib.suppress(OSError):
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _plain(x: Any) -> Any:
    """numpy and torch scalars as plain numbers; anything else as its text."""
    item = getattr(x, "item", None)
    if callable(item):
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            return item()
    return str(x)
