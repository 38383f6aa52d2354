"""Fan-out: the many validations of a sweep, run in this process or as Ray tasks, rows kept on disk.

Every command that runs many validations (``swap``, ``experiment``: its variants and its
per-layer sensitivity sweep, ``frontier``: its points) describes its work as ``Task``s and hands
them to ``run_tasks``, which

- skips the tasks whose rows an earlier run finished (``yolobn.sweeps.rows``: keyed by checkpoint,
  task, dataset, settings and versions) when resuming;
- runs the rest with an executor: ``LocalExecutor`` (this process, one after the other: the
  default, no dependency) or ``RayExecutor`` (one Ray task each, on any number of machines);
- writes each row the moment it finishes, and records a task that raised as failed, with its
  one-line reason, while the others go on.

A task is a plain ``"module:function"`` and picklable arguments; the function runs as
``fn(loaded, settings, spec, ctx)`` wherever the task lands. On Ray, the model travels once: the
checkpoint's bytes are put in Ray's object store once per run, and each worker process loads them
the first time one of its tasks needs them, then keeps the model (and the dataloaders its
validations built, in ``ctx.loaders``) for every later task of the run. A worker that dies
(killed, out of memory, its machine lost) has its task retried on another by Ray
(``max_retries``); with ``--device cuda`` each task takes one GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolobn.core.digest import sha256, sha256_bytes
from yolobn.core.errors import YolobnError
from yolobn.core.text import one_line
from yolobn.edit.impls import parse
from yolobn.io.datasets import resolve_data
from yolobn.io.loader import load
from yolobn.sweeps import rayconnect
from yolobn.sweeps.rows import Row, RowStore, code_version, row_key

__all__ = [
    "CONTEXT",
    "Context",
    "Execution",
    "LocalExecutor",
    "Outcome",
    "Payload",
    "Progress",
    "RAY_HINT",
    "RayExecutor",
    "Task",
    "execute",
    "materialize",
    "payload",
    "pin_threads",
    "portable",
    "ray_call",
    "require_ray",
    "run_tasks",
    "sweep_identity",
    "uses_gpu",
    "worker_name",
    "worker_settings",
]

RAY_HINT = "pip install 'yolobn[ray]'"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Task:
    """One unit of work.

    Attributes:
        fn: ``"module:function"``, called as ``fn(loaded, settings, spec, ctx) -> dict``.
        spec: its arguments (picklable, JSON-able: an impl spec, layers, an ablation plan...).
        label: what it measures, for progress and messages.
        ident: what decides its result beside the sweep's identity (hashed into the row key);
            None: never kept or resumed (the baseline, which has its own cache).
        fatal: a failure ends the whole run (the baseline) instead of being recorded.
    """

    fn: str
    spec: dict[str, Any]
    label: str
    ident: dict[str, Any] | None = None
    fatal: bool = False


@dataclass
class Outcome:
    """What became of a task: its value, or why it failed; where and how long it ran."""

    task: Task
    ok: bool
    value: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = math.nan
    worker: str = ""
    resumed: bool = False  # read from the rows of an earlier run
    loads: int = 0  # how many times the worker process loaded the model (1: loaded once, reused)


@dataclass
class Execution:
    """How a sweep runs.

    Attributes:
        ray: None runs here, one task after the other. ``"auto"``: the Ray cluster this machine
            knows (``RAY_ADDRESS``, or one started with ``ray start``), else a new local one;
            ``"local"``: always a new local one; else a cluster address (``head:6379``,
            ``ray://head:10001``).
        resume: skip tasks whose rows an earlier run of the same sweep finished.
        keep_rows: write each finished row (``$YOLOBN_CACHE/sweeps/``, or ``rows_dir``).
        notify: called with one line for the user (resumed rows, where the rows are).
        num_cpus: CPUs of a Ray instance started here (default: all). max_retries: Ray retries
            of a task whose worker died.
    """

    ray: str | None = None
    resume: bool = True
    keep_rows: bool = True
    rows_dir: Path | None = None
    notify: Callable[[str], None] | None = None
    num_cpus: int | None = None
    max_retries: int = 3

    def executor(self) -> Any:
        return LocalExecutor() if self.ray is None else RayExecutor(self.ray, self.num_cpus, self.max_retries)


def require_ray(flag: str = "--ray") -> None:
    """A one-line YolobnError (exit 2) when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise YolobnError(f"{flag} needs Ray, which is not installed: {RAY_HINT}") from None


# --------------------------------------------------------------------------------------------------
# the driver: resume, run, keep rows


def run_tasks(
    loaded: Any,
    settings: Any,
    tasks: Sequence[Task],
    execution: Execution | None = None,
    *,
    progress: Progress | None = None,
) -> list[Outcome]:
    """Run ``tasks`` (see the module docstring); outcomes in the order of ``tasks``.

    Raises:
        The exception of a ``fatal`` task; YolobnError when Ray cannot be reached.
    """
    ex = execution or Execution(keep_rows=False, resume=False)
    identity = sweep_identity(loaded, settings) if ex.keep_rows or ex.resume else None
    keys = [row_key(identity, t.ident) if identity and t.ident is not None else "" for t in tasks]
    store = RowStore.for_identity(identity if ex.keep_rows else None, ex.rows_dir)
    found = RowStore.for_identity(identity, ex.rows_dir).finished(k for k in keys if k) if ex.resume else {}
    out: dict[int, Outcome] = {}
    for i, (t, k) in enumerate(zip(tasks, keys, strict=True)):
        if k in found:
            r = found[k]
            out[i] = Outcome(t, True, r.value, "", r.seconds, r.worker, resumed=True)
    if found and ex.notify:
        ex.notify(
            f"resuming: {len(out)} of {sum(map(bool, keys))} rows finished in an earlier run "
            f"({store.path or ''}); --no-resume (resume=False in Python) measures them again"
        )
    todo = [i for i in range(len(tasks)) if i not in out]
    index = {id(tasks[i]): i for i in todo}
    count = len(out)
    if progress:
        progress(f"{count} resumed" if count else "starting", count, len(tasks))

    def finished(o: Outcome) -> None:
        nonlocal count
        i = index[id(o.task)]  # executors hand back the task object they were given
        out[i] = o
        if keys[i]:
            store.write(Row(keys[i], o.task.label, o.ok, o.value, o.error, o.seconds, o.worker))
        count += 1
        if progress:
            progress(o.task.label, count, len(tasks))

    with store:
        if todo:
            ex.executor().run(loaded, settings, [tasks[i] for i in todo], finished)
    return [out[i] for i in range(len(tasks))]


def sweep_identity(loaded: Any, settings: Any) -> dict[str, Any] | None:
    """What every row of a sweep shares: checkpoint, dataset, settings, versions (None: no file)."""
    sha = getattr(loaded.meta, "sha256", None)
    if not sha:
        return None
    import torch
    import ultralytics

    data = None
    if settings.data is not None:
        data = [str(settings.data), sha256(resolve_data(settings.data, trust=settings.trust))]
    device = str(settings.device).strip().lower()
    return {
        "checkpoint": sha,
        "data": data,
        "imgsz": settings.imgsz,
        "batch": settings.batch,
        "device": f"cuda:{device}" if device.isdigit() else device,
        "trust": bool(settings.trust),
        "images": None if settings.images is None else [str(p) for p in settings.images],
        "versions": {
            "yolobn": code_version(),
            "ultralytics": ultralytics.__version__,
            "torch": torch.__version__,
        },
    }


# --------------------------------------------------------------------------------------------------
# the worker side: one context per process


@dataclass
class Context:
    """What a process keeps between tasks: the model, the dataloaders, parsed implementations."""

    models: dict[str, Any] = field(default_factory=dict)
    loads: dict[str, int] = field(default_factory=dict)
    loaders: dict[Any, Any] = field(default_factory=dict)
    impls: dict[str, Any] = field(default_factory=dict)
    token: str = ""

    def impl(self, spec: str, code: str | None = None) -> Any:
        """The parsed implementation of ``spec`` (a custom class is imported once per process and
        version of its file: ``code`` is the file's sha256, so an edited class is imported again)."""
        key = f"{spec}@{code}"
        if key not in self.impls:
            self.impls[key] = parse(spec)
        return self.impls[key]


CONTEXT = Context()  # this process's: the local executor's, or a Ray worker's


def execute(loaded: Any, settings: Any, task: Task, ctx: Context = CONTEXT) -> Outcome:
    """Run one task here; a failure becomes a failed outcome (unless the task is fatal)."""
    t0 = time.perf_counter()
    mod, _, name = task.fn.partition(":")
    fn = getattr(importlib.import_module(mod), name)
    try:
        value = fn(loaded, settings, task.spec, ctx)
        ok, error = True, ""
    except Exception as e:
        if task.fatal:
            raise
        value, ok, error = {}, False, one_line(e, 300, typed=True)
    dt = time.perf_counter() - t0
    return Outcome(task, ok, value, error, dt, worker_name(), loads=ctx.loads.get(ctx.token, 0))


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LocalExecutor:
    """Every task in this process, in order, on the caller's model."""

    name = "local"

    def run(self, loaded: Any, settings: Any, tasks: Sequence[Task], done: Callable[[Outcome], None]) -> None:
        for t in tasks:
            done(execute(loaded, settings, t, CONTEXT))


# --------------------------------------------------------------------------------------------------
# Ray


@dataclass
class Payload:
    """The model as it travels: the checkpoint's bytes (loaded again by each worker, safely), the
    demo model (each worker has it), or the pickled model (no file to send)."""

    kind: str  # "bytes", "demo" or "module"
    token: str
    meta: Any
    data: Any = None
    trust: bool = False


def payload(loaded: Any, trust: bool) -> Payload:
    meta = loaded.meta
    if meta.kind == "demo":
        return Payload("demo", meta.sha256 or "demo", meta)
    if meta.path and meta.sha256:
        try:
            data = Path(meta.path).read_bytes()
        except OSError:
            data = None
        if data is not None and sha256_bytes(data) == meta.sha256:  # the file is still what was loaded
            return Payload("bytes", meta.sha256, meta, data, trust)
    return Payload("module", f"module-{id(loaded)}-{time.time_ns()}", meta, loaded)


def materialize(p: Payload) -> Any:
    """The LoadedModel of a payload, in a worker: the same model the driver loaded."""

    if p.kind == "module":
        return p.data
    if p.kind == "demo":
        return load(None)
    with tempfile.TemporaryDirectory(prefix="yolobn-") as d:
        f = Path(d) / (Path(p.meta.path).name or "model.pt")
        f.write_bytes(p.data)
        lm = load(str(f), trust=p.trust)
    lm.meta = dataclasses.replace(p.meta)  # the driver's metadata: its path, not the temporary one
    return lm


def ray_call(box: list[Any], settings: Any, task: Task) -> Outcome:
    """A Ray task: the worker's model (loaded from the object store on first use), then ``execute``.

    ``box`` is ``[token, ref]``: a reference inside a list is not fetched by Ray before the call,
    so a worker that already holds the model never touches the bytes again.
    """
    import ray

    token, ref = box
    ctx = CONTEXT
    pin_threads()
    if token not in ctx.models:
        ctx.models.clear()  # one model per worker process: a new sweep replaces the last one
        ctx.loaders.clear()
        ctx.models[token] = materialize(ray.get(ref))
        ctx.loads[token] = ctx.loads.get(token, 0) + 1
    ctx.token = token
    return execute(ctx.models[token], worker_settings(settings), task, ctx)


def pin_threads() -> None:
    """Keep a Ray worker to the CPUs its task was given (Ray sets ``OMP_NUM_THREADS`` to them).

    Ultralytics' validator sets torch's CPU threads to ``min(8, cores - 1)`` of the whole machine on
    every CPU validation (``select_device``); N workers on one node would then run N times that
    many threads on its cores. Its module-level count is set here, in the worker process only.
    """
    import torch

    n = max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))
    torch.set_num_threads(n)
    tu = importlib.import_module("ultralytics.utils.torch_utils")
    if hasattr(tu, "NUM_THREADS"):
        setattr(tu, "NUM_THREADS", n)  # noqa: B010 - a module attribute not every release has


