"""Everything read from a checkpoint is checked here, once, before any other module sees it.

A checkpoint that unpickles is not yet a model: its BatchNorm tensors may have the wrong length,
``eps`` may be a string, ``names`` may mix key types, ``model.model`` may be empty, ``ema`` may be
a tensor. The loader calls ``checkpoint_model`` and ``check_model`` right after unpickling, so the
rest of yolobn (walk, stats, reports) can rely on the types it reads; ``plain_fields`` turns the
free-form fields (training args, metrics, version) into plain values; ``probe_forward`` runs the
model once on a tiny input to tell whether it runs with the installed Ultralytics at all.
"""

from __future__ import annotations

import json
import math
import numbers
import reprlib
from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from yolobn.core.errors import CheckpointError
from yolobn.core.limits import MAX_CLASSES, MAX_NAME_CHARS
from yolobn.core.text import one_line
from yolobn.io import ultra

__all__ = [
    "TRAIN_ARG_KEYS",
    "check_batchnorm",
    "check_model",
    "checkpoint_model",
    "class_names",
    "plain",
    "plain_fields",
    "probe",
    "probe_forward",
    "require_runnable",
]

_MISSING = object()
_DAMAGED = "the checkpoint is damaged or was edited; use the file training wrote"
# Training arguments worth carrying into every report (the rest stay in the checkpoint).
TRAIN_ARG_KEYS = ("imgsz", "epochs", "batch", "data", "optimizer", "lr0", "model", "pretrained")


def checkpoint_model(ckpt: dict[str, Any], where: str) -> Any:
    """The model a checkpoint dict holds: ``ema`` when it is a model, else ``model`` (as Ultralytics
    picks it). Anything else under ``ema`` than a module or None is damage."""
    ema = ckpt.get("ema")
    if ema is not None and not isinstance(ema, nn.Module):
        raise CheckpointError(f"{where}: 'ema' holds {_kind(ema)}, not a model; {_DAMAGED}")
    return ema if ema is not None else ckpt.get("model")


def check_model(model: nn.Module, where: str) -> None:
    """Raise CheckpointError (one line) unless every part yolobn reads has the type it expects:
    each BatchNorm's tensors and attributes, each convolution's geometry, ``names``, ``stride``
    and a non-empty ``model.model``."""
    _check_tree(model, where)
    layers = getattr(model, "model", None)
    if isinstance(layers, (nn.Sequential, nn.ModuleList)) and len(layers) == 0:
        raise CheckpointError(f"{where}: the model has no layers (model.model is empty); {_DAMAGED}")
    if layers is not None and not isinstance(layers, nn.Module):
        raise CheckpointError(f"{where}: model.model holds {_kind(layers)}, not layers; {_DAMAGED}")
    _check_head(model, layers, where)
    names = getattr(model, "names", None)
    if names is not None:
        class_names(names, where)
    _check_stride(getattr(model, "stride", None), where)
    cfg = getattr(model, "yaml", None)
    for section in ("backbone", "head"):
        rows = cfg.get(section) if isinstance(cfg, dict) else None
        if rows is not None and not isinstance(rows, list):
            raise CheckpointError(
                f"{where}: the model yaml's '{section}' is {_kind(rows)}, not a list; {_DAMAGED}"
            )
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            check_batchnorm(m, f"{where}: {name or 'the model'}")
        elif isinstance(m, _ConvNd):
            _check_conv(m, f"{where}: {name or 'the model'}")


