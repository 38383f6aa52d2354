"""``swap(model, impl)``: a new model whose BatchNorm layers are real instances of another
implementation (see ``yolobn.core.registry`` for the specs and ``yolobn.edit.impls`` for the modules)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from yolobn.core.errors import YolobnError
from yolobn.core.registry import Impl, ImplRecord, parse_impl
from yolobn.edit.impls import fold_into_conv


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
    from yolobn.bn.walk import find_blocks, matches, unwrap

    spec = impl if isinstance(impl, Impl) else parse_impl(impl)
    if spec.name == "recalibrated":
        return _swap_recalibrated(model, spec, layers)
    if spec.name == "ablate":
        return _swap_ablated(model, spec, layers)
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
            new = spec.custom(bn) if spec.custom else _record_of(spec).build_fn()(bn, spec.options)
            _set_child(parent, attr, new)
        replaced.append(b.name)
    root.eval()
    if hasattr(model, "meta") and hasattr(model, "model"):
        from yolobn.io.loader import LoadedModel

        meta = copy.deepcopy(model.meta)
        meta.notes.append(f"swapped {len(replaced)} BN layers to {spec.label}")
        out = LoadedModel(root, meta)
        out.swap = SwapResult(root, spec.label, replaced, folded)
        return out
    return root


def _swap_recalibrated(model: Any, spec: Impl, layers: Sequence[str] | None) -> Any:
    from yolobn.bn.walk import find_blocks, matches
    from yolobn.io.loader import LoadedModel
    from yolobn.run.recalibration import recalibrate

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
        select=layers,
    )  # the registry's seed option is accepted and ignored: the exact estimate has no image order
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


def _record_of(spec: Impl) -> ImplRecord:
    rec = spec.record
    if rec is None:  # pragma: no cover - parse_impl only makes Impls of registered names or custom ones
        raise YolobnError(f"--impl {spec.label}: unknown implementation")
    return rec


__all__ = ["SwapResult", "swap"]


def _swap_ablated(model: Any, spec: Impl, layers: Sequence[str] | None) -> Any:
    """``ablate``: observe the model on images when there are any, then set the chosen dead channels
    to their constants after the activation (``yolobn.edit.ablation``)."""
    from yolobn.bn.inspection import inspect
    from yolobn.edit.ablation import ablate, plan_dead
    from yolobn.io.loader import LoadedModel, load

    o = spec.options
    dead = o.get("dead", "observed")
    loaded = model if isinstance(model, LoadedModel) else load(model)
    ins = inspect(loaded, select=layers)
    if "images" in o or loaded.meta.kind == "demo":
        from yolobn.run.observation import observe

        ins = observe(
            ins, [o["images"]] if "images" in o else None, max_images=int(o["max"]) if "max" in o else None,
            batch=int(o.get("batch", 16)), imgsz=int(o["imgsz"]) if "imgsz" in o else None,
        )  # fmt: skip
    elif dead != "datafree":
        raise YolobnError(
            f"--impl {spec.label}: observed dead channels need images: ablate:dead={dead},images=path/to/images "
            "(or ablate:dead=datafree)"
        )
    plan = plan_dead(ins, dead)
    root = ablate(loaded, plan)
    total = len(ins.channels)
    detail = {"channels_ablated": plan.count, "ablated_share": plan.count / total if total else 0.0}
    if not isinstance(model, LoadedModel):
        return root
    meta = copy.deepcopy(loaded.meta)
    meta.notes.append(f"{plan.count} {dead} dead channels ablated ({plan.source} constants)")
    out = LoadedModel(root, meta)
    out.swap = SwapResult(root, spec.label, list(plan.channels), [], detail)
    return out
