"""What the BatchNorm channels do on real images: observed statistics, observed dead channels,
BN statistic drift, and recalibration of the running statistics.

Recording
    ``recording(model)`` is a context manager that hooks every BatchNorm (its input and its output)
    and, for Ultralytics' ``Conv`` family, the owning block (whose output is ``act(bn(conv(x)))``).
    The activation module itself is never hooked: Ultralytics' ``Conv.default_act`` is one SiLU
    instance shared by every Conv, so a hook on it would mix every layer together. For other owners
    the activation found by the walk is applied to the BN output inside the hook. Every handle is
    removed and every module's train/eval mode restored when the block exits, also on an exception.

Statistics
    Per channel, over all images and spatial positions: count, mean and variance of the BN input
    (for drift), mean/variance/min/max and the share of positive values of the BN output (the
    pre-activation), and mean/variance of the post-activation. Each batch's moments come from one
    torch reduction; batches are merged with Chan et al.'s parallel formula in float64. Nothing
    else is kept: memory is O(channels) whatever the number of images.

Observed dead (a channel, over the whole image set)
    ``flat``: post-activation std below ``ObservedThresholds.dead_std``; ``never positive``: after
    a floored activation (SiLU, ReLU, ...), the share of positive pre-activations is at most
    ``ObservedThresholds.min_positive`` (0: never positive).

Drift (BN input observed on the images vs the stored running statistics), per channel
    ``mean_shift = (mean - running_mean) / sqrt(running_var + eps)`` (in running standard deviations),
    ``log_var_ratio = ln((var + eps) / (running_var + eps))``, and
    ``drift = KL(N(mean, var + eps) || N(running_mean, running_var + eps)) =
    (r + mean_shift**2 - 1 - ln r) / 2`` with ``r = exp(log_var_ratio)``: 0 when the stored
    statistics fit the data, 2 for a 2-sigma mean shift.

Recalibration
    ``recalibrate`` re-estimates every BN's running mean and variance as PreciseBN/AdaBN do: BN
    layers in training mode (batch statistics), every other module in eval mode, no gradients,
    and the running statistics as the cumulative average over batches weighted by batch size (not
    an exponential moving average). Weights are untouched.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.dead import FLOOR_ACTIVATIONS
from yolobn.errors import YolobnError

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ObservedThresholds:
    """Criteria of the observed dead channels (see the module docstring).

    Attributes:
        dead_std: ``flat`` when the post-activation std over all images and positions is below this.
        min_positive: ``never positive`` when, before a floored activation, the share of positive
            pre-activations is at most this (0: not one positive value).
    """

    dead_std: float = 1e-3
    min_positive: float = 0.0

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and v >= 0 and v == v):
                raise ValueError(f"threshold {k} must be a non-negative number, got {v!r}")
        if self.min_positive >= 1:
            raise ValueError(f"threshold min_positive is a share below 1, got {self.min_positive}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# streaming statistics


class Moments:
    """Streaming per-channel count, mean and M2 (sum of squared deviations), merged in float64."""

    def __init__(self, channels: int, device: torch.device | str = "cpu") -> None:
        self.n = 0
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(channels, dtype=torch.float64, device=device)

    def add(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        """Merge ``n`` more values per channel with mean ``mean`` and M2 ``m2`` (Chan et al.)."""
        if n <= 0:
            return
        mean, m2 = mean.to(torch.float64), m2.to(torch.float64)
        if self.n == 0:
            self.n, self.mean, self.m2 = n, mean.clone(), m2.clone()
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += m2 + delta * delta * (self.n * n / total)
        self.n = total

    def add_values(self, x: torch.Tensor, scratch: Scratch | None = None) -> None:
        """Merge a (N, C, ...) tensor: every value except along the channel dimension."""
        self.add(*batch_moments(x, scratch or Scratch()))

    @property
    def var(self) -> torch.Tensor:
        """Population variance (NaN before any value)."""
        if self.n == 0:
            return torch.full_like(self.mean, float("nan"))
        return self.m2 / self.n


class Scratch:
    """One reusable work buffer: a fresh multi-megabyte tensor per hook call would cost page faults."""

    def __init__(self) -> None:
        self.buf: torch.Tensor | None = None

    def like(self, r: torch.Tensor) -> torch.Tensor:
        n = r.numel()
        if (
            self.buf is None
            or self.buf.numel() < n
            or self.buf.dtype != r.dtype
            or self.buf.device != r.device
        ):
            self.buf = torch.empty(n, dtype=r.dtype, device=r.device)
        return self.buf[:n].view(r.shape)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) as (N*C, L): one row per sample and channel, contiguous (a view when possible)."""
    n, c = x.shape[0], x.shape[1]
    return x.reshape(n * c, -1) if x.dim() > 2 else x.reshape(n * c, 1)


