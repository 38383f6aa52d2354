"""Hooks that record what every BatchNorm sees, streamed into per-channel float64 statistics.

``recording(model)`` is a context manager that hooks every BatchNorm (its input and its output)
and, for Ultralytics' ``Conv`` family, the owning block (whose output is ``act(bn(conv(x)))``).
The activation module itself is never hooked: Ultralytics' ``Conv.default_act`` is one SiLU
instance shared by every Conv, so a hook on it would mix every layer together. For other owners
the activation found by the walk is applied to the BN output inside the hook. Every handle is
removed and every module's train/eval mode restored when the block exits, also on an exception.

Per channel, over all images and spatial positions: count, mean and variance of the BN input
(for drift), mean/variance/min/max and the share of positive values of the BN output (the
pre-activation), and mean/variance of the post-activation. Each batch's moments come from
vectorised row reductions; rows and batches are merged with Chan et al.'s parallel formula in
float64. Nothing else is kept: memory is O(channels) whatever the number of images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.bn.walk import find_blocks, matches, unwrap
from yolobn.core.errors import YolobnError
from yolobn.core.gauss import gaussian_kl

__all__ = [
    "LayerRecord",
    "Moments",
    "Recorder",
    "Scratch",
    "batch_moments",
    "drift_of",
    "recording",
    "set_statistics",
]


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


class LayerRecord:
    """What one BatchNorm saw: its input moments, output moments/min/max/positives, post-activation."""

    def __init__(self, channels: int, scratch: Scratch) -> None:
        self.channels = channels
        self.scratch = scratch
        self._device: torch.device | None = None  # set by the first call: the statistics live there
        self._init(torch.device("cpu"))

    def _init(self, device: torch.device) -> None:
        c = self.channels
        self.inp, self.out, self.post = Moments(c, device), Moments(c, device), Moments(c, device)
        self.min = torch.full((c,), math.inf, dtype=torch.float64, device=device)
        self.max = torch.full((c,), -math.inf, dtype=torch.float64, device=device)
        self.pos = torch.zeros(c, dtype=torch.int64, device=device)

    def _on(self, device: torch.device) -> None:
        if self._device is None:
            if device != torch.device("cpu"):
                self._init(device)
            self._device = device

    def bn(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        post: str,
        act: nn.Module | None,
        affine: tuple[Any, ...] | None,
    ) -> None:
        """One BN call: input ``x``, output ``y``; ``post`` says where the post-activation comes from
        (``out``: no activation, the BN output itself; ``act``: ``act(y)`` here; ``owner``: the owner's
        hook). ``affine`` = (a, b) when the BN is a plain eval-mode BatchNorm, ``y = a * x + b`` per
        channel: the output's moments, min and max then follow exactly from the input's (in float64,
        without float32 rounding) and only the positives are counted on ``y``."""
        self._on(y.device)
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
        elif post == "act" and act is not None:
            self.post.add(*batch_moments(act(y), self.scratch))
        # Positives: y > 0 written as 1.0/0.0 into the float buffer and summed (exact below 2**24 per
        # row): several times faster than summing a bool tensor.
        if ry.shape[1] < 1 << 24:
            flags = torch.gt(ry, 0, out=self.scratch.like(ry))
            self.pos += flags.sum(1).view(n, c).sum(0).to(torch.int64)
        else:  # pragma: no cover - rows of 16M+ positions
            self.pos += (ry > 0).sum(1).view(n, c).sum(0)

    def owner(self, out: torch.Tensor) -> None:
        self._on(out.device)
        self.post.add(*batch_moments(out, self.scratch))


@dataclass
class _Target:
    name: str
    bn: _BatchNorm
    owner: nn.Module | None  # hooked for the post-activation (Ultralytics Conv family)
    act: nn.Module | None  # applied in the BN hook when the owner is not hooked
    record: LayerRecord


class Recorder:
    """The records of a ``recording`` block, one per BatchNorm, by dotted name."""

    def __init__(self, targets: list[_Target]) -> None:
        self.targets = targets

    def records(self) -> dict[str, LayerRecord]:
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
        owner: nn.Module | None = None
        if (
            family
            and isinstance(parent, family)
            and isinstance(parent, nn.Module)
            and getattr(parent, "bn", None) is bn
            and getattr(parent, "act", None) is act
        ):
            owner, act = parent, None
        elif act is not None and isinstance(act, nn.Identity):
            act = None
        targets.append(_Target(b.name, bn, owner, act, LayerRecord(b.channels, scratch)))
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
    if not isinstance(bn, _PLAIN_BN) or type(bn) not in _PLAIN_BN:  # exact types: subclasses may differ
        return None
    if bn.training or bn.running_mean is None or bn.running_var is None:
        return None
    rm, rv = bn.running_mean.detach().double(), bn.running_var.detach().double()
    w = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(rm)
    b = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(rm)
    a = w / torch.sqrt(rv + bn.eps)
    return a, b - rm * a


def _bn_hook(t: _Target) -> Callable[..., None]:
    post = "owner" if t.owner is not None else ("act" if t.act is not None else "out")

    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor) or output.dim() < 2:
            return
        t.record.bn(x.detach(), output.detach(), post, t.act, _affine(mod))

    return hook


def _owner_hook(t: _Target) -> Callable[..., None]:
    def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() >= 2:
            t.record.owner(output.detach())

    return hook


def set_statistics(name: str, bn: _BatchNorm, m: Moments) -> None:
    """Running mean and population variance from ``m``."""
    var = m.var
    if not (torch.isfinite(m.mean).all() and torch.isfinite(var).all()):
        raise YolobnError(
            f"BN layer {name}: its input is not finite (inf/NaN) on these images; the model is broken before it"
        )
    assert bn.running_mean is not None and bn.running_var is not None  # only tracking BNs are recalibrated
    with torch.no_grad():
        bn.running_mean.copy_(m.mean)
        bn.running_var.copy_(var)


def drift_of(bn: _BatchNorm, m: Moments) -> np.ndarray:
    """Per-channel KL drift of the observed input against the running statistics (as ``observe``)."""
    assert bn.running_mean is not None and bn.running_var is not None
    rm, rv = (t.detach().to("cpu", torch.float64) for t in (bn.running_mean, bn.running_var))
    return gaussian_kl(m.mean.cpu(), m.var.cpu() + bn.eps, rm, rv + bn.eps)
