"""The BatchNorm implementation registry, as data: one record per implementation.

A record holds the name, a one-line help, the options it takes (with their types and limits), its
kind and where its builder lives. The ``--impl`` help, the option checks and the README's table all
come from these records. This module imports nothing heavy, so that ``yolobn --help`` stays fast;
builders are named by ``"module:function"`` and imported only when a swap runs.

Specs are plain strings, ``name[:key=value,...]`` (``reference:eps=1e-5``), or a custom class
``module.path:Class`` / ``path/to/file.py:Class`` (see ``yolobn.edit.impls.load_custom``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from yolobn.core.errors import YolobnError
from yolobn.core.thresholds import MAX_IMGSZ, MIN_IMGSZ

__all__ = [
    "Impl",
    "ImplRecord",
    "Option",
    "REGISTRY",
    "impl_help",
    "is_custom",
    "markdown_table",
    "parse_impl",
]


@dataclass(frozen=True)
class Option:
    """One ``key=value`` option of an implementation.

    Attributes:
        name: the key. kind: ``float``, ``int`` (a whole number), ``str``, ``choice`` or ``path``.
        help: what it means. default: shown in the help (None: no default).
        least, most: bounds for numbers. choices: the values a ``choice`` accepts.
    """

    name: str
    kind: str
    help: str
    default: Any = None
    least: float = 0
    most: float = math.inf
    choices: tuple[str, ...] = ()

    def check(self, value: str, spec: str) -> None:
        where = f"impl {spec}: {self.name}={value!r}"
        if self.kind == "choice":
            if value not in self.choices:
                raise YolobnError(f"{where}: use one of {', '.join(self.choices)}")
        elif self.kind == "path":
            if not Path(value).expanduser().exists():
                raise YolobnError(f"{where}: no such file or folder")
        elif self.kind == "int":
            if not value.isdigit() or not self.least <= int(value) <= self.most:
                raise YolobnError(f"{where}: must be a whole number {_bounds(self)}")
        elif self.kind == "float":
            try:
                v = float(value)
            except ValueError:
                raise YolobnError(f"{where}: is not a number") from None
            if not math.isfinite(v) or not self.least <= v <= self.most:
                raise YolobnError(f"{where}: must be a finite number {_bounds(self)}")

    def text(self) -> str:
        v = (
            "|".join(self.choices)
            if self.kind == "choice"
            else {"path": "PATH", "int": "N"}.get(self.kind, "X")
        )
        return f"{self.name}={v}"


def _bounds(o: Option) -> str:
    least = int(o.least) if o.kind == "int" else o.least
    if math.isinf(o.most):
        return f">= {least}"
    return f"between {least} and {int(o.most) if o.kind == 'int' else o.most}"


@dataclass(frozen=True)
class ImplRecord:
    """A registered BatchNorm implementation.

    Attributes:
        name: the spec name (``reference``). help: one line for ``--help`` and the README.
        options: the ``key=value`` options it accepts.
        kind: how a model is built from it, the one thing every caller dispatches on:
            ``layer``: each chosen BatchNorm is replaced by ``builder(bn, options)``;
            ``fold``: folded into the convolution before it where that conv feeds only this BN,
            else replaced by ``builder(bn, options)``;
            ``data``: built from images, by ``builder(model, impl, layers)``
            (``yolobn.edit.build``), which runs the model (``recalibrated``, ``ablate``).
            A custom class (``module.path:Class``) is a ``layer`` implementation.
        builder: ``"module:function"``, imported when a model is built.
    """

    name: str
    help: str
    options: tuple[Option, ...] = ()
    kind: str = "layer"
    builder: str = ""

    def build_fn(self) -> Callable[..., Any]:
        """The builder function (imported now: the registry itself stays torch-free)."""
        mod, _, fn = self.builder.partition(":")
        return cast(Callable[..., Any], getattr(importlib.import_module(mod), fn))

    def usage(self) -> str:
        return self.name + (":" + ",".join(o.text() for o in self.options) if self.options else "")


_EPS = Option("eps", "float", "use this eps instead of the layer's own", least=0)

REGISTRY: dict[str, ImplRecord] = {
    r.name: r
    for r in (
        ImplRecord(
            "reference",
            "BatchNorm2d written from its definition",
            (_EPS,),
            builder="yolobn.edit.impls:reference",
        ),
        ImplRecord(
            "frozen",
            "running statistics and affine as buffers, y = x*scale + shift (torchvision FrozenBatchNorm2d)",
            (_EPS,),
            builder="yolobn.edit.impls:frozen",
        ),
        ImplRecord(
            "folded",
            "BN folded into the conv before it (frozen where there is no conv to fold into)",
            kind="fold",
            builder="yolobn.edit.impls:frozen",
        ),
        ImplRecord(
            "identity", "BN removed (an ablation: expect a large drop)", builder="yolobn.edit.impls:identity"
        ),
        ImplRecord(
            "lowp",
            "BN arithmetic in fp16 or bf16 (input, scale and shift cast down, result cast back)",
            (
                Option(
                    "dtype",
                    "choice",
                    "arithmetic dtype",
                    "fp16",
                    choices=("fp16", "float16", "bf16", "bfloat16"),
                ),
                _EPS,
            ),
            builder="yolobn.edit.impls:lowp",
        ),
        ImplRecord(
            "fixedpoint",
            "scale and shift rounded to symmetric per-layer fixed point",
            (Option("bits", "int", "bits of the fixed-point format", 8, least=2, most=32), _EPS),
            builder="yolobn.edit.impls:fixedpoint",
        ),
        ImplRecord(
            "recalibrated",
            "the same BatchNorm layers, running statistics re-estimated on images",
            (
                Option(
                    "images",
                    "path",
                    "calibration images (file or folder; the demo model: its training images)",
                ),
                Option("max", "int", "use at most N images", least=1),
                Option("batch", "int", "images per forward pass", 32, least=1),
                Option("imgsz", "int", "inference size", least=MIN_IMGSZ, most=MAX_IMGSZ),
            ),
            kind="data",
            builder="yolobn.edit.build:recalibrated",
        ),
        ImplRecord(
            "ablate",
            "dead channels set to a constant after their activation (their observed mean, or act(beta))",
            (
                Option(
                    "dead",
                    "choice",
                    "which dead channels: on the images, data-free, dead by both, or by either",
                    "observed",
                    choices=("observed", "datafree", "both", "any"),
                ),
                Option("images", "path", "images to observe (the demo model: its training images)"),
                Option("max", "int", "use at most N images", least=1),
                Option("batch", "int", "images per forward pass", 16, least=1),
                Option("imgsz", "int", "inference size", least=MIN_IMGSZ, most=MAX_IMGSZ),
            ),
            kind="data",
            builder="yolobn.edit.build:ablated",
        ),
    )
}


@dataclass(frozen=True)
class Impl:
    """A parsed implementation spec: a registry name and its options, or a custom class.

    Attributes:
        name: the registry name, or the custom target (``module.path:Class``, ``file.py:Class``).
        options: the checked ``key=value`` options.
        custom: for a custom class, its factory ``custom(bn) -> nn.Module`` once imported
            (``yolobn.edit.impls.parse`` imports it; ``parse_impl`` here never runs code).
    """

    name: str
    options: dict[str, str] = field(default_factory=dict)
    custom: Callable[..., Any] | None = None

    @property
    def label(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}:{opts}" if opts else self.name

    @property
    def record(self) -> ImplRecord | None:
        return REGISTRY.get(self.name)

    @property
    def kind(self) -> str:
        """``layer``, ``fold`` or ``data`` (see ``ImplRecord.kind``); a custom class is ``layer``."""
        return self.record.kind if self.record is not None else "layer"

    @property
    def is_custom(self) -> bool:
        return self.record is None


def is_custom(spec: str) -> bool:
    """Whether ``spec`` names a custom class (Python code to import) rather than a registered one."""
    head, _, rest = spec.strip().partition(":")
    return head not in REGISTRY and bool(rest) and rest.isidentifier()


def parse_impl(spec: str) -> Impl:
    """``name[:k=v,...]`` checked against its record, or a custom ``module.path:Class`` /
    ``path/file.py:Class`` (named only: ``yolobn.edit.impls.parse`` imports the class)."""
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    rec = REGISTRY.get(head)
    if rec is not None:
        opts: dict[str, str] = {}
        known = {o.name: o for o in rec.options}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            k, eq, v = part.partition("=")
            k, v = k.strip(), v.strip()
            if not eq or not k:
                raise YolobnError(f"impl {spec}: option {part!r} is not key=value (e.g. reference:eps=1e-5)")
            if k not in known:
                allowed = ", ".join(known) or "none"
                raise YolobnError(f"impl {spec}: unknown option {k} for {head} (options: {allowed})")
            if k in opts:
                raise YolobnError(f"impl {spec}: option {k} is given twice")
            known[k].check(v, spec)
            opts[k] = v
        return Impl(head, opts)
    if is_custom(spec):
        return Impl(spec)
    raise YolobnError(
        f"impl {spec}: unknown implementation; use one of {', '.join(sorted(REGISTRY))}, or a custom class as "
        "module.path:Class or path/to/file.py:Class"
    )


def impl_help() -> str:
    """The ``--impl`` help: every registered spec with its options."""
    return (
        ", ".join(r.usage() for r in REGISTRY.values()) + "; or module.path:Class / file.py:Class; repeatable"
    )


def markdown_table() -> str:
    """The README's table of implementations (a test keeps the README in step with the records)."""
    lines = ["| spec | what it does | options |", "| --- | --- | --- |"]
    for r in REGISTRY.values():
        opts = "; ".join(
            f"`{o.name}`: {o.help}" + (f" (default {o.default})" if o.default is not None else "")
            for o in r.options
        )
        lines.append(f"| `{r.name}` | {r.help} | {opts or '-'} |")
    lines.append("| `pkg.mod:Class`, `file.py:Class` | your own class (see below) | - |")
    return "\n".join(lines)
