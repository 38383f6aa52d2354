"""Ablation: replace chosen channels' post-activation output by a constant, to test whether they matter.

A channel is ablated after its activation, never before: Ultralytics' Conv computes
``act(bn(conv(x)))`` with one SiLU shared by every Conv, and SiLU of a negative input is not 0 (it
lies in [-0.28, 0)), so "BN output" and "what the layer hands on" are different things. The
module that produces the post-activation (the Conv's ``act``, the activation after the BN in a
``Sequential``, or the BN itself when nothing follows it) is wrapped by ``Ablated``: a new module
that runs it and then writes the constants into the chosen channels; every other channel passes
through untouched, bit for bit. The shared SiLU instance itself is never changed.

The constant of a channel is its observed mean after the activation when the model was observed
on images, or ``act(beta)`` otherwise (data-free). A channel whose pre-activation was constant on
the images gets ``act(that value)``, computed as the model computes it, so ablating a truly
constant channel reproduces the original output exactly.

Replacing a channel by its mean introduces an error whose mean square is exactly the channel's
variance after the activation: the post-activation standard deviation is therefore the importance
``frontier`` ranks by (``yolobn.sweeps.frontier``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from yolobn.bn.walk import find_blocks, unwrap
from yolobn.core.errors import YolobnError
from yolobn.edit.swapping import set_child
from yolobn.evaluate.validation import KEY_METRICS, baseline, validate
from yolobn.io.images import model_imgsz
from yolobn.io.loader import LoadedModel

__all__ = ["Ablated", "AblationPlan", "ablate", "ablation_effect", "constants", "plan_dead", "plan_from"]


class Ablated(nn.Module):
    """``inner(x)``, then channels ``channels`` set to ``values`` (a new module; ``inner`` is shared, not copied)."""

    channels: torch.Tensor
    values: torch.Tensor

    def __init__(self, inner: nn.Module, channels: Sequence[int], values: Sequence[float]) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("channels", torch.as_tensor(list(channels), dtype=torch.long))
        self.register_buffer("values", torch.as_tensor(list(values), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.inner(x)
        if self.channels.numel() == 0:
            return y
        shape = (y.shape[0], self.channels.numel(), *y.shape[2:])
        fill = self.values.to(y.dtype).view(1, -1, *([1] * (y.dim() - 2))).expand(shape)
        out: torch.Tensor = y.index_copy(
            1, self.channels, fill
        )  # out of place: an in-place activation's input is safe
        return out

    def extra_repr(self) -> str:
        return f"{self.channels.numel()} channels constant"


@dataclass
class AblationPlan:
    """Which channels to ablate, per BN layer (dotted name), and the constant of each."""

    channels: dict[str, list[int]] = field(default_factory=dict)
    values: dict[str, list[float]] = field(default_factory=dict)
    source: str = ""  # "observed" or "data-free": where the constants came from

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.channels.values())


def constants(ins: Any) -> dict[str, np.ndarray]:
    """Per layer, the constant of every channel: the observed post-activation mean when ``ins`` was
    observed on images (``act`` of the constant pre-activation for channels that were constant),
    else ``act(beta)``."""

    root = unwrap(ins.loaded)
    blocks = {b.name: b for b in find_blocks(root)}
    ch = ins.channels
    out: dict[str, np.ndarray] = {}
    observed = "obs_post_mean" in ch.columns
    for name, g in ch.groupby("name", sort=False):
        act = _activation(root, blocks[name])
        beta = torch.as_tensor(g["beta"].to_numpy(np.float32))
        with torch.no_grad():
            datafree = act(beta.view(1, -1, 1, 1)).view(-1).double().numpy()
        if not observed or not (g["obs_count"] > 0).all():
            out[name] = datafree
            continue
        vals = g["obs_post_mean"].to_numpy(np.float64).copy()
        lo, hi = g["obs_pre_min"].to_numpy(np.float64), g["obs_pre_max"].to_numpy(np.float64)
        flat = lo == hi  # constant pre-activation on every image: its activation, as the model computes it
        if flat.any():
            pre = torch.as_tensor(lo[flat].astype(np.float32))
            with torch.no_grad():
                vals[flat] = act(pre.view(1, -1, 1, 1)).view(-1).double().numpy()
        out[name] = vals
    return out


def plan_dead(ins: Any, dead: str = "observed") -> AblationPlan:
    """The dead channels of ``ins`` to ablate: ``observed`` (flat or never positive on the images),
    ``datafree`` (constant or off), ``both`` (dead by both) or ``any`` (by either)."""
    ch = ins.channels
    if dead in ("observed", "both", "any") and "obs_dead" not in ch.columns:
        raise YolobnError(f"ablate:dead={dead}: needs the model observed on images (images=PATH)")
    pred = ch["dead"].to_numpy(bool)
    obs = ch["obs_dead"].to_numpy(bool) if "obs_dead" in ch.columns else np.zeros(len(ch), bool)
    pick = {"observed": obs, "datafree": pred, "both": pred & obs, "any": pred | obs}[dead]
    consts = constants(ins)
    plan = AblationPlan(source="observed" if "obs_post_mean" in ch.columns else "data-free")
    for name, g in ch[pick].groupby("name", sort=False):
        idx = g["channel"].to_numpy(int)
        plan.channels[name] = idx.tolist()
        plan.values[name] = consts[name][idx].tolist()
    return plan


def ablate(model: Any, plan: AblationPlan) -> nn.Module:
    """A deep copy of ``model``'s module with the planned channels constant after their activation."""

    root = copy.deepcopy(unwrap(model))
    blocks = {b.name: b for b in find_blocks(root)}
    modules = dict(root.named_modules())
    for name, idx in plan.channels.items():
        if not idx:
            continue
        b = blocks.get(name)
        if b is None:
            raise YolobnError(f"ablate: {name} is not a BatchNorm layer of this model")
        target, site = _post_activation_site(root, modules, b)
        set_child(root, site, Ablated(target, idx, plan.values[name]))
    return root.eval()