def worker_settings(settings: Any) -> Any:
    """Ray gives each GPU task one GPU, visible to it as cuda:0 (CUDA_VISIBLE_DEVICES)."""
    dev = str(settings.device).strip().lower()
    if dev.isdigit() or dev.startswith("cuda"):
        return dataclasses.replace(settings, device="cuda:0")
    return settings


def portable(settings: Any) -> Any:
    """The settings with a dataset yaml and image paths absolute: a worker's working folder may differ."""
    data = settings.data
    if data is not None and data != "shapes" and Path(str(data)).expanduser().exists():
        data = str(Path(str(data)).expanduser().resolve())
    images = None if settings.images is None else [Path(p).expanduser().resolve() for p in settings.images]
    return dataclasses.replace(settings, data=data, images=images)


def uses_gpu(device: str) -> bool:
    dev = str(device).strip().lower()
    return dev.isdigit() or dev.startswith("cuda")


class RayExecutor:
    """One Ray task per task; connects to (or starts) Ray, and shuts down only what it started."""

    name = "ray"

    def __init__(self, address: str = "auto", num_cpus: int | None = None, max_retries: int = 3) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries

    def connect(self) -> bool:
        """Connect, within a stated time (``rayconnect``); True when this call connected (and so must
        shut the connection down, and the local Ray it started)."""
        require_ray()
        return rayconnect.connect(self.address, self.num_cpus)

    def run(self, loaded: Any, settings: Any, tasks: Sequence[Task], done: Callable[[Outcome], None]) -> None:
        import ray

        started = self.connect()
        refs: dict[Any, Task] = {}
        try:
            gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
            if uses_gpu(settings.device) and gpus < 1:
                # a task asking for a GPU on a cluster without one would wait forever
                raise YolobnError(
                    f"device {settings.device} on Ray: the cluster has no GPU; start its nodes with "
                    "GPUs (ray start --num-gpus N) or use device cpu"
                )
            settings = portable(settings)
            p = payload(loaded, settings.trust)
            box = [p.token, ray.put(p)]  # the checkpoint enters the object store once
            remote = ray.remote(ray_call).options(
                num_cpus=1, num_gpus=1 if uses_gpu(settings.device) else 0, max_retries=self.max_retries
            )
            refs = {remote.remote(box, settings, t): t for t in tasks}
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for r in ready:
                    done(self._outcome(r, refs.pop(r)))
        finally:
            for r in refs:  # interrupted: nothing keeps running for nobody
                with contextlib.suppress(Exception):  # already finished, or its worker is gone
                    ray.cancel(r, force=True)
            if started:
                ray.shutdown()

    def _outcome(self, ref: Any, task: Task) -> Outcome:
        import ray
        from ray.exceptions import RayError, RayTaskError

        try:
            o: Outcome = ray.get(ref)
            o.task = task  # the caller's object, not the copy that travelled
            return o
        except RayTaskError as e:  # the task raised: only fatal tasks let exceptions out
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except RayError as e:  # its worker died more often than the retries allow, or its node
            if task.fatal:
                raise YolobnError(f"{task.label}: lost its Ray worker ({type(e).__name__})") from None
            tries = f"; {self.max_retries} retries died too" if self.max_retries else ""
            return Outcome(task, False, {}, f"its Ray worker died ({type(e).__name__}{tries})")
