"""Physical channel removal that equals ablation: a smaller model of Ultralytics' own classes.

``select`` picks whole classes of the dependency graph (``yolobn.edit.prune_graph``) by a per-channel
score, lowest first, until a number of BatchNorm channels is reached; ``remove`` deletes them.

The fold
    A removed channel c of a producer is, in the ablated model, the constant ``k_c`` after its
    activation (its observed mean: ``yolobn.edit.ablation.constants``). A dense convolution W
    reading it then adds ``sum over kernel taps of W[o, c] * k_c`` to output o at every pixel whose
    window lies inside the image; the pruner deletes input c and adds that sum instead: into the
    running mean of the BatchNorm that follows (``running_mean' = running_mean - delta``; eval mode
    subtracts the running mean), or into the layer's bias (the heads' last convolutions, and
    ``Classify``'s linear layer, which reads the channel through global pooling: exact there). A
    channel that is a sum (after a residual add) folds the sum of its members' constants.
The border residual
    Zero padding: at an output pixel whose window reaches over the border, the ablated model sums
    the constant over fewer taps than the fold assumes. The difference at such a pixel is exactly
    ``sum over removed c, over the taps in the padding, of W[o, c, tap] * k_c`` (times the
    BatchNorm's ``gamma / sqrt(running_var + eps)``); interior pixels are equal to float rounding.
    1x1 convolutions, max-pools, upsampling and pooling have no such term. ``border_residual``
    measures it layer by layer.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from yolobn.core.errors import YolobnError
from yolobn.edit.prune_graph import Graph

__all__ = ["Selection", "check_selection", "layer_table", "remove", "select"]


@dataclass
class Selection:
    """What ``select`` chose: BatchNorm name -> removed channels (sorted), and the counts.

    ``total`` counts every BatchNorm channel of the model, ``prunable`` those that may be removed
    at all (not fixed); ``count`` those chosen."""

    channels: dict[str, list[int]]
    count: int
    total: int
    prunable: int

    @property
    def share(self) -> float:
        return 100.0 * self.count / self.total if self.total else 0.0


def select(graph: Graph, scores: Mapping[str, np.ndarray], count: int, reduce: str = "max") -> Selection:
    """The ``count`` BatchNorm channels (or the closest above it) of the lowest-scoring classes.

    A class scores ``reduce`` (``max``: removable only when every member is; ``mean``: Torch-Pruning's
    group reduction) of its members' scores; NaN (never observed) ranks last. Classes are taken in
    that order, skipping any that would empty a producer or a half of a split; a class in one
    half of a ``C2f`` split waits for a class in the other half, and the two go together.
    """
    classes, order, sides = _candidates(graph, scores, reduce)
    left = {p.name: p.channels for p in graph.producers.values()}
    half_left = {(k, s): len(pair[s]) for k, pair in enumerate(graph.pairs) for s in (0, 1)}
    waiting: dict[tuple[int, int], list[int]] = {}
    taken: list[int] = []
    n = 0

    def fits(group: list[int]) -> bool:
        need: dict[str, int] = {}
        for r in group:
            for i in classes[r]:
                need[graph.owner[i][0]] = need.get(graph.owner[i][0], 0) + 1
        halves = [h for r in group if (h := sides[r]) is not None]
        return all(left[b] > k for b, k in need.items()) and all(half_left[h] > 1 for h in halves)

    def take(group: list[int]) -> None:
        nonlocal n
        for r in group:
            for i in classes[r]:
                left[graph.owner[i][0]] -= 1
            side = sides[r]
            if side is not None:
                half_left[side] -= 1
            taken.append(r)
            n += len(classes[r])

    for r in order:
        if n >= count:
            break
        side = sides[r]
        if side is None:
            if fits([r]):
                take([r])
            continue
        other = waiting.get((side[0], 1 - side[1]), [])
        if other and fits([other[0], r]):
            take([other.pop(0), r])
        else:
            waiting.setdefault(side, []).append(r)
    chosen: dict[str, list[int]] = {}
    for r in taken:
        for i in classes[r]:
            bn, c = graph.owner[i]
            chosen.setdefault(bn, []).append(c)
    total = sum(p.channels for p in graph.producers.values())
    prunable = sum(len(m) for m in classes.values())
    return Selection({k: sorted(v) for k, v in chosen.items()}, n, total, prunable)


def _candidates(
    graph: Graph, scores: Mapping[str, np.ndarray], reduce: str
) -> tuple[dict[int, list[int]], list[int], dict[int, tuple[int, int] | None]]:
    """The removable classes (representative -> members), their order, and the split half each
    belongs to (None for most; a class in more than one half is left out)."""
    fixed = graph.why_fixed()
    classes = {r: m for r, m in graph.classes().items() if m[0] not in fixed}
    where: dict[int, tuple[int, int]] = {}
    for k, pair in enumerate(graph.pairs):
        for s, half in ((0, pair[0]), (1, pair[1])):
            for i in half:
                where[i] = (k, s)
    sides: dict[int, tuple[int, int] | None] = {}
    for r in list(classes):
        hits = [where[i] for i in classes[r] if i in where]
        if len(hits) > 1:
            del classes[r]  # tied across splits: never seen in Ultralytics' blocks, left whole
            continue
        sides[r] = hits[0] if hits else None
    fn = np.max if reduce == "max" else np.mean
    key: dict[int, float] = {}
    for r, members in classes.items():
        vals = [_score(scores, *graph.owner[i]) for i in members]
        v = float(fn(vals))
        key[r] = v if np.isfinite(v) else np.inf
    order = sorted(classes, key=lambda r: (key[r], r))  # ties in model order
    return classes, order, sides


def _score(scores: Mapping[str, np.ndarray], bn: str, c: int) -> float:
    s = scores.get(bn)
    return float(s[c]) if s is not None and c < len(s) else np.inf


def check_selection(graph: Graph, channels: Mapping[str, Sequence[int]]) -> set[int]:
    """The global ids of ``channels``; a YolobnError unless they are whole classes, none fixed, no
    producer emptied and both halves of every split losing the same number."""
    ids: set[int] = set()
    for bn, cs in channels.items():
        p = graph.producers.get(bn)
        if p is None:
            raise YolobnError(f"prune: {bn} is not a BatchNorm the pruner can remove channels from")
        if any(not 0 <= c < p.channels for c in cs):
            raise YolobnError(f"prune: {bn} has {p.channels} channels; got {sorted(cs)[-1]}")
        if len(set(cs)) >= p.channels:
            raise YolobnError(f"prune: {bn}: removing every channel would leave nothing")
        ids |= {p.first + c for c in cs}
    fixed, roots, classes = graph.why_fixed(), graph.roots(), graph.classes()
    for i in ids:
        if i in fixed:
            bn, c = graph.owner[i]
            raise YolobnError(f"prune: {bn} channel {c} cannot be removed: {fixed[i]}")
        missing = [j for j in classes[roots[i]] if j not in ids]
        if missing:
            bn, c = graph.owner[i]
            raise YolobnError(
                f"prune: {bn} channel {c} goes with {graph.owner[missing[0]][0]} channel "
                f"{graph.owner[missing[0]][1]} (a residual add or a depthwise conv): remove both"
            )
    for a, b, block in graph.pairs:
        if sum(i in ids for i in a) != sum(i in ids for i in b):
            raise YolobnError(
                f"prune: {block} splits its cv1 in two equal halves: remove as many channels from each"
            )
    return ids


def remove(
    model: nn.Module, graph: Graph, channels: Mapping[str, Sequence[int]], values: Mapping[str, np.ndarray]
) -> nn.Module:
    """A copy of ``model`` without ``channels`` (BatchNorm name -> channels), each removed channel's
    constant (``values``: BatchNorm name -> per-channel post-activation constant) folded into its
    readers (module docstring). ``model`` is not changed."""
    ids = check_selection(graph, channels)
    net = copy.deepcopy(model).eval()
    k = {i: float(values[graph.owner[i][0]][graph.owner[i][1]]) for i in ids}
    modules = dict(net.named_modules())
    with torch.no_grad():
        for con in graph.consumers:
            rem = [j for j, chan in enumerate(con.inputs) if chan[0] in ids]
            if rem:
                vals = torch.tensor([sum(k[i] for i in con.inputs[j]) for j in rem], dtype=torch.float64)
                keep = [j for j in range(len(con.inputs)) if con.inputs[j][0] not in ids]
                _fold(modules, con.module, con.kind, con.fold, rem, keep, vals)
        for p in graph.producers.values():
            gone = {c for c in range(p.channels) if p.first + c in ids}
            if gone:
                _cut_outputs(modules, p, [c for c in range(p.channels) if c not in gone])
        for block, bn in graph.halves.items():
            modules[block].c = int(modules[bn].num_features) // 2
    return net


def _fold(
    modules: dict[str, nn.Module],
    name: str,
    kind: str,
    fold: str,
    rem: list[int],
    keep: list[int],
    vals: torch.Tensor,
) -> None:
    """Delete inputs ``rem`` of ``name``, adding their constant contribution to what follows it."""
    m: Any = modules[name]
    if kind == "depthwise":  # its output channel goes with the input: the producer side cuts both
        return
    w = m.weight.detach()
    wd = w.double()
    if kind == "conv":
        delta = (wd[:, rem].sum(dim=(2, 3)) * vals).sum(dim=1)
    else:  # linear after global pooling
        delta = wd[:, rem] @ vals
    if fold:
        bn: Any = modules[fold]
        bn.running_mean.copy_((bn.running_mean.double() - delta).to(bn.running_mean.dtype))
    else:
        if m.bias is None:
            m.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype), requires_grad=w.requires_grad)
        m.bias.copy_((m.bias.double() + delta).to(m.bias.dtype))
    m.weight = nn.Parameter(w[:, keep].clone(), requires_grad=m.weight.requires_grad)
    if kind == "conv":
        m.in_channels = len(keep)
    else:
        m.in_features = len(keep)


def _cut_outputs(modules: dict[str, nn.Module], p: Any, keep: list[int]) -> None:
    conv: Any = modules[p.conv]
    bn: Any = modules[p.name]
    idx = torch.tensor(keep, dtype=torch.long)
    conv.weight = nn.Parameter(conv.weight.detach()[idx].clone(), requires_grad=conv.weight.requires_grad)
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[idx].clone(), requires_grad=conv.bias.requires_grad)
    conv.out_channels = len(keep)
    if p.depthwise:
        conv.in_channels = conv.groups = len(keep)
    for attr in ("weight", "bias"):
        t = getattr(bn, attr)
        if t is not None:
            setattr(bn, attr, nn.Parameter(t.detach()[idx].clone(), requires_grad=t.requires_grad))
    for attr in ("running_mean", "running_var"):
        t = getattr(bn, attr)
        if t is not None:
            setattr(bn, attr, t[idx].clone())
    bn.num_features = len(keep)


def layer_table(
    graph: Graph, channels: Mapping[str, Sequence[int]], order: Sequence[str] = ()
) -> pd.DataFrame:
    """Per BatchNorm: ``name, channels, prunable, removed, kept, share_removed, fixed_reason`` (the
    reason its other channels stay; empty when every channel could go), in ``order`` (default:
    the graph's)."""
    fixed = graph.why_fixed()
    rows = []
    names = [n for n in order if n in graph.producers] or list(graph.producers)
    for name in names:
        p = graph.producers[name]
        why = [fixed[i] for i in p.ids if i in fixed]
        removed = len(channels.get(name, ()))
        rows.append(
            {
                "name": name,
                "channels": p.channels,
                "prunable": p.channels - len(why),
                "removed": removed,
                "kept": p.channels - removed,
                "share_removed": removed / p.channels if p.channels else 0.0,
                "fixed_reason": max(set(why), key=why.count) if why else "",
            }
        )
    return pd.DataFrame(rows)