def _check_tree(model: nn.Module, where: str) -> None:
    """Every submodule slot holds a module, every parameter and buffer slot a tensor (or None):
    ``named_modules()``, ``float()`` and ``eval()`` walk these tables and fail on anything else."""
    stack, seen = [("", model)], set()
    while stack:
        prefix, m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        tables = [m.__dict__.get(t) for t in ("_modules", "_parameters", "_buffers")]
        if not all(isinstance(t, dict) for t in tables):
            raise CheckpointError(
                f"{where}: {prefix or 'the model'} ({type(m).__name__}) is incomplete; {_DAMAGED}"
            )
        modules, params, buffers = (cast(dict[str, Any], t) for t in tables)
        shadowed = set(m.__dict__) & (set(modules) | set(params) | set(buffers))
        if shadowed:  # a plain attribute hiding a registered tensor or module: never written by torch
            raise CheckpointError(
                f"{where}: {prefix or 'the model'}: '{sorted(shadowed)[0]}' is stored twice; {_DAMAGED}"
            )
        for k, v in modules.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            if v is not None and not isinstance(v, nn.Module):
                raise CheckpointError(f"{where}: {name} holds {_kind(v)}, not a module; {_DAMAGED}")
            if v is not None:
                stack.append((name, v))
        for kind, table in (("parameter", params), ("buffer", buffers)):
            for k, v in table.items():
                if v is not None and not isinstance(v, torch.Tensor):
                    raise CheckpointError(
                        f"{where}: {prefix or 'the model'}: {kind} '{k}' holds {_kind(v)}, not a tensor; {_DAMAGED}"
                    )


def _check_head(model: nn.Module, layers: Any, where: str) -> None:
    """What Ultralytics' own ``BaseModel._apply`` (``float()``, ``to()``) reads: ``model.model[-1]``
    and, on a detection head, its ``stride``/``anchors``/``strides`` tensors."""
    from ultralytics.nn.modules import Detect, RTDETRDecoder
    from ultralytics.nn.tasks import BaseModel

    if not isinstance(model, BaseModel):
        return
    if not isinstance(layers, (nn.Sequential, nn.ModuleList)):
        raise CheckpointError(
            f"{where}: the model has no layers (model.model is {_kind(layers)}); {_DAMAGED}"
        )
    head = layers[-1]
    needed: tuple[str, ...] = ("stride", "anchors", "strides") if isinstance(head, Detect) else ()
    if isinstance(head, RTDETRDecoder):
        needed = ultra.rtdetr_head_tensors()
    for attr in needed:
        v = getattr(head, attr, None)
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: the head's {attr} is {_kind(v)}, not a tensor; {_DAMAGED}")
        _check_tensor(v, f"{where}: the head's {attr}")


def class_names(names: Any, where: str) -> list[str]:
    """Class names in index order, as Ultralytics' ``check_class_names`` reads them: a list, or a
    dict whose keys are whole numbers (``0`` or ``"0"``) 0..n-1; each a text or a number.

    At most ``MAX_CLASSES`` names of ``MAX_NAME_CHARS`` characters in all, counted before any name is
    copied: the unpickler can build a million references to one long string from a few bytes.
    """
    if isinstance(names, (list, tuple, dict)) and len(names) > MAX_CLASSES:
        raise CheckpointError(
            f"{where}: 'names' lists {len(names):,} class names, more than {MAX_CLASSES:,}; {_DAMAGED}"
        )
    if isinstance(names, (list, tuple)):
        values = list(names)
    elif isinstance(names, dict):
        keys: dict[int, Any] = {}
        for k, v in names.items():
            i = _index(k)
            if i is None or i in keys:
                kinds = ", ".join(sorted({type(x).__name__ for x in names}))
                raise CheckpointError(
                    f"{where}: 'names' keys must be class indices 0..{len(names) - 1} (found {one_line(_shown(k), 60)}; "
                    f"key types: {kinds}); {_DAMAGED}"
                )
            keys[i] = v
        if sorted(keys) != list(range(len(keys))):
            raise CheckpointError(
                f"{where}: 'names' keys are not the class indices 0..{len(keys) - 1}; {_DAMAGED}"
            )
        values = [keys[i] for i in range(len(keys))]
    else:
        raise CheckpointError(f"{where}: 'names' is {_kind(names)}, not class names; {_DAMAGED}")
    chars = 0
    for i, v in enumerate(values):
        if not isinstance(v, (str, numbers.Real)):
            raise CheckpointError(f"{where}: class name {i} is {_kind(v)}, not a text; {_DAMAGED}")
        chars += len(v) if isinstance(v, str) else 1
        if chars > MAX_NAME_CHARS:
            raise CheckpointError(
                f"{where}: the class names hold more than {MAX_NAME_CHARS:,} characters in all; {_DAMAGED}"
            )
    return [_text(v) for v in values]


