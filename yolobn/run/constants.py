"""Constant module inputs: tensors a model feeds its layers that do not come from the image.

YOLO-World and YOLOE pass their text embeddings (a buffer of the model, cloned and expanded per
batch) into attention blocks and the head next to the image features. To autograd these look like
image data cut from the graph (a float tensor that does not require grad), and the recalibration's
dependency plan must then assume the worst. ``constant_inputs`` tells the two apart by running a
second, unrelated image: an input that is the same in both passes is a constant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def constant_inputs(root: nn.Module, x: torch.Tensor, ins: dict[str, list[Any]]) -> set[int]:
    """The ids of the tensors in ``ins`` (the arguments of every module call in a pass over ``x``
    with autograd on, per module name) that are floating point, do not require grad, and are equal
    in a pass over random pixels: constants, not image data. The model is not written."""
    first = {
        (name, k, j): t
        for name, calls in ins.items()
        for k, args in enumerate(calls)
        for j, t in enumerate(_flat(args))
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not t.requires_grad
    }
    if not first:
        return set()
    modules = dict(root.named_modules())
    calls: dict[str, int] = {}
    same: set[int] = set()

    def pre(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            k = calls[name] = calls.get(name, -1) + 1
            for j, t in enumerate(_flat((*args, *kwargs.values()))):
                f = first.get((name, k, j))
                if f is not None and isinstance(t, torch.Tensor) and t.shape == f.shape and torch.equal(t, f):
                    same.add(id(f))

        return hook

    handles = [
        modules[n].register_forward_pre_hook(pre(n), with_kwargs=True) for n in {n for n, _, _ in first}
    ]
    try:
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
        with torch.no_grad():
            root(noise.to(x.device))
    finally:
        for h in handles:
            h.remove()
    return same


def _flat(args: tuple[Any, ...]) -> Iterator[Any]:
    """The arguments of a call, one level of lists opened (as Concat takes them)."""
    for a in args:
        yield from (a if isinstance(a, (list, tuple)) else [a])


__all__ = ["constant_inputs"]
