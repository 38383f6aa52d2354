"""Build the model of an implementation spec: the one dispatch on the record's kind.

``layer`` and ``fold`` implementations (and custom classes) are swaps of modules
(``yolobn.edit.swapping.swap``). ``data`` implementations are built from images, here, where the
data-dependent code is: ``recalibrated`` re-estimates the running statistics
(``yolobn.run.recalibration``), ``ablate`` makes dead channels constant after their activation
(``yolobn.edit.ablation``). ``yolobn.swap`` is ``variant``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from yolobn.bn.inspection import inspect
from yolobn.core.errors import YolobnError
from yolobn.core.registry import Impl
from yolobn.edit.ablation import ablate, plan_dead
from yolobn.edit.impls import parse
from yolobn.edit.swapping import SwappedModel, SwapResult, chosen_blocks, swap, swapped
from yolobn.io.loader import LoadedModel, load
from yolobn.run.observation import observe
from yolobn.run.recalibration import recalibrate

__all__ = ["ablated", "recalibrated", "variant"]


def variant(model: Any, impl: str | Impl, *, layers: Sequence[str] | None = None) -> Any:
    """A new model built by ``impl`` from ``model``; the input is never modified.

    Args:
        model: a ``yolobn.LoadedModel``, an ``nn.Module`` or an ``ultralytics.YOLO``.
        impl: an implementation spec (``reference:eps=1e-5``, ``recalibrated:images=val/``,
            ``mypkg:MyBN``) or a parsed ``Impl``.
        layers: patterns choosing the BN layers: globs on dotted names, or a block type, owner
            type or role (as ``yolobn inspect --layers``). Default: every BatchNorm.

    Returns:
        A ``SwappedModel`` for a ``LoadedModel`` (``.swap`` says what was replaced), else the new
        ``nn.Module``.
    """
    spec = parse(impl)
    if spec.kind != "data":
        return swap(model, spec, layers=layers)
    return spec.record.build_fn()(model, spec, layers)  # type: ignore[union-attr]  # data kinds are records


def _int(o: dict[str, str], key: str, default: int | None = None) -> int | None:
    return int(o[key]) if key in o else default


def recalibrated(model: Any, spec: Impl, layers: Sequence[str] | None) -> Any:
    """``recalibrated``: the same BatchNorm layers with running statistics re-estimated on images."""
    o = spec.options
    is_demo = getattr(getattr(model, "meta", None), "kind", None) == "demo"
    if "images" not in o and not is_demo:
        raise YolobnError(
            f"impl {spec.label}: needs calibration images: recalibrated:images=path/to/images "
            "(folder or file; the demo model defaults to its synthetic training images)"
        )
    rec = recalibrate(
        model,
        [o["images"]] if "images" in o else None,
        max_images=_int(o, "max"),
        batch=_int(o, "batch", 32) or 32,
        imgsz=_int(o, "imgsz"),
        select=layers,
    )
    if not isinstance(model, LoadedModel):
        return rec.model
    names = [b.name for b in chosen_blocks(rec.model, layers)]
    return swapped(rec, rec.model, SwapResult(rec.model, spec.label, names, []))


def ablated(model: Any, spec: Impl, layers: Sequence[str] | None) -> Any:
    """``ablate``: observe the model on images when there are any, then set the chosen dead channels
    to their constants after the activation (``yolobn.edit.ablation``)."""
    o = spec.options
    dead = o.get("dead", "observed")
    loaded = model if isinstance(model, LoadedModel) else load(model)
    ins = inspect(loaded, select=layers)
    if "images" in o or loaded.meta.kind == "demo":
        ins = observe(
            ins,
            [o["images"]] if "images" in o else None,
            max_images=_int(o, "max"),
            batch=_int(o, "batch", 16) or 16,
            imgsz=_int(o, "imgsz"),
        )
    elif dead != "datafree":
        raise YolobnError(
            f"impl {spec.label}: observed dead channels need images: ablate:dead={dead},images=path/to/images "
            "(or ablate:dead=datafree)"
        )
    plan = plan_dead(ins, dead)
    root = ablate(loaded, plan)
    if not isinstance(model, LoadedModel):
        return root
    total = len(ins.channels)
    detail = {"channels_ablated": plan.count, "ablated_share": plan.count / total if total else 0.0}
    meta = copy.deepcopy(loaded.meta)
    meta.notes.append(f"{plan.count} {dead} dead channels ablated ({plan.source} constants)")
    result = SwapResult(root, spec.label, list(plan.channels), [], detail)
    out = SwappedModel(root, meta, swap=result)
    out.meta.notes.append(f"swapped {len(result.replaced)} BN layers to {result.impl}")
    return out
