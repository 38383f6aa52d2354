"""Re-estimate the BatchNorm running statistics on images (``yolobn recalibrate``).

What is estimated: every selected BN's running mean and variance become the mean and the
*population* variance (squared deviations / n) of its input over every position of every image, as
the recalibrated model itself sees them in eval mode; ``yolobn activations`` on the same images then
finds no drift. Population, not PyTorch's unbiased variance: the drift and every eval-mode output use
it, and with n = images x positions the two differ by n/(n-1) anyway. Batch moments are merged
exactly in float64 (``recording.Moments``), so batch size, image order and the grouping of images by
letterboxed shape change nothing.

Why layer by layer: a BN's input depends on the statistics of the BNs before it; the answer is the
fixed point of S = F(S), F = "statistics of the BN inputs under S". Whole-model passes that update
every layer at once (Jacobi) diverge: the error grows 2-10x per level of depth, and on the demo the
largest layer drift went 0.18 -> 2.6 -> 3e37 -> NaN in three passes. Training-mode estimates (the
previous ``recalibrate``: batch statistics averaged over batches) describe a training-mode model and
miss the variance between batch means (demo, batch 8: drift up to 3). Setting the statistics in
dependency order is exact:

1. A forward pass of one image with autograd: a zero "probe" is added to every selected BN's output;
   the autograd graph of each BN input says which BNs it depends on. Level = 1 + the deepest of those.
2. One pass over the images per level (demo: 64 levels, 81 BNs): the level's BNs, whose upstream
   BNs are all final, get their statistics; the forward pass stops after the level's last BN.
3. Modules whose output can no longer change are kept (their output per batch) and replayed in later
   passes, as are the decoded images, within ``cache_mb``; outputs written into in place are dropped.
   Without the cache each level costs a forward pass up to that level (about 30 passes instead of 4).
4. A final plain full pass measures the drift left (``meta.recalibration["drift_after"]``).

Measured on the demo (96 images at 160, 2 CPU cores): see ``bench/bench_recalibrate.py`` and README.
"""

from __future__ import annotations

import copy
import datetime
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.errors import YolobnError
from yolobn.images import Progress, check_decoded, iter_batches, model_stride
from yolobn.observation import prepare
from yolobn.recording import Moments, Scratch

METHOD = "exact"
METHOD_TEXT = (
    "eval-mode population mean and variance (/ n) of each BN input, set layer by layer in dependency order"
)
CACHE_MB = 2048


