"""The channel-dependency graph of an Ultralytics model: which BatchNorm channels can be removed,
what must go with them, and who reads them.

Built from Ultralytics' own module structure, not from a trace: each top-level layer
``model.model[i]`` reads the outputs named by its ``f`` (``from``) indices, and each block type the
pruner knows has a rule that follows its ``forward`` symbolically, channel by channel. A tensor is
described as a list, one entry per channel, of the producer channels summed into it (one for a
plain output, several after a residual add).

Producers
    every ``Conv``/``DWConv`` (conv -> BatchNorm -> activation). Its channel ``c`` can be removed:
    the pruner then treats its post-activation output as the constant ``k_c`` (the ablation of
    ``yolobn.edit.ablation``) and folds that constant into every reader.
Consumers
    the convolutions and linear layers that read a producer's channels (directly, or through
    concatenations, splits, max-pools, upsampling and residual adds, which all carry a constant
    channel through as a constant).
Classes
    channels that must go together: both sides of a residual add (``Bottleneck``, ``SPPF`` with a
    shortcut, ``Proto26``), and a depthwise convolution's output channel with its input channel. A
    class is removed whole or not at all.
Fixed channels
    never removed, with the reason: the image, the head outputs, everything an attention block
    reads or adds to (its width is tied to the heads), the halves of a split with fixed sizes,
    what a transposed or grouped convolution reads, and everything in or around a block type the
    pruner does not know (left whole).
Pairs
    ``C2f``/``C3k2`` split ``cv1``'s output into two halves with ``chunk(2)``: both halves must lose
    the same number of channels.

Every rule is checked against the module it traces: a rule that does not visit every convolution,
linear layer and BatchNorm of its block, or meets a width it does not expect, leaves the block whole
(fixed) instead of guessing.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.core.errors import YolobnError
from yolobn.edit.prune_rules import HEAD_OUT, IMAGE, Desc, Mismatch, flat, one, rules

__all__ = ["Consumer", "Graph", "Producer", "build_graph"]


@dataclass
class Producer:
    """A conv -> BatchNorm -> activation whose output channels may be removed.

    ``name`` is the BatchNorm's dotted name (the key of every yolobn table); ``module`` the block
    (``Conv``), ``conv`` its convolution; ``first`` the global id of channel 0; ``depthwise``: its
    conv has one group per channel (its output channel c reads input channel c alone)."""

    name: str
    module: str
    conv: str
    first: int
    channels: int
    depthwise: bool = False

    @property
    def ids(self) -> range:
        return range(self.first, self.first + self.channels)


@dataclass
class Consumer:
    """A layer that reads channels: ``kind`` ``conv`` (a dense convolution: a removed input's
    constant folds into ``fold``, the BatchNorm after it, or its own bias when ``fold`` is empty),
    ``depthwise`` (its output channel goes with its input channel: nothing to fold) or ``linear``
    (``Classify``'s linear layer after global pooling: into its bias)."""

    module: str
    kind: str
    inputs: Desc
    fold: str = ""


@dataclass
class Graph:
    """The dependency graph (module docstring). ``owner[id]`` is (BatchNorm name, channel), or
    ("", -1) for a channel no BatchNorm produces (the image, a head output, an opaque block)."""

    producers: dict[str, Producer] = field(default_factory=dict)
    consumers: list[Consumer] = field(default_factory=list)
    owner: list[tuple[str, int]] = field(default_factory=list)
    ties: list[tuple[int, int]] = field(default_factory=list)
    fixed: dict[int, str] = field(default_factory=dict)
    pairs: list[tuple[list[int], list[int], str]] = field(default_factory=list)
    halves: dict[str, str] = field(default_factory=dict)  # C2f-like block -> its cv1 BatchNorm (for .c)
    opaque: dict[str, str] = field(default_factory=dict)  # block left whole -> why

    def roots(self) -> list[int]:
        """Union-find over the ties: the class representative of every id."""
        parent = list(range(len(self.owner)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a, b in self.ties:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        return [find(i) for i in range(len(parent))]

    def classes(self) -> dict[int, list[int]]:
        """Class representative -> its member ids (in id order)."""
        out: dict[int, list[int]] = {}
        for i, r in enumerate(self.roots()):
            out.setdefault(r, []).append(i)
        return out

    def why_fixed(self) -> dict[int, str]:
        """Every id that can never be removed (fixed itself, or tied to a fixed id), with the reason."""
        reason: dict[int, str] = {}
        classes = self.classes()
        for members in classes.values():
            why = next((self.fixed[i] for i in members if i in self.fixed), None)
            if why is None and any(self.owner[i][0] == "" for i in members):
                why = IMAGE
            if why is not None:
                for i in members:
                    reason[i] = self.fixed.get(i, why)
        return reason


def build_graph(model: nn.Module, imgsz: int = 64) -> Graph:
    """The dependency graph of an Ultralytics model (``model.model`` a list of layers with ``f``).

    Args:
        model: the model (not changed: the output widths of blocks left whole are read by one
            forward pass on a copy, when there is such a block).
        imgsz: the side of the dummy image of that pass.

    Raises:
        YolobnError: not an Ultralytics layer list, or a model fused already (no BatchNorm left).
    """
    layers = getattr(model, "model", None)
    if not isinstance(layers, (nn.Sequential, nn.ModuleList)) or not all(hasattr(m, "f") for m in layers):
        raise YolobnError("prune: needs an Ultralytics model (a list of layers with their 'from' indices)")
    if not any(isinstance(m, _BatchNorm) for m in model.modules()):
        raise YolobnError("prune: the model has no BatchNorm (fused?): nothing to rank or remove")
    return _Tracer(model, imgsz).run()


def _widths(model: nn.Module, imgsz: int) -> dict[str, int]:
    """The output channel count of every module that returns a tensor, from one forward pass on a copy."""
    net = copy.deepcopy(model).float().eval()
    widths: dict[str, int] = {}
    handles = []
    for name, m in net.named_modules():

        def hook(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.dim() >= 2:
                widths[name] = int(out.shape[1])

        handles.append(m.register_forward_hook(hook))
    ch = _in_channels(model)
    stride = getattr(model, "stride", None)
    side = max(imgsz, 2 * int(stride.max())) if isinstance(stride, torch.Tensor) and stride.numel() else imgsz
    try:
        with torch.no_grad():
            net(torch.zeros(1, ch, side, side))
    except Exception as e:
        raise YolobnError(
            f"prune: the model does not run on a {side}x{side} image ({type(e).__name__}: {e})"
        ) from None
    finally:
        for h in handles:
            h.remove()
    return widths


def _in_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    return int(getattr(first, "in_channels", 3))


class _Tracer:
    """Follows each layer's forward symbolically (one rule per Ultralytics block type)."""

    def __init__(self, model: nn.Module, imgsz: int) -> None:
        self.model = model
        self.imgsz = imgsz
        self.widths: dict[str, int] | None = None  # read once, when a block is left whole
        self.g = Graph()
        self.visited: set[str] = set()
        self.rules: dict[type, Callable[[str, Any, Any], Any]] = rules(self)

    # ---- the walk over the top-level layers

    def run(self) -> Graph:
        outs: list[Any] = []
        x: Any = self.fresh(_in_channels(self.model), IMAGE)
        layers: Any = self.model.model
        for i, layer in enumerate(layers):
            f = layer.f
            if f != -1:
                x = outs[f] if isinstance(f, int) else [x if j == -1 else outs[j] for j in f]
            x = self._layer(f"model.{i}", layer, x)
            outs.append(x)
        return self.g

    def _layer(self, path: str, layer: nn.Module, x: Any) -> Any:
        """One top-level layer by its rule; left whole (every input and output fixed) when it has no
        rule, or when the rule does not account for every module of the layer."""
        rule = self.rules.get(type(layer))
        if rule is not None:
            with self._transaction() as ok:
                out = rule(path, layer, x)
                missed = self._unvisited(path, layer)
                if missed:
                    raise Mismatch(f"{missed} is not read by the rule for {type(layer).__name__}")
            if ok:
                return out
            why = f"the pruner cannot follow {type(layer).__name__} ({path}): {ok.reason}"
        else:
            why = f"in or next to {type(layer).__name__} ({path}), a block the pruner does not know (left whole)"
        return self.opaque(path, layer, x, why)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Outcome]:
        g, sizes = self.g, (len(self.g.consumers), len(self.g.owner), len(self.g.ties), len(self.g.pairs))
        fixed, producers, halves, opaque = dict(g.fixed), dict(g.producers), dict(g.halves), dict(g.opaque)
        visited = set(self.visited)
        outcome = _Outcome()
        try:
            yield outcome
        except Mismatch as e:
            outcome.failed(str(e))
            del g.consumers[sizes[0] :], g.owner[sizes[1] :], g.ties[sizes[2] :], g.pairs[sizes[3] :]
            g.fixed, g.producers, g.halves, g.opaque, self.visited = fixed, producers, halves, opaque, visited

    def _unvisited(self, path: str, layer: nn.Module) -> str:
        for name, m in layer.named_modules(prefix=path):
            if (
                isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, _BatchNorm))
                and name not in self.visited
            ):
                return str(name)
        return ""

    def opaque(self, path: str, layer: nn.Module, x: Any, why: str) -> Desc:
        self.fix(x, why)
        self.g.opaque[path] = why
        for name, m in layer.named_modules(prefix=path):
            self.visited.add(name)
            if isinstance(m, _BatchNorm):  # its channels stay: recorded so that the report can say why
                self._fixed_producer(name, name, int(m.num_features), why)
        if self.widths is None:
            self.widths = _widths(self.model, self.imgsz)
        return self.fresh(self.widths.get(path) or 0, why)

    # ---- channel bookkeeping

    def fresh(self, n: int, why: str) -> Desc:
        """``n`` channels no BatchNorm produces, never removed."""
        start = len(self.g.owner)
        self.g.owner += [("", -1)] * n
        for i in range(start, start + n):
            self.g.fixed[i] = why
        return [(i,) for i in range(start, start + n)]

    def fix(self, x: Any, why: str) -> None:
        for chan in flat(x):
            for i in chan:
                self.g.fixed.setdefault(i, why)

    def _fixed_producer(self, bn: str, module: str, n: int, why: str) -> None:
        if bn in self.g.producers:
            return
        start = len(self.g.owner)
        self.g.owner += [(bn, c) for c in range(n)]
        self.g.producers[bn] = Producer(bn, module, "", start, n)
        for i in range(start, start + n):
            self.g.fixed[i] = why

    def add(self, a: Desc, b: Desc) -> Desc:
        """A residual add: the two sides' channels are tied, and the sum carries both."""
        if len(a) != len(b):
            raise Mismatch(f"an add of {len(a)} and {len(b)} channels")
        for ca, cb in zip(a, b, strict=True):
            for i in (*ca[1:], *cb):
                self.g.ties.append((ca[0], i))
        return [ca + cb for ca, cb in zip(a, b, strict=True)]

    # ---- the building blocks used by the rules

    def visit(self, *names: str) -> None:
        self.visited.update(names)

    def conv(self, path: str, m: Any, x: Any) -> Desc:
        """Ultralytics ``Conv``/``DWConv``: conv -> bn -> act; a producer (dense or depthwise)."""
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise Mismatch(f"{path} has no conv and BatchNorm (fused?)")
        x = one(x)
        if len(x) != conv.in_channels or bn.num_features != conv.out_channels:
            raise Mismatch(f"{path} reads {len(x)} channels, its conv expects {conv.in_channels}")
        self.visit(f"{path}.conv", f"{path}.bn")
        n, g = conv.out_channels, conv.groups
        start = len(self.g.owner)
        self.g.owner += [(f"{path}.bn", c) for c in range(n)]
        out: Desc = [(i,) for i in range(start, start + n)]
        dw = g > 1 and g == conv.in_channels == n
        self.g.producers[f"{path}.bn"] = Producer(f"{path}.bn", path, f"{path}.conv", start, n, dw)
        if g == 1:
            self.g.consumers.append(Consumer(f"{path}.conv", "conv", list(x), f"{path}.bn"))
        elif dw:  # output channel c reads input channel c only: they go together
            self.g.consumers.append(Consumer(f"{path}.conv", "depthwise", list(x)))
            for (o,), chan in zip(out, x, strict=True):
                self.g.ties += [(o, i) for i in chan]
        else:
            why = f"read by a grouped convolution ({path}, {g} groups)"
            self.fix(x, why)
            self.fix(out, why)
        return out

    def plain_conv(self, path: str, m: nn.Conv2d, x: Any, why: str = HEAD_OUT) -> Desc:
        """A bare ``nn.Conv2d`` (a head's last layer): a reader with a bias; its outputs are fixed."""
        x = one(x)
        if m.groups != 1 or len(x) != m.in_channels:
            raise Mismatch(f"{path}: a grouped or mismatched nn.Conv2d")
        self.visit(path)
        self.g.consumers.append(Consumer(path, "conv", list(x)))
        return self.fresh(m.out_channels, why)

    def linear(self, path: str, m: nn.Linear, x: Desc) -> Desc:
        if len(x) != m.in_features:
            raise Mismatch(f"{path} reads {len(x)} features, expects {m.in_features}")
        self.visit(path)
        self.g.consumers.append(Consumer(path, "linear", list(x)))
        return self.fresh(m.out_features, HEAD_OUT)

    def apply(self, path: str, m: Any, x: Any) -> Any:
        """A submodule by its rule; one without a rule is left whole (its inputs and outputs fixed)."""
        rule = self.rules.get(type(m))
        if rule is not None:
            return rule(path, m, x)
        why = f"in or next to {type(m).__name__} ({path}), a block the pruner does not know (left whole)"
        return self.opaque(path, m, x, why)


class _Outcome:
    def __init__(self) -> None:
        self.reason = ""

    def failed(self, reason: str) -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return not self.reason
