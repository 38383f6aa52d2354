"""Small files that would cost gigabytes or hang (issue 18, section 3), rebuilt on demand.

Each ``Bomb`` writes its inputs into a folder and returns the yolobn command line to run there:
the CLI must end with one error line and exit 2 (``skip=False``), or go on with a warning that
the image was skipped (``skip=True``), in seconds and well under 2 GB. Used by
tests/test_budgets.py (small sizes) and bench/bench_bombs.py (the worst case of each category).
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ultralytics

MODEL_YAMLS = Path(ultralytics.__file__).parent / "cfg" / "models"


@dataclass(frozen=True)
class Bomb:
    """``build(folder, big)`` writes the inputs and returns the argv (``big``: the worst case)."""

    name: str
    category: str
    build: Callable[[Path, bool], list[str]]
    words: tuple[str, ...]  # one of these is in the error (or warning) line
    expect: str = "error"  # or "skip": an image skipped with a warning; "ok": read within budget


# --------------------------------------------------------------------------------------------------
# yaml


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """``x0 .. x{levels-1}``: each anchor a list of ``width`` aliases of the one before, so that the
    last expands to ``width ** levels`` strings (9 ** 9 = 387M) in a few hundred bytes."""
    return "".join(f"x{i}: {anchor}\n" for i, anchor in enumerate(_anchors(levels, width)))


def _anchors(levels: int, width: int) -> list[str]:
    out = [f"&x0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        out.append(f"&x{i} [{', '.join([f'*x{i - 1}'] * width)}]")
    return out


def model_yaml(**changes: object) -> str:
    """yolo11.yaml (the n scale) with top-level keys replaced, as yaml text."""
    import yaml

    cfg = yaml.safe_load((MODEL_YAMLS / "11" / "yolo11.yaml").read_text())
    cfg.update(changes)
    return yaml.safe_dump(cfg, sort_keys=False)


def _legacy_yaml(depth: float, width: float) -> str:
    """A YOLOv8-style yaml (depth_multiple / width_multiple, no scales)."""
    import yaml

    cfg = yaml.safe_load((MODEL_YAMLS / "v8" / "yolov8.yaml").read_text())
    cfg.pop("scales")
    cfg.update(depth_multiple=depth, width_multiple=width)
    return yaml.safe_dump(cfg, sort_keys=False)


def _yaml_cmd(text: str, name: str = "bomb.yaml") -> Callable[[Path, bool], list[str]]:
    def build(d: Path, big: bool) -> list[str]:
        (d / name).write_text(text)
        return ["inspect", name, "--json", "out.json"]

    return build


def _model_alias(d: Path, big: bool) -> list[str]:
    import yaml

    cfg = yaml.safe_load((MODEL_YAMLS / "11" / "yolo11.yaml").read_text())
    cfg["backbone"][0] = "BOMB"  # the first row: the last anchor (a malformed row, shown in the error)
    text = yaml.safe_dump(cfg, sort_keys=False).replace("BOMB", f"*x{8 if big else 5}", 1)
    (d / "bomb.yaml").write_text(alias_bomb(9 if big else 6) + text)
    return ["inspect", "bomb.yaml", "--json", "out.json"]


def _experiment_alias(d: Path, big: bool) -> list[str]:
    layers = ", ".join(_anchors(9 if big else 6, 9))  # inside the one field (unknown keys fail first)
    (d / "exp.yaml").write_text(f"data: shapes\nvariants:\n  - impl: reference\n    layers: [{layers}]\n")
    return ["experiment", "exp.yaml", "-o", "out"]


def _dataset(d: Path, body: str) -> list[str]:
    """A dataset yaml whose val folder holds one real image, then ``body``; run through swap."""
    from tests.corpus import tiny_png

    (d / "images").mkdir()
    tiny_png(d / "images" / "a.png", 64)
    (d / "data.yaml").write_text(f"path: {d}\ntrain: images\nval: images\n{body}")
    return ["swap", "--data", "data.yaml", "--impl", "reference", "-o", "out"]


def _dataset_nc(d: Path, big: bool) -> list[str]:
    return _dataset(d, f"nc: {2_000_000_000 if big else 50_000_000}\n")


def _dataset_alias(d: Path, big: bool) -> list[str]:
    return _dataset(d, alias_bomb(9 if big else 6) + f"names: *x{8 if big else 5}\n")


# --------------------------------------------------------------------------------------------------
# checkpoints


def _ckpt_names(make: Callable[[bool], object]) -> Callable[[Path, bool], list[str]]:
    def build(d: Path, big: bool) -> list[str]:
        import torch

        from tests.corpus import demo_ckpt

        ck = demo_ckpt()
        ck["model"].names = make(big)
        torch.save(ck, d / "names.pt")
        return ["inspect", "names.pt", "--json", "out.json"]

    return build


def shared_names(big: bool) -> list[str]:
    """10^6 class names that are one string of 10^6 characters (a few MB on disk: pickle shares it)."""
    return ["x" * 10**6] * (10**6 if big else 2 * 10**5)


def nested_names(big: bool) -> dict[int, object]:
    """One class whose name is a list nested 60 deep, each level the previous one twice: 2^60
    leaves, a few hundred bytes in the pickle."""
    v: object = "x"
    for _ in range(60 if big else 40):
        v = [v, v]
    return {0: v}


def inflating_checkpoint(path: Path, zeros: int) -> Path:
    """The demo checkpoint with its largest tensor record stored compressed (ZIP_DEFLATED) and
    followed by ``zeros`` zero bytes: the record declares and inflates to ``zeros`` more bytes, at
    about 1/1000 of that on disk."""
    from tests.corpus import demo_path

    with zipfile.ZipFile(demo_path()) as zin:
        infos = zin.infolist()
        largest = max(infos, key=lambda i: i.file_size).filename
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
            for info in infos:
                data = zin.read(info)
                if info.filename != largest:
                    zout.writestr(info.filename, data)
                    continue
                zout.compression, zout.compresslevel = zipfile.ZIP_DEFLATED, 1  # this record only
                with zout.open(info.filename, "w", force_zip64=True) as f:
                    f.write(data)
                    chunk = bytes(16 << 20)
                    left = zeros
                    while left > 0:
                        f.write(chunk[: min(left, len(chunk))])
                        left -= len(chunk)
                zout.compression, zout.compresslevel = zipfile.ZIP_STORED, None
    return path


def _ckpt_inflate(d: Path, big: bool) -> list[str]:
    inflating_checkpoint(d / "zipbomb.pt", (3_500 if big else 200) << 20)
    return ["inspect", "zipbomb.pt", "--json", "out.json"]


# --------------------------------------------------------------------------------------------------
# images


def deflated_png(path: Path, side: int) -> Path:
    """A valid 1-bit grayscale PNG of ``side`` x ``side`` black pixels (``side`` 32000: 125 KB on
    disk, 3 GB decoded as BGR)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the packed bits
    z = zlib.compressobj(9)
    body = io.BytesIO()
    block = row * 256
    for _ in range(side // 256):
        body.write(z.compress(block))
    body.write(z.compress(row * (side % 256)))
    body.write(z.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body.getvalue()) + chunk(b"IEND", b"")
    )
    return path