def batch_moments(
    x: torch.Tensor, scratch: Scratch, rows: torch.Tensor | None = None
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Per-channel count, mean and M2 of a (N, C, ...) tensor.

    Per (sample, channel) row: the sum, then the sum and the norm of the row centred on its float32
    mean (vectorised reductions over contiguous memory, several times faster than
    ``torch.var_mean`` over dims (0, 2, 3) on a CPU); the rows of a channel are then merged exactly
    in float64.
    """
    r = _rows(x) if rows is None else rows
    n, c = x.shape[0], x.shape[1]
    length = r.shape[1]
    mu = r.sum(1) / length
    centred = torch.sub(r, mu[:, None], out=scratch.like(r))
    # The float32 row mean is off by a rounding error d; the centred sum recovers it (mean = mu + d)
    # and the M2 around mu exceeds the true one by length * d**2.
    d = centred.sum(1).to(torch.float64) / length
    m2_rows = torch.linalg.vector_norm(centred, dim=1).to(torch.float64).square() - length * d * d
    m2_rows = m2_rows.clamp_(min=0).view(n, c)
    mu64 = (mu.to(torch.float64) + d).view(n, c)
    mean = mu64.mean(0)
    m2 = m2_rows.sum(0) + length * (mu64 - mean).square().sum(0)
    return n * length, mean, m2


class _LayerRecord:
    """What one BatchNorm saw: its input moments, output moments/min/max/positives, post-activation."""

    def __init__(self, channels: int, scratch: Scratch) -> None:
        self.channels = channels
        self.scratch = scratch
        self.inp: Moments | None = None
        self.out: Moments | None = None
        self.post: Moments | None = None
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None

    def _init(self, device: torch.device) -> None:
        c = self.channels
        self.inp, self.out, self.post = Moments(c, device), Moments(c, device), Moments(c, device)
        self.min = torch.full((c,), math.inf, dtype=torch.float64, device=device)
        self.max = torch.full((c,), -math.inf, dtype=torch.float64, device=device)
        self.pos = torch.zeros(c, dtype=torch.int64, device=device)

    def bn(
        self, x: torch.Tensor, y: torch.Tensor, post: str, act: nn.Module | None, affine: tuple | None
    ) -> None:
        """One BN call: input ``x``, output ``y``; ``post`` says where the post-activation comes from
        (``out``: no activation, the BN output itself; ``act``: ``act(y)`` here; ``owner``: the owner's
        hook). ``affine`` = (a, b) when the BN is a plain eval-mode BatchNorm, ``y = a * x + b`` per
        channel: the output's moments, min and max then follow exactly from the input's (in float64,
        without float32 rounding) and only the positives are counted on ``y``."""
        if self.inp is None:
            self._init(y.device)
        n, c = y.shape[0], y.shape[1]
        rx = _rows(x)
        count, mean_x, m2_x = batch_moments(x, self.scratch, rx)
        self.inp.add(count, mean_x, m2_x)
        ry = _rows(y)
        if affine is not None:
            a, b = affine
            stats = (count, a * mean_x + b, a * a * m2_x)
            lo = rx.amin(1).view(n, c).amin(0).to(torch.float64)
            hi = rx.amax(1).view(n, c).amax(0).to(torch.float64)
            lo, hi = torch.where(a >= 0, a * lo + b, a * hi + b), torch.where(a >= 0, a * hi + b, a * lo + b)
        else:
            stats = batch_moments(y, self.scratch, ry)
            lo = ry.amin(1).view(n, c).amin(0).to(torch.float64)
            hi = ry.amax(1).view(n, c).amax(0).to(torch.float64)
        self.out.add(*stats)
        torch.minimum(self.min, lo, out=self.min)
        torch.maximum(self.max, hi, out=self.max)
        if post == "out":
            self.post.add(*stats)
        elif post == "act":
            self.post.add(*batch_moments(act(y), self.scratch))
        # Positives: y > 0 written as 1.0/0.0 into the float buffer and summed (exact below 2**24 per
        # row): several times faster than summing a bool tensor.
        if ry.shape[1] < 1 << 24:
            flags = torch.gt(ry, 0, out=self.scratch.like(ry))
            self.pos += flags.sum(1).view(n, c).sum(0).to(torch.int64)
        else:  # pragma: no cover - rows of 16M+ positions
            self.pos += (ry > 0).sum(1).view(n, c).sum(0)

    def owner(self, out: torch.Tensor) -> None:
        if self.post is None:
            self._init(out.device)
        self.post.add(*batch_moments(out, self.scratch))


@dataclass
class _Target:
    name: str
    bn: _BatchNorm
    owner: nn.Module | None  # hooked for the post-activation (Ultralytics Conv family)
    act: nn.Module | None  # applied in the BN hook when the owner is not hooked
    record: _LayerRecord


class Recorder:
    """The records of a ``recording`` block, one per BatchNorm, by dotted name."""

    def __init__(self, targets: list[_Target]) -> None:
        self.targets = targets

    def records(self) -> dict[str, _LayerRecord]:
        return {t.name: t.record for t in self.targets}


def _conv_family() -> tuple[type, ...]:
    try:
        from ultralytics.nn.modules.conv import Conv, ConvTranspose
    except ImportError:  # pragma: no cover
        return ()
    return (Conv, ConvTranspose)


@contextmanager
def recording(model: Any, *, select: Sequence[str] | None = None) -> Iterator[Recorder]:
    """Hook every BatchNorm of ``model`` (eval mode) for the duration of the block.

    Every handle is removed and every module's training flag restored on exit, also when the
    forward pass raises. The model's parameters and buffers are never written.

    Args:
        model: an ``nn.Module``, ``LoadedModel`` or ``ultralytics.YOLO``.
        select: BN layer patterns (as ``--layers``); default all.

    Example:
        >>> with recording(m) as rec:
        ...     m.model(x)
        >>> rec.records()["model.0.bn"].out.mean
    """
    from yolobn.walk import find_blocks, matches, unwrap

    root = unwrap(model)
    modules = dict(root.named_modules())
    family = _conv_family()
    targets: list[_Target] = []
    scratch = Scratch()
    for b in find_blocks(root):
        if select and not matches(b, select):
            continue
        bn = modules[b.name]
        parent_name = b.name.rpartition(".")[0]
        parent = modules.get(parent_name) if parent_name else None
        act = root.get_submodule(b.act_name) if b.act_name else None  # shared SiLU: listed once by name
        owner = None
        if (
            family
            and isinstance(parent, family)
            and getattr(parent, "bn", None) is bn
            and getattr(parent, "act", None) is act
        ):
            owner, act = parent, None
        elif act is not None and isinstance(act, nn.Identity):
            act = None
        targets.append(_Target(b.name, bn, owner, act, _LayerRecord(b.channels, scratch)))
    modes = [(m, m.training) for m in root.modules()]
    handles = []
    try:
        root.eval()
        for t in targets:
            handles.append(t.bn.register_forward_hook(_bn_hook(t)))
            if t.owner is not None:
                handles.append(t.owner.register_forward_hook(_owner_hook(t)))
        yield Recorder(targets)
    finally:
        for h in handles:
            h.remove()
        for m, was in modes:
            m.training = was


_PLAIN_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(a, b) in float64 with ``bn(x) == a * x + b`` per channel, for a plain BatchNorm in eval mode."""
    if type(bn) not in _PLAIN_BN or bn.training or bn.running_mean is None or bn.running_var is None:
        return None
    rm, rv = bn.running_mean.detach().double(), bn.running_var.detach().double()
    w = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(rm)
    b = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(rm)
    a = w / torch.sqrt(rv + bn.eps)
    return a, b - rm * a


def _bn_hook(t: _Target):
    post = "owner" if t.owner is not None else ("act" if t.act is not None else "out")

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor) or output.dim() < 2:
            return
        t.record.bn(x.detach(), output.detach(), post, t.act, _affine(mod))

    return hook


