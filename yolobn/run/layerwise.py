"""The machinery of ``yolobn.recalibrate``: which BN feeds which, and one pass over the images per
dependency level, replaying the outputs of finished modules instead of recomputing them.

``dependency_plan`` runs one image with autograd on and reads the graph: a zero "probe" added to
every selected BN's output tells which BNs each BN input, and each module output, depends on; the
graph also tells which modules read each module's output directly (its consumers).

``LevelRun`` makes the passes. A module is *finished* once every BN it depends on (or holds) has its
final statistics. The outermost finished modules are run once more with their outputs kept per
batch, then replayed (an instance ``forward`` on the private copy) instead of computed. A kept
output whose consumers are all replayed themselves is no longer read: its tensors are freed and a
zero tensor of the same shape (``expand``: no memory) stands in, which brings the cache down to the
outputs still read (YOLO11n: 40% of the peak; the demo 138 MB instead of 346, 15 MB per 640-px photo). Should code between modules fail on a
stand-in, the pass runs again with the real outputs. Outputs written into in place (their version
counter moves) are not kept. Everything lives within a byte budget; what does not fit is recomputed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.core.errors import YolobnError
from yolobn.io.images import check_decoded, iter_batches
from yolobn.run.constants import constant_inputs
from yolobn.run.recording import Moments, Scratch, drift_of, set_statistics


@dataclass
class DependencyPlan:
    """In which order the BN statistics can be set exactly.

    Attributes:
        levels: BN names per dependency level, in execution order; a BN's level is one more than the
            deepest selected BN its input depends on (1: none).
        calls: how many times each BN runs per forward pass (1 in every Ultralytics model).
        deps: for each cacheable module (runs once per pass, returns a tensor), the selected BNs its
            output depends on or that run inside it.
        consumers: for each cacheable module, the cacheable modules and BNs that read its output
            (None: unknown, the graph was cut somewhere).
        unreached: selected BNs that did not run (their statistics are left as they are).
    """

    levels: list[list[str]]
    calls: dict[str, int]
    deps: dict[str, frozenset[str]]
    consumers: dict[str, frozenset[str]] | None
    unreached: list[str]


def dependency_plan(root: nn.Module, x: torch.Tensor, targets: Mapping[str, nn.Module]) -> DependencyPlan:
    """One forward pass of ``x`` (one image is enough) with autograd: which selected BN feeds which.

    The model's parameters and buffers are not written; hooks are removed on exit.
    """
    probes: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # the probes stay alive while their ids are keys
    order: list[str] = []
    ins: dict[str, list[Any]] = {}
    outs: dict[str, list[Any]] = {}
    name_of = {id(m): n for n, m in targets.items()}

    def bn_post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        keep.append(torch.zeros_like(out, requires_grad=True))
        probes[id(keep[-1])] = name_of[id(mod)]
        return out + keep[-1]

    def pre(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            ins.setdefault(name, []).append((*args, *kwargs.values()))
            order.append(name)

        return hook

    def post(name: str) -> Callable[..., None]:
        return lambda mod, args, out: outs.setdefault(name, []).append(out)

    handles = []
    try:
        for name, m in root.named_modules():
            if name and (id(m) in name_of or not isinstance(m, _BatchNorm)):
                handles.append(m.register_forward_pre_hook(pre(name), with_kwargs=True))
                hook = bn_post if id(m) in name_of else post(name)
                handles.append(m.register_forward_hook(hook))
        with torch.enable_grad():
            root(x.detach().clone().requires_grad_())  # a graph from the image on, also before any BN
    finally:
        for h in handles:
            h.remove()
    deps_of = _Reach(lambda node: _probe_of(node, probes), through=True)
    bns = [n for n in dict.fromkeys(order) if n in targets]  # first calls, in execution order
    level = _levels(bns, {n: frozenset().union(*(deps_of(t) for t in _tensors(ins[n]))) for n in bns})
    cacheable = [n for n, v in outs.items() if len(v) == 1 and isinstance(v[0], torch.Tensor)]
    return DependencyPlan(
        levels=[[n for n in bns if level[n] == k] for k in range(1, max(level.values(), default=0) + 1)],
        calls={n: len(ins.get(n, [])) for n in targets},
        deps={n: deps_of(outs[n][0]) | {t for t in targets if t.startswith(n + ".")} for n in cacheable},
        consumers=_consumers(cacheable, [*cacheable, *bns], ins, outs, constant_inputs(root, x, ins)),
        unreached=[n for n in targets if n not in ins],
    )


def _consumers(
    cacheable: list[str],
    readers: list[str],
    ins: dict[str, list[Any]],
    outs: dict[str, list[Any]],
    constants: set[int],
) -> dict[str, frozenset[str]] | None:
    """Which readers (modules, BNs) take each cacheable module's output, through any code between
    them: the nearest module outputs their inputs' graphs reach. None when a graph is cut (a float
    input that does not require grad: detached, or made under no_grad; ``constants`` such as
    YOLO-World's text embeddings do not cut it): nothing is then known unread."""
    cut = [t for d in readers for t in _tensors(ins[d]) if not t.requires_grad and t.is_floating_point()]
    if any(outs[n][0].grad_fn is None for n in cacheable) or any(id(t) not in constants for t in cut):
        return None
    owners: dict[Any, set[str]] = {}
    for n in cacheable:
        owners.setdefault(outs[n][0].grad_fn, set()).add(n)
    producers_of = _Reach(lambda node: frozenset(owners[node]) if node in owners else None, through=False)
    found: dict[str, set[str]] = {n: set() for n in cacheable}
    for d in readers:
        for p in frozenset().union(*(producers_of(t) for t in _tensors(ins[d]))):
            found[p].add(d)
    for d in cacheable:  # a module's own code reads its parts (MaxSigmoidAttnBlock reads gl's output)
        for p in frozenset().union(*(producers_of(k) for k, _ in outs[d][0].grad_fn.next_functions if k)):
            found[p].add(d)
    return {n: frozenset(c) for n, c in found.items()}


