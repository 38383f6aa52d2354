"""Golden files: text compared exactly, numbers within a stated tolerance, PNG images pixel for pixel.

Why a tolerance at all: the data-free statistics are the same bits everywhere (yolobn.bn.stats), but
the observed statistics come from float32 convolutions whose rounding depends on the CPU's
kernels and thread count, and PNG bytes depend on the zlib that Pillow ships. A golden test that
passes only on the machine that wrote the files is a broken test; one that ignores numbers is no
test. Regenerate with ``pytest --update-golden``.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

# a number that stands alone: not part of a name such as model.2.m.0.cv1 or yolo11n
NUMBER = re.compile(r"(?<![\w.])-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")
PNG = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")
# image paths differ by the cache folder (YOLOBN_CACHE); compare them from the dataset folder on
CACHE_PATH = re.compile(r'"[^"\n]*?/(shapes-[^/"\n]+/images/)')


@dataclass(frozen=True)
class Tolerance:
    """|a - b| <= max(rel * max(|a|, |b|), abs); with ``display``, also one unit in the last written
    digit of either number (numbers rounded for display and 0.1-pixel coordinates may flip it).
    Integers (no point, no exponent) are compared exactly."""

    rel: float
    abs: float = 0.0
    display: bool = False


# Data-free: written at 7 significant digits, so the 7th may differ (1e-6 relative).
EXACT_DATA = Tolerance(rel=1e-6)
# Observed on images: float32 convolutions (the last bits depend on the CPU and threads), and a
# pre-activation within rounding of 0 can move a channel's positive share by one position.
OBSERVED_DATA = Tolerance(rel=1e-4, abs=1e-3)


def _unit(token: str) -> float:
    """One unit in the last written digit of a number token."""
    mant, _, exp = token.lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 10.0 ** (int(exp or 0) - decimals)


def _is_int(token: str) -> bool:
    return "." not in token and "e" not in token.lower()


def _close(a: str, b: str, tol: Tolerance) -> bool:
    if _is_int(a) and _is_int(b):
        return int(a) == int(b)  # "-0" is 0
    x, y = float(a), float(b)
    allowed = max(tol.rel * max(abs(x), abs(y)), tol.abs)
    if tol.display:
        allowed = max(allowed, _unit(a), _unit(b))
    return abs(x - y) <= allowed * (1 + 1e-9) or (math.isnan(x) and math.isnan(y))


def _pixels(uri: str):
    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    return img.mode, np.asarray(img)


def _split(text: str) -> tuple[list[str], list[str], list[str]]:
    """(text between numbers and images, number tokens, PNG data URIs)."""
    images = PNG.findall(text)
    text = CACHE_PATH.sub(r'"<cache>/\1', PNG.sub("<png>", text))
    numbers = NUMBER.findall(text)
    return NUMBER.split(text), numbers, images


def mismatch(want: str, got: str, tol: Tolerance) -> str | None:
    """None when ``got`` matches the golden ``want``, else where and how it differs first."""
    wt, wn, wi = _split(want)
    gt, gn, gi = _split(got)
    for k, (a, b) in enumerate(zip(wt, gt, strict=False)):
        if a != b:
            i = len(os.path.commonprefix([a, b]))
            return f"text differs after number {k}: {a[max(0, i - 60) : i + 60]!r} vs {b[max(0, i - 60) : i + 60]!r}"
    if len(wt) != len(gt):
        return f"{len(wn)} numbers in the golden file, {len(gn)} now"
    for k, (a, b) in enumerate(zip(wn, gn, strict=True)):
        if not _close(a, b, tol):
            return f"number {k} ({wt[k][-60:]!r} ...): {a} in the golden file, {b} now (tolerance {tol})"
    if len(wi) != len(gi):
        return f"{len(wi)} PNG images in the golden file, {len(gi)} now"
    for k, (a, b) in enumerate(zip(wi, gi, strict=True)):
        (ma, pa), (mb, pb) = _pixels(a), _pixels(b)
        if ma != mb or pa.shape != pb.shape or (pa != pb).any():
            return f"PNG image {k} differs ({ma} {pa.shape} vs {mb} {pb.shape})"
    return None


def check_or_update(golden: Path, fresh: Path, names: list[str], tol: Tolerance, update: bool) -> None:
    """Assert every file in ``fresh`` matches its golden copy; with ``update``, rewrite the golden copy."""
    for name in names:
        new = (fresh / name).read_bytes()
        if update:
            golden.mkdir(parents=True, exist_ok=True)
            (golden / name).write_bytes(new)
            continue
        file_tol = tol if name.endswith((".csv", ".json")) else Tolerance(tol.rel, tol.abs, display=True)
        why = mismatch((golden / name).read_text(encoding="utf-8"), new.decode("utf-8"), file_tol)
        assert why is None, f"{golden / name} is stale: {why}; regenerate with `pytest --update-golden`"
