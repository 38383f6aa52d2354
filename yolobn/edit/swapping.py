"""``swap``: a new model whose BatchNorm layers are real instances of another implementation.

The implementation's record (``yolobn.core.registry``) says how: ``layer`` kinds replace each
chosen BatchNorm by a module built from it, ``fold`` folds it into the convolution before it.
Implementations built from images (``data`` kinds: ``recalibrated``, ``ablate``) are not swaps of
modules; ``yolobn.edit.build`` builds them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from yolobn.bn.walk import BNBlock, find_blocks, matches, unwrap
from yolobn.core.errors import YolobnError
from yolobn.core.registry import Impl
from yolobn.edit.impls import fold_into_conv, parse
from yolobn.io.loader import LoadedModel

__all__ = ["SwapResult", "SwappedModel", "chosen_blocks", "set_child", "swap"]


@dataclass
class SwapResult:
    """The swapped model (a new object) and what was replaced.

    ``detail``: extra columns for the results table (e.g. ``channels_ablated`` for ``ablate``).
    """

    model: nn.Module
    impl: str
    replaced: list[str]
    folded: list[str]
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(repr=False)
class SwappedModel(LoadedModel):
    """A ``LoadedModel`` built from another by a BatchNorm implementation: ``swap`` says what was
    replaced (``meta.notes`` says it in words)."""

    swap: SwapResult | None = None

    def changes(self) -> list[str]:
        what = [f"swapped {len(self.swap.replaced)} BN to {self.swap.impl}"] if self.swap else []
        return super().changes() + what


def swap(model: Any, impl: str | Impl, *, layers: Sequence[str] | None = None) -> Any:
    """A new model with BatchNorm layers replaced by ``impl``; the input is never modified.

    Args:
        model: a ``yolobn.LoadedModel``, an ``nn.Module`` or an ``ultralytics.YOLO``.
        impl: a ``layer`` or ``fold`` implementation spec, a custom class spec, or a parsed ``Impl``.
        layers: patterns choosing the BN layers to swap: globs on dotted names, or a block type,
            owner type or role (as ``yolobn inspect --layers``). Default: every BatchNorm.

    Returns:
        A ``SwappedModel`` for a ``LoadedModel`` (its ``swap`` says what was replaced), else the
        new ``nn.Module``: a deep copy whose selected BN modules are new modules.

    Raises:
        YolobnError: ``layers`` matches no BN layer, or ``impl`` is built from images (``yolobn.swap``).
    """
    spec = parse(impl)
    if spec.kind == "data":
        raise YolobnError(
            f"impl {spec.label}: is built from images, not swapped module by module; use yolobn.swap"
        )
    root = copy.deepcopy(unwrap(model))
    modules = dict(root.named_modules())
    replaced, folded = [], []
    for b in chosen_blocks(root, layers):
        bn = modules[b.name]
        if (
            spec.kind == "fold"
            and b.conv
            and isinstance(modules.get(b.conv), nn.Conv2d)
            and b.owner != "Conv2"
        ):
            # (Conv2 adds a parallel 1x1 conv before its BN: folding only the main conv would be wrong.)
            set_child(root, b.conv, fold_into_conv(modules[b.conv], bn))
            set_child(root, b.name, nn.Identity())
            folded.append(b.name)
        else:
            new = spec.custom(bn) if spec.custom else _record(spec).build_fn()(bn, spec.options)
            set_child(root, b.name, new)
        replaced.append(b.name)
    root.eval()
    if not isinstance(model, LoadedModel):
        return root
    return swapped(model, root, SwapResult(root, spec.label, replaced, folded))


def swapped(source: LoadedModel, root: nn.Module, result: SwapResult, meta: Any = None) -> SwappedModel:
    """The ``SwappedModel`` of ``root`` built from ``source`` (its metadata, with a note)."""
    meta = copy.deepcopy(meta if meta is not None else source.meta)
    meta.notes.append(f"swapped {len(result.replaced)} BN layers to {result.impl}")
    return SwappedModel(root, meta, swap=result)


def chosen_blocks(model: Any, layers: Sequence[str] | None) -> list[BNBlock]:
    """The BN blocks ``layers`` selects (all when None); a selection that matches none is an error."""
    blocks = find_blocks(model)
    chosen = [b for b in blocks if not layers or matches(b, layers)]
    if layers and not chosen:
        raise YolobnError(f"layers {' '.join(layers)}: matches none of the {len(blocks)} BN layers")
    return chosen


def set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted ``name`` under ``root`` (an index in a Sequential/ModuleList)."""
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def _record(spec: Impl) -> Any:
    if spec.record is None:  # pragma: no cover - parse() gives registered names or custom classes
        raise YolobnError(f"impl {spec.label}: unknown implementation")
    return spec.record
