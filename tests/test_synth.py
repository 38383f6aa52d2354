"""Tests for the synthetic shapes dataset generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from yolobn.data.synth import CLASSES, make_shapes, shapes_dataset

SMALL = {"n_train": 6, "n_val": 3, "imgsz": 64, "seed": 3}


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every image and label under ``root`` (data.yaml holds an absolute path)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "data.yaml"
    }


def _labels(root: Path, split: str) -> list[tuple[Path, list[list[float]]]]:
    out = []
    for txt in sorted((root / "labels" / split).glob("*.txt")):
        rows = [line.split() for line in txt.read_text().splitlines()]
        out.append((txt, [[float(v) for v in row] for row in rows if row]))
    return out


def test_layout_and_yaml(tmp_path: Path) -> None:
    data_yaml = make_shapes(tmp_path, **SMALL)
    assert data_yaml == tmp_path / "data.yaml"
    for split, n in (("train", 6), ("val", 3)):
        images = sorted((tmp_path / "images" / split).glob("*.png"))
        labels = sorted((tmp_path / "labels" / split).glob("*.txt"))
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]
        with Image.open(images[0]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    data = yaml.safe_load(data_yaml.read_text())
    assert Path(data["path"]) == tmp_path.resolve()
    assert (data["train"], data["val"]) == ("images/train", "images/val")
    assert data["names"] == dict(enumerate(CLASSES))
    assert data["yolobn_synth"]["seed"] == 3 and data["yolobn_synth"]["imgsz"] == 64


def test_labels_are_valid(tmp_path: Path) -> None:
    make_shapes(tmp_path, **SMALL)
    for split in ("train", "val"):
        for txt, rows in _labels(tmp_path, split):
            assert 1 <= len(rows) <= 4, txt
            for line in txt.read_text().splitlines():
                fields = line.split()
                assert len(fields) == 5 and fields[0].isdigit(), line
                assert all(len(v.split(".")[1]) == 6 for v in fields[1:]), line
            for cls, *box in rows:
                assert int(cls) in range(len(CLASSES))
                assert all(0 < v <= 1 for v in box), (txt, box)
                cx, cy, w, h = box
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6


def test_deterministic(tmp_path: Path) -> None:
    make_shapes(tmp_path / "a", **SMALL)
    make_shapes(tmp_path / "b", **SMALL)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert len(a) == 18 and a == b
    ya = yaml.safe_load((tmp_path / "a" / "data.yaml").read_text())
    yb = yaml.safe_load((tmp_path / "b" / "data.yaml").read_text())
    assert {**ya, "path": None} == {**yb, "path": None}
    make_shapes(tmp_path / "c", **{**SMALL, "seed": 4})
    assert _hashes(tmp_path / "c") != a


def _main_colour(pixels: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Most frequent exact RGB value of ``pixels`` (N, 3), skipping ``exclude``."""
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    for k in np.argsort(-counts, kind="stable"):
        if exclude is None or not (colours[k] == exclude).all():
            return colours[k]
    raise AssertionError("no colour found")


def test_boxes_are_tight(tmp_path: Path) -> None:
    """Single-shape images: the flat shape colour fills exactly the labelled box extents."""
    size = 64
    make_shapes(tmp_path, n_train=40, n_val=0, imgsz=size, seed=0)
    checked = 0
    for txt, rows in _labels(tmp_path, "train"):
        if len(rows) != 1:
            continue
        img = np.asarray(Image.open(tmp_path / "images" / "train" / f"{txt.stem}.png"))
        _, cx, cy, w, h = rows[0]
        x0, x1 = round((cx - w / 2) * size), round((cx + w / 2) * size)
        y0, y1 = round((cy - h / 2) * size), round((cy + h / 2) * size)
        outside = np.ones((size, size), bool)
        outside[y0:y1, x0:x1] = False
        # A solid background may outnumber a thin triangle inside its box: skip that colour.
        bg = _main_colour(img[outside])
        fg = _main_colour(img[y0:y1, x0:x1].reshape(-1, 3), exclude=bg)
        mask = (img == fg).all(-1)
        ys, xs = np.nonzero(mask)
        assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (x0, x1, y0, y1), txt
        assert mask[y0:y1, x0:x1].mean() > 0.3, txt  # triangles fill at least ~1/3 of their box
        checked += 1
    assert checked >= 5


def test_shapes_dataset_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = shapes_dataset(tmp_path / "cache", **SMALL)
    assert first == tmp_path / "cache" / "shapes-v1-6-3-64-s3" / "data.yaml"
    assert Path(yaml.safe_load(first.read_text())["path"]) == first.parent.resolve()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.parent.name]  # no temp leftovers
    stamp = {p: p.stat().st_mtime_ns for p in first.parent.rglob("*")}
    assert shapes_dataset(tmp_path / "cache", **SMALL) == first
    assert {p: p.stat().st_mtime_ns for p in first.parent.rglob("*")} == stamp
    # Same content as a direct generation.
    make_shapes(tmp_path / "direct", **SMALL)
    assert _hashes(first.parent) == _hashes(tmp_path / "direct")
    # A damaged cache entry is rebuilt.
    next(first.parent.glob("images/train/*.png")).unlink()
    assert shapes_dataset(tmp_path / "cache", **SMALL) == first
    assert _hashes(first.parent) == _hashes(tmp_path / "direct")
    # $YOLOBN_CACHE is the default location.
    monkeypatch.setenv("YOLOBN_CACHE", str(tmp_path / "env"))
    assert shapes_dataset(**SMALL).parent.parent == tmp_path / "env"