def check_batchnorm(bn: _BatchNorm, where: str) -> None:
    """One BatchNorm: attributes of the right type, tensors 1-D of ``num_features`` floats."""
    n = _attr(bn, "num_features", where)
    if not _whole(n) or n < 1:
        raise CheckpointError(
            f"{where}: num_features is {one_line(_shown(n), 60)}, not a channel count; {_DAMAGED}"
        )
    flags = {}
    for flag in ("affine", "track_running_stats"):
        v = _attr(bn, flag, where)
        if not isinstance(v, bool):
            raise CheckpointError(f"{where}: {flag} is {one_line(_shown(v), 60)}, not True/False; {_DAMAGED}")
        flags[flag] = v
    eps = _attr(bn, "eps", where)
    if not _real(eps) or not math.isfinite(eps) or eps < 0:
        raise CheckpointError(f"{where}: eps is {one_line(_shown(eps), 60)}, not a number >= 0; {_DAMAGED}")
    momentum = _attr(bn, "momentum", where)
    if momentum is not None and (not _real(momentum) or not math.isfinite(momentum)):
        raise CheckpointError(
            f"{where}: momentum is {one_line(_shown(momentum), 60)}, not a number or None; {_DAMAGED}"
        )
    for attr, needed in (
        ("weight", flags["affine"]),
        ("bias", flags["affine"]),
        ("running_mean", flags["track_running_stats"]),
        ("running_var", flags["track_running_stats"]),
    ):
        t = _attr(bn, attr, where)
        if t is None and not needed:
            continue
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{where}: {attr} is {_kind(t)}, not a tensor; {_DAMAGED}")
        _check_tensor(t, f"{where}: {attr}")
        if t.dim() != 1 or t.numel() != n:
            raise CheckpointError(
                f"{where}: {attr} has shape {tuple(t.shape)}, expected ({n},) (num_features); {_DAMAGED}"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{where}: {attr} holds {t.dtype} values, not floats; {_DAMAGED}")
    # A buffer, as torch registers it whenever running statistics are tracked: load_state_dict
    # (every swapped implementation is built through it) requires it.
    nbt = bn._buffers.get("num_batches_tracked")
    if nbt is None and not flags["track_running_stats"]:
        return
    if not isinstance(nbt, torch.Tensor):
        raise CheckpointError(f"{where}: num_batches_tracked is {_kind(nbt)}, not a count; {_DAMAGED}")
    _check_tensor(nbt, f"{where}: num_batches_tracked")
    ok = nbt.numel() == 1 and (
        not nbt.is_floating_point() and not nbt.is_complex() or math.isfinite(float(nbt.reshape(-1)[0]))
    )
    if not ok:
        raise CheckpointError(
            f"{where}: num_batches_tracked has shape {tuple(nbt.shape)} ({nbt.dtype}), expected one count; {_DAMAGED}"
        )


def _check_conv(conv: _ConvNd, where: str) -> None:
    for attr in ("in_channels", "out_channels", "groups"):
        v = _attr(conv, attr, where)
        if not _whole(v) or v < 1:
            raise CheckpointError(
                f"{where}: {attr} is {one_line(_shown(v), 60)}, not a positive whole number; {_DAMAGED}"
            )
    for attr in ("kernel_size", "stride", "dilation"):
        v = _attr(conv, attr, where)
        if not (isinstance(v, tuple) and v and all(_whole(x) and x >= 1 for x in v)):
            raise CheckpointError(
                f"{where}: {attr} is {one_line(_shown(v), 60)}, not a tuple of sizes; {_DAMAGED}"
            )
    w = _attr(conv, "weight", where)
    if not isinstance(w, torch.Tensor):
        raise CheckpointError(f"{where}: weight is {_kind(w)}, not a tensor; {_DAMAGED}")
    _check_tensor(w, f"{where}: weight")


def _check_tensor(t: torch.Tensor, where: str) -> None:
    if t.layout != torch.strided or t.is_meta or t.is_quantized:
        raise CheckpointError(f"{where}: a {t.layout} tensor without plain stored values; {_DAMAGED}")


def _check_stride(stride: Any, where: str) -> None:
    if stride is None:
        return
    try:  # a tensor, or a short flat list of numbers (a nested list can be 2^60 items: see _text)
        flat = isinstance(stride, torch.Tensor) or (
            isinstance(stride, (list, tuple)) and len(stride) <= 64 and all(_real(x) for x in stride)
        )
        values = torch.as_tensor(stride, dtype=torch.float64).reshape(-1) if flat else None
    except Exception:
        values = None
    if (
        values is None
        or not bool(torch.isfinite(values).all())
        or bool((values <= 0).any())
        or (values.numel() and float(values.max()) > 4096)
    ):
        raise CheckpointError(
            f"{where}: 'stride' is {one_line(_shown(stride), 60)}, not the model's strides; {_DAMAGED}"
        )


# --------------------------------------------------------------------------------------------------
# the free-form fields of a checkpoint


def plain_fields(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's metadata as plain, JSON-safe values (unusable entries are left out).

    Returns a dict with ``version``, ``date`` (strings or None), ``train_args`` (the
    ``TRAIN_ARG_KEYS`` subset), ``train_metrics`` (floats) and ``recalibration`` (a dict or None).
    """
    train_args = ckpt.get("train_args")
    args = (
        {k: plain(train_args[k]) for k in TRAIN_ARG_KEYS if k in train_args}
        if isinstance(train_args, dict)
        else {}
    )
    metrics: dict[str, float] = {}
    raw = ckpt.get("train_metrics")
    if isinstance(raw, dict):
        for k, v in raw.items():
            if isinstance(v, numbers.Real):
                try:
                    metrics[_text(k)] = float(v)
                except (OverflowError, ValueError, TypeError):
                    continue
    recal = None
    extra = ckpt.get("yolobn")
    if (
        isinstance(extra, dict)
        and isinstance(extra.get("recalibration"), dict)
        and _small(extra["recalibration"])
    ):
        try:
            recal = json.loads(json.dumps(extra["recalibration"], default=str))
        except (ValueError, TypeError, RecursionError, OverflowError):
            recal = None
    return {
        "version": _scalar_text(ckpt.get("version")),
        "date": _scalar_text(ckpt.get("date")),
        "train_args": args,
        "train_metrics": metrics,
        "recalibration": recal,
    }


def plain(v: Any) -> Any:
    """A JSON-safe value: str/int/float/bool/None as they are (huge ints as text), a short list of
    those as a list (``imgsz: [640, 480]``), anything else as its text."""
    if isinstance(v, (list, tuple)) and len(v) <= 8 and all(_scalar(x) for x in v):
        return [plain(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v if abs(v) < 2**63 else _text(v)
    if isinstance(v, float):
        return v
    return _text(v)


# --------------------------------------------------------------------------------------------------
# can the model run here at all?


def probe(model: nn.Module, path: Any, saved: str | None) -> tuple[str, str] | None:
    """Run the model once (``probe_forward``); None when it runs, else (the error for commands that
    run the model, the note for reports), naming the module and the releases that wrote and run it."""
    import ultralytics

    failure = probe_forward(model, ultra.probe_size(model))
    if failure is None:
        return None
    versions = f"written by ultralytics {saved or 'an unknown release'}, running ultralytics {ultralytics.__version__}"
    error = (
        f"{path}: the model cannot run here ({versions}): {failure}; use the Ultralytics release that wrote "
        "it, or re-save the model with this one"
    )
    note = (
        f"cannot run with the installed Ultralytics ({versions}): {failure}; statistics are read from the "
        "stored weights, but activations, swap and recalibrate refuse it"
    )
    return error, note


def require_runnable(loaded: Any) -> None:
    """CheckpointError when ``loaded`` (a LoadedModel) was found not to run with the installed Ultralytics."""
    err = getattr(loaded, "run_error", None)
    if err:
        raise CheckpointError(err)


def probe_forward(model: nn.Module, size: int = 64) -> str | None:
    """Run ``model`` once on a ``size``-pixel zero image (eval mode, no grad); None when it runs,
    else ``"<module name> (<type>) fails: <error>"`` naming the innermost module that raised.

    A checkpoint written by another Ultralytics release can unpickle and still fail here (a block
    whose attributes were renamed between releases). Forward pre-hooks track which module was
    running when the error was raised; every hook is removed and the training mode restored.
    """
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    ch = first.in_channels if first is not None and _whole(first.in_channels) else 3
    names = {id(m): n for n, m in model.named_modules()}
    running: list[nn.Module] = []

    def enter(m: nn.Module, args: Any) -> None:
        running.append(m)

    def leave(m: nn.Module, args: Any, out: Any) -> None:
        if running and running[-1] is m:
            running.pop()

    handles = []
    modes = {m: m.training for m in model.modules()}
    # One thread: a tiny input gains nothing from more, and on a busy machine OpenMP's wait for
    # the other threads costs more than the whole forward pass.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(enter))
            handles.append(m.register_forward_hook(leave))
        with torch.no_grad():
            model.eval()(torch.zeros(1, ch, size, size))
    except Exception as e:
        culprit = running[-1] if running else model
        name = names.get(id(culprit)) or "the model"
        return f"{name} ({type(culprit).__name__}) fails: {one_line(e, 140, typed=True)}"
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
        torch.set_num_threads(threads)
    return None


# --------------------------------------------------------------------------------------------------
# helpers


def _attr(m: nn.Module, attr: str, where: str) -> Any:
    try:
        v = getattr(m, attr, _MISSING)
    except Exception:  # a damaged module whose own __getattr__ fails
        v = _MISSING
    if v is _MISSING:
        raise CheckpointError(f"{where} ({type(m).__name__}): has no '{attr}'; {_DAMAGED}")
    return v


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _whole(v: Any) -> bool:
    """A whole number that torch can take (C++ int64): not a bool, not a 100-digit int."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and abs(int(v)) < 2**62


def _real(v: Any) -> bool:
    """A number that torch can take as a double (a Python int passes through int64 first)."""
    if isinstance(v, numbers.Integral):
        return _whole(v)
    return isinstance(v, numbers.Real)


def _index(k: Any) -> int | None:
    if _whole(k):
        return int(k)
    if isinstance(k, str) and k.strip().isdigit():
        return int(k)
    return None


def _kind(v: Any) -> str:
    return "None" if v is None else f"a {type(v).__name__}" if not isinstance(v, torch.Tensor) else "a Tensor"


def _small(v: Any, budget: int = 10_000) -> bool:
    """Whether ``v`` has at most ``budget`` items counted through its lists and dicts (counted
    iteratively, stopping at the budget: shared references can make it 2^60)."""
    stack = [v]
    while stack:
        budget -= 1
        if budget < 0:
            return False
        x = stack.pop()
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return True


_REPR = reprlib.Repr()  # a repr of bounded size and depth (3.10's Repr takes no arguments)
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _shown(v: Any) -> str:
    """``repr(v)``, bounded (see ``_text``)."""
    try:
        return _REPR.repr(v)
    except Exception:  # an int with more than 4300 digits, a damaged object
        return f"<{type(v).__name__}>"


def _text(v: Any, n: int = 200) -> str:
    """``str(v)``, at most ``n`` characters. Containers are shown by a bounded repr: unpickled from a
    few bytes, a list can hold itself twice at each of 60 levels (2^60 items once printed)."""
    try:
        if isinstance(v, (list, tuple, dict, set, frozenset)):
            s = _REPR.repr(v)
        else:
            s = v if isinstance(v, str) else str(v)
    except Exception:  # str() of a damaged object, or of an int with more than 4300 digits
        s = f"<{type(v).__name__}>"
    return s if len(s) <= n else s[: n - 3] + "..."


def _scalar_text(v: Any) -> str | None:
    if v is None:
        return None
    return _text(v, 100) if isinstance(v, (str, numbers.Real)) else None