def recalibrate(
    model: Any = None,
    images: Sequence[str | os.PathLike] | None = None,
    *,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 32,
    device: str | torch.device | None = "cpu",
    select: Sequence[str] | None = None,
    trust: bool = False,
    cache_mb: float = CACHE_MB,
    progress: Progress | None = None,
) -> Any:
    """Set every BatchNorm's running mean and variance to what it sees on ``images`` in eval mode.

    Each selected BN gets the mean and population variance of its input over all images and
    positions, every BN before it already recalibrated: ``yolobn.observe`` on the same images finds
    no drift (the demo: below 1e-12), whatever ``batch`` (memory and speed only), image order or
    grouping by shape. Weights, eps, momentum and ``num_batches_tracked`` are unchanged; BNs without
    running statistics and those not in ``select`` keep theirs. One pass per dependency level (64
    on YOLO11n), most of them short thanks to a cache of ``cache_mb`` megabytes (module docstring).

    Args:
        model: checkpoint path, model yaml, nn.Module, ultralytics.YOLO, LoadedModel, None (demo).
        images: image files and/or folders; default: the demo's training images, else Ultralytics'
            samples. max_images: the first N only. imgsz: default the checkpoint's training imgsz.
        batch: images per forward pass. device: ``cpu``, ``0``, ``cuda:0``...
        select: BN layer patterns (as ``--layers``); default every BN.
        cache_mb: memory for decoded images and finished module outputs between passes (0: none).
        progress: called as ``progress(done, total)`` in image forward passes.

    Returns:
        A new ``LoadedModel`` (the input is untouched) whose ``meta.recalibration`` records what ran.
    """
    from yolobn.loader import LoadedModel
    from yolobn.walk import unwrap

    if not cache_mb >= 0:
        raise YolobnError(f"cache_mb {cache_mb}: must be at least 0")
    start = time.perf_counter()
    loaded, dev, paths, size = prepare(model, images, max_images, imgsz, batch, device, trust)
    root = copy.deepcopy(unwrap(loaded)).to(dev).eval()
    targets, untracked = _targets(root, select)
    budget = _Budget(int(cache_mb * 2**20))
    source = _Images(paths, size, model_stride(root), batch, loaded.meta.task, dev, budget)
    run = _Run(root, targets, source, budget, progress, len(paths))
    if progress:
        progress(0, len(paths))
    plan = dependency_plan(root, source.first(), targets)
    run.total = len(paths) * (len(plan.levels) + 1)
    with torch.no_grad():  # not inference_mode: the cache needs version counters
        for level in plan.levels:
            run.level(level, plan)
        drift = run.verify(plan)
    check_decoded(source.count, source.skipped)
    meta = copy.deepcopy(loaded.meta)
    meta.recalibration = {
        "method": METHOD,
        "method_text": METHOD_TEXT,
        "variance": "population (divided by n, the count of values per channel)",
        "images": source.count,
        "images_skipped": [str(p) for p in source.skipped],
        "image_files": [str(p) for p in paths[:20]] + (["..."] if len(paths) > 20 else []),
        "imgsz": size,
        "batch": batch,
        **run.record(plan),
        "untracked_skipped": untracked,
        "drift_after": drift,
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(dev),
        "from_sha256": loaded.meta.sha256,
        "from_path": loaded.meta.path,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    n = meta.recalibration["layers"]
    meta.notes.append(
        f"running statistics of {n} BN layers recalibrated ({METHOD}) on {source.count} images at {size}"
    )
    meta.trained = True
    return LoadedModel(root.to("cpu"), meta)


def _targets(root: nn.Module, select: Sequence[str] | None) -> tuple[dict[str, nn.Module], list[str]]:
    """The selected BNs with running statistics, by name, and the names of those without."""
    from yolobn.walk import find_blocks, matches

    modules = dict(root.named_modules())
    blocks = [b for b in find_blocks(root) if not select or matches(b, select)]
    if select and not blocks:
        raise YolobnError(f"--layers {' '.join(select)}: matches none of the BN layers")
    untracked = [b.name for b in blocks if not modules[b.name].track_running_stats]
    targets = {b.name: modules[b.name] for b in blocks if modules[b.name].track_running_stats}
    if not targets:
        raise YolobnError(
            "none of the selected BN layers keeps running statistics (track_running_stats=False): "
            "nothing to recalibrate"
        )
    return targets, untracked


# --------------------------------------------------------------------------------------------------
# dependency levels


@dataclass
class Plan:
    """In which order the BN statistics can be set exactly.

    Attributes:
        levels: BN names per dependency level, in execution order; a BN's level is one more than the
            deepest selected BN its input depends on (1: none).
        calls: how many times each BN runs per forward pass (1 in every Ultralytics model).
        deps: for each cacheable module (runs once per pass and returns a tensor), the selected
            BNs its output depends on.
        unreached: selected BNs that did not run (their statistics are left as they are).
    """

    levels: list[list[str]]
    calls: dict[str, int]
    deps: dict[str, frozenset[str]]
    unreached: list[str]


def dependency_plan(root: nn.Module, x: torch.Tensor, targets: dict[str, nn.Module]) -> Plan:
    """One forward pass of ``x`` (one image is enough) with autograd: which selected BN feeds which.

    A zero tensor that requires grad is added to every target BN's output; the BNs a tensor depends
    on are the probes its autograd graph reaches. The model's parameters and buffers are not written.
    """
    probes: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # the probes stay alive while their ids are keys
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in targets}
    order: list[str] = []
    outs: dict[str, list[Any]] = {}
    name_of = {id(m): n for n, m in targets.items()}

    def bn_pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
        inputs[name_of[id(mod)]].append(args[0])
        order.append(name_of[id(mod)])

    def bn_post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        keep.append(torch.zeros_like(out, requires_grad=True))
        probes[id(keep[-1])] = name_of[id(mod)]
        return out + keep[-1]

    def recorder(name: str):
        return lambda mod, args, out: outs.setdefault(name, []).append(out)

    handles = []
    try:
        for bn in targets.values():
            handles += [bn.register_forward_pre_hook(bn_pre), bn.register_forward_hook(bn_post)]
        for name, m in root.named_modules():
            if name and not isinstance(m, _BatchNorm):
                handles.append(m.register_forward_hook(recorder(name)))
        with torch.enable_grad():
            root(x)
    finally:
        for h in handles:
            h.remove()
    reach = _Reach(probes)
    first = list(dict.fromkeys(order))  # first calls, in execution order
    deps_of = {n: frozenset().union(*(reach(t) for t in inputs[n])) for n in first}
    level: dict[str, int] = {}
    while len(level) < len(first):  # one sweep in the usual case: dependencies run first
        ready = [n for n in first if n not in level and deps_of[n] <= level.keys()]
        if not ready:
            n = next(n for n in first if n not in level)
            raise YolobnError(
                f"BN layer {n} runs twice per forward pass and feeds itself; leave it out (--layers)"
            )
        for n in ready:
            level[n] = 1 + max((level[d] for d in deps_of[n]), default=0)
    # a module is finished when every BN its output depends on, or that runs inside it, is final
    deps = {
        n: reach(v[0]) | {t for t in targets if t.startswith(n + ".")}
        for n, v in outs.items()
        if len(v) == 1 and isinstance(v[0], torch.Tensor)
    }
    levels = [[n for n in first if level[n] == k] for k in range(1, max(level.values(), default=0) + 1)]
    return Plan(levels, {n: len(v) for n, v in inputs.items()}, deps, [n for n in targets if not inputs[n]])


