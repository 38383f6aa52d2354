"""SHA-256 of checkpoint files and the CRC check of their zip records, in one pass over the bytes,
optionally started early in a background thread.

torch reads a checkpoint's zip records without checking their CRC-32, so a flipped bit in a weight
loads silently. ``scan`` verifies the CRC of every stored record while it hashes: the central
directory (a few KB at the end) says where each record is and what its CRC must be, and each
record's bytes are checked as the hash passes over them.

Hashing a 100 MB checkpoint costs about as much as unpickling it, but hashlib and zlib release the
GIL. The CLI therefore starts the scan of its input file with :func:`prefetch` before it imports
torch (seconds of single-threaded imports), and the loader picks the result up with :func:`take`;
without a prefetch the loader scans beside the load. This module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
import zipfile
import zlib
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["Digest", "prefetch", "scan", "sha256", "sha256_bytes", "take"]

_CHUNK = 1 << 20
_LOCAL_HEADER = 30  # fixed part of a zip local file header
_pending: dict[tuple[object, ...], Future[Digest]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Digest:
    """The file's SHA-256, how many zip records were CRC-checked, and which failed (in file order)."""

    sha256: str
    records: int = 0
    damaged: tuple[str, ...] = ()


def sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file (hex); OSError when it cannot be read."""
    return scan(path).sha256


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 of bytes in memory (hex), as ``sha256`` gives for a file holding them."""
    return hashlib.sha256(data).hexdigest()


def scan(path: str | os.PathLike[str]) -> Digest:
    """SHA-256 of the file and the CRC-32 check of every stored zip record, in one pass.

    A file that is not a zip archive (or whose directory cannot be read) is only hashed.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        records = _records(f)
        f.seek(0)
        check = _CrcCheck(records)
        pos = 0
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
            check.feed(pos, memoryview(chunk))
            pos += len(chunk)
    return Digest(h.hexdigest(), len(records), check.finish())


def _records(f: BinaryIO) -> list[tuple[int, int, int, str]]:
    """(local header offset, stored size, CRC, name) of each stored record, by offset."""
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, struct.error):
        return []
    out = [
        (i.header_offset, i.compress_size, i.CRC, i.filename)
        for i in infos
        if i.compress_type == zipfile.ZIP_STORED and not i.is_dir()
    ]
    return sorted(out)


class _CrcCheck:
    """Follows the stream chunk by chunk: each record's local header (to find where its data
    starts), then its data through zlib.crc32, compared with the central directory's CRC."""

    def __init__(self, records: list[tuple[int, int, int, str]]) -> None:
        self.records = records
        self.i = 0
        self.header = bytearray()
        self.start = self.end = -1  # data range of the current record once its header is read
        self.crc = 0
        self.damaged: list[str] = []

    def feed(self, pos: int, chunk: memoryview) -> None:
        stop = pos + len(chunk)
        while self.i < len(self.records):
            offset, length, crc, name = self.records[self.i]
            if self.start < 0:  # still reading the local header
                at = offset + len(self.header)
                if at < pos:  # overlapping records (a damaged directory): this one cannot be followed
                    self._done(False)
                    continue
                if at >= stop:
                    return
                take = min(_LOCAL_HEADER - len(self.header), stop - at)
                self.header += chunk[at - pos : at - pos + take]
                if len(self.header) < _LOCAL_HEADER:
                    return
                if self.header[:4] != b"PK\x03\x04":
                    self._done(False)
                    continue
                n, e = struct.unpack("<HH", self.header[26:30])
                self.start = offset + _LOCAL_HEADER + n + e
                self.end = self.start + length
                self.crc = 0
            a, b = max(self.start, pos), min(self.end, stop)
            if a < b:
                self.crc = zlib.crc32(chunk[a - pos : b - pos], self.crc)
            if self.end > stop:
                return
            self._done(self.crc == crc)

    def _done(self, ok: bool) -> None:
        if not ok:
            self.damaged.append(self.records[self.i][3])
        self.i += 1
        self.header = bytearray()
        self.start = self.end = -1

    def finish(self) -> tuple[str, ...]:
        while self.i < len(self.records):  # records that reach past the end of the file
            self._done(False)
        return tuple(self.damaged)


def _key(path: str | os.PathLike[str]) -> tuple[Any, ...] | None:
    """Identity of the file's current content: a changed file (size, mtime, inode) gets a new key."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _run(fut: Future[Digest], path: str | os.PathLike[str]) -> None:
    if not fut.set_running_or_notify_cancel():  # pragma: no cover - nothing cancels these futures
        return
    try:
        fut.set_result(scan(path))
    except BaseException as e:  # handed to whoever takes the future
        fut.set_exception(e)


def prefetch(path: str | os.PathLike[str] | None) -> None:
    """Start scanning ``path`` in a daemon thread (a no-op for anything but an existing regular file).

    A daemon thread, so that an early error never waits for the hash of a large file at exit.
    """
    if path is None:
        return
    path = Path(path).expanduser()
    key = _key(path)
    if key is None:
        return
    with _lock:
        if key in _pending:
            return
        fut: Future[Digest] = Future()
        _pending[key] = fut
    threading.Thread(target=_run, args=(fut, path), name="yolobn-sha256", daemon=True).start()


def take(path: str | os.PathLike[str]) -> Future[Digest] | None:
    """The prefetched scan of ``path`` if its content is unchanged since :func:`prefetch`, else None."""
    key = _key(path)
    if key is None:
        return None
    with _lock:
        return _pending.pop(key, None)