def _levels(bns: list[str], deps: dict[str, frozenset[str]]) -> dict[str, int]:
    level: dict[str, int] = {}
    while len(level) < len(bns):  # one sweep in the usual case: dependencies run first
        ready = [n for n in bns if n not in level and deps[n] <= level.keys()]
        if not ready:
            n = next(n for n in bns if n not in level)
            raise YolobnError(
                f"BN layer {n} runs twice per forward pass and feeds itself; leave it out (layers)"
            )
        for n in ready:
            level[n] = 1 + max((level[d] for d in deps[n]), default=0)
    return level


def _tensors(calls: list[Any]) -> Iterator[torch.Tensor]:
    """The tensors among the arguments of every call (one level of lists, as Concat takes)."""
    for args in calls:
        for a in args:
            yield from (
                t for t in (a if isinstance(a, (list, tuple)) else [a]) if isinstance(t, torch.Tensor)
            )


def _probe_of(node: Any, probes: dict[int, str]) -> frozenset[str] | None:
    var = getattr(node, "variable", None)  # AccumulateGrad of a leaf: a probe?
    return frozenset([probes[id(var)]]) if var is not None and id(var) in probes else None


class _Reach:
    """The labels an autograd graph reaches from a tensor, memoised per node. ``label(node)`` gives a
    node's own labels (or None); ``through``: go on past a labelled node, or stop there."""

    def __init__(self, label: Callable[[Any], frozenset[str] | None], through: bool) -> None:
        self.label, self.through = label, through
        self.memo: dict[Any, frozenset[str]] = {}

    def __call__(self, t: Any) -> frozenset[str]:
        """From a tensor (nothing when it has no graph) or from an autograd node."""
        fn = t.grad_fn if isinstance(t, torch.Tensor) else t
        if fn is None:
            return frozenset()
        stack = [(fn, False)]
        while stack:  # iterative post-order DFS: graphs are deeper than Python's recursion limit
            node, ready = stack.pop()
            if node in self.memo:
                continue
            own = self.label(node)
            kids = [] if own is not None and not self.through else [k for k, _ in node.next_functions if k]
            if not ready:
                stack.append((node, True))
                stack += [(k, False) for k in kids if k not in self.memo]
                continue
            self.memo[node] = frozenset().union(own or frozenset(), *(self.memo[k] for k in kids))
        return self.memo[fn]


