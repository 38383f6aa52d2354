"""Where a sweep's tasks run: ``LocalExecutor`` (this process, one after the other) or
``RayExecutor`` (one Ray task each, the checkpoint put in Ray's object store once, each worker
loading it once and keeping it for the run's later tasks; a dead worker's task retried)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolobn.core.digest import sha256_bytes
from yolobn.core.errors import YolobnError
from yolobn.io.loader import load
from yolobn.sweeps import rayconnect
from yolobn.sweeps.tasks import CONTEXT, Outcome, Task, execute

__all__ = [
    "LocalExecutor",
    "Payload",
    "RAY_HINT",
    "RayExecutor",
    "materialize",
    "payload",
    "pin_threads",
    "portable",
    "ray_call",
    "require_ray",
    "uses_gpu",
    "worker_settings",
]


RAY_HINT = "pip install 'yolobn[ray]'"


def require_ray(flag: str = "--ray") -> None:
    """A one-line YolobnError (exit 2) when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise YolobnError(f"{flag} needs Ray, which is not installed: {RAY_HINT}") from None


# --------------------------------------------------------------------------------------------------
# the driver: resume, run, keep rows


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
