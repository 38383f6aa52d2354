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

import io
import os
import pickletools
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from yolobn.core.errors import CheckpointError
from yolobn.core.limits import MAX_INFLATE_RATIO, MIN_INFLATE_BYTES
from yolobn.core.text import one_line

__all__ = [
    "IMAGE_MAGIC",
    "LEGACY_MAGIC",
    "PickleScan",
    "detail",
    "explain_load_error",
    "explain_missing_module",
    "read_pickle_bytes",
    "regular_file",
    "scan_pickle",
    "sniff",
]

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
        infos = _zip_infos(path)
        _check_inflation(path, infos, st.st_size)
        names = [i.filename for i in infos]
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


def _check_inflation(path: Path, infos: list[zipfile.ZipInfo], size: int) -> None:
    """Refuse an archive whose records declare far more bytes than the file holds, from the central
    directory alone (before torch allocates and inflates a record): torch.save stores records
    uncompressed, while a record compressed by another tool can inflate 1000-fold."""
    declared = sum(i.file_size for i in infos)
    if declared > MAX_INFLATE_RATIO * size + MIN_INFLATE_BYTES:
        packed = [i for i in infos if i.compress_type != zipfile.ZIP_STORED]
        which = f" (compressed: {packed[0].filename}{', ...' if len(packed) > 1 else ''})" if packed else ""
        raise CheckpointError(
            f"{path}: its zip records would inflate to {declared >> 20:,} MB from a {size >> 20:,} MB file"
            f"{which}, more than {MAX_INFLATE_RATIO}x; torch.save writes them uncompressed: refused as "
            "damaged or edited"
        )


def _zip_infos(path: Path) -> list[zipfile.ZipInfo]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.infolist()
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
        fields: the first string stored under each key in ``FIELDS`` (``version``: the Ultralytics
            release that saved the file), read without unpickling.
    """

    ok: bool = False
    error: str = ""
    protocol: int = 0
    globals: list[str] = field(default_factory=list)
    calling: set[str] = field(default_factory=set)
    top: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


FIELDS = ("version", "date")
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
_MEMO_OPS = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}


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


def scan_pickle(data: bytes) -> PickleScan:
    """Parse ``data`` opcode by opcode (nothing is imported or called) and list what it asks for."""
    scan = PickleScan()
    pushed: list[object] = []  # recent string arguments (for STACK_GLOBAL), None for anything else
    memo: dict[int, object] = {}
    seen: dict[str, None] = {}
    first = True
    key: str | None = None  # the string just pushed (a dict key when a string value follows)
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in _STRING_OPS:
                if key in FIELDS and key not in scan.fields:
                    scan.fields[key] = str(arg)[:64]
                key = str(arg)
            elif name not in _MEMO_OPS:
                key = None
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
    "yolobn's allow-list refuses",
)


def explain_load_error(
    path: Path, e: Exception, fmt: str, *, alias: Path, outside: Callable[[list[str]], list[str]]
) -> str:
    """One line for a checkpoint the safe loader could not read; ``outside`` lists the names the
    allow-list does not accept (``yolobn.io.allowlist.refused``)."""
    chain = _chain(e)
    text = " | ".join(str(x) for x in chain)
    if "TorchScript" in text:
        return f"{path}: is a TorchScript export, not a training checkpoint; inspect the .pt it was exported from"
    refused = any(r in text for r in _REFUSALS)
    named = list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)|refuses a call of ([\w.]+)", text)))
    named = [a or b for a, b in named]
    if fmt == "legacy" and (refused or "outside the supported" in text):
        return (
            f"{path}: uses torch's pre-1.6 serialization, which yolobn cannot check against the "
            "allow-list; re-save it with a current torch, or allow code only if you trust its source (trust=True; --trust on the command line)"
        )
    data = read_pickle_bytes(path) if fmt == "zip" else None
    scan = scan_pickle(data) if data is not None else None
    if scan is not None and scan.ok:
        names = outside(scan.globals)
        if refused or names or scan.calling:
            what = names or named or sorted(scan.calling)
            return refusal(path, what)
        if scan.protocol > 2:
            return (
                f"{path}: uses pickle protocol {scan.protocol}, which the safe loader cannot read (torch.save "
                "writes protocol 2); re-save it with torch.save's defaults, or allow code only if you trust its "
                "source (trust=True; --trust on the command line)"
            )
    elif scan is None and refused:
        return refusal(path, named)
    cause = chain[-1] if len(chain) > 1 else e
    why = scan.error if scan is not None and scan.error else detail(cause, alias, path)
    return f"{path}: the checkpoint is truncated or corrupt ({why}); copy or download it again"


def refusal(path: Path, names: list[str]) -> str:
    what = f" ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})" if names else ""
    return (
        f"{path}: refused: the file asks to run code outside the allow-list{what}; it may run code when "
        "loaded. If you trust its source, re-run with --trust"
    )


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