def _owner_hook(t: _Target):
    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() >= 2:
            t.record.owner(output.detach())

    return hook


# --------------------------------------------------------------------------------------------------
# images


def default_images(model: Any) -> list[Path]:
    """The images used when none are given: the synthetic training split for the demo model (what
    its running statistics were estimated on), Ultralytics' bus.jpg and zidane.jpg otherwise."""
    from yolobn.validate import collect_images
    from yolobn.validate import default_images as ultralytics_samples

    if getattr(getattr(model, "meta", None), "kind", None) == "demo":
        from yolobn.data.synth import shapes_dataset

        return collect_images([str(shapes_dataset().parent / "images" / "train")])
    return ultralytics_samples()


def resolve_images(
    model: Any, images: Sequence[str | os.PathLike] | None, max_images: int | None
) -> list[Path]:
    from yolobn.validate import collect_images

    if max_images is not None and max_images < 1:
        raise YolobnError(f"--max-images {max_images}: must be at least 1")
    if not images:
        out = default_images(model)
        return out[:max_images] if max_images else out
    return collect_images([os.fspath(p) for p in images], max_images)


def model_imgsz(model: Any, imgsz: int | None) -> int:
    if imgsz is not None:
        if imgsz < 32:
            raise YolobnError(f"--imgsz {imgsz}: must be at least 32")
        return int(imgsz)
    args = getattr(getattr(model, "meta", None), "train_args", None) or {}
    v = args.get("imgsz")
    if isinstance(v, (list, tuple)) and v:
        v = max(v)
    return int(v) if isinstance(v, (int, float)) and v else 640


