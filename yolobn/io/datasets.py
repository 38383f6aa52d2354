"""Dataset yamls, read as data: the only module that resolves ``--data``.

A dataset yaml can be code in disguise. When the validation images are missing, Ultralytics'
``check_det_dataset`` runs the yaml's ``download:`` value: a ``bash ...`` line with
``subprocess``, and anything that is not an archive URL with ``exec()`` — also with
``YOLO_OFFLINE=1``. yolobn therefore reads the yaml itself, checks that the images are on disk
without letting Ultralytics download anything, and hands the validator a sanitised copy that has
no ``download:`` at all. Only ``trust=True`` (``--trust``) gives Ultralytics the original file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

from yolobn.core.errors import YolobnError
from yolobn.core.limits import MAX_CLASSES, MAX_LIST_BYTES, MAX_NAME_CHARS
from yolobn.core.text import one_line
from yolobn.data.synth import shapes_dataset
from yolobn.io import ultra, yamlfile
from yolobn.io.quiet import quiet_ultralytics

__all__ = ["is_archive_url", "read_yaml", "resolve_data"]

_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".xz", ".bz2", ".txz", ".tbz2")


def resolve_data(data: str | os.PathLike[str], *, trust: bool = False) -> str:
    """The dataset argument to give Ultralytics' validator, checked and made safe.

    Args:
        data: ``"shapes"`` (the bundled synthetic dataset, generated on demand), a dataset yaml on
            disk, or the name of a dataset yaml that ships with Ultralytics (``coco8.yaml``).
        trust: hand the yaml to Ultralytics as it is, which may run its ``download:`` script.

    Returns:
        A path (as a string) to a dataset yaml whose validation images are on disk.

    Raises:
        YolobnError: one line, for a yaml that is malformed, names missing images, or would need
            its download script run (without ``trust``).
    """
    text = os.fspath(data)
    if text == "shapes":
        return str(shapes_dataset())
    p = Path(text).expanduser()
    if p.exists():
        if p.is_dir():
            raise YolobnError(f"dataset {text}: is a folder; pass the dataset yaml (e.g. {p / 'data.yaml'})")
        if not p.is_file():
            raise YolobnError(f"dataset {text}: not a regular file; pass a dataset yaml")
    elif os.sep in text or "/" in text:
        raise YolobnError(
            f"dataset {text}: not on disk; pass a dataset yaml, or 'shapes' for the bundled synthetic dataset"
        )
    else:
        p = _shipped(text)
    if p.suffix.lower() not in (".yaml", ".yml"):
        raise YolobnError(f"dataset {text}: not a dataset yaml (.yaml); pass the dataset's data.yaml")
    if trust:  # Ultralytics reads the file as it is, but only once it is within yolobn's budgets
        _check_budgets(read_yaml(p, f"dataset {text}"), f"dataset {text}")
        return str(p)
    return str(_sanitised(p, text))


def _shipped(name: str) -> Path:
    """A dataset yaml that ships with Ultralytics (``coco8.yaml``), found without any download."""
    import ultralytics

    root = Path(ultralytics.__file__).parent / "cfg" / "datasets"
    stem = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    cand = root / stem
    if cand.is_file():
        return cand
    raise YolobnError(
        f"dataset {name}: no such file, nor a dataset yaml shipped with Ultralytics; pass the path to your "
        "data.yaml, or 'shapes' for the bundled synthetic dataset"
    )


def read_yaml(p: Path, what: str) -> dict[str, Any]:
    """A dataset yaml, read within yolobn's yaml budgets (``yolobn.io.yamlfile``); one line otherwise."""
    return yamlfile.read_yaml(p, what, hint=" (path, val, names, ...)")


def _check_fields(doc: dict[str, Any], what: str) -> None:
    val = doc.get("val")
    if not val:
        raise YolobnError(
            f"{what}: no 'val' entry; a dataset yaml names its validation images (val: images/val)"
        )
    if not (isinstance(val, str) or (isinstance(val, list) and all(isinstance(v, str) for v in val))):
        raise YolobnError(f"{what}: 'val' must be a path or a list of paths, got {type(val).__name__}")
    if "path" in doc and doc["path"] is not None and not isinstance(doc["path"], str):
        raise YolobnError(f"{what}: 'path' must be a folder name, got {type(doc['path']).__name__}")
    _check_budgets(doc, what)
    names, nc = doc.get("names"), doc.get("nc")
    if names is None:
        if not (isinstance(nc, int) and not isinstance(nc, bool) and nc > 0):
            raise YolobnError(f"{what}: needs 'names' (a list or {{index: name}} mapping) or a positive 'nc'")
        return
    if isinstance(names, dict):
        if not names or not all(isinstance(k, int) and not isinstance(k, bool) for k in names):
            raise YolobnError(f"{what}: 'names' as a mapping must map class indices 0, 1, ... to names")
        if sorted(names) != list(range(len(names))):
            raise YolobnError(f"{what}: 'names' must number the classes 0 to {len(names) - 1} without gaps")
    elif not isinstance(names, list) or not names:
        raise YolobnError(
            f"{what}: 'names' must be a list or {{index: name}} mapping, got {type(names).__name__}"
        )


