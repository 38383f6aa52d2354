"""Atomic, all-or-nothing file writes: the one way yolobn writes a file.

Each file is written to a hidden temporary sibling named ``.<name>.<pid>.<random>.yolobn.tmp``
and renamed over the target once complete, so a reader never sees half a file and a failed run
leaves nothing behind. A process killed mid-write cannot clean up after itself: the next write in
the same folder removes the temporary files of yolobn's own naming whose process is gone.
Errors name the file the user asked for, never the temporary one. Every target goes through the
output guard (``yolobn.core.outputs``) at write time: never an input, never twice, and an existing
character device or FIFO is written into, never replaced.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from yolobn.core.errors import YolobnError
from yolobn.core.outputs import TEMP_SUFFIX, Target, guard_outputs, temp_path

_STALE_S = 24 * 3600  # where a process cannot be asked whether it is alive: a day old is stale

Content = str | bytes | Callable[[BinaryIO], None]

__all__ = ["Content", "clean_stale", "temp_path", "write_files"]


def clean_stale(folder: Path) -> list[Path]:
    """Remove yolobn's temporary files in ``folder`` whose writing process no longer runs."""
    removed: list[Path] = []
    pattern = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX) + "$")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or not entry.is_file(follow_symlinks=False):
            continue
        if _alive(int(m.group(1)), entry):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int, entry: os.DirEntry[str]) -> bool:
    if os.name != "posix":
        try:
            return time.time() - entry.stat(follow_symlinks=False).st_mtime < _STALE_S
        except OSError:
            return True
    if pid == os.getpid():
        return True  # this process: another write of ours may be in flight in a thread
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def write_files(files: Mapping[Path, Content], inputs: Mapping[Path, str] | None = None) -> list[Path]:
    """Write every file or none: each regular file is staged to a temporary sibling, then all are
    renamed; an existing character device or FIFO is written into, after every file is staged and
    before any rename, and never replaced. Every target is checked by the output guard first
    (``yolobn.core.outputs``), here at write time too.

    Args:
        files: target path -> text (written as UTF-8), bytes, or a callable that writes the file
            into the binary file object it is given (``lambda f: torch.save(obj, f)``), so that
            a full disk is an ``OSError`` like any other write.
        inputs: input file -> what it is: no target may be one of them.

    Returns:
        The targets as given (``~`` expanded), in order.

    Raises:
        YolobnError: a target is refused by the guard, or a file could not be written (the message
            names it); nothing was written, and no temporary file is left.
    """
    try:
        targets = guard_outputs({str(p): p for p in files}, inputs, probe=False, stdout=False)
    except YolobnError as e:
        raise YolobnError(f"{e}; nothing was written") from None
    jobs = [(targets[str(p)], content) for p, content in files.items()]
    staged: list[tuple[Path, Target]] = []
    created: list[Path] = []
    current: Path | None = None
    try:
        for t, content in jobs:
            current = t.path
            if not t.stream:
                staged.append((_stage(t.real, content), t))
        streams = [(t, _render(content)) for t, content in jobs if t.stream]
        for _, t in staged:  # a rename that must fail fails before any other is done
            current = t.path
            _check_replaceable(t.real)
        for t, data in streams:
            current = t.path
            _write_into(t.path, data)
        for tmp, t in staged:
            current = t.path
            fresh = not os.path.lexists(t.real)
            _check_replaceable(t.real)
            os.replace(tmp, t.real)
            if fresh:
                created.append(t.real)
    except OSError as e:
        _discard(staged, created)
        raise YolobnError(
            f"{current or 'output'}: cannot write ({e.strerror or e}); nothing was written"
        ) from None
    except BaseException:
        _discard(staged, [])
        raise
    return [t.path for t, _ in jobs]


def _stage(real: Path, content: Content) -> Path:
    """``content`` written to a fresh temporary sibling of ``real`` (removed again if this fails)."""
    real.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(real.parent)
    tmp = temp_path(real)
    try:
        with open(tmp, "xb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o666 & ~_umask())  # the permissions a plain open() would give
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def _render(content: Content) -> bytes:
    if callable(content):
        buf = io.BytesIO()
        content(buf)
        return buf.getvalue()
    return content.encode("utf-8") if isinstance(content, str) else content


def _check_replaceable(real: Path) -> None:
    """Only a regular file (or nothing) is ever replaced: a folder or a device that appeared
    since the check is an error, never renamed over."""
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "is a folder", str(real))
    if not stat.S_ISREG(mode):
        raise OSError(17, "is not a regular file", str(real))


def _write_into(path: Path, data: bytes) -> None:
    """``data`` written into an existing character device or FIFO, as ``>`` would: no temporary file,
    no rename. A FIFO waits for its reader."""
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):  # replaced by a file since the check
            raise OSError(17, "is no longer a device or pipe", str(path))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _discard(staged: list[tuple[Path, Target]], created: list[Path]) -> None:
    """All or nothing: the temporary files, and the files this call created, are removed."""
    for tmp, _ in staged:
        with contextlib.suppress(OSError):
            tmp.unlink()
    for real in created:
        with contextlib.suppress(OSError):
            real.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
