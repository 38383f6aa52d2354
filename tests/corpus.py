"""Bad inputs for yolobn, rebuilt on demand from the bundled demo checkpoint (issue 9).

* ``CASES``: every named bad input, as a command line. ``case.build(folder)`` writes the files it
  needs into ``folder`` and returns the argv (run with ``folder`` as the working directory). The CLI
  must exit with ``case.code`` (2 unless said), put one line on stderr that contains one of
  ``case.words``, write nothing, and never run a planted payload (``MARKER_NAME`` never appears).
* ``mutants(seed, n, base)``: seeded random damage to a checkpoint: edits of what it holds (BN
  tensors and attributes, names, layers, ema, training args...), damage to its bytes (bit flips,
  truncation, a damaged pickle stream) and planted payloads that touch ``MARKER_NAME``. The
  contract for each: exit 0, or exit 2 with one line and nothing written; never 1, never a hang,
  never a payload run. ``run_cli`` runs one command in-process with a deadline.
* The helpers ``test_load.py`` and ``test_cli_errors.py`` share (``build_model``, ``BAD_INPUTS``...).

Used by tests/test_corpus.py (every case and a seeded run of a few hundred mutants) and
bench/bench_corpus.py (the full count).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import functools
import hashlib
import io
import os
import pathlib
import random
import shutil
import signal
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "1")

MARKER_NAME = "pwned.marker"  # a payload that runs creates this file in the case folder
MODEL_YAML = "yolo11n.yaml"
ONNX_BYTES = b"\x08\x08\x12\x07pytorch\x1a\x052.1.0" + b":" + bytes(range(256)) * 4  # ModelProto header
BUS_JPG = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"
OUT = ["--json", "out.json"]  # every command is asked to write a file: none may appear on failure


# --------------------------------------------------------------------------------------------------
# checkpoints to start from


def demo_path() -> Path:
    import yolobn

    return yolobn.demo_model_path()


@functools.lru_cache(maxsize=1)
def demo_bytes() -> bytes:
    return demo_path().read_bytes()


def demo_ckpt() -> dict:
    """A fresh copy of the demo checkpoint's dict (the bundled file, trusted: a full unpickle)."""
    return torch.load(io.BytesIO(demo_bytes()), map_location="cpu", weights_only=False)


@functools.lru_cache(maxsize=1)
def tiny_bytes() -> bytes:
    """The demo checkpoint with a tiny YOLO (Conv, C3k2, SPPF, Detect: 15 BNs) in place of its
    YOLO11n: the same structure and fields, five times cheaper to load, for runs of hundreds of mutants."""
    from ultralytics.nn.tasks import DetectionModel

    cfg = {
        "nc": 3,
        "backbone": [
            [-1, 1, "Conv", [8, 3, 2]],
            [-1, 1, "Conv", [16, 3, 2]],
            [-1, 1, "C3k2", [16, False, 0.25]],
            [-1, 1, "Conv", [32, 3, 2]],
            [-1, 1, "SPPF", [32, 5]],
        ],
        "head": [[[4], 1, "Detect", ["nc"]]],
        "yaml_file": "yolo-tiny.yaml",
        # one scale that changes nothing: 8.3.0's parse_model needs a scale to build C3k2
        "scales": {"n": [1.0, 1.0, 1024]},
        "scale": "n",
    }
    ck = demo_ckpt()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = DetectionModel(cfg, verbose=False)
    trained_statistics(m)
    m.names, m.args = ck["model"].names, ck["model"].args
    ck["model"] = m.half().eval()
    for p in ck["model"].parameters():
        p.requires_grad = False
    buf = io.BytesIO()
    torch.save(ck, buf)
    return buf.getvalue()


def base_ckpt(base: str) -> dict:
    """A fresh copy of the ``demo`` or ``tiny`` checkpoint dict."""
    data = demo_bytes() if base == "demo" else tiny_bytes()
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def save(ckpt: Any, path: Path, **kw: Any) -> Path:
    torch.save(ckpt, path, **kw)
    return path


def batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def bn_named(ck: dict, name: str) -> nn.Module:
    return dict(ck["model"].named_modules())[name]


def edit_ckpt(edit: Callable[[dict], None], base: str = "demo") -> Callable[[Path], Path]:
    """A builder: the base checkpoint with ``edit`` applied, saved to the given path."""

    def build(path: Path) -> Path:
        ck = base_ckpt(base)
        edit(ck)
        return save(ck, path)

    return build


# --------------------------------------------------------------------------------------------------
# payloads: unpickling any of these creates the marker file


class TouchPayload:
    """Unpickling this creates ``marker`` through pathlib (no shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class ExecPayload:
    """Unpickling this runs Python source through builtins.exec."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