def _check_val_paths(doc: dict[str, Any], p: Path, what: str) -> None:
    """Each ``val`` entry, found as Ultralytics' dataset check finds it, is a folder or a list file
    of image paths; a device (``/dev/zero``), a pipe or a symlink loop would be read for ever or
    block, and gets one line saying what it is."""
    from ultralytics.utils import DATASETS_DIR

    root = Path(doc.get("path") or p.parent)
    if not root.exists() and not root.is_absolute():
        root = DATASETS_DIR / root
    vals = doc["val"] if isinstance(doc["val"], list) else [doc["val"]]
    for v in vals:
        x = root / v
        if not os.path.lexists(x) and v.startswith("../"):
            x = root / v[3:]
        try:
            st = x.stat()
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise YolobnError(f"{what}: 'val: {v}' is a symlink loop ({x}); fix the link") from None
            continue  # missing: the dataset check below says so (and why)
        kind = _special(st.st_mode)
        if kind:
            raise YolobnError(f"{what}: 'val: {v}' is {kind} ({x}), not a folder of images or a list file")
        if stat.S_ISREG(st.st_mode) and st.st_size > MAX_LIST_BYTES:
            raise YolobnError(
                f"{what}: 'val: {v}' is a {st.st_size >> 20} MB file; a list of image paths is at most "
                f"{MAX_LIST_BYTES >> 20} MB"
            )


def _special(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return ""


def _check_budgets(doc: dict[str, Any], what: str) -> None:
    """``nc`` and ``names`` within the class budgets (Ultralytics builds a name for each of ``nc``
    classes): at most MAX_CLASSES names of MAX_NAME_CHARS characters in all, each a text or a number."""
    nc = doc.get("nc")
    if isinstance(nc, (int, float)) and not isinstance(nc, bool) and nc > MAX_CLASSES:
        raise YolobnError(f"{what}: 'nc: {nc!r}' is more than {MAX_CLASSES:,} classes; check the file")
    names = doc.get("names")
    if not isinstance(names, (dict, list)):
        return
    if len(names) > MAX_CLASSES:
        raise YolobnError(
            f"{what}: 'names' lists {len(names):,} classes, more than {MAX_CLASSES:,}; check the file"
        )
    chars = 0
    for v in names.values() if isinstance(names, dict) else names:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise YolobnError(
                f"{what}: 'names' holds a {type(v).__name__}, not a class name; write each name as text"
            )
        chars += len(v) if isinstance(v, str) else 1
        if chars > MAX_NAME_CHARS:
            raise YolobnError(
                f"{what}: 'names' holds more than {MAX_NAME_CHARS:,} characters in all; check the file"
            )


def is_archive_url(s: Any) -> bool:
    """Ultralytics downloads (never executes) a ``download:`` that is a single archive URL."""
    if not isinstance(s, str) or not re.fullmatch(r"https?://\S+", s.strip()):
        return False
    from urllib.parse import urlsplit

    return urlsplit(s.strip()).path.lower().endswith(_ARCHIVES)


def _sanitised(p: Path, text: str) -> Path:
    what = f"dataset {text}"
    doc = read_yaml(p, what)
    _check_fields(doc, what)
    _check_val_paths(doc, p, what)
    try:
        with quiet_ultralytics():
            checked = ultra.check_det_dataset(str(p))  # downloads off: never downloads, never executes
    except FileNotFoundError as e:
        missing = re.search(r"missing path '([^']+)'", str(e))
        where = f" ({missing.group(1)})" if missing else ""
        s = doc.get("download")
        if s and not is_archive_url(s):
            raise YolobnError(
                f"{what}: the validation images are not on disk{where}; its 'download:' is a script, which "
                "yolobn never runs: download the data yourself, or trust this yaml (trust=True; --trust on the command line) if you trust its source"
            ) from None
        raise YolobnError(
            f"{what}: the validation images are not on disk{where}; download the dataset or fix 'path'/'val'"
        ) from None
    except YolobnError:
        raise
    except Exception as e:  # Ultralytics' own checks: names/nc mismatch, bad keys, ...
        raise YolobnError(f"{what}: not a usable dataset yaml ({one_line(e)})") from None
    safe = {k: v for k, v in doc.items() if k != "download"}
    safe["path"] = str(Path(checked["path"]).resolve())
    return _write_cached(safe, p.name)


def _write_cached(doc: dict[str, Any], name: str) -> Path:
    """The sanitised yaml, stored by content in yolobn's cache (the same input gives the same file)."""
    import yaml

    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("YOLOBN_CACHE") or Path.home() / ".cache" / "yolobn") / "data"
    out = cache / f"{Path(name).stem}-{digest}.yaml"
    if out.is_file():
        return out
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{out.name}.{os.getpid()}.tmp"
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        with contextlib.suppress(OSError, UnboundLocalError):
            tmp.unlink()
        raise YolobnError(
            f"cannot write yolobn's cache in {cache} ({e.strerror or e}); set YOLOBN_CACHE"
        ) from None
    return out
