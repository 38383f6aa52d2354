"""The one image pipeline: which images, at which size, preprocessed as Ultralytics' predict does.

Every command that runs images (activations, recalibrate, swap's label-free check) streams them
through ``iter_batches``: ``LetterBox(imgsz, auto=True, stride)`` per image, BGR to RGB, 0-1 float
(``classify_transforms`` for classifiers), batched by letterboxed shape, holding about two batches
at a time. Accepted file suffixes are Ultralytics' own ``IMG_FORMATS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from yolobn.core.errors import YolobnError
from yolobn.core.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MAX_IMGSZ, MIN_IMGSZ
from yolobn.data.synth import shapes_dataset
from yolobn.io.quiet import quiet_ultralytics

__all__ = [
    "Progress",
    "check_decoded",
    "collect_images",
    "default_images",
    "image_suffixes",
    "iter_batches",
    "model_imgsz",
    "model_stride",
    "resolve_images",
    "run_images",
    "sample_images",
]

Progress = Callable[[int, int], None]


def image_suffixes() -> frozenset[str]:
    """The suffixes Ultralytics reads as images (``.jpg``, ``.png``, ``.webp``, ``.heic``, ...)."""
    from ultralytics.data.utils import IMG_FORMATS

    return frozenset(f".{s.lower()}" for s in IMG_FORMATS)


def sample_images() -> list[Path]:
    """Ultralytics' bundled sample images (bus.jpg, zidane.jpg)."""
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    suffixes = image_suffixes()
    return sorted(p for p in assets.iterdir() if p.suffix.lower() in suffixes)


def collect_images(paths: Sequence[str | os.PathLike[str]] | None, limit: int | None = None) -> list[Path]:
    """Image files from files and folders (sorted, deterministic); Ultralytics' samples when empty."""
    if not paths:
        return sample_images()[:limit] if limit else sample_images()
    suffixes = image_suffixes()
    out: list[Path] = []
    for item in paths:
        text = os.fspath(item)
        p = Path(text).expanduser()
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in suffixes and q.is_file())
        elif p.is_file():
            if p.suffix.lower() not in suffixes:
                raise YolobnError(f"images {text}: not an image ({', '.join(sorted(suffixes))})")
            out.append(p)
        elif p.exists():
            raise YolobnError(f"images {text}: not a regular file or folder")
        else:
            raise YolobnError(f"images {text}: no such file or folder")
    if not out:
        raise YolobnError(f"images {' '.join(str(os.fspath(p)) for p in paths)}: no images found")
    return out[:limit] if limit else out


def default_images(model: Any) -> list[Path]:
    """The images used when none are given: the synthetic training split for the demo model (what
    its running statistics were estimated on), Ultralytics' bus.jpg and zidane.jpg otherwise."""
    if getattr(getattr(model, "meta", None), "kind", None) == "demo":
        return collect_images([str(shapes_dataset().parent / "images" / "train")])
    return sample_images()


def resolve_images(
    model: Any, images: Sequence[str | os.PathLike[str]] | None, max_images: int | None
) -> list[Path]:
    """The image files for ``model``: ``images`` (files/folders), else ``default_images(model)``."""
    if max_images is not None and max_images < 1:
        raise YolobnError(f"max_images {max_images}: must be at least 1")
    if not images:
        out = default_images(model)
        return out[:max_images] if max_images else out
    return collect_images([os.fspath(p) for p in images], max_images)


def model_imgsz(model: Any, imgsz: Any = None) -> int:
    """The inference size: ``imgsz`` when given, else the checkpoint's training imgsz, else 640.

    Both are checked the same way: a whole number from 32 to ``MAX_IMGSZ`` (a list, as some
    checkpoints store, gives its largest side).
    """
    if imgsz is not None:
        return _checked_imgsz(imgsz, f"imgsz {imgsz}")
    args = getattr(getattr(model, "meta", None), "train_args", None) or {}
    v = args.get("imgsz")
    if v is None or v == "":
        return 640
    what = f"the checkpoint's training imgsz {args.get('imgsz')!r}"
    if isinstance(v, (list, tuple)) and v:  # every side is checked, the largest is used
        return max(_checked_imgsz(x, what, hint="; pass --imgsz") for x in v)
    return _checked_imgsz(v, what, hint="; pass --imgsz")


def _checked_imgsz(v: Any, what: str, hint: str = "") -> int:
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise YolobnError(f"{what}: not a whole number of pixels{hint}")
    if not MIN_IMGSZ <= v <= MAX_IMGSZ:
        raise YolobnError(f"{what}: must be between {MIN_IMGSZ} and {MAX_IMGSZ}{hint}")
    return v


def model_stride(root: nn.Module) -> int:
    s = getattr(root, "stride", None)
    if isinstance(s, torch.Tensor) and s.numel():
        return max(int(s.max()), 32)
    return 32