# --------------------------------------------------------------------------------------------------
# passes


class _Stop(BaseException):
    """Ends a forward pass early from a hook (a BaseException: model code may catch Exception)."""


def nbytes(ts: Any) -> int:
    """Bytes of a tensor or of a list of tensors."""
    if isinstance(ts, torch.Tensor):
        return ts.numel() * ts.element_size()
    return sum(nbytes(t) for t in ts)


class Budget:
    """Bytes of cache in use, and the most ever used."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.peak = limit, 0, 0

    def take(self, ts: Any) -> bool:
        fits = self.used + nbytes(ts) <= self.limit
        self.used += nbytes(ts) if fits else 0
        self.peak = max(self.peak, self.used)
        return fits

    def give(self, ts: Any) -> None:
        self.used -= nbytes(ts)


class Images:
    """The preprocessed batches: read once, then kept (uint8 when that is exact) while they fit."""

    def __init__(
        self,
        paths: Sequence[Path],
        size: int,
        stride: int,
        batch: int,
        task: str | None,
        dev: torch.device,
        budget: Budget,
    ) -> None:
        self.paths, self.size, self.stride, self.batch, self.task = paths, size, stride, batch, task
        self.dev, self.budget = dev, budget
        self.kept: list[torch.Tensor] | None = []
        self.skipped: list[Path] = []
        self.count = 0

    def first(self) -> torch.Tensor:
        """One image (for the dependency plan)."""
        skipped: list[Path] = []
        got = next(self._batches(skipped), None)
        if got is None:  # the list of paths is never empty: every one failed
            check_decoded(0, skipped)
            raise YolobnError("--images: no image could be decoded")  # pragma: no cover
        return got[0][:1].to(self.dev)

    def _batches(self, skipped: list[Path]) -> Iterator[tuple[torch.Tensor, list[Path]]]:
        return iter_batches(
            self.paths, self.size, stride=self.stride, batch=self.batch, task=self.task, skipped=skipped
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        if self.kept is not None and self.count:
            for x in self.kept:
                yield (x.float().div_(255) if x.dtype == torch.uint8 else x).to(self.dev), len(x)
            return
        skipped: list[Path] = []
        fresh = not self.count
        for x, names in self._batches(skipped):
            if fresh:
                self._keep(x)
            yield x.to(self.dev), len(names)
        if fresh:
            self.skipped, self.count = skipped, len(self.paths) - len(skipped)

    def _keep(self, x: torch.Tensor) -> None:
        if self.kept is None:
            return
        u = x.mul(255).round_().to(torch.uint8)
        stored = u if torch.equal(u.float().div_(255), x) else x  # same op as images.iter_batches
        if self.budget.take(stored):
            self.kept.append(stored)
        else:
            self.budget.give(self.kept)
            self.kept = None  # does not fit: read the files again in every pass


class _Kept:
    """A finished module's output per batch, or once evicted only their shapes (zero stand-ins)."""

    def __init__(self, outs: list[torch.Tensor]) -> None:
        self.outs, self.versions = outs, [t._version for t in outs]
        self.specs = [(t.shape, t.dtype, t.device) for t in outs]
        self.evicted = False

    def output(self, i: int) -> torch.Tensor:
        if self.evicted:
            shape, dtype, device = self.specs[i]
            return torch.zeros((), dtype=dtype, device=device).expand(shape)
        return self.outs[i]

    def written(self) -> bool:
        return not self.evicted and any(
            t._version != v for t, v in zip(self.outs, self.versions, strict=True)
        )