class _Reach:
    """The probes (BN names) a tensor's autograd graph reaches, memoised per graph node."""

    def __init__(self, probes: dict[int, str]) -> None:
        self.probes = probes
        self.memo: dict[Any, frozenset[str]] = {}

    def __call__(self, t: Any) -> frozenset[str]:
        fn = t.grad_fn if isinstance(t, torch.Tensor) else None
        if fn is None:
            return frozenset()
        stack = [(fn, False)]
        while stack:  # iterative post-order DFS: graphs are deeper than Python's recursion limit
            node, ready = stack.pop()
            if node in self.memo:
                continue
            kids = [k for k, _ in node.next_functions if k is not None]
            if not ready:
                stack.append((node, True))
                stack += [(k, False) for k in kids if k not in self.memo]
                continue
            found = set().union(*(self.memo[k] for k in kids))
            var = getattr(node, "variable", None)  # AccumulateGrad of a leaf: a probe?
            if var is not None and id(var) in self.probes:
                found.add(self.probes[id(var)])
            self.memo[node] = frozenset(found)
        return self.memo[fn]


# --------------------------------------------------------------------------------------------------
# passes


class _Stop(BaseException):
    """Ends a forward pass early from a hook (a BaseException: model code may catch Exception)."""


class _Budget:
    """Bytes of cache in use, and the most ever used."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.peak = limit, 0, 0

    def take(self, ts: Any) -> bool:
        fits = self.used + _nbytes(ts) <= self.limit
        self.used += _nbytes(ts) if fits else 0
        self.peak = max(self.peak, self.used)
        return fits

    def give(self, ts: Any) -> None:
        self.used -= _nbytes(ts)


def _nbytes(ts: Any) -> int:
    """Bytes of a tensor, or of the tensors first in each pair of a list."""
    if isinstance(ts, torch.Tensor):
        return ts.numel() * ts.element_size()
    return sum(_nbytes(t[0] if isinstance(t, tuple) else t) for t in ts)


class _Images:
    """The preprocessed batches: read once, then kept (uint8 when that is exact) while they fit."""

    def __init__(self, paths, size, stride, batch, task, dev, budget: _Budget) -> None:
        self.args = (paths, size)
        self.kw = {"stride": stride, "batch": batch, "task": task}
        self.dev, self.budget = dev, budget
        self.kept: list[tuple[torch.Tensor, int]] | None = []
        self.skipped: list[Path] = []
        self.count = 0

    def first(self) -> torch.Tensor:
        """One image (for the dependency plan)."""
        skipped: list[Path] = []
        got = next(iter_batches(*self.args, **self.kw, skipped=skipped), None)
        if got is None:  # the list of paths is never empty: every one failed
            check_decoded(0, skipped)
        return got[0][:1].to(self.dev)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        if self.kept is not None and self.count:
            for x, n in self.kept:
                yield (x.float().div_(255) if x.dtype == torch.uint8 else x).to(self.dev), n
            return
        skipped: list[Path] = []
        fresh = not self.count
        for x, names in iter_batches(*self.args, **self.kw, skipped=skipped):
            if fresh:
                self._keep(x, len(names))
            yield x.to(self.dev), len(names)
        if fresh:
            self.skipped = skipped
            self.count = sum(1 for _ in self.args[0]) - len(skipped)

    def _keep(self, x: torch.Tensor, n: int) -> None:
        if self.kept is None:
            return
        u = x.mul(255).round_().to(torch.uint8)
        stored = u if torch.equal(u.float().div_(255), x) else x  # same op as images.iter_batches
        if self.budget.take(stored):
            self.kept.append((stored, n))
        else:
            self.budget.give(self.kept)
            self.kept = None  # does not fit: read the files again in every pass


class _Run:
    """The passes over the images (one per level, then the check) and the cache of finished outputs."""

    def __init__(self, root, targets, source: _Images, budget: _Budget, progress, n_images: int) -> None:
        self.root, self.targets, self.source, self.budget = root, targets, source, budget
        self.modules = dict(root.named_modules())
        self.final: set[str] = set()  # BNs whose statistics are set
        self.cached: dict[str, list[tuple[torch.Tensor, int]]] = {}  # finished module -> its output per batch
        self.failed: set[str] = set()  # outputs that did not fit the cache
        self.missed: list[str] = []  # BNs that did not run in their level's pass
        self.batch = 0  # index of the batch being run, for the replays
        self.passes = self.calls = 0
        self.progress, self.done, self.total = progress, 0, n_images
        self.scratch = Scratch()

    def level(self, names: list[str], plan: Plan) -> None:
        """One pass: the inputs of ``names`` (their upstream BNs are final) set their statistics."""
        moments = {n: Moments(self.targets[n].num_features, self.source.dev) for n in names}
        expected = sum(plan.calls[n] for n in names)
        seen = [0]

        def hook(name: str):
            def pre(mod: nn.Module, args: tuple[Any, ...]) -> None:
                moments[name].add_values(args[0], self.scratch)
                seen[0] += 1
                if seen[0] == expected:  # the rest of the model cannot change these inputs
                    raise _Stop

            return pre

        capture = self._to_capture(plan)
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
        for n in names:
            if moments[n].n:
                _set_statistics(n, self.targets[n], moments[n])
            else:  # ran in the plan's pass, not in this one: left as it was, and said so
                self.missed.append(n)
        self.final.update(names)

    def verify(self, plan: Plan) -> dict[str, Any]:
        """A plain full pass (no cache, no early stop): the drift left in every recalibrated BN."""
        for name in list(self.cached):
            self._drop(name)
        moments = {
            n: Moments(self.targets[n].num_features, self.source.dev) for lv in plan.levels for n in lv
        }
        hook = lambda n: lambda mod, args: moments[n].add_values(args[0], self.scratch)  # noqa: E731
        handles = [self.targets[n].register_forward_pre_hook(hook(n)) for n in moments]
        try:
            for x, _ in self._batches():
                self.root(x)
        finally:
            for h in handles:
                h.remove()
        drift = {n: _drift(self.targets[n], m) for n, m in moments.items() if m.n}
        worst = max(drift, key=lambda n: float(drift[n].mean()), default=None)
        return {
            "max_layer_mean": float(drift[worst].mean()) if worst else 0.0,
            "max_channel": max((float(d.max()) for d in drift.values()), default=0.0),
            "worst_layer": worst,
        }

    def record(self, plan: Plan) -> dict[str, Any]:
        """What ran, for the metadata."""
        return {
            "levels": len(plan.levels),
            "passes": self.passes,
            "forward_calls": self.calls,
            "layers": sum(len(v) for v in plan.levels) - len(self.missed),
            "layers_not_reached": plan.unreached + self.missed,
            "cache_mb": round(self.budget.peak / 2**20, 1),
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

    def _to_capture(self, plan: Plan) -> list[str]:
        """Finished modules (every BN they depend on is final) not inside another finished one."""
        done = {m for m, deps in plan.deps.items() if deps <= self.final and m not in self.failed}
        top = [m for m in done if not any(a in done for a in _ancestors(m))]
        for m in list(self.cached):  # inside a module that is now kept whole: never called again
            if any(a in top and a in self.cached for a in _ancestors(m)):
                self._drop(m)
        return [m for m in top if m not in self.cached]

    @contextmanager
    def _replaying(self) -> Iterator[None]:
        """Cached modules return their kept output instead of computing it.

        An instance attribute ``forward`` on this private copy, removed on exit: a wrapper module
        would hide the attributes Ultralytics' forward loop reads from each layer (``f``, ``i``).
        A kept output that the code after it writes into in place (its version counter moves) is
        dropped after the pass: it served this pass before the write, but not the next."""
        live = [m for m in self.cached if not any(a in self.cached for a in _ancestors(m))]
        try:
            for name in live:
                outs = self.cached[name]
                self.modules[name].forward = lambda *a, outs=outs, **k: outs[self.batch][0]
            yield
        finally:
            for name in live:
                self.modules[name].__dict__.pop("forward", None)
            for name in live:
                if any(t._version != v for t, v in self.cached[name]):
                    self._drop(name)
                    self.failed.add(name)

    @contextmanager
    def _capturing(self, names: list[str]) -> Iterator[None]:
        store: dict[str, list[tuple[torch.Tensor, int]]] = {n: [] for n in names}

        def hook(name: str):
            def post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
                if name in store and isinstance(out, torch.Tensor):
                    if self.budget.take(out):
                        store[name].append((out, out._version))
                    else:  # does not fit: give back what it took, and do not try it again
                        self.budget.give(store.pop(name))
                        self.failed.add(name)

            return post

        handles = [self.modules[n].register_forward_hook(hook(n)) for n in names]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
        batches = self.passes and self.batch + 1
        for name, outs in store.items():
            if len(outs) == batches and all(t._version == v for t, v in outs):
                self.cached[name] = outs
            else:  # not reached (after the early stop), interrupted, or written into: not kept
                self.budget.give(outs)

    def _drop(self, name: str) -> None:
        self.budget.give(self.cached.pop(name))


def _ancestors(name: str) -> Iterator[str]:
    parts = name.split(".")
    for k in range(1, len(parts)):
        yield ".".join(parts[:k])


def _set_statistics(name: str, bn: nn.Module, m: Moments) -> None:
    var = m.var
    if not (torch.isfinite(m.mean).all() and torch.isfinite(var).all()):
        raise YolobnError(
            f"BN layer {name}: its input is not finite (inf/NaN) on these images; the model is broken before it"
        )
    with torch.no_grad():
        bn.running_mean.copy_(m.mean)
        bn.running_var.copy_(var)


def _drift(bn: nn.Module, m: Moments) -> torch.Tensor:
    """Per-channel KL drift of the observed input against the running statistics (observation.py)."""
    rm = bn.running_mean.detach().double()
    denom = bn.running_var.detach().double() + bn.eps
    ratio = (m.var + bn.eps) / denom
    shift = (m.mean - rm) / denom.sqrt()
    return 0.5 * (ratio + shift * shift - 1 - ratio.log())


__all__ = ["METHOD", "Plan", "dependency_plan", "recalibrate"]