def iter_batches(
    paths: Sequence[Path],
    imgsz: int,
    *,
    stride: int = 32,
    batch: int = 16,
    task: str | None = None,
    skipped: list[Path] | None = None,
) -> Iterator[tuple[torch.Tensor, list[Path]]]:
    """Preprocess images exactly as Ultralytics' predict does and yield (batch tensor, paths).

    Detection-style tasks: ``LetterBox(imgsz, auto=True, stride)`` per image (predict's default
    rectangular letterbox), BGR to RGB, 0-1 float. Images whose letterboxed shapes agree are batched
    together (per-image results are the same in eval mode); at most about two batches of images are
    held at once. Classification: Ultralytics' ``classify_transforms``.
    """
    import cv2
    from ultralytics.utils.patches import imread

    if task == "classify":
        from PIL import Image
        from ultralytics.data.augment import classify_transforms

        tf = classify_transforms(imgsz)

        def prep(im: np.ndarray) -> Any:
            return tf(Image.fromarray(cv2.cvtColor(im, cv2.COLOR_BGR2RGB)))
    else:
        from ultralytics.data.augment import LetterBox

        lb = LetterBox(new_shape=(imgsz, imgsz), auto=True, stride=stride)

        def prep(im: np.ndarray) -> Any:
            return lb(image=im)

    def tensor(group: list[Any]) -> torch.Tensor:
        if task == "classify":
            return torch.stack(group).float()
        im = torch.from_numpy(np.stack(group))
        # Predictor.preprocess, step by step: BHWC uint8 -> BCHW -> RGB -> float 0-1.
        return im.permute(0, 3, 1, 2).contiguous().flip(1).float().div_(255)

    pending: dict[tuple[int, ...], tuple[list[Any], list[Path]]] = {}
    held = 0
    for p in paths:
        x = _decoded(p, imread, prep)
        if x is None:
            if skipped is None:
                raise YolobnError(f"images {p}: cannot be decoded as an image")
            skipped.append(p)  # one damaged file does not throw away a long run
            continue
        key = tuple(x.shape)
        group, names = pending.setdefault(key, ([], []))
        group.append(x)
        names.append(p)
        held += 1
        if len(group) >= batch:
            del pending[key]
            held -= len(group)
            yield tensor(group), names
        elif held >= 2 * batch:  # many shapes: flush the largest group rather than hold more
            key = max(pending, key=lambda k: len(pending[k][0]))
            group, names = pending.pop(key)
            held -= len(group)
            yield tensor(group), names
    for group, names in pending.values():
        yield tensor(group), names


def _decoded(p: Path, imread: Callable[[str], Any], prep: Callable[[np.ndarray], Any]) -> Any:
    """The preprocessed image, or None when the file is over the image budgets (``over_budget``) or
    cannot be decoded. Decoders raise as well as return None: OpenCV asserts on a header declaring
    more than 2**30 pixels, PIL refuses decompression bombs; either way the file is skipped as
    undecodable, not an internal error. Ultralytics' reader would pip-install a decoder for a file PIL
    cannot identify: not here (``quiet_ultralytics``)."""
    try:
        if over_budget(p):
            return None
        with quiet_ultralytics():
            im = _first_frame(p) if p.suffix.lower() in (".tif", ".tiff") else imread(str(p))
        return None if im is None or im.size == 0 else prep(im)
    except Exception:  # cv2.error, PIL.Image.DecompressionBombError, MemoryError, ...
        return None


def over_budget(p: Path) -> str:
    """Why the image file ``p`` is over yolobn's budgets (``""`` when it is not), told from its size
    on disk and, for the formats PIL knows, the width and height in its header (nothing is decoded)."""
    size = p.stat().st_size
    if size > MAX_IMAGE_BYTES:
        return f"{size >> 20} MB on disk, more than {MAX_IMAGE_BYTES >> 20} MB"
    dims = header_size(p)
    if dims and dims[0] * dims[1] > MAX_IMAGE_PIXELS:
        return f"{dims[0]}x{dims[1]} pixels, more than {MAX_IMAGE_PIXELS / 1e6:g} MP"
    return ""


def header_size(p: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, by PIL's format plugins (which read the header only);
    None for a format PIL does not know. Called through PIL's registry rather than ``Image.open``,
    which Ultralytics patches to pip-install a HEIF plugin for any file PIL cannot identify."""
    from PIL import Image

    Image.init()
    with open(p, "rb") as f:
        prefix = f.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept is not None and not accept(prefix):
                continue
            f.seek(0)
            try:
                im = factory(f, str(p))
            except Exception:  # not this format, or a damaged header: try the next plugin
                continue
            w, h = im.size
            return int(w), int(h)
    return None


def _first_frame(p: Path) -> np.ndarray | None:
    """The first page of a TIFF, as Ultralytics' ``imread`` reads a TIFF (its colour channels as
    stored, grey pages through OpenCV's colour conversion, 16 bits to 8), without decoding the
    other pages as its ``cv2.imdecodemulti`` does (200 pages of 2000x2000 are 2.4 GB)."""
    import cv2

    buf = np.fromfile(p, np.uint8)
    im: Any = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    im = im[..., :3] if im is not None and im.ndim == 3 else cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if im is not None and im.dtype == np.uint16:
        im = (im >> 8).astype(np.uint8)
    return cast(np.ndarray | None, im)


def run_images(
    root: nn.Module,
    paths: Sequence[Path],
    *,
    imgsz: int,
    batch: int,
    device: torch.device,
    task: str | None,
    progress: Progress | None = None,
    skipped: list[Path] | None = None,
) -> int:
    """Forward every image through ``root`` (already on ``device``) in batches; returns the count.
    Undecodable files go to ``skipped``; none decodable at all is an error."""
    done = 0
    skipped = [] if skipped is None else skipped
    stride = model_stride(root)
    if progress:
        progress(0, len(paths))
    with torch.inference_mode():
        for x, names in iter_batches(paths, imgsz, stride=stride, batch=batch, task=task, skipped=skipped):
            root(x.to(device))
            done += len(names)
            if progress:
                progress(done + len(skipped), len(paths))
    check_decoded(done, skipped)
    return done


def check_decoded(done: int, skipped: list[Path]) -> None:
    if done == 0 and skipped:
        raise YolobnError(
            f"--images: none of the {len(skipped)} image(s) could be decoded (first: {skipped[0]}); "
            "pass JPEG/PNG/BMP/WebP/TIFF files"
        )
