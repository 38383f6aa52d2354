"""The output guard: every file yolobn writes is checked here, before any work and again when it is
written (``yolobn.core.atomic.write_files`` calls it, so the Python API is covered too).

The rules (docs/safety.md, "Outputs"):

- **Never an input.** An output that names an input of the run is refused, whatever the spelling:
  compared by real path (relative paths, ``~``, symbolic links and ``..`` resolved) and by
  (device, inode), which also catches a hard link.
- **Never twice.** Two outputs of one run never name the same file.
- **Special files are never replaced.** An existing character device or FIFO (``/dev/null``, a
  named pipe, ``/dev/stdout`` when it is a terminal or a pipe) is written into, as ``>`` in a shell
  does: no temporary file next to it, no rename over it. A socket, a block device or any other
  special file is refused. ``-`` is stdout, not a path.
- **Links are written through.** A symbolic link whose target is not an input keeps pointing where
  it did; the file it points to is replaced (atomically, next to that file).
- **Folders.** A command that writes into a folder has every file name it would write checked by
  the same rules; yolobn never removes or replaces a folder.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from yolobn.core.errors import YolobnError

__all__ = [
    "TEMP_SUFFIX",
    "Target",
    "classify",
    "guard_folder",
    "guard_outputs",
    "identity",
    "output_folder",
    "same_file",
    "temp_path",
]

TEMP_SUFFIX = ".yolobn.tmp"

PathLike = str | os.PathLike[str]


def temp_path(path: Path) -> Path:
    """A fresh temporary sibling of ``path`` (hidden, unique, recognisably yolobn's)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


@dataclass(frozen=True)
class Target:
    """One output file, checked.

    Attributes:
        label: how errors name it (``--json out.json``).
        path: the path as given (``~`` expanded).
        real: where a regular file is written: ``path`` with every link resolved.
        stream: an existing character device or FIFO: written into directly, never replaced.
    """

    label: str
    path: Path
    real: Path
    stream: bool


def identity(path: PathLike) -> tuple[str, tuple[int, int] | None]:
    """(real path, (device, inode)) of ``path``; the inode part is None when nothing is there."""
    real = os.path.realpath(Path(path).expanduser())
    try:
        st = os.stat(real)
    except (OSError, ValueError):
        return real, None
    return real, (st.st_dev, st.st_ino)


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: the same real path (links resolved), or the same inode."""
    try:
        return _same(identity(a), identity(b))
    except (OSError, ValueError):
        return False


def _same(a: tuple[str, tuple[int, int] | None], b: tuple[str, tuple[int, int] | None]) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def classify(path: PathLike, label: str) -> Target:
    """What writing ``path`` means: a regular file (new or replaced) or a stream written into.

    Raises:
        YolobnError: a folder, a socket, a block device or another special file.
    """
    p = Path(path).expanduser()
    try:
        st = os.stat(p)  # through links: what a write would reach
    except (OSError, ValueError):
        st = None  # nothing there (or a dangling link: its target is created)
    real = Path(os.path.realpath(p))
    if st is None or stat.S_ISREG(st.st_mode):
        return Target(label, p, real, False)
    if stat.S_ISDIR(st.st_mode):
        raise YolobnError(f"{label}: is a folder; give a file name")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return Target(label, p, real, True)
    kind = (
        "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "a block device"
        if stat.S_ISBLK(st.st_mode)
        else "a special file"
    )
    raise YolobnError(f"{label}: is {kind}, not a regular file; yolobn never writes there, give a file name")


def guard_outputs(
    outputs: Mapping[str, PathLike | None],
    inputs: Mapping[Path, str] | None = None,
    *,
    probe: bool = True,
    stdout: bool = True,
) -> dict[str, Target]:
    """Check output files before any work (and again at write time).

    Args:
        outputs: label (``--json out.json``) -> path; None entries are skipped, and so is ``-``
            (stdout) unless ``stdout`` is False.
        inputs: input file -> what it is (``the input checkpoint``, ``an input image``).
        probe: also check that each place can be written (a file is created and removed there).

    Returns:
        label -> ``Target``, in order.

    Raises:
        YolobnError: one line naming the output and what is wrong with it.
    """
    ins = [(identity(p), what) for p, what in (inputs or {}).items() if p is not None]
    seen: list[tuple[str, tuple[str, tuple[int, int] | None]]] = []
    targets: dict[str, Target] = {}
    for label, out in outputs.items():
        if out is None or (stdout and str(out) == "-"):
            continue
        t = classify(out, label)
        ident = identity(t.path)
        for other, what in ins:
            if _same(ident, other):
                raise YolobnError(f"{label}: is {what}; write the output to another file")
        for other_label, other in seen:
            if _same(ident, other):
                raise YolobnError(f"{label}: same file as {other_label}; give each output its own file")
        seen.append((label, ident))
        targets[label] = t
    if probe:
        for parent, label in {t.real.parent: t.label for t in targets.values() if not t.stream}.items():
            _probe(parent, label)
        for t in targets.values():
            if t.stream and not os.access(t.path, os.W_OK):
                raise YolobnError(f"{t.label}: cannot write to it (permission denied)")
    return targets


def guard_folder(
    folder: PathLike, names: Sequence[str], opt: str, inputs: Mapping[Path, str] | None = None
) -> dict[str, Target]:
    """Check the files a command writes into ``folder`` before any work: the folder is a folder,
    no name in it is taken by a folder, none is an input or special, and the place can be written.

    ``opt`` names the option in errors (``--out``; empty for the Python API).
    """
    d = Path(folder).expanduser()
    what = f"{opt} {folder}" if opt else str(folder)
    if d.exists() and not d.is_dir():
        kind = "a file" if d.is_file() else "a special file"
        raise YolobnError(f"{what}: is {kind}, not a folder; give a folder name")
    for n in names:
        if (d / n).is_dir():
            raise YolobnError(f"{what}: '{n}' in it is a folder; remove it or choose another folder")
    return guard_outputs({f"{what}: {n}": d / n for n in names}, inputs)


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
        kind = "a file" if d.is_file() else "a special file"
        raise YolobnError(f"{what}{' ' if what else ''}{d}: is {kind}, not a folder; give a folder name")
    return d


def _probe(parent: Path, label: str) -> None:
    """A file can be created in ``parent`` (or its nearest existing ancestor): one is, then removed."""
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise YolobnError(f"{label}: {parent} is a file, not a folder; choose another location")
    probe = temp_path(parent / "probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError as e:
        raise YolobnError(
            f"{label}: cannot write in {parent} ({e.strerror or e}); choose another location"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
