"""SHA-256 of checkpoint files, optionally started early in a background thread.

Hashing a 100 MB checkpoint costs about as much as unpickling it (no SHA extensions on many CPUs),
but hashlib releases the GIL. The CLI therefore starts the hash of its input file with
:func:`prefetch` before it imports torch (seconds of single-threaded imports), and the loader picks
the result up with :func:`take`; without a prefetch the loader hashes beside the load as before.

This module imports nothing heavy, so that the CLI can use it before torch is imported.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from concurrent.futures import Future
from pathlib import Path

_pending: dict[tuple, Future[str]] = {}
_lock = threading.Lock()


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _key(path: str | os.PathLike) -> tuple | None:
    """Identity of the file's current content: a changed file (size, mtime, inode) gets a new key."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _run(fut: Future[str], path: str | os.PathLike) -> None:
    if not fut.set_running_or_notify_cancel():  # pragma: no cover - nothing cancels these futures
        return
    try:
        fut.set_result(sha256(path))
    except BaseException as e:  # handed to whoever takes the future
        fut.set_exception(e)


def prefetch(path: str | os.PathLike | None) -> None:
    """Start hashing ``path`` in a daemon thread (a no-op for anything but an existing regular file).

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
        fut: Future[str] = Future()
        _pending[key] = fut
    threading.Thread(target=_run, args=(fut, path), name="yolobn-sha256", daemon=True).start()


def take(path: str | os.PathLike) -> Future[str] | None:
    """The prefetched hash of ``path`` if its content is unchanged since :func:`prefetch`, else None."""
    key = _key(path)
    if key is None:
        return None
    with _lock:
        return _pending.pop(key, None)
