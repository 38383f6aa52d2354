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
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from yolobn.core.errors import YolobnError
from yolobn.core.text import one_line

_ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".xz", ".bz2", ".txz", ".tbz2")


def resolve_data(data: str | os.PathLike, *, trust: bool = False) -> str:
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
        from yolobn.data.synth import shapes_dataset

        return str(shapes_dataset())
    p = Path(text).expanduser()
    if p.exists():
        if p.is_dir():
            raise YolobnError(f"--data {text}: is a folder; pass the dataset yaml (e.g. {p / 'data.yaml'})")
        if not p.is_file():
            raise YolobnError(f"--data {text}: not a regular file; pass a dataset yaml")
    elif os.sep in text or "/" in text:
        raise YolobnError(
            f"--data {text}: not on disk; pass a dataset yaml, or 'shapes' for the bundled synthetic dataset"
        )
    else:
        p = _shipped(text)
    if p.suffix.lower() not in (".yaml", ".yml"):
        raise YolobnError(f"--data {text}: not a dataset yaml (.yaml); pass the dataset's data.yaml")
    if trust:
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
        f"--data {name}: no such file, nor a dataset yaml shipped with Ultralytics; pass the path to your "
        "data.yaml, or 'shapes' for the bundled synthetic dataset"
    )


def read_yaml(p: Path, what: str) -> dict[str, Any]:
    """A yaml mapping read with the safe loader; a one-line YolobnError otherwise."""
    import yaml

    try:
        raw = p.read_bytes()
    except OSError as e:
        raise YolobnError(f"{what}: cannot be read ({e.strerror or e})") from None
    if len(raw) > 16 << 20:
        raise YolobnError(f"{what}: {len(raw) >> 20} MB is too large for a yaml file")
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise YolobnError(f"{what}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise YolobnError(f"{what}: not valid YAML{where}") from None
    except RecursionError:
        raise YolobnError(f"{what}: nested too deeply to be a yaml file") from None
    if not isinstance(doc, dict):
        raise YolobnError(
            f"{what}: expected a mapping of keys (path, val, names, ...), got {type(doc).__name__}"
        )
    return doc


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
    names = doc.get("names")
    if names is None:
        nc = doc.get("nc")
        if not (isinstance(nc, int) and not isinstance(nc, bool) and nc > 0):
            raise YolobnError(f"{what}: needs 'names' (a list or {{index: name}} mapping) or a positive 'nc'")
    elif isinstance(names, dict):
        if not names or not all(isinstance(k, int) and not isinstance(k, bool) for k in names):
            raise YolobnError(f"{what}: 'names' as a mapping must map class indices 0, 1, ... to names")
        if sorted(names) != list(range(len(names))):
            raise YolobnError(f"{what}: 'names' must number the classes 0 to {len(names) - 1} without gaps")
    elif not isinstance(names, list) or not names:
        raise YolobnError(
            f"{what}: 'names' must be a list or {{index: name}} mapping, got {type(names).__name__}"
        )


def is_archive_url(s: Any) -> bool:
    """Ultralytics downloads (never executes) a ``download:`` that is a single archive URL."""
    if not isinstance(s, str) or not re.fullmatch(r"https?://\S+", s.strip()):
        return False
    from urllib.parse import urlsplit

    return urlsplit(s.strip()).path.lower().endswith(_ARCHIVES)


def _sanitised(p: Path, text: str) -> Path:
    what = f"--data {text}"
    doc = read_yaml(p, what)
    _check_fields(doc, what)
    from ultralytics.data.utils import check_det_dataset

    from yolobn.io.quiet import quiet_ultralytics

    try:
        with quiet_ultralytics():
            checked = check_det_dataset(str(p), autodownload=False)  # never downloads, never executes
    except FileNotFoundError as e:
        missing = re.search(r"missing path '([^']+)'", str(e))
        where = f" ({missing.group(1)})" if missing else ""
        s = doc.get("download")
        if s and not is_archive_url(s):
            raise YolobnError(
                f"{what}: the validation images are not on disk{where}; its 'download:' is a script, which "
                "yolobn never runs: download the data yourself, or re-run with --trust if you trust this yaml"
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