def raw_pickles(marker: Path) -> dict[str, bytes]:
    """Hand-written pickles that torch.save never writes, each creating ``marker`` when unpickled:
    INST and OBJ opcodes (protocol 0/1 class calls) and a getattr chain."""
    m = str(marker).encode()
    return {
        "inst": b"(V" + m + b"\nVw\niio\nFileIO\n.",
        "obj": b"(cio\nFileIO\nV" + m + b"\nVw\no.",
        # getattr(pathlib.PosixPath(marker), "touch")(): protocol 2, allowed names only
        "getattr_chain": (
            b"\x80\x02cbuiltins\ngetattr\ncpathlib\nPosixPath\nX"
            + struct.pack("<I", len(m))
            + m
            + b"\x85RX\x05\x00\x00\x00touch\x86R)R."
        ),
    }


def torch_zip(path: Path, pkl: bytes) -> Path:
    """A torch.save-style zip archive whose data.pkl is ``pkl``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
    return path


def replace_record(src: Path, dst: Path, suffix: str, data: bytes) -> Path:
    """A copy of the zip ``src`` with the record ending in ``suffix`` replaced by ``data``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, data if info.filename.endswith(suffix) else zin.read(info))
    return dst


def pickle_record(path: Path) -> bytes:
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


# --------------------------------------------------------------------------------------------------
# files that are not checkpoints (shared with test_load.py / test_cli_errors.py)


@functools.lru_cache(maxsize=1)
def build_model() -> nn.Module:
    """A YOLO11n DetectionModel (nc=3) with running statistics moved off their defaults, like a trained one.

    Built once per session and shared: callers must not modify it (deepcopy first).
    """
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    m = DetectionModel(MODEL_YAML, nc=3, verbose=False)
    trained_statistics(m)
    return m.eval()


