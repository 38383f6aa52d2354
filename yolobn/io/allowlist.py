"""yolobn's own allow-list for unpickling checkpoints: the same on every Ultralytics release.

A checkpoint is read with ``torch.load(weights_only=True)``: torch's unpickler only re-creates the
globals it is told are safe. Ultralytics' own ``torch_safe_load(safe_only=True)`` means different
things in different releases (a stand-in for unknown classes that lets ``builtins`` through in
8.3, an allow-list in 8.4; see ``yolobn.io.ultra``), so yolobn builds its own list from what is
installed, for the globals the file names (read from the pickle stream first, without running it):

- ``nn.Module`` classes defined in ``ultralytics.nn`` (``modules.*``, ``tasks``) and
  ``torch.nn.modules``, and the plain classes of ``ultralytics.utils.loss``/``tal`` (a stored
  ``criterion``) — re-created only: ``cls.__new__`` then ``__setstate__``, as ``torch.save`` writes
  them. A file that *calls* one of them (the constructor runs code: ``parse_model`` ``eval()``s a
  yaml's strings in 8.3) is refused.
- the data a checkpoint holds besides modules: ``IterableSimpleNamespace`` (``model.args``),
  numpy scalars and dtypes (``train_metrics``), ``pathlib`` paths (Posix or Windows, read as the
  local kind), the classification transforms of torchvision, and ``getattr`` restricted to
  methods of allowed classes (``Detect.forward``) and enum members.
- Ultralytics' legacy names (``ultralytics.yolo.utils``, ``Silence``, ``YOLOv10DetectionModel``...).

torch's own defaults (tensors, storages, ``OrderedDict``, ``set``...) come on top. While a file
loads, the process's registered safe globals are set aside, so the list is exactly this one.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import pickle
import re
import secrets
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from yolobn.io.ultra import LEGACY_ATTRIBUTES, LEGACY_MODULES

__all__ = ["Refused", "allowed", "entries", "load", "missing", "refused", "renamed", "resolve"]

_CLASS_PREFIXES = ("ultralytics.nn.modules", "torch.nn.modules")
_CLASS_MODULES = ("ultralytics.nn.tasks", "ultralytics.nn.modules")
_PLAIN_CLASS_MODULES = ("ultralytics.utils.loss", "ultralytics.utils.tal")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_TRANSFORMS = ("Compose", "Normalize", "Resize", "CenterCrop", "ToTensor")

_lock = threading.Lock()
_SECRET = f"yolobn_allowed_{secrets.token_hex(12)}"  # the real classes' names, unguessable by a file


class Refused(pickle.UnpicklingError):
    """A file that calls a class on the allow-list instead of re-creating it."""


def _ultralytics_class_module(module: str) -> bool:
    return module in _CLASS_MODULES or module.startswith(tuple(p + "." for p in _CLASS_PREFIXES))


def renamed(name: str) -> str:
    """``name`` after Ultralytics' legacy module and attribute renames."""
    if name in LEGACY_ATTRIBUTES:
        return LEGACY_ATTRIBUTES[name]
    for old, new in LEGACY_MODULES.items():
        if name.startswith(old + "."):
            return new + name[len(old) :]
    return name


def resolve(name: str) -> Any:
    """The object ``name`` stands for when it is on the allow-list, else None. Imports only modules
    under ``ultralytics.nn``, ``torch.nn.modules`` and ``ultralytics.utils.loss``/``tal``."""
    fixed = _fixed()
    if name in fixed:
        return fixed[name]
    real = renamed(name)
    if real in fixed:
        return fixed[real]
    if not _NAME.fullmatch(real):
        return None
    module, _, attr = real.rpartition(".")
    if attr.startswith("_"):
        return None
    plain = module in _PLAIN_CLASS_MODULES
    if not (plain or _ultralytics_class_module(module)):
        return None
    obj = _attribute(module, attr)
    if not isinstance(obj, type):
        return None
    if plain:
        return obj if obj.__module__ == module else None
    from torch import nn

    home = obj.__module__
    if issubclass(obj, nn.Module) and (home.startswith(_CLASS_PREFIXES) or home == "ultralytics.nn.tasks"):
        return obj
    return None


def missing(names: list[str]) -> list[str]:
    """The names of Ultralytics classes the file needs that the installed release does not have."""
    out = []
    for name in names:
        real = renamed(name)
        module, _, attr = real.rpartition(".")
        if not _NAME.fullmatch(real) or attr.startswith("_"):
            continue
        ours = (_ultralytics_class_module(module) and module.startswith("ultralytics.")) or (
            module in _PLAIN_CLASS_MODULES
        )
        if ours and _attribute(module, attr) is None:
            out.append(name)
    return out


def refused(names: list[str]) -> list[str]:
    """The names neither on the allow-list nor among torch's defaults nor missing from the release."""
    defaults = _torch_defaults()
    gone = set(missing(names))
    return [n for n in names if n not in defaults and n not in gone and resolve(n) is None]


def entries(names: list[str] | None) -> list[Any]:
    """The safe-globals entries for a file that names ``names`` (every candidate when None: a file
    whose pickle cannot be listed first, such as torch's pre-1.6 format)."""
    names = list(names) if names is not None else _every_candidate()
    out: list[Any] = []
    for name in dict.fromkeys(names):
        obj = resolve(name)
        if obj is None:
            continue
        if _recreate_only(obj):
            out += [(_proxy(obj), name), (obj, f"{_SECRET}.{obj.__module__}.{obj.__qualname__}")]
        else:
            out.append((obj, name))
            if obj is _dtype_class():
                out += [(t, f"{_SECRET}.{t.__module__}.{t.__qualname__}") for t in _numpy_dtype_types()]
    return out


