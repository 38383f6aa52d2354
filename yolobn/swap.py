"""BatchNorm implementation registry and ``swap(model, impl)``: a new model whose BatchNorm layers
are real instances of another implementation (never a patched ``forward``).

Implementation specs are plain strings, ``name[:key=value,...]``:

=====================  =============================================================================
``reference``          BatchNorm2d written from its definition (batch statistics and momentum update
                       in train mode, running statistics in eval mode). ``reference:eps=1e-5``
                       recomputes with another eps.
``frozen``             running statistics and affine as buffers (torchvision FrozenBatchNorm2d).
``folded``             BN folded into the conv before it (the BN becomes Identity); BNs without a conv
                       before them fall back to ``frozen``.
``identity``           BN removed (an ablation: expect a large drop).
``lowp:dtype=fp16``    BN arithmetic in fp16 or bf16 (input, scale and shift cast, result back to fp32).
``fixedpoint:bits=8``  per-layer symmetric fixed-point scale and shift with the given number of bits.
``recalibrated``       the same nn.BatchNorm2d layers with running statistics re-estimated on images
                       (``recalibrated:images=path/to/images,max=500,batch=32``; the demo model defaults
                       to its synthetic training images). See ``yolobn.activations.recalibrate``.
``pkg.mod:Class``      a custom class (``path/to/file.py:Class`` too): see ``load_custom``.
=====================  =============================================================================
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.errors import YolobnError

# --------------------------------------------------------------------------------------------------
# implementations


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
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
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
        return new.to(_device_of(bn)).train(bn.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        use_batch = self.training or not self.track_running_stats
        if use_batch:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dims)
            var = x.var(dims, unbiased=False)
            if self.training and self.track_running_stats:
                with torch.no_grad():
                    n = x.numel() / x.shape[1]
                    self.num_batches_tracked.add_(1)
                    m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                    self.running_mean.mul_(1 - m).add_(m * mean.detach())
                    self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(n - 1, 1))
        else:
            mean, var = self.running_mean, self.running_var
        # gamma * (x - mean) / sqrt(var + eps) + beta, with the per-channel factors combined first
        # (C values) so the big tensor is touched once: the same formula, one pass instead of four.
        inv = torch.rsqrt(var + self.eps)
        scale = inv * self.weight if self.affine else inv
        shift = -mean * scale
        if self.affine:
            shift = shift + self.bias
        return torch.addcmul(shift.view(shape), x, scale.view(shape))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class FrozenBatchNorm2d(nn.Module):
    """Running statistics and affine as buffers; always ``y = x * scale + shift`` (torchvision semantics)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), fill))

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm) -> FrozenBatchNorm2d:
        new = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                new.weight.copy_(bn.weight)
                new.bias.copy_(bn.bias)
            if bn.track_running_stats:
                new.running_mean.copy_(bn.running_mean)
                new.running_var.copy_(bn.running_var)
        return new.to(_device_of(bn))

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
        return torch.clamp(torch.round(v / step), -qmax, qmax) * step

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
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        fused.bias.copy_(b * scale + shift)
    return fused


# --------------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class Impl:
    """A parsed implementation spec: registry name (or custom target) and its options."""

    name: str
    options: dict[str, str]
    custom: Callable[[_BatchNorm], nn.Module] | None = None

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}:{opts}" if opts else self.name


Factory = Callable[[_BatchNorm, dict[str, str]], nn.Module]
REGISTRY: dict[str, tuple[Factory, str]] = {}


def register(name: str, help: str) -> Callable[[Factory], Factory]:
    """Add a named implementation: ``factory(bn, options) -> nn.Module``."""

    def deco(f: Factory) -> Factory:
        REGISTRY[name] = (f, help)
        return f

    return deco


def _eps(opts: dict[str, str], default: float) -> float:
    return _float(opts, "eps", default)