class LevelRun:
    """The passes over the images (one per level, then the check) and the cache of finished outputs."""

    def __init__(
        self,
        root: nn.Module,
        targets: dict[str, _BatchNorm],
        source: Images,
        budget: Budget,
        progress: Any,
        total: int,
    ) -> None:
        self.root, self.targets, self.source, self.budget = root, targets, source, budget
        self.modules = dict(root.named_modules())
        self.final: set[str] = set()  # BNs whose statistics are set
        self.cached: dict[str, _Kept] = {}  # finished module -> its output per batch
        self.failed: set[str] = set()  # outputs that did not fit, or were written into
        self.missed: list[str] = []  # BNs that did not run in their level's pass
        self.stand_ins = True  # zero stand-ins for outputs nobody reads (off after a failure)
        self.evictions, self.fell_back = 0, False
        self.batch = 0  # index of the batch being run, for the replays
        self.passes = self.calls = 0
        self.progress, self.done, self.total = progress, 0, total
        self.scratch = Scratch()

    def level(self, names: list[str], plan: DependencyPlan) -> None:
        """One pass: the inputs of ``names`` (their upstream BNs are final) set their statistics."""
        try:
            moments = self._level_pass(names, plan)
        except Exception:
            if not self.stand_ins or not any(k.evicted for k in self.cached.values()):
                raise
            self.stand_ins, self.fell_back = False, True  # code between modules failed on a stand-in
            for name in [n for n, k in self.cached.items() if k.evicted]:
                del self.cached[name]
            moments = self._level_pass(names, plan)
        for n in names:
            if moments[n].n:
                set_statistics(n, self.targets[n], moments[n])
            else:  # ran in the plan's pass, not in this one: left as it was, and said so
                self.missed.append(n)
        self.final.update(names)

    def _level_pass(self, names: list[str], plan: DependencyPlan) -> dict[str, Moments]:
        moments = {n: Moments(self.targets[n].num_features, self.source.dev) for n in names}
        expected = sum(plan.calls[n] for n in names)
        seen = [0]

        def hook(name: str) -> Callable[..., None]:
            def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
                moments[name].add_values(args[0], self.scratch)
                seen[0] += 1
                if seen[0] == expected:  # the rest of the model cannot change these inputs
                    raise _Stop

            return pre

        capture = self._prepare_cache(plan)
        handles = [self.targets[n].register_forward_pre_hook(hook(n)) for n in names]
        try:
            with self._replaying(), self._capturing(capture):
                for x, _ in self._batches():
                    seen[0] = 0
                    with suppress(_Stop):
                        self.root(x)
        finally:
            for h in handles:
                h.remove()
        return moments

    def verify(self, plan: DependencyPlan) -> dict[str, Any]:
        """A plain full pass (no cache, no early stop): the drift left in every recalibrated BN."""
        for name in list(self.cached):
            self._drop(name)
        moments = {
            n: Moments(self.targets[n].num_features, self.source.dev) for lv in plan.levels for n in lv
        }

        def hook(n: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
            return lambda mod, args: moments[n].add_values(args[0], self.scratch)

        handles = [self.targets[n].register_forward_pre_hook(hook(n)) for n in moments]
        try:
            for x, _ in self._batches():
                self.root(x)
        finally:
            for h in handles:
                h.remove()
        drift = {n: drift_of(self.targets[n], m) for n, m in moments.items() if m.n}
        worst = max(drift, key=lambda n: float(drift[n].mean()), default=None)
        return {
            "max_layer_mean": float(drift[worst].mean()) if worst else 0.0,
            "max_channel": max((float(d.max()) for d in drift.values()), default=0.0),
            "worst_layer": worst,
        }

    def record(self, plan: DependencyPlan) -> dict[str, Any]:
        """What ran, for the metadata."""
        return {
            "levels": len(plan.levels),
            "passes": self.passes,
            "forward_calls": self.calls,
            "layers": sum(len(v) for v in plan.levels) - len(self.missed),
            "layers_not_reached": plan.unreached + self.missed,
            "cache_mb": round(self.budget.peak / 2**20, 1),
            "cache_stand_ins": self.evictions,
            "cache_stand_ins_failed": self.fell_back,
        }

    def _batches(self) -> Iterator[tuple[torch.Tensor, int]]:
        self.passes += 1
        for i, (x, n) in enumerate(self.source):
            self.batch = i
            yield x, n
            self.calls += 1
            self.done += n
            if self.progress:
                self.progress(self.done, self.total)

    # -- the cache of finished module outputs ------------------------------------------------------

    def _off(self, name: str) -> bool:
        """Not computed in the coming pass: replayed, or inside a replayed module."""
        return name in self.cached or any(a in self.cached for a in ancestors(name))

    def _prepare_cache(self, plan: DependencyPlan) -> list[str]:
        """Drop, evict and restore kept outputs for the coming pass; the modules to keep from it."""
        for m in [m for m in self.cached if any(a in self.cached for a in ancestors(m))]:
            self._drop(m)  # inside a module kept whole: never called again
        consumers = plan.consumers or {}  # unknown readers (a cut graph): nothing is ever evicted
        changed = True
        while changed:  # an evicted output someone computes from again must be computed itself
            changed = False
            for m in [m for m, k in self.cached.items() if k.evicted]:
                if not all(self._off(c) for c in consumers[m]):
                    del self.cached[m]
                    changed = True
        for m, k in self.cached.items():
            if (
                self.stand_ins
                and plan.consumers is not None
                and not k.evicted
                and all(self._off(c) for c in plan.consumers[m])
            ):
                self.budget.give(k.outs)
                k.outs, k.evicted = [], True
                self.evictions += 1
        done = {m for m, deps in plan.deps.items() if deps <= self.final and m not in self.failed}
        top = [m for m in done if not any(a in done for a in ancestors(m))]
        return [m for m in top if m not in self.cached]

    @contextmanager
    def _replaying(self) -> Iterator[None]:
        """Kept modules return their output instead of computing it: an instance attribute
        ``forward`` on this private copy, removed on exit (a wrapper module would hide the
        attributes Ultralytics' forward loop reads from each layer, ``f`` and ``i``). An output the
        code after it wrote into in place served this pass before the write, not the next: dropped."""
        live = list(self.cached)
        try:
            for name in live:
                self.modules[name].forward = lambda *a, k=self.cached[name], **kw: k.output(self.batch)
            yield
        finally:
            for name in live:
                self.modules[name].__dict__.pop("forward", None)
            for name in [n for n in live if self.cached[n].written()]:
                self._drop(name)
                self.failed.add(name)

    @contextmanager
    def _capturing(self, names: list[str]) -> Iterator[None]:
        store: dict[str, list[tuple[torch.Tensor, int]]] = {n: [] for n in names}

        def hook(name: str) -> Callable[..., None]:
            def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
                if name in store and isinstance(out, torch.Tensor):
                    if self.budget.take(out):
                        store[name].append((out, out._version))
                    else:  # does not fit: give back what it took, and do not try it again
                        self.budget.give([t for t, _ in store.pop(name)])
                        self.failed.add(name)

            return post

        handles = [self.modules[n].register_forward_hook(hook(n)) for n in names]
        complete = False
        try:
            yield
            complete = True
        finally:
            for h in handles:
                h.remove()
            for name, got in store.items():
                written = any(t._version != v for t, v in got)
                if complete and got and len(got) == self.batch + 1 and not written:
                    self.cached[name] = _Kept([t for t, _ in got])
                else:  # not reached (after the early stop), interrupted, or written into later
                    self.budget.give([t for t, _ in got])
                    if written:
                        self.failed.add(name)

    def _drop(self, name: str) -> None:
        self.budget.give(self.cached.pop(name).outs)


def ancestors(name: str) -> Iterator[str]:
    """``a``, ``a.b`` for ``a.b.c``."""
    parts = name.split(".")
    for k in range(1, len(parts)):
        yield ".".join(parts[:k])


__all__ = ["Budget", "Images", "LevelRun", "DependencyPlan", "dependency_plan"]