@contextlib.contextmanager
def allowed(names: list[str] | None) -> Iterator[None]:
    """Exactly these entries (and torch's defaults) are safe while the block runs."""
    import torch

    ser = torch.serialization
    with _lock:
        saved = list(ser.get_safe_globals())
        ser.clear_safe_globals()
        try:
            ser.add_safe_globals(entries(names))
            yield
        finally:
            ser.clear_safe_globals()
            if saved:
                ser.add_safe_globals(saved)


def load(path: Path, names: list[str] | None) -> Any:
    """``torch.load(path, weights_only=True)`` against the allow-list for ``names``."""
    import torch

    with allowed(names), open(path, "rb") as f:
        return torch.load(f, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------------
# the entries


def _attribute(module: str, attr: str) -> Any:
    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
    except Exception:  # no such module in this release
        return None
    return getattr(mod, attr, None)


def _recreate_only(obj: Any) -> bool:
    """Classes of modules and losses: a checkpoint re-creates them, never calls them."""
    return isinstance(obj, type) and obj.__module__.startswith(("ultralytics.", "torch.nn.modules"))


_proxies: dict[type, type] = {}


def _proxy(cls: type) -> type:
    """A stand-in that torch's unpickler can ``__new__`` (giving a bare ``cls`` instance, as
    ``torch.save`` writes modules) but that refuses to be called with arguments (a constructor)."""
    if cls not in _proxies:

        def __new__(proxy: type, *args: Any, **kwargs: Any) -> Any:
            if args or kwargs:
                raise Refused(
                    f"yolobn's allow-list refuses a call of {cls.__module__}.{cls.__qualname__}(...) (a constructor)"
                )
            return cls.__new__(cls)  # type: ignore[call-overload]

        _proxies[cls] = type(cls.__name__, (), {"__new__": __new__, "__module__": __name__, "real": cls})
    return _proxies[cls]


def _restricted_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as checkpoints use it: a method of an allowed class (``Detect.forward``, pickled by
    reference) or an enum member (``InterpolationMode.BILINEAR``); nothing else."""
    from torch import nn

    obj = getattr(obj, "real", obj) if isinstance(obj, type) and obj in _proxies.values() else obj
    if isinstance(name, str) and not name.startswith("_"):
        if isinstance(obj, type) and issubclass(obj, enum.Enum) and name in obj.__members__:
            return obj[name]
        if isinstance(obj, type) and issubclass(obj, nn.Module) and callable(obj.__dict__.get(name)):
            return getattr(obj, name)
        if isinstance(obj, nn.Module) and name in ("forward", "forward_fuse"):
            return getattr(type(obj), name).__get__(obj)
    raise Refused(f"yolobn's allow-list refuses getattr({type(obj).__name__}, {name!r})")


def _dtype_class() -> Any:
    import numpy as np

    return np.dtype


def _numpy_dtype_types() -> list[type]:
    """The concrete dtype classes (``Float64DType``...) that ``numpy.dtype(...)`` builds."""
    import numpy as np

    return [type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"]


_fixed_cache: dict[str, Any] = {}


def _fixed() -> dict[str, Any]:
    """The named entries that are not module classes."""
    if _fixed_cache:
        return _fixed_cache
    import pathlib

    import numpy as np
    from torch import nn
    from ultralytics.utils import IterableSimpleNamespace

    scalar = np.float64(0).__reduce__()[0]  # numpy.core.multiarray.scalar / numpy._core...
    local_path = pathlib.WindowsPath if sys.platform == "win32" else pathlib.PosixPath
    table: dict[str, Any] = {
        "numpy.core.multiarray.scalar": scalar,
        "numpy._core.multiarray.scalar": scalar,
        "numpy.dtype": np.dtype,
        "ultralytics.utils.IterableSimpleNamespace": IterableSimpleNamespace,
        "ultralytics.nn.modules.block.Silence": nn.Identity,
        "builtins.getattr": _restricted_getattr,
        **{
            f"{m}.{c}": local_path
            for m in ("pathlib", "pathlib._local")
            for c in ("PosixPath", "WindowsPath")
        },
    }
    with contextlib.suppress(ImportError):  # classification transforms (torchvision ships with Ultralytics)
        import torchvision.transforms.transforms as tvt
        from torchvision.transforms.functional import InterpolationMode

        for n in _TRANSFORMS:
            table[f"torchvision.transforms.transforms.{n}"] = getattr(tvt, n)
        table["torchvision.transforms.functional.InterpolationMode"] = InterpolationMode
    _fixed_cache.update(table)
    return _fixed_cache


def _torch_defaults() -> set[str]:
    with contextlib.suppress(Exception):  # a private torch helper: without it nothing counts as default
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    return set()


def _every_candidate() -> list[str]:
    """Every name ``resolve`` accepts, for files whose globals cannot be listed before loading."""
    import pkgutil

    import ultralytics.nn.modules as um
    from torch import nn

    names = list(_fixed())
    modules = ["ultralytics.nn.tasks", "ultralytics.nn.modules", *_PLAIN_CLASS_MODULES]
    modules += [f"ultralytics.nn.modules.{m.name}" for m in pkgutil.iter_modules(um.__path__)]
    modules += [f"torch.nn.modules.{m.name}" for m in pkgutil.iter_modules(nn.modules.__path__)]
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except Exception:  # a submodule that does not import on its own: its classes are elsewhere too
            continue
        names += [f"{module}.{a}" for a, v in vars(mod).items() if isinstance(v, type)]
    names += ["ultralytics.yolo.utils.IterableSimpleNamespace", "ultralytics.nn.tasks.YOLOv10DetectionModel"]
    return names
