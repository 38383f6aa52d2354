"""BatchNorm implementations that ``swap`` can put in place of ``nn.BatchNorm2d``, and their builders.

Each is a real module built from the BatchNorm it replaces (weights, running statistics and eps
copied), never a patched ``forward``. The registry records that name them live in
``yolobn.core.registry``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.core.errors import YolobnError
from yolobn.core.registry import Impl, parse_impl
from yolobn.core.text import one_line

__all__ = [
    "FixedPointBatchNorm2d",
    "FrozenBatchNorm2d",
    "LowPrecisionBatchNorm2d",
    "ReferenceBatchNorm2d",
    "device_of",
    "fixedpoint",
    "fold_into_conv",
    "frozen",
    "identity",
    "load_custom",
    "lowp",
    "parse",
    "reference",
]


class ReferenceBatchNorm2d(nn.Module):
    """BatchNorm2d from its definition.

    Train mode: normalise with the batch mean and (biased) variance over N, H, W, and update the
    running statistics as PyTorch does: ``running = (1 - momentum) * running + momentum * batch``
    with the *unbiased* batch variance (a cumulative average when momentum is None).
    Eval mode: normalise with the running statistics. Then ``y = gamma * x_hat + beta``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight: nn.Parameter | None = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.running_mean: torch.Tensor | None
        self.running_var: torch.Tensor | None
        self.num_batches_tracked: torch.Tensor | None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm, eps: float | None = None) -> ReferenceBatchNorm2d:
        new = cls(
            bn.num_features, bn.eps if eps is None else eps, bn.momentum, bn.affine, bn.track_running_stats
        )
        new.load_state_dict(bn.state_dict())
        return new.to(device_of(bn)).train(bn.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dims)
            var = x.var(dims, unbiased=False)
            rm, rv, nbt = self.running_mean, self.running_var, self.num_batches_tracked
            if self.training and rm is not None and rv is not None and nbt is not None:
                with torch.no_grad():
                    n = x.numel() / x.shape[1]
                    nbt.add_(1)
                    m = self.momentum if self.momentum is not None else 1.0 / float(nbt)
                    rm.mul_(1 - m).add_(m * mean.detach())
                    rv.mul_(1 - m).add_(m * var.detach() * n / max(n - 1, 1))
        else:
            if (
                self.running_mean is None or self.running_var is None
            ):  # pragma: no cover - use_batch covers it
                raise RuntimeError("eval mode without running statistics")
            mean, var = self.running_mean, self.running_var
        # gamma * (x - mean) / sqrt(var + eps) + beta, with the per-channel factors combined first
        # (C values) so the big tensor is touched once: the same formula, one pass instead of four.
        inv = torch.rsqrt(var + self.eps)
        scale = inv * self.weight if self.weight is not None else inv
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return torch.addcmul(shift.view(shape), x, scale.view(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class FrozenBatchNorm2d(nn.Module):
    """Running statistics and affine as buffers; always ``y = x * scale + shift`` (torchvision semantics)."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), fill))

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm) -> FrozenBatchNorm2d:
        new = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.weight is not None and bn.bias is not None:
                new.weight.copy_(bn.weight)
                new.bias.copy_(bn.bias)
            if bn.running_mean is not None and bn.running_var is not None:
                new.running_mean.copy_(bn.running_mean)
                new.running_var.copy_(bn.running_var)
        return new.to(device_of(bn))

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.view(shape) + shift.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class LowPrecisionBatchNorm2d(FrozenBatchNorm2d):
    """Eval-mode BN computed in fp16 or bf16: x, scale and shift cast down, the result cast back."""

    def __init__(self, num_features: int, eps: float = 1e-5, dtype: torch.dtype = torch.float16) -> None:
        super().__init__(num_features, eps)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        d = self.dtype
        return (x.to(d) * scale.to(d).view(shape) + shift.to(d).view(shape)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, dtype={str(self.dtype).replace('torch.', '')}"


class FixedPointBatchNorm2d(FrozenBatchNorm2d):
    """Eval-mode BN with scale and shift rounded to signed fixed point, one step per tensor:
    ``step = max|v| / (2**(bits-1) - 1)``, ``v_q = round(v / step) * step`` (symmetric, per layer)."""

    def __init__(self, num_features: int, eps: float = 1e-5, bits: int = 8) -> None:
        super().__init__(num_features, eps)
        self.bits = bits

    @staticmethod
    def quantize(v: torch.Tensor, bits: int) -> torch.Tensor:
        qmax = 2 ** (bits - 1) - 1
        step = v.abs().max() / qmax
        if not torch.isfinite(step) or step == 0:
            return v
        out: torch.Tensor = torch.clamp(torch.round(v / step), -qmax, qmax) * step
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.quantize(scale, self.bits).view(shape) + self.quantize(shift, self.bits).view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, bits={self.bits}"


def fold_into_conv(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` in eval mode (the standard folding formula)."""
    frozen = FrozenBatchNorm2d.from_batchnorm(bn)
    scale, shift = frozen.scale_shift()
    # conv's geometry as 2-tuples (what Conv2d stores), typed as the constructor expects
    k, st, dil = (_pair(v) for v in (conv.kernel_size, conv.stride, conv.dilation))
    pad = conv.padding if isinstance(conv.padding, str) else _pair(conv.padding)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        k,
        st,
        pad,
        dil,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        bias = fused.bias
        assert bias is not None  # bias=True above
        bias.copy_(b * scale + shift)
    return fused


def _pair(v: tuple[int, ...] | int) -> tuple[int, int]:
    a, b = (v, v) if isinstance(v, int) else (v[0], v[-1])
    return int(a), int(b)


# --------------------------------------------------------------------------------------------------
# builders named by the registry records: builder(bn, options) -> nn.Module


def _eps(opts: dict[str, str], default: float) -> float:
    return float(opts["eps"]) if "eps" in opts else default


def reference(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    return ReferenceBatchNorm2d.from_batchnorm(bn, eps=_eps(opts, bn.eps))


def frozen(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    f = FrozenBatchNorm2d.from_batchnorm(bn)
    f.eps = _eps(opts, bn.eps)
    return f


def identity(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    return nn.Identity()


_LOWP = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def lowp(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    m = LowPrecisionBatchNorm2d(bn.num_features, _eps(opts, bn.eps), _LOWP[opts.get("dtype", "fp16")])
    m.load_state_dict(FrozenBatchNorm2d.from_batchnorm(bn).state_dict())
    return m.to(device_of(bn))


def fixedpoint(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    m = FixedPointBatchNorm2d(bn.num_features, _eps(opts, bn.eps), int(opts.get("bits", 8)))
    m.load_state_dict(FrozenBatchNorm2d.from_batchnorm(bn).state_dict())
    return m.to(device_of(bn))


def device_of(m: nn.Module) -> torch.device:
    for t in (*m.parameters(), *m.buffers()):
        return t.device
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# custom classes


def parse(spec: str | Impl) -> Impl:
    """``spec`` parsed (``yolobn.core.registry.parse_impl``) with a custom class imported: a custom
    spec is Python code, which the caller has decided to run (``--trust`` where a file names it)."""
    impl = spec if isinstance(spec, Impl) else parse_impl(spec)
    if impl.is_custom and impl.custom is None:
        return Impl(impl.name, {}, load_custom(impl.name))
    return impl


def load_custom(spec: str) -> Callable[[_BatchNorm], nn.Module]:
    """A factory for a custom BN class given as ``module.path:Class`` or ``path/to/file.py:Class``.

    The contract, checked here and at swap time: the class is an ``nn.Module`` subclass and has
    either a ``from_batchnorm(bn)`` classmethod, or a constructor taking BatchNorm2d's arguments
    (``num_features, eps=, momentum=, affine=, track_running_stats=``) whose instance accepts
    ``load_state_dict(bn.state_dict())``. Its output must have the input's shape.
    """
    target, _, cls_name = spec.rpartition(":")
    mod_name = ""
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise YolobnError(f"impl {spec}: {path} is not a file")
            mod_name = f"yolobn_custom_{abs(hash(str(path.resolve())))}"
            sp = importlib.util.spec_from_file_location(mod_name, path)
            if sp is None or sp.loader is None:
                raise YolobnError(f"impl {spec}: {path} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(sp)
            sys.modules[mod_name] = module
            sp.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except YolobnError:
        raise
    except (Exception, SystemExit) as e:  # sys.exit() at import must not become yolobn's exit code
        if mod_name:
            sys.modules.pop(mod_name, None)
        raise YolobnError(f"impl {spec}: cannot import {target} ({one_line(e, typed=True)})") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise YolobnError(f"impl {spec}: {target} has no attribute {cls_name}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise YolobnError(f"impl {spec}: {cls_name} is not an nn.Module subclass")

    def factory(bn: _BatchNorm) -> nn.Module:
        try:
            if hasattr(cls, "from_batchnorm"):
                m = cls.from_batchnorm(bn)
            else:
                m = cls(
                    bn.num_features,
                    eps=bn.eps,
                    momentum=bn.momentum,
                    affine=bn.affine,
                    track_running_stats=bn.track_running_stats,
                )
                m.load_state_dict(bn.state_dict())
        except (Exception, SystemExit) as e:
            raise YolobnError(
                f"impl {spec}: building {cls_name} from a BatchNorm failed ({one_line(e, 200, typed=True)})"
            ) from None
        if not isinstance(m, nn.Module):
            raise YolobnError(
                f"impl {spec}: {cls_name}.from_batchnorm returned {type(m).__name__}, not an nn.Module"
            )
        m = m.to(device_of(bn))
        # A probe through the new module: a wrong output shape fails here with one line, not deep in a model.
        probe = torch.zeros(1, bn.num_features, 3, 3, device=device_of(bn))
        was = m.training
        try:
            with torch.no_grad():
                out = m.eval()(probe)
        except (Exception, SystemExit) as e:
            raise YolobnError(
                f"impl {spec}: {cls_name} fails on a {tuple(probe.shape)} input ({one_line(e, 200, typed=True)})"
            ) from None
        finally:
            m.train(was)
        if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise YolobnError(
                f"impl {spec}: {cls_name} returns {got} for a {tuple(probe.shape)} input; it must keep the shape"
            )
        return m

    return factory