def paged_tiff(path: Path, pages: int, side: int) -> Path:
    """A TIFF of ``pages`` compressed RGB pages of ``side`` x ``side`` pixels."""
    from PIL import Image

    im = Image.new("RGB", (side, side), (10, 200, 30))
    im.save(
        path, format="TIFF", save_all=True, append_images=[im] * (pages - 1), compression="tiff_adobe_deflate"
    )
    return path


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no space on disk (all zeros)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _images(make: Callable[[Path, bool], Path]) -> Callable[[Path, bool], list[str]]:
    def build(d: Path, big: bool) -> list[str]:
        from tests.corpus import tiny_png

        bad = make(d, big)
        tiny_png(d / "ok.png", 64)
        return ["activations", "--images", bad.name, "ok.png", "--max-images", "2", "--json", "out.json"]

    return build


def _png(d: Path, big: bool) -> Path:
    return deflated_png(d / "huge.png", 32000 if big else 10100)


def _tiff(d: Path, big: bool) -> Path:
    return paged_tiff(d / "pages.tif", 200 if big else 10, 2000 if big else 500)


def _sparse(d: Path, big: bool) -> Path:
    return sparse_file(d / "sparse.jpg", (10 << 30) if big else (1 << 30))


# --------------------------------------------------------------------------------------------------
# options


def _seeds(d: Path, big: bool) -> list[str]:
    from tests.corpus import tiny_png

    tiny_png(d / "x.png", 64)
    return [
        "frontier",
        "--seeds",
        "1000000000",
        "--images",
        "x.png",
        "--data",
        "shapes",
        "--criteria",
        "random",
    ]


BOMBS = [
    Bomb("model-yaml-nc", "model yaml", _yaml_cmd(model_yaml(nc=100_000_000)), ("nc",)),
    Bomb(
        "model-yaml-activation",
        "model yaml",
        _yaml_cmd(model_yaml(activation="nn.Linear(36000, 36000)")),
        ("parameters",),
    ),
    Bomb("model-yaml-depth", "model yaml", _yaml_cmd(_legacy_yaml(1e9, 0.25)), ("depth_multiple",)),
    Bomb("model-yaml-width", "model yaml", _yaml_cmd(_legacy_yaml(0.33, 16.0)), ("parameters",)),
    Bomb("model-yaml-alias", "model yaml", _model_alias, ("expands to more than",)),
    Bomb("experiment-alias", "experiment file", _experiment_alias, ("expands to more than",)),
    Bomb("dataset-nc", "dataset yaml", _dataset_nc, ("classes",)),
    Bomb("dataset-alias-names", "dataset yaml", _dataset_alias, ("expands to more than",)),
    Bomb("checkpoint-shared-names", "checkpoint", _ckpt_names(shared_names), ("class names",)),
    Bomb("checkpoint-nested-names", "checkpoint", _ckpt_names(nested_names), ("class name",)),
    Bomb("checkpoint-zip-inflate", "checkpoint", _ckpt_inflate, ("inflate",)),
    Bomb("image-png-32000", "image", _images(_png), ("skipped",), expect="skip"),
    Bomb("image-tiff-pages", "image", _images(_tiff), (), expect="ok"),
    Bomb("image-sparse-jpg", "image", _images(_sparse), ("skipped",), expect="skip"),
    Bomb("option-seeds", "option", _seeds, ("--seeds",)),
]

os.environ.setdefault("YOLO_OFFLINE", "1")