def trained_statistics(m: nn.Module) -> None:
    """Move every BatchNorm2d's running statistics off their defaults (seeded), like a trained model's."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)


def save_checkpoint(model: nn.Module, path: Path, **extra: Any) -> Path:
    """Save the way Ultralytics' trainer (after strip_optimizer) does: an fp16 copy under 'model'."""
    ckpt = {
        "model": copy.deepcopy(model).half(),
        "ema": None,
        "date": "2025-06-01T12:00:00",
        "version": "8.4.190",
        "train_args": {"imgsz": 160, "epochs": 3},
        **extra,
    }
    torch.save(ckpt, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_png(path: Path, size: int = 8) -> Path:
    from PIL import Image

    Image.new("RGB", (size, size), (200, 30, 30)).save(path, format="PNG")
    return path


def huge_png(path: Path, side: int = 50000) -> Path:
    """A valid PNG header declaring ``side`` x ``side`` pixels (7.5 GB decoded), 60 bytes on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _torchscript(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in recent torch
        torch.jit.script(nn.Linear(2, 2)).save(str(path))


def _random_bytes(path: Path) -> None:
    data = random.Random(0).randbytes(1 << 14)
    assert data[:1] not in (b"\x80", b"\x08", b"P", b"B", b"G", b"\x89", b"\xff", b"%", b"R", b"\x1f")
    path.write_bytes(data)


def _truncated(path: Path, model: nn.Module) -> None:
    data = demo_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign_module() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))


def _zip_without_pickle(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a checkpoint")


# kind -> (file name, builder(path, model), words of which at least one must be in the message)
BAD_INPUTS: dict[str, tuple[str, Callable[[Path, nn.Module], object], tuple[str, ...]]] = {
    "missing": ("missing.pt", lambda p, m: None, ("no such file",)),
    "directory": ("runs", lambda p, m: p.mkdir(), ("directory",)),
    "empty": ("empty.pt", lambda p, m: p.write_bytes(b""), ("empty",)),
    "truncated": ("truncated.pt", _truncated, ("truncated", "corrupt")),
    "random": ("random.pt", lambda p, m: _random_bytes(p), ("not a PyTorch checkpoint",)),
    "jpeg": ("bus.pt", lambda p, m: shutil.copyfile(BUS_JPG, p), ("JPEG",)),
    "png": ("image.pt", lambda p, m: tiny_png(p), ("PNG",)),
    "torchscript": ("scripted.pt", lambda p, m: _torchscript(p), ("TorchScript",)),
    "onnx": ("model.onnx", lambda p, m: p.write_bytes(ONNX_BYTES), ("ONNX",)),
    "onnx_as_pt": ("exported.pt", lambda p, m: p.write_bytes(ONNX_BYTES), ("ONNX",)),
    "state_dict": ("weights.pt", lambda p, m: torch.save(m.state_dict(), p), ("state_dict",)),
    "state_dict_in_dict": (
        "sd_ckpt.pt",
        lambda p, m: torch.save({"model": m.state_dict(), "epoch": 3}, p),
        ("state_dict",),
    ),
    "pickled_module": ("seq.pt", lambda p, m: torch.save(_foreign_module(), p), ("Sequential",)),
    "foreign_model_in_dict": (
        "foreign.pt",
        lambda p, m: torch.save({"model": _foreign_module(), "epoch": 3}, p),
        ("not an Ultralytics model",),
    ),
    "zip_not_torch": ("archive.pt", lambda p, m: _zip_without_pickle(p), ("no data.pkl",)),
    "malicious": (
        "evil.pt",
        lambda p, m: torch.save({"model": TouchPayload(p.parent / MARKER_NAME)}, p),
        ("--trust",),
    ),
}


def make_bad_input(kind: str, directory: Path, model: nn.Module) -> Path:
    """Create the bad input ``kind`` in ``directory`` and return its path (not created for 'missing')."""
    name, build, _ = BAD_INPUTS[kind]
    path = directory / name
    build(path, model)
    return path


def expected_words(kind: str) -> tuple[str, ...]:
    return BAD_INPUTS[kind][2]


def damaged_zip_checkpoint(model: nn.Module, path: Path) -> Path:
    """A checkpoint whose zip directory is intact but one tensor record is missing (a botched copy)."""
    full = save_checkpoint(model, path.with_name(path.stem + "_full.pt"))
    with zipfile.ZipFile(full) as zin, zipfile.ZipFile(path, "w") as zout:
        names = zin.namelist()
        dropped = next(n for n in names if "/data/" in n and not n.endswith("data.pkl"))
        for n in names:
            if n != dropped:
                zout.writestr(zin.getinfo(n), zin.read(n))
    full.unlink()
    return path


def damaged_pickle_checkpoint(model: nn.Module, path: Path) -> Path:
    """A structurally valid checkpoint zip whose data.pkl has 64 bytes zeroed (bit rot, a bad disk)."""
    save_checkpoint(model, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data.pkl"))
    start = data_offset(data, info) + info.file_size // 2
    data[start : start + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


def data_offset(data: bytes | bytearray, info: zipfile.ZipInfo) -> int:
    ho = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[ho + 26 : ho + 30])
    return ho + 30 + name_len + extra_len


def flip_tensor_bit(src: Path, dst: Path, record: int = 0, bit: int = 5) -> Path:
    """A copy of ``src`` with one bit flipped inside a tensor record: torch loads it without a word."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        infos = [i for i in z.infolist() if "/data/" in i.filename and i.file_size > 16]
    info = infos[record]
    data[data_offset(data, info) + info.file_size // 2] ^= 1 << bit
    dst.write_bytes(bytes(data))
    return dst


# --------------------------------------------------------------------------------------------------
# running one command line


@dataclass
class Outcome:
    code: int | None  # None: the deadline passed (a hang)
    out: str
    err: str
    marker: bool  # a payload ran
    written: list[str]  # files that appeared in the folder


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


class Hang(BaseException):
    """Raised by ``deadline``: a BaseException, so that no ``except OSError``/``Exception`` in the
    code under test can swallow it (TimeoutError is an OSError)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``Hang`` in the main thread after ``seconds`` (a blocking open() of a FIFO included)."""

    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv: list[str], folder: Path, timeout: float = 60.0) -> Outcome:
    """``yolobn.cli.main(argv)`` in ``folder``, in-process, with a deadline; files written are listed
    (compared with what was there before)."""
    from yolobn.cli import main

    before = set(listing(folder))
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    code: int | None
    try:
        os.chdir(folder)
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            deadline(timeout),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            try:
                code = main(argv)
            except SystemExit as e:  # argparse's usage errors
                code = e.code if isinstance(e.code, int) else 2
    except Hang:
        code = None
    finally:
        os.chdir(cwd)
    after = listing(folder)
    written = [p for p in after if p not in before]
    return Outcome(code, out.getvalue(), err.getvalue(), (folder / MARKER_NAME).exists(), written)


def contract_broken(o: Outcome) -> str | None:
    """What is wrong with a bad input's outcome (None: exit 0, or exit 2 with one line and no file)."""
    if o.marker:
        return "a payload ran"
    if o.code is None:
        return "hang"
    if o.code == 0:
        return None
    if o.code != 2:
        return f"exit {o.code}: {o.err.strip().splitlines()[-1:] or o.err!r}"
    lines = o.err.splitlines()
    if len(lines) != 1 or not lines[0].startswith("yolobn: error: "):
        return f"exit 2 but stderr is not one error line: {o.err!r}"
    if o.written:
        return f"exit 2 but wrote {o.written}"
    return None
