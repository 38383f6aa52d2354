"""Atomic, all-or-nothing file writes: the one way yolobn writes a file.

Each file is written to a hidden temporary sibling named ``.<name>.<pid>.<random>.yolobn.tmp``
and renamed over the target once complete, so a reader never sees half a file and a failed run
leaves nothing behind. A process killed mid-write cannot clean up after itself: the next write in
the same folder removes the temporary files of yolobn's own naming whose process is gone.
Errors name the file the user asked for, never the temporary one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from yolobn.core.errors import YolobnError

__all__ = [
    "check_not_inputs",
    "check_writable",
    "clean_stale",
    "output_folder",
    "same_file",
    "temp_path",
    "write_files",
]

_SUFFIX = ".yolobn.tmp"
_STALE_S = 24 * 3600  # where a process cannot be asked whether it is alive: a day old is stale


def temp_path(path: Path) -> Path:
    """A fresh temporary sibling of ``path`` (hidden, unique, recognisably yolobn's)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_SUFFIX}")


def clean_stale(folder: Path) -> list[Path]:
    """Remove yolobn's temporary files in ``folder`` whose writing process no longer runs."""
    removed: list[Path] = []
    pattern = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}" + re.escape(_SUFFIX) + "$")
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


def _alive(pid: int, entry: os.DirEntry) -> bool:
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


def write_files(files: Mapping[Path, str | bytes | Callable[[Path], None]]) -> list[Path]:
    """Write every file or none: each is staged to a temporary sibling, then all are renamed.

    Args:
        files: target path -> text (written as UTF-8), bytes, or a callable that writes the file
            at the path it is given (``torch.save``).

    Returns:
        The targets, in order.

    Raises:
        YolobnError: a file could not be written (the message names it); nothing was written.
    """
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []
    current: Path | None = None
    try:
        for target, content in files.items():
            current = target = Path(target).expanduser()
            target.parent.mkdir(parents=True, exist_ok=True)
            clean_stale(target.parent)
            tmp = temp_path(target)
            staged.append((tmp, target))
            if callable(content):
                content(tmp)
            else:
                data = content.encode("utf-8") if isinstance(content, str) else content
                with open(tmp, "xb") as f:
                    f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())  # the permissions a plain open() would give
        for _, target in staged:  # a rename that must fail fails before any other is done
            current = target
            if target.is_dir():
                raise IsADirectoryError(21, "is a folder", str(target))
        for tmp, target in staged:
            current = target
            fresh = not target.exists()
            os.replace(tmp, target)
            if fresh:
                created.append(target)
    except OSError as e:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for target in created:  # all or nothing: undo the renames already done (new files only)
            with contextlib.suppress(OSError):
                target.unlink()
        raise YolobnError(
            f"{current or 'output'}: cannot write ({e.strerror or e}); nothing was written"
        ) from None
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    return [t for _, t in staged]


def check_writable(path: Path, opt: str) -> None:
    """Fail before any work when ``path`` cannot be written: a folder, a file standing where a
    folder is needed, or a place where no file can be created (a read-only or virtual filesystem).

    The test is real: a temporary file is created and removed in the nearest existing folder.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise YolobnError(f"{opt} {path}: is a folder; give a file name")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise YolobnError(f"{opt} {path}: {parent} is a file, not a folder; choose another location")
    probe = temp_path(parent / p.name)
    try:
        with open(probe, "xb"):
            pass
    except OSError as e:
        raise YolobnError(
            f"{opt} {path}: cannot write in {parent} ({e.strerror or e}); choose another location"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same real path (links resolved), or the same inode."""
    try:
        ra, rb = os.path.realpath(Path(a).expanduser()), os.path.realpath(Path(b).expanduser())
        return ra == rb or (os.path.exists(ra) and os.path.exists(rb) and os.path.samefile(ra, rb))
    except (OSError, ValueError):
        return False


def check_not_inputs(outputs: Mapping[str, Path | None], inputs: Mapping[Path, str]) -> None:
    """YolobnError when an output would replace an input file.

    Args:
        outputs: how to name the output in the message (``-o best.pt``) -> its path (None: skipped).
        inputs: input file -> what it is (``the input checkpoint``, ``the dataset yaml``, ``an input image``).
    """
    for label, out in outputs.items():
        if out is None:
            continue
        for src, what in inputs.items():
            if same_file(out, src):
                raise YolobnError(f"{label}: is {what}; write the output to another file")


def output_folder(out: Path | None, default: Path, exist_ok: bool, what: str = "") -> Path:
    """``out`` as given; otherwise ``default``, incremented like Ultralytics' runs/ folders
    (``reports/best``, ``reports/best2``, ...) so that a previous report is never overwritten
    silently, unless ``exist_ok``. ``what`` names the option in the error (``--out``)."""
    if out is not None:
        d = out.expanduser()
    elif exist_ok or not default.exists():
        d = default
    else:
        n = 2
        while (default.parent / f"{default.name}{n}").exists():
            n += 1
        d = default.parent / f"{default.name}{n}"
    if d.exists() and not d.is_dir():
        raise YolobnError(f"{what}{' ' if what else ''}{d}: is a file, not a folder; give a folder name")
    return d
