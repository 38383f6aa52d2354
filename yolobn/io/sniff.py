"""What a model file is, told from its bytes before (and after) torch reads it.

``sniff`` classifies a file from its first bytes, so that the common wrong inputs (a FIFO, an
empty or truncated file, an image, an ONNX or TorchScript export, a directory) get a one-line
explanation instead of a pickle traceback, and a FIFO never blocks the process.

``scan_pickle`` walks the pickle stream of a checkpoint with ``pickletools`` (which only parses:
it never imports or calls anything) to tell, once the safe loader has refused a file, whether the
file is damaged, asks to run code outside the allow-list, or only uses a pickle protocol the safe
loader cannot read. This module imports neither torch nor Ultralytics.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickletools
import re
import stat
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from yolobn.core.errors import CheckpointError
from yolobn.core.text import one_line

IMAGE_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"RIFF": "a RIFF (WebP/WAV) file",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive",
}

# pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2): the magic number torch's legacy format starts with.
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"

# Opcodes that build an object by calling a class named in the stream: torch.save never writes
# them and the safe loader cannot read them; in a checkpoint they are a way to run code.
CALLING_OPCODES = {"INST", "OBJ"}
_MAX_PICKLE = 256 << 20  # a data.pkl beyond this is not scanned (real ones are well under 10 MB)


def regular_file(path: Path, what: str = "") -> os.stat_result:
    """``os.stat`` of ``path`` (following links); CheckpointError unless it is a regular file.

    Checked before any ``open``: opening a FIFO for reading blocks until a writer appears.
    """
    label = f"{what} {path}" if what else str(path)
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(
            f"{label}: cannot be read ({e.strerror or e}); check the path and permissions"
        ) from e
    if stat.S_ISDIR(st.st_mode):
        hint = next((str(c) for c in (path / "weights" / "best.pt", path / "best.pt") if c.is_file()), None)
        extra = f" (found {hint})" if hint else ""
        raise CheckpointError(f"{label}: is a directory; pass the .pt checkpoint file inside it{extra}")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(
            f"{label}: not a regular file (a pipe, socket or device); pass a .pt checkpoint file"
        )
    return st


def sniff(path: Path) -> str:
    """Classify a file by its first bytes; raise CheckpointError for anything torch cannot read.

    Returns ``"zip"`` (a torch.save archive) or ``"legacy"`` (pre-1.6 torch pickle format).
    """
    st = regular_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise CheckpointError(
            f"{path}: cannot be read ({e.strerror or e}); check the path and permissions"
        ) from e
    if st.st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); copy or download the checkpoint again")
    for magic, what in IMAGE_MAGIC.items():
        if head.startswith(magic):
            raise CheckpointError(
                f"{path}: is {what}, not a PyTorch checkpoint; pass a .pt file saved by Ultralytics"
            )
    if (
        path.suffix.lower() == ".onnx"
        or (head[:1] == b"\x08" and b"onnx" in head.lower())
        or (head[:1] == b"\x08" and b"pytorch" in head)
    ):
        raise CheckpointError(
            f"{path}: is an ONNX export, not a training checkpoint; inspect the .pt it was exported from"
        )
    if head.startswith(b"PK"):
        names = _zip_names(path)
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise CheckpointError(
                f"{path}: is a TorchScript export, not a training checkpoint; inspect the .pt it was exported from"
            )
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(
                f"{path}: is a zip archive but not a PyTorch checkpoint (no data.pkl inside)"
            )
        return "zip"
    if head.startswith(LEGACY_MAGIC):  # torch's pre-1.6 format: a pickled magic number first
        return "legacy"
    raise CheckpointError(
        f"{path}: not a PyTorch checkpoint (unrecognised content); pass a .pt file saved by Ultralytics"
    )


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise CheckpointError(
            f"{path}: the zip archive is truncated or corrupt ({one_line(e)}); copy or download the checkpoint again"
        ) from e


# --------------------------------------------------------------------------------------------------
# the pickle stream, parsed without running it


@dataclass
class PickleScan:
    """What a checkpoint's pickle stream asks for.

    Attributes:
        ok: the stream parses to its STOP opcode (otherwise it is damaged; ``error`` says where).
        protocol: the pickle protocol it declares (torch.save writes 2).
        globals: every ``module.name`` it imports (GLOBAL, STACK_GLOBAL, INST), in order, once each.
        calling: opcodes that call a class directly (INST, OBJ), which torch.save never writes.
        top: the class of the top-level object when it is an object rather than a dict.
    """

    ok: bool = False
    error: str = ""
    protocol: int = 0
    globals: list[str] = field(default_factory=list)
    calling: set[str] = field(default_factory=set)
    top: str | None = None


def read_pickle_bytes(path: Path) -> bytes | None:
    """The ``data.pkl`` record of a torch zip checkpoint (None when it cannot be read)."""
    try:
        with zipfile.ZipFile(path) as z:
            info = next((i for i in z.infolist() if i.filename.endswith("data.pkl")), None)
            if info is None or info.file_size > _MAX_PICKLE:
                return None
            with z.open(info) as f:
                return f.read(_MAX_PICKLE)
    except Exception:  # a damaged archive: the caller reports the load error itself
        return None


def bare_model_class(path: Path) -> str | None:
    """The Ultralytics class of a model pickled bare (``torch.save(model)``), else None."""
    data = read_pickle_bytes(path)
    top = scan_pickle(data).top if data else None
    if top and top.startswith("ultralytics."):
        return top.rpartition(".")[2]
    return None


def scan_pickle(data: bytes) -> PickleScan:
    """Parse ``data`` opcode by opcode (nothing is imported or called) and list what it asks for."""
    scan = PickleScan()
    pushed: list[object] = []  # recent string arguments (for STACK_GLOBAL), None for anything else
    memo: dict[int, object] = {}
    seen: dict[str, None] = {}
    first = True
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name == "PROTO":
                scan.protocol = int(arg or 0)
                continue
            if name == "FRAME":
                continue
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                seen[f"{module}.{attr}"] = None
                if first:
                    scan.top = f"{module}.{attr}"
                if name == "INST":
                    scan.calling.add(name)
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                mod_o, attr_o = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                full = (
                    f"{mod_o}.{attr_o}"
                    if isinstance(mod_o, str) and isinstance(attr_o, str)
                    else "<computed>"
                )
                seen[full] = None
                if first:
                    scan.top = full
                pushed.append(None)
            elif name == "OBJ":
                scan.calling.add(name)
                pushed.append(None)
            elif name in ("MEMOIZE",):
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg or 0)] = pushed[-1] if pushed else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(arg or 0)))
            elif name == "STOP":
                scan.ok = True
                break
            else:
                pushed.append(arg if isinstance(arg, str) else None)
            if name not in ("MARK", "MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                first = False
            del pushed[:-8]
    except Exception as e:  # pickletools raises ValueError & co. on a damaged stream
        scan.error = one_line(e)
    else:
        if not scan.ok:
            scan.error = "the pickle stream ends before its STOP opcode"
    scan.globals = [_py3_name(n) for n in seen] if scan.protocol < 3 else list(seen)
    return scan


def _py3_name(full: str) -> str:
    """Python 2 names in protocol 0-2 pickles (``__builtin__.set``), as the unpickler maps them."""
    import _compat_pickle

    module, _, name = full.rpartition(".")
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return ".".join(_compat_pickle.NAME_MAPPING[(module, name)])
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def outside(names: list[str], allowed: set[str]) -> list[str]:
    """The names that are neither in ``allowed`` nor an already-imported ``torch``/``ultralytics``
    class (resolved through ``sys.modules`` only: nothing is imported for an untrusted file)."""
    out = []
    for full in names:
        if full in allowed or _known_class(full):
            continue
        out.append(full)
    return out


def _known_class(full: str) -> bool:
    parts = full.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is None:
            continue
        obj: object = module
        for attr in parts[i:]:
            if attr.startswith("_"):
                return False
            obj = getattr(obj, attr, None)
        top = parts[0]
        return isinstance(obj, type) and top in ("torch", "ultralytics") and _is_module_class(obj)
    return False


def _is_module_class(obj: type) -> bool:
    nn = sys.modules.get("torch.nn")
    return nn is not None and issubclass(obj, nn.Module)


# --------------------------------------------------------------------------------------------------
# why a load failed


# What torch's weights-only unpickler and Ultralytics' allow-list say when they refuse a global or call.
_REFUSALS = (
    "Unsupported global",
    "unsupported GLOBAL",
    "Can only create new object",
    "Can only build Tensor",
    "call reduce for unrecognized function",
    "unsafe getattr",
)


def explain_load_error(path: Path, e: Exception, fmt: str, *, alias: Path) -> str:
    chain = _chain(e)
    text = " | ".join(str(x) for x in chain)
    if "TorchScript" in text:
        return f"{path}: is a TorchScript export, not a training checkpoint; inspect the .pt it was exported from"
    m = re.search(r"'(\w+)' object has no attribute 'model'", str(e))
    if isinstance(e, AttributeError) and m:  # torch_safe_load read `.model` off a bare pickled object
        return (
            f"{path}: holds a pickled {m.group(1)}, not an Ultralytics checkpoint; "
            "load it in Python and pass the module to yolobn.load()"
        )
    refused = any(r in text for r in _REFUSALS)
    named = list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", text)))
    if fmt == "legacy" and (refused or "outside the supported" in text):
        return (
            f"{path}: uses torch's pre-1.6 serialization, which yolobn cannot check against the "
            "allow-list; re-save it with a current torch, or re-run with --trust if you trust its source"
        )
    data = read_pickle_bytes(path) if fmt == "zip" else None
    scan = scan_pickle(data) if data is not None else None
    if scan is not None and scan.ok:
        names = outside(scan.globals, _allowed_globals())
        if refused or names or scan.calling:
            what = names or named or sorted(scan.calling)
            return _refusal(path, what)
        if scan.protocol > 2:
            return (
                f"{path}: uses pickle protocol {scan.protocol}, which the safe loader cannot read (torch.save "
                "writes protocol 2); re-save it with torch.save's defaults, or re-run with --trust if you trust "
                "its source"
            )
    elif scan is None and refused:
        return _refusal(path, named)
    cause = chain[-1] if len(chain) > 1 else e
    why = scan.error if scan is not None and scan.error else detail(cause, alias, path)
    return f"{path}: the checkpoint is truncated or corrupt ({why}); copy or download it again"


def _refusal(path: Path, names: list[str]) -> str:
    what = f" ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})" if names else ""
    return (
        f"{path}: refused: the file asks to run code outside the allow-list{what}; it may run code when "
        "loaded. If you trust its source, re-run with --trust"
    )


def _allowed_globals() -> set[str]:
    """Names the safe loader accepts: torch's defaults, plus what is registered (Ultralytics' list),
    plus the restricted getattr Ultralytics maps ``builtins.getattr`` to (registered only once a
    checkpoint needs it)."""
    names: set[str] = {"builtins.getattr"}
    import torch

    with contextlib.suppress(Exception):  # a private torch helper: best effort
        from torch._weights_only_unpickler import _get_allowed_globals

        names |= set(_get_allowed_globals())
    for entry in torch.serialization.get_safe_globals():
        if isinstance(entry, tuple):
            names.add(str(entry[1]))
        else:
            names.add(f"{getattr(entry, '__module__', '')}.{getattr(entry, '__qualname__', '')}")
    return names


def _chain(e: BaseException) -> list[BaseException]:
    out = [e]
    while out[-1].__cause__ is not None and len(out) < 8:
        out.append(out[-1].__cause__)
    return out


def detail(e: BaseException, alias: Path, path: Path) -> str:
    """``Type: first line`` of an error, naming the user's file rather than yolobn's temporary alias."""
    line = one_line(e) if str(e).strip() else ""
    for a in {str(alias.absolute()), str(alias)}:
        line = line.replace(a, str(path))
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def explain_missing_module(path: Path, e: ModuleNotFoundError) -> str:
    if e.name and e.name.split(".")[0] == "models":
        return (
            f"{path}: is a YOLOv5 checkpoint from the ultralytics/yolov5 repository, which the ultralytics "
            "package cannot load; use a YOLOv5u/YOLOv8+ checkpoint"
        )
    return (
        f"{path}: needs the Python module '{e.name}', which is not installed; yolobn never installs packages "
        "while loading: install it yourself if you trust the checkpoint"
    )