@register("reference", "BatchNorm2d from its definition (options: eps)")
def _reference(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    return ReferenceBatchNorm2d.from_batchnorm(bn, eps=_eps(opts, bn.eps))


@register("frozen", "running stats and affine as buffers, y = x*scale + shift (options: eps)")
def _frozen(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    f = FrozenBatchNorm2d.from_batchnorm(bn)
    f.eps = _eps(opts, bn.eps)
    return f


@register("identity", "BN removed (ablation)")
def _identity(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    return nn.Identity()


_LOWP = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@register("lowp", "BN arithmetic in low precision (options: dtype=fp16|bf16)")
def _lowp(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    m = LowPrecisionBatchNorm2d(bn.num_features, _eps(opts, bn.eps), _LOWP[opts.get("dtype", "fp16")])
    m.load_state_dict(FrozenBatchNorm2d.from_batchnorm(bn).state_dict())
    return m.to(_device_of(bn))


@register("fixedpoint", "fixed-point scale and shift (options: bits=8)")
def _fixed(bn: _BatchNorm, opts: dict[str, str]) -> nn.Module:
    bits = int(_float(opts, "bits", 8))
    if not 2 <= bits <= 32:
        raise YolobnError(f"fixedpoint:bits={bits}: bits must be between 2 and 32")
    m = FixedPointBatchNorm2d(bn.num_features, _eps(opts, bn.eps), bits)
    m.load_state_dict(FrozenBatchNorm2d.from_batchnorm(bn).state_dict())
    return m.to(_device_of(bn))


# "folded" rewrites the conv too, and "recalibrated" needs images and the whole model, so swap()
# handles them; registered for listing and validation.
REGISTRY["folded"] = (_frozen, "BN folded into the conv before it (frozen where there is no conv)")
REGISTRY["recalibrated"] = (
    _frozen,
    "running statistics re-estimated on images (options: images=PATH, max=N, batch=N, imgsz=N, seed=N)",
)


def parse_impl(spec: str) -> Impl:
    """``name[:k=v,...]`` or a custom ``module.path:Class`` / ``path/file.py:Class``."""
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    if head in REGISTRY:
        opts: dict[str, str] = {}
        for part in filter(None, rest.split(",")):
            k, eq, v = part.partition("=")
            if not eq:
                raise YolobnError(
                    f"--impl {spec}: option {part!r} is not key=value (e.g. reference:eps=1e-5)"
                )
            opts[k.strip()] = v.strip()
        _check_options(head, opts, spec)
        return Impl(head, opts)
    if rest and rest.isidentifier():
        return Impl(spec, {}, load_custom(spec))
    names = ", ".join(sorted(REGISTRY))
    raise YolobnError(
        f"--impl {spec}: unknown implementation; use one of {names}, or a custom class as module.path:Class "
        "or path/to/file.py:Class"
    )


_ALLOWED = {"reference": {"eps"}, "frozen": {"eps"}, "folded": set(), "identity": set(), "lowp": {"dtype", "eps"},
            "fixedpoint": {"bits", "eps"}, "recalibrated": {"images", "max", "batch", "imgsz", "seed"}}  # fmt: skip


def _check_options(name: str, opts: dict[str, str], spec: str) -> None:
    bad = set(opts) - _ALLOWED.get(name, set())
    if bad:
        allowed = ", ".join(sorted(_ALLOWED.get(name, ()))) or "none"
        raise YolobnError(
            f"--impl {spec}: unknown option {', '.join(sorted(bad))} for {name} (options: {allowed})"
        )
    for k in ("eps", "bits", "max", "batch", "imgsz", "seed"):
        if k in opts:
            _float(opts, k, 0.0, spec=spec)
    for k, least in (("max", 1), ("batch", 1), ("imgsz", 1), ("seed", 0)):
        if k in opts and (not opts[k].isdigit() or int(opts[k]) < least):
            raise YolobnError(f"--impl {spec}: {k}={opts[k]!r} must be a whole number >= {least}")
    if "images" in opts and not Path(opts["images"]).expanduser().exists():
        raise YolobnError(f"--impl {spec}: images={opts['images']}: no such file or folder")
    if name == "lowp" and opts.get("dtype", "fp16") not in _LOWP:
        raise YolobnError(f"--impl {spec}: unknown dtype {opts['dtype']!r}; use fp16 or bf16")


def _float(opts: dict[str, str], key: str, default: float, spec: str | None = None) -> float:
    if key not in opts:
        return default
    try:
        v = float(opts[key])
    except ValueError:
        raise YolobnError(f"--impl {spec or key}: {key}={opts[key]!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise YolobnError(f"--impl {spec or key}: {key} must be a finite number >= 0")
    return v


def load_custom(spec: str) -> Callable[[_BatchNorm], nn.Module]:
    """A factory for a custom BN class given as ``module.path:Class`` or ``path/to/file.py:Class``.

    The contract, checked here and at swap time: the class is an ``nn.Module`` subclass and has
    either a ``from_batchnorm(bn)`` classmethod, or a constructor taking BatchNorm2d's arguments
    (``num_features, eps=, momentum=, affine=, track_running_stats=``) whose instance accepts
    ``load_state_dict(bn.state_dict())``. Its output must have the input's shape.
    """
    target, _, cls_name = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise YolobnError(f"--impl {spec}: {path} is not a file")
            mod_name = f"yolobn_custom_{abs(hash(str(path.resolve())))}"
            sp = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(sp)
            sys.modules[mod_name] = module
            sp.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except YolobnError:
        raise
    except Exception as e:
        raise YolobnError(f"--impl {spec}: cannot import {target} ({type(e).__name__}: {e})") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise YolobnError(f"--impl {spec}: {target} has no attribute {cls_name}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise YolobnError(f"--impl {spec}: {cls_name} is not an nn.Module subclass")

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
        except Exception as e:
            raise YolobnError(
                f"--impl {spec}: building {cls_name} from a BatchNorm failed ({type(e).__name__}: {e})"
            ) from None
        if not isinstance(m, nn.Module):
            raise YolobnError(
                f"--impl {spec}: {cls_name}.from_batchnorm returned {type(m).__name__}, not an nn.Module"
            )
        m = m.to(_device_of(bn))
        # A probe through the new module: a wrong output shape fails here with one line, not deep in a model.
        probe = torch.zeros(1, bn.num_features, 3, 3, device=_device_of(bn))
        was = m.training
        try:
            with torch.no_grad():
                out = m.eval()(probe)
        except Exception as e:
            raise YolobnError(
                f"--impl {spec}: {cls_name} fails on a {tuple(probe.shape)} input ({type(e).__name__}: {e})"
            ) from None
        finally:
            m.train(was)
        if not isinstance(out, torch.Tensor) or out.shape != probe.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise YolobnError(
                f"--impl {spec}: {cls_name} returns {got} for a {tuple(probe.shape)} input; it must keep the shape"
            )
        return m

    return factory


# --------------------------------------------------------------------------------------------------
# swap


@dataclass
class SwapResult:
    """The swapped model (a new object) and what was replaced."""

    model: nn.Module
    impl: str
    replaced: list[str]
    folded: list[str]


def swap(model: Any, impl: str | Impl, *, layers: Sequence[str] | None = None) -> Any:
    """A new model with BatchNorm layers replaced by ``impl``; the input is never modified.

    Args:
        model: a ``yolobn.LoadedModel``, an ``nn.Module`` or an ``ultralytics.YOLO``.
        impl: an implementation spec (see the module docstring) or a parsed ``Impl``.
        layers: patterns choosing the BN layers to swap: globs on dotted names, or a block type,
            owner type or role (as ``yolobn inspect --layers``). Default: every BatchNorm.

    Returns:
        The same kind of object as given (LoadedModel in, LoadedModel out), holding a deep copy
        whose selected BN modules are new modules of the chosen implementation. For a
        LoadedModel, ``meta.notes`` records the swap.
    """
    from yolobn.walk import find_blocks, matches, unwrap

    spec = impl if isinstance(impl, Impl) else parse_impl(impl)
    if spec.name == "recalibrated":
        return _swap_recalibrated(model, spec, layers)
    root = copy.deepcopy(unwrap(model))
    blocks = find_blocks(root)
    chosen = [b for b in blocks if not layers or matches(b, layers)]
    if layers and not chosen:
        raise YolobnError(f"--layers {' '.join(layers)}: matches none of the {len(blocks)} BN layers")
    modules = dict(root.named_modules())
    replaced, folded = [], []
    for b in chosen:
        bn = modules[b.name]
        parent_name, _, attr = b.name.rpartition(".")
        parent = modules[parent_name] if parent_name else root
        if (
            spec.name == "folded"
            and b.conv
            and isinstance(modules.get(b.conv), nn.Conv2d)
            and _conv_feeds_only_bn(b)
        ):
            conv_parent_name, _, conv_attr = b.conv.rpartition(".")
            conv_parent = modules[conv_parent_name] if conv_parent_name else root
            _set_child(conv_parent, conv_attr, fold_into_conv(modules[b.conv], bn))
            _set_child(parent, attr, nn.Identity())
            folded.append(b.name)
        else:
            new = spec.custom(bn) if spec.custom else REGISTRY[spec.name][0](bn, spec.options)
            _set_child(parent, attr, new)
        replaced.append(b.name)
    root.eval()
    if hasattr(model, "meta") and hasattr(model, "model"):
        from yolobn.loader import LoadedModel

        meta = copy.deepcopy(model.meta)
        meta.notes.append(f"swapped {len(replaced)} BN layers to {spec.label}")
        out = LoadedModel(root, meta)
        out.swap = SwapResult(root, spec.label, replaced, folded)
        return out
    return root


def _swap_recalibrated(model: Any, spec: Impl, layers: Sequence[str] | None) -> Any:
    from yolobn.activations import recalibrate
    from yolobn.loader import LoadedModel
    from yolobn.walk import find_blocks, matches

    o = spec.options
    is_demo = getattr(getattr(model, "meta", None), "kind", None) == "demo"
    if "images" not in o and not is_demo:
        raise YolobnError(
            f"--impl {spec.label}: needs calibration images: recalibrated:images=path/to/images "
            "(folder or file; the demo model defaults to its synthetic training images)"
        )
    rec = recalibrate(
        model,
        [o["images"]] if "images" in o else None,
        max_images=int(o["max"]) if "max" in o else None,
        batch=int(o.get("batch", 32)),
        imgsz=int(o["imgsz"]) if "imgsz" in o else None,
        seed=int(o.get("seed", 0)),
        select=layers,
    )
    if not isinstance(model, LoadedModel):
        return rec.model
    names = [b.name for b in find_blocks(rec.model) if not layers or matches(b, layers)]
    rec.meta.notes.append(f"swapped {len(names)} BN layers to {spec.label}")
    rec.swap = SwapResult(rec.model, spec.label, names, [])
    return rec


def _conv_feeds_only_bn(b: Any) -> bool:
    # Conv2 adds a parallel 1x1 conv before its BN: folding only the main conv would be wrong.
    return b.owner not in ("Conv2",)


def _set_child(parent: nn.Module, attr: str, new: nn.Module) -> None:
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def _device_of(m: nn.Module) -> torch.device:
    for t in (*m.parameters(), *m.buffers()):
        return t.device
    return torch.device("cpu")


def list_impls() -> dict[str, str]:
    return {k: v[1] for k, v in sorted(REGISTRY.items())}


__all__ = [
    "FixedPointBatchNorm2d",
    "FrozenBatchNorm2d",
    "Impl",
    "LowPrecisionBatchNorm2d",
    "REGISTRY",
    "ReferenceBatchNorm2d",
    "SwapResult",
    "fold_into_conv",
    "list_impls",
    "load_custom",
    "parse_impl",
    "register",
    "swap",
]
