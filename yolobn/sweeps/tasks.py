"""A sweep's unit of work: a ``Task`` (a ``"module:function"`` and picklable arguments), the
``Outcome`` it gives, and ``execute``, which runs one task in a process's ``Context`` (the model
and the dataloaders kept between the tasks of a run), wherever it lands."""

from __future__ import annotations

import importlib
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from yolobn.core.text import one_line
from yolobn.edit.impls import parse

__all__ = [
    "CONTEXT",
    "Context",
    "Outcome",
    "Progress",
    "Task",
    "execute",
    "worker_name",
]


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
