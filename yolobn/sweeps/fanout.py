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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolobn.core.digest import sha256
from yolobn.io.datasets import resolve_data
from yolobn.sweeps.executors import (
    RAY_HINT,
    LocalExecutor,
    Payload,
    RayExecutor,
    materialize,
    payload,
    pin_threads,
    portable,
    ray_call,
    require_ray,
    uses_gpu,
    worker_settings,
)
from yolobn.sweeps.rows import Row, RowStore, code_version, row_key
from yolobn.sweeps.tasks import CONTEXT, Context, Outcome, Progress, Task, execute, worker_name

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
    if ex.ray is not None and ex.notify:
        where = f"Ray ({ex.ray})"
        ex.notify(
            f"ran {len(todo)} of {len(tasks)} on {where}"
            if todo
            else f"every row was finished in an earlier run: {where} was not started"
        )
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