def _post_activation_site(root: nn.Module, modules: dict[str, nn.Module], b: Any) -> tuple[nn.Module, str]:
    """(the module whose output is the post-activation, the dotted name where it sits)."""
    bn = modules[b.name]
    parent_name = b.name.rpartition(".")[0]
    parent = modules[parent_name] if parent_name else root
    act: nn.Module | None = root.get_submodule(b.act_name) if b.act_name else None
    owned = getattr(parent, "bn", None) is bn and getattr(parent, "act", None) is act
    if act is not None and owned and _one_bn(parent):
        return act, f"{parent_name}.act" if parent_name else "act"  # Ultralytics Conv: act(bn(conv(x)))
    if act is not None and isinstance(parent, nn.Sequential) and b.act_name.startswith(f"{parent_name}."):
        return act, b.act_name  # Sequential(conv, bn, act)
    if act is None or isinstance(act, nn.Identity):
        return bn, b.name  # nothing after the BN: its output is what the layer hands on
    raise YolobnError(
        f"ablate: {b.name}: its activation ({b.act}) is applied to more than this BN's output (e.g. RepConv's sum); "
        "it cannot be ablated alone"
    )


def _one_bn(m: nn.Module) -> bool:
    """The block holds a single BatchNorm, so its ``act`` sees that BN's output alone (not RepConv's sum)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return sum(isinstance(x, _BatchNorm) for x in m.modules()) == 1


def _activation(root: nn.Module, b: Any) -> nn.Module:
    return root.get_submodule(b.act_name) if b.act_name else nn.Identity()


def plan_from(
    channels: Mapping[str, Sequence[int]], ins: Any, consts: Mapping[str, np.ndarray] | None = None
) -> AblationPlan:
    """A plan for given channels of ``ins`` with their constants (``consts``: ``constants(ins)``,
    computed here when not given; a sweep computes them once for all its plans)."""
    consts = constants(ins) if consts is None else consts
    plan = AblationPlan(source="observed" if "obs_post_mean" in ins.channels.columns else "data-free")
    for name, idx in channels.items():
        idx = list(idx)
        if idx:
            plan.channels[name] = idx
            plan.values[name] = consts[name][np.asarray(idx, dtype=int)].tolist()
    return plan


def ablation_effect(
    ins: Any,
    data: str,
    *,
    imgsz: int | None = None,
    batch: int = 16,
    device: str = "cpu",
    trust: bool = False,
) -> dict[str, Any]:
    """What ablating the observed-dead channels of ``ins`` (an observed Inspection) costs on ``data``.

    Returns ``channels`` (ablated), ``share`` (of all channels), ``metric`` (the Ultralytics key),
    ``baseline`` (cached, see ``yolobn.evaluate.validation.baseline``), ``ablated`` and ``delta``.
    """

    loaded = ins.loaded
    size = model_imgsz(loaded, imgsz)
    plan = plan_dead(ins, "observed")
    key = KEY_METRICS.get(loaded.meta.task or "detect", KEY_METRICS["detect"])[0]
    base, _ = baseline(loaded, data, imgsz=size, batch=batch, device=device, trust=trust)
    ablated = validate(
        LoadedModel(ablate(loaded, plan), loaded.meta),
        data,
        imgsz=size,
        batch=batch,
        device=device,
        trust=trust,
    )
    b, a = float(base.get(key, float("nan"))), float(ablated.get(key, float("nan")))
    n = len(ins.channels)
    return {
        "data": str(data),
        "channels": plan.count,
        "share": plan.count / n if n else 0.0,
        "metric": key,
        "baseline": b,
        "ablated": a,
        "delta": a - b,
    }
