"""Deterministic synthetic shapes dataset in YOLO detection format.

The generator draws filled rectangles, ellipses and triangles on varied
backgrounds. Labels are the exact tight boxes of the drawn pixels, so the
dataset is a clean, tiny benchmark for detection models (training demos,
tests, benchmarks) that needs no download.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

__all__ = ["CLASSES", "VERSION", "make_shapes", "shapes_dataset"]

CLASSES = ("rectangle", "ellipse", "triangle")
VERSION = 1  # bump whenever the generated pixels or labels change

_SPLITS = ("train", "val")
_MIN_VISIBLE = 0.6  # fraction of each shape's pixels that must stay visible
_MIN_CONTRAST = 90.0  # RGB distance between a shape and what it is drawn on


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Return a float32 (size, size, 3) background: solid, gradient or noise."""
    kind = rng.integers(3)
    base = rng.uniform(0, 255, 3)
    img = np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    if kind == 1:  # linear gradient towards a second colour at a random angle
        other = rng.uniform(0, 255, 3)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = base + t[..., None] * (other - base)
    elif kind == 2:  # low-amplitude noise around the base colour
        img = (img + rng.normal(0, rng.uniform(4, 14), (size, size, 3))).astype(np.float32)
    return img.astype(np.float32)


def _shape_mask(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """Draw one shape of class ``cls`` as a boolean mask, fully inside the image."""
    w, h = (rng.uniform(0.15, 0.6, 2) * size).round().astype(int)
    x0 = int(rng.integers(0, size - w + 1))
    y0 = int(rng.integers(0, size - h + 1))
    x1, y1 = x0 + w - 1, y0 + h - 1
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if cls == 0:
        draw.rectangle((x0, y0, x1, y1), fill=255)
    elif cls == 1:
        draw.ellipse((x0, y0, x1, y1), fill=255)
    else:  # triangle: vertices on an ellipse inscribed in the box, random rotation
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        theta = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
        theta = theta + rng.uniform(-0.35, 0.35, 3)
        pts = [(cx + (w - 1) / 2 * np.cos(t), cy + (h - 1) / 2 * np.sin(t)) for t in theta]
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=255)
    return np.asarray(mask) > 0


def _render(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[str]]:
    """Render one image and its YOLO label lines."""
    img = _background(rng, size)
    owner = np.full((size, size), -1, dtype=np.int16)  # index of the visible shape
    shapes: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(30):
            cls = int(rng.integers(len(CLASSES)))
            mask = _shape_mask(rng, cls, size)
            if mask.sum() < 16:
                continue
            # Keep earlier shapes mostly visible (no full occlusion).
            if any(((owner == i) & ~mask).sum() < _MIN_VISIBLE * m.sum() for i, (_, m) in enumerate(shapes)):
                continue
            under = img[mask].mean(axis=0)
            colour = rng.uniform(0, 255, 3)
            if np.linalg.norm(colour - under) < _MIN_CONTRAST:
                continue
            img[mask] = colour
            owner[mask] = len(shapes)
            shapes.append((cls, mask))
            break
    lines = []
    for cls, mask in shapes:
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        cx, cy, w, h = (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    pil = Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), "RGB")
    return pil, lines


def _write_data_yaml(root: Path, params: dict[str, int], dataset_root: Path | None = None) -> Path:
    """Write ``root/data.yaml`` whose ``path`` is ``dataset_root`` (default ``root``), absolute."""
    data = {
        "path": str((dataset_root or root).resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(CLASSES)),
        "yolobn_synth": {"generator": "shapes", "version": VERSION, **params},
    }
    out = root / "data.yaml"
    header = f"# yolobn synthetic shapes dataset (generator v{VERSION})\n"
    out.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return out


def make_shapes(
    root: str | os.PathLike[str], *, n_train: int = 96, n_val: int = 24, imgsz: int = 160, seed: int = 0
) -> Path:
    """Write a YOLO-format shapes dataset under ``root`` and return its data.yaml path.

    Same arguments give byte-identical images and labels (``data.yaml`` only
    differs by its absolute ``path``). Each image is seeded independently from
    ``(seed, split, index)``, so e.g. the val split does not depend on ``n_train``.
    """
    root = Path(root)
    for split_id, (split, n) in enumerate(zip(_SPLITS, (n_train, n_val), strict=True)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, lines = _render(np.random.default_rng([seed, split_id, i]), imgsz)
            img.save(root / "images" / split / f"{i:05d}.png")
            (root / "labels" / split / f"{i:05d}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    return _write_data_yaml(root, {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "seed": seed})


def _is_complete(root: Path, n_train: int, n_val: int) -> bool:
    """True if ``root`` holds data.yaml and the expected number of images and labels."""
    if not (root / "data.yaml").is_file():
        return False
    for split, n in zip(_SPLITS, (n_train, n_val), strict=True):
        if len(list((root / "images" / split).glob("*.png"))) != n:
            return False
        if len(list((root / "labels" / split).glob("*.txt"))) != n:
            return False
    return True


def shapes_dataset(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    n_train: int = 96,
    n_val: int = 24,
    imgsz: int = 160,
    seed: int = 0,
) -> Path:
    """Return data.yaml of a cached shapes dataset, generating it once if needed.

    The cache defaults to ``$YOLOBN_CACHE`` or ``~/.cache/yolobn``. Generation
    happens in a temporary sibling folder that is renamed into place, so an
    interrupted run never leaves a partial dataset behind.
    """
    if cache_dir is None:
        cache_dir = os.environ.get("YOLOBN_CACHE") or Path.home() / ".cache" / "yolobn"
    cache = Path(cache_dir).expanduser()
    name = f"shapes-v{VERSION}-{n_train}-{n_val}-{imgsz}-s{seed}"
    final = cache / name
    if _is_complete(final, n_train, n_val):
        return final / "data.yaml"
    if final.exists():  # stale or partial (e.g. edited by hand): rebuild it
        shutil.rmtree(final)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache))
    try:
        make_shapes(tmp, n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed)
        # data.yaml must name the final location, not the temporary one.
        _write_data_yaml(tmp, {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "seed": seed}, final)
        try:
            os.replace(tmp, final)
        except OSError:  # another process won the race
            if not _is_complete(final, n_train, n_val):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "data.yaml"