def _stride(root: nn.Module) -> int:
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
        im = imread(str(p))
        if im is None:
            if skipped is None:
                raise YolobnError(f"--images {p}: cannot be decoded as an image")
            skipped.append(p)  # one damaged file does not throw away a long run
            continue
        x = prep(im)
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


def parse_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "":
        return torch.device("cpu")
    text = str(device).strip().lower()
    if text.isdigit():
        text = f"cuda:{text}"
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise YolobnError(f"--device {device}: unknown device; use cpu, 0 or cuda:0") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise YolobnError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "mps":  # no float64 on MPS, and the statistics are accumulated in float64
        raise YolobnError(f"--device {device}: MPS is not supported (no float64); use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise YolobnError(f"--device {device}: use cpu, 0, cuda:0 ...")
    return dev


def _on_device(root: nn.Module, dev: torch.device) -> nn.Module:
    """``root`` itself when already on ``dev``, else a copy moved there (the caller's model stays put)."""
    for t in (*root.parameters(), *root.buffers()):
        if t.device == dev:
            return root
        break
    return copy.deepcopy(root).to(dev)


# --------------------------------------------------------------------------------------------------
# observe


@dataclass
class Activations:
    """Observed statistics of every (selected) BatchNorm on a set of images.

    Attributes:
        loaded: the model (``LoadedModel``) they were observed on.
        layers: one row per BN: confusion of predicted (data-free) vs observed dead, drift summary.
        channels: one row per channel: observed statistics, observed dead flag and reason, drift.
        images: the image files, in the order read.
        imgsz, batch, device: how they were run.
        thresholds, observed: the data-free and observed dead-channel thresholds.
    """

    loaded: Any
    layers: Any
    channels: Any
    images: list[str]
    imgsz: int
    batch: int
    device: str
    thresholds: Any
    observed: ObservedThresholds
    selection: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # image files that could not be decoded

    @property
    def meta(self):
        return self.loaded.meta

    def summary(self, worst: int = 5) -> dict[str, Any]:
        ly, ch = self.layers, self.channels
        seen = ch["obs_count"] > 0
        pred, obs = ch["dead"] & seen, ch["obs_dead"] & seen
        conf = {
            "both": int((pred & obs).sum()),
            "predicted_only": int((pred & ~obs).sum()),
            "observed_only": int((~pred & obs & seen).sum()),
            "neither": int((~pred & ~obs & seen).sum()),
        }
        n_seen = int(seen.sum())
        drifted = ly[ly["obs_count"] > 0].sort_values(
            ["drift", "index"], ascending=[False, True], kind="stable"
        )
        return {
            "images": len(self.images),
            "images_skipped": len(self.skipped),
            "imgsz": self.imgsz,
            "bn_layers": len(ly),
            "layers_not_reached": [str(n) for n in ly.loc[ly["obs_count"] == 0, "name"]],
            "channels": len(ch),
            "channels_observed": n_seen,
            "predicted_dead": int(pred.sum()),
            "observed_dead": int(obs.sum()),
            "observed_dead_share": int(obs.sum()) / n_seen if n_seen else 0.0,
            "observed_dead_by_reason": {
                r: int(((ch["obs_reason"] == r) & seen).sum()) for r in ("flat", "never positive")
            },
            "confusion": conf,
            "agreement": (conf["both"] + conf["neither"]) / n_seen if n_seen else float("nan"),
            "drift_mean": float(ly.loc[ly["obs_count"] > 0, "drift"].mean())
            if len(drifted)
            else float("nan"),
            "most_drifted": [
                {
                    "name": r.name,
                    "block": r.block,
                    "drift": float(r.drift),
                    "mean_shift_abs": float(r.mean_shift_abs),
                    "log_var_ratio_abs": float(r.log_var_ratio_abs),
                }
                for r in drifted.head(worst).itertuples()
            ],
        }

    def json_header(self) -> dict[str, Any]:
        """Images, settings, observed thresholds and summary (the part ``inspect --json`` embeds)."""
        return {
            "images": {"count": len(self.images), "files": self.images, "skipped": self.skipped},
            "imgsz": self.imgsz,
            "batch": self.batch,
            "device": self.device,
            "thresholds": self.observed.to_dict(),
            "summary": self.summary(),
        }

    def to_json_dict(self) -> dict[str, Any]:
        from yolobn import __version__
        from yolobn.inspection import _clean

        return _clean(
            {
                "yolobn_version": __version__,
                "model": self.meta.to_dict(),
                "thresholds": self.thresholds.to_dict(),
                "selection": self.selection,
                "observed": self.json_header(),
                "layers": self.layers.to_dict(orient="records"),
            }
        )

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n"


OBS_CHANNEL_COLUMNS = [
    "obs_count", "obs_in_mean", "obs_in_var", "obs_pre_mean", "obs_pre_std", "obs_pre_min", "obs_pre_max",
    "obs_positive_share", "obs_post_mean", "obs_post_std", "obs_dead", "obs_reason",
    "mean_shift", "log_var_ratio", "drift",
]  # fmt: skip


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
    stride = _stride(root)
    if progress:
        progress(0, len(paths))
    with torch.inference_mode():
        for x, names in iter_batches(paths, imgsz, stride=stride, batch=batch, task=task, skipped=skipped):
            root(x.to(device))
            done += len(names)
            if progress:
                progress(done + len(skipped), len(paths))
    _check_decoded(done, skipped)
    return done


def _check_decoded(done: int, skipped: list[Path]) -> None:
    if done == 0 and skipped:
        raise YolobnError(
            f"--images: none of the {len(skipped)} image(s) could be decoded (first: {skipped[0]}); "
            "pass JPEG/PNG/BMP/WebP/TIFF files"
        )


def observe(
    model: Any = None,
    images: Sequence[str | os.PathLike] | None = None,
    *,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 16,
    device: str | torch.device | None = "cpu",
    thresholds: Any = None,
    observed: ObservedThresholds | None = None,
    select: Sequence[str] | None = None,
    trust: bool = False,
    progress: Progress | None = None,
) -> Activations:
    """Run images through the model and observe what every BatchNorm channel does.

    Args:
        model: checkpoint path, model yaml, nn.Module, ultralytics.YOLO, LoadedModel, None (demo), or
            a ``yolobn.Inspection``, whose tables, thresholds and layer selection are then used as they
            are (``thresholds`` and ``select`` are ignored).
        images: image files and/or folders; default: see ``default_images``.
        max_images: use at most this many images (the first ones, sorted).
        imgsz: inference size; default the checkpoint's training imgsz, else 640.
        batch: images per forward pass. device: ``cpu``, ``0``, ``cuda:0``...
        thresholds: data-free ``yolobn.Thresholds`` (for the predicted-dead column).
        observed: ``ObservedThresholds`` for the observed dead channels.
        select: BN layer patterns (as ``--layers``).
        progress: called as ``progress(images_done, images_total)``.

    Returns:
        ``Activations``. The model (and the caller's object) is left as it was.
    """
    from yolobn.inspection import Inspection, inspect

    obs_th = observed or ObservedThresholds()
    base = model if isinstance(model, Inspection) else None
    loaded, dev, paths, size = _prepare(
        base.loaded if base else model, images, max_images, imgsz, batch, device, trust
    )
    if base is None:  # the data-free tables the observed columns join (same selection rule as inspect)
        base = inspect(loaded, thresholds=thresholds, select=select)
    layers, channels, th, selection = base.layers, base.channels, base.thresholds, base.selection

    root = _on_device(loaded.model, dev)
    skipped: list[Path] = []
    with recording(root, select=selection or None) as rec:
        run_images(root, paths, imgsz=size, batch=batch, device=dev, task=loaded.meta.task, progress=progress,
                   skipped=skipped)  # fmt: skip
        records = rec.records()
    modules = dict(root.named_modules())
    layers, channels = add_observed(layers, channels, records, modules, obs_th)
    bad = set(skipped)
    return Activations(
        loaded=loaded,
        layers=layers,
        channels=channels,
        images=[str(p) for p in paths if p not in bad],
        imgsz=size,
        batch=batch,
        device=str(dev),
        thresholds=th,
        observed=obs_th,
        selection=selection,
        skipped=[str(p) for p in skipped],
    )


def _prepare(
    model: Any, images: Any, max_images: int | None, imgsz: int | None, batch: int, device: Any, trust: bool
) -> tuple[Any, torch.device, list[Path], int]:
    """Checked arguments, the loaded model, the image files and the inference size (observe, recalibrate)."""
    from yolobn.loader import LoadedModel, load

    if batch < 1:
        raise YolobnError(f"--batch {batch}: must be at least 1")
    dev = parse_device(device)
    from yolobn.inspection import require_batchnorm

    loaded = model if isinstance(model, LoadedModel) else load(model, trust=trust)
    require_batchnorm(loaded)
    return loaded, dev, resolve_images(loaded, images, max_images), model_imgsz(loaded, imgsz)


def add_observed(
    layers: Any,
    channels: Any,
    records: dict[str, _LayerRecord],
    modules: dict[str, nn.Module],
    obs_th: ObservedThresholds,
) -> tuple[Any, Any]:
    """The data-free tables with the observed columns added (new frames; same rows, same order)."""
    import pandas as pd

    cols: dict[str, list[np.ndarray]] = {c: [] for c in OBS_CHANNEL_COLUMNS}
    for name, c, act in zip(layers["name"], layers["channels"], layers["act"], strict=True):
        rec = records.get(name)
        bn = modules[name]
        per = _channel_values(rec, bn, int(c), act, obs_th)
        for k in OBS_CHANNEL_COLUMNS:
            cols[k].append(per[k])
    ch = channels.copy()
    for k in OBS_CHANNEL_COLUMNS:
        ch[k] = np.concatenate(cols[k]) if cols[k] else np.array([])
    ch["obs_dead"] = ch["obs_dead"].astype(bool)

    ly = layers.copy()
    seen = ch["obs_count"] > 0
    pred, obs = ch["dead"].astype(bool) & seen, ch["obs_dead"] & seen
    frame = pd.DataFrame(
        {
            "name": ch["name"],
            "obs_dead": obs,
            "dead_both": pred & obs,
            "dead_predicted_only": pred & ~obs,
            "dead_observed_only": ~pred & obs,
            "ms": ch["mean_shift"].abs(),
            "lv": ch["log_var_ratio"].abs(),
            "drift": ch["drift"],
        }
    )
    g = frame.groupby("name", sort=False)
    agg = pd.DataFrame(
        {
            "obs_dead": g["obs_dead"].sum(),
            "dead_both": g["dead_both"].sum(),
            "dead_predicted_only": g["dead_predicted_only"].sum(),
            "dead_observed_only": g["dead_observed_only"].sum(),
            "mean_shift_abs": g["ms"].mean(),
            "mean_shift_abs_max": g["ms"].max(),
            "log_var_ratio_abs": g["lv"].mean(),
            "log_var_ratio_abs_max": g["lv"].max(),
            "drift": g["drift"].mean(),
            "drift_max": g["drift"].max(),
        }
    )
    agg = agg.reindex(ly["name"])
    ly["obs_count"] = [
        int(records[n].inp.n) if n in records and records[n].inp is not None else 0 for n in ly["name"]
    ]
    for k in ("obs_dead", "dead_both", "dead_predicted_only", "dead_observed_only"):
        ly[k] = agg[k].fillna(0).astype(np.int64).to_numpy()
    ly["obs_dead_share"] = np.where(ly["channels"] > 0, ly["obs_dead"] / ly["channels"].clip(lower=1), 0.0)
    for k in (
        "mean_shift_abs",
        "mean_shift_abs_max",
        "log_var_ratio_abs",
        "log_var_ratio_abs_max",
        "drift",
        "drift_max",
    ):
        ly[k] = agg[k].to_numpy(dtype=float)
    return ly.reset_index(drop=True), ch.reset_index(drop=True)


def _channel_values(
    rec: _LayerRecord | None, bn: nn.Module, c: int, act: str, th: ObservedThresholds
) -> dict[str, np.ndarray]:
    nan = np.full(c, np.nan)
    if rec is None or rec.inp is None or rec.inp.n == 0:
        return {
            **{k: nan for k in OBS_CHANNEL_COLUMNS},
            "obs_count": np.zeros(c, dtype=np.int64),
            "obs_dead": np.zeros(c, dtype=bool),
            "obs_reason": np.array([""] * c, dtype=object),
        }
    n = rec.out.n
    in_mean, in_var = rec.inp.mean.cpu(), rec.inp.var.cpu()
    post_std = rec.post.var.cpu().clamp(min=0).sqrt() if rec.post.n else torch.full((c,), float("nan"))
    pos_share = rec.pos.cpu().to(torch.float64) / n
    flat = post_std < th.dead_std
    never = (pos_share <= th.min_positive) if act in FLOOR_ACTIVATIONS else torch.zeros(c, dtype=torch.bool)
    reason = np.where(flat.numpy(), "flat", np.where(never.numpy(), "never positive", "")).astype(object)
    rm = getattr(bn, "running_mean", None)
    rv = getattr(bn, "running_var", None)
    eps = float(getattr(bn, "eps", 1e-5))
    if isinstance(rm, torch.Tensor) and isinstance(rv, torch.Tensor):
        rm64 = rm.detach().to("cpu", torch.float64)
        rv64 = rv.detach().to("cpu", torch.float64)
        denom = rv64 + eps
        shift = (in_mean - rm64) / denom.sqrt()
        ratio = (in_var + eps) / denom
        log_ratio = ratio.log()
        drift = 0.5 * (ratio + shift * shift - 1 - log_ratio)
    else:  # no stored statistics: nothing to drift from
        shift = log_ratio = drift = torch.full((c,), float("nan"), dtype=torch.float64)
    return {
        "obs_count": np.full(c, n, dtype=np.int64),
        "obs_in_mean": in_mean.numpy(),
        "obs_in_var": in_var.numpy(),
        "obs_pre_mean": rec.out.mean.cpu().numpy(),
        "obs_pre_std": rec.out.var.cpu().clamp(min=0).sqrt().numpy(),
        "obs_pre_min": rec.min.cpu().numpy(),
        "obs_pre_max": rec.max.cpu().numpy(),
        "obs_positive_share": pos_share.numpy(),
        "obs_post_mean": rec.post.mean.cpu().numpy() if rec.post.n else nan,
        "obs_post_std": post_std.numpy(),
        "obs_dead": (flat | never).numpy(),
        "obs_reason": reason,
        "mean_shift": shift.numpy(),
        "log_var_ratio": log_ratio.numpy(),
        "drift": drift.numpy(),
    }


# --------------------------------------------------------------------------------------------------
# recalibration


def recalibrate(
    model: Any = None,
    images: Sequence[str | os.PathLike] | None = None,
    *,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 32,
    device: str | torch.device | None = "cpu",
    select: Sequence[str] | None = None,
    trust: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> Any:
    """Re-estimate the running mean and variance of every BatchNorm on ``images``.

    BN layers run in training mode (batch statistics, as during training), every other module in
    eval mode, without gradients; each BN's running statistics become the average of its batch
    statistics weighted by batch size (PreciseBN / AdaBN), not a momentum average. Weights, eps and
    momentum are unchanged. Images are shuffled (``seed``) so that batches mix the set, as
    training's batches do: a folder of consecutive video frames would otherwise give batches of
    near-identical images and biased batch statistics. Larger batches give statistics closer to
    the population's (what eval-mode inference sees).

    Returns:
        A new ``LoadedModel`` (the input is untouched) whose ``meta.recalibration`` records how.

    Raises:
        YolobnError: a BN sees one value per channel in a batch (use a larger ``batch``/``imgsz``).
    """
    import random

    from yolobn.loader import LoadedModel
    from yolobn.walk import find_blocks, matches, unwrap

    loaded, dev, paths, size = _prepare(model, images, max_images, imgsz, batch, device, trust)
    order = list(paths)
    random.Random(seed).shuffle(order)
    root = copy.deepcopy(unwrap(loaded)).to(dev)
    modules = dict(root.named_modules())
    blocks = [b for b in find_blocks(root) if not select or matches(b, select)]
    if select and not blocks:
        raise YolobnError(f"--layers {' '.join(select)}: matches none of the BN layers")
    bns = [modules[b.name] for b in blocks]
    untracked = [b.name for b, bn in zip(blocks, bns, strict=True) if not bn.track_running_stats]
    bns = [bn for bn in bns if bn.track_running_stats]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
    root.eval()
    seen = 0
    skipped: list[Path] = []
    stride = _stride(root)
    if progress:
        progress(0, len(paths))
    try:
        for bn in bns:
            bn.train()
        with torch.no_grad():
            batches = iter_batches(
                order, size, stride=stride, batch=batch, task=loaded.meta.task, skipped=skipped
            )
            for x, names in batches:
                b = len(names)
                for bn in bns:  # cumulative average weighted by batch size
                    bn.momentum = b / (seen + b)
                try:
                    root(x.to(dev))
                except ValueError as e:
                    if "more than 1 value per channel" in str(e):
                        raise YolobnError(
                            f"a BatchNorm saw a single value per channel in a batch of {b} image(s) at imgsz "
                            f"{size}; use a larger --batch (batch statistics need more than one value)"
                        ) from None
                    raise
                seen += b
                if progress:
                    progress(seen + len(skipped), len(paths))
        _check_decoded(seen, skipped)
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        root.eval()
    root = root.to("cpu")
    meta = copy.deepcopy(loaded.meta)
    meta.recalibration = {
        "images": seen,
        "images_skipped": [str(p) for p in skipped],
        "image_files": [str(p) for p in paths[:20]] + (["..."] if len(paths) > 20 else []),
        "imgsz": size,
        "batch": batch,
        "seed": seed,
        "layers": len(bns),
        "untracked_skipped": untracked,
        "from_sha256": loaded.meta.sha256,
        "from_path": loaded.meta.path,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": "cumulative average of batch statistics (PreciseBN/AdaBN), BN in train mode, rest in eval",
    }
    meta.notes.append(f"running statistics of {len(bns)} BN layers recalibrated on {seen} images at {size}")
    meta.trained = True
    return LoadedModel(root, meta)


def save_checkpoint(
    loaded: Any, path: str | os.PathLike, *, protect: Sequence[str | os.PathLike] = ()
) -> Path:
    """Write ``loaded`` as an Ultralytics checkpoint (``YOLO(path)`` and ``yolobn inspect`` load it).

    Keeps everything the source checkpoint stored except the optimizer and EMA (re-read safely
    from ``meta.path`` when there is one), stores the model in its on-disk dtype, adds
    ``yolobn: {recalibration: ...}``, and writes atomically (temporary file, then rename).
    Never overwrites a path in ``protect`` or the model's own file.
    """
    import ultralytics

    out = Path(path).expanduser()
    guarded = {Path(p).expanduser().resolve() for p in [*protect, loaded.meta.path] if p}
    if out.resolve() in guarded:
        raise YolobnError(f"-o {out}: is the input checkpoint; write the recalibrated model to another file")
    if out.is_dir():
        raise YolobnError(f"-o {out}: is a folder; give a file name such as {out / 'recalibrated.pt'}")
    base: dict[str, Any] = {}
    if loaded.meta.path and Path(loaded.meta.path).is_file():
        from yolobn.errors import CheckpointError
        from yolobn.loader import _read_checkpoint

        try:  # always the safe reader: a model loaded with --trust keeps only what yolobn knows of it
            raw = _read_checkpoint(Path(loaded.meta.path), trust=False)
        except CheckpointError:
            raw = None
        if isinstance(raw, dict):
            base = {k: v for k, v in raw.items() if k not in ("model", "ema", "optimizer", "updates")}
    if not base.get("train_args"):
        base["train_args"] = dict(loaded.meta.train_args)
    m = copy.deepcopy(loaded.model).cpu().eval()
    if loaded.meta.dtype_on_disk == "float16":
        m = m.half()
    for p in m.parameters():
        p.requires_grad = False
    ckpt = {
        **base,
        "date": datetime.datetime.now().isoformat(),
        "version": ultralytics.__version__,
        "model": m,
        "ema": None,
        "optimizer": None,
        "updates": None,
        "yolobn": {"recalibration": loaded.meta.recalibration, "source_date": base.get("date")},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise YolobnError(f"-o {out}: cannot write ({e.strerror or e}); nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out
