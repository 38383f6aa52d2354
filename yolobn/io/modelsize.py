"""How large a model yaml would be, measured before a single weight is allocated.

A model yaml of a few hundred bytes can ask for ``nc: 100000000`` (Ultralytics builds a name per
class), a ``depth_multiple`` of 10^9 (10^9 copies of a block), a width or an ``activation:`` such as
``nn.Linear(36000, 36000)`` worth gigabytes of weights, or an upsampling layer whose output for
Ultralytics' one 256-pixel build pass is gigabytes. ``check_model_size`` bounds the numbers that
set the size (``yolobn.core.limits``), then builds the layers on torch's ``meta`` device (shapes
only, no storage) to count parameters and buffers and to measure the layer outputs of that pass.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from yolobn.core.errors import CheckpointError
from yolobn.core.limits import (
    MAX_BUILD_ACTIVATIONS,
    MAX_CLASSES,
    MAX_LAYER_ROWS,
    MAX_MODEL_PARAMS,
    MAX_MULTIPLIER,
    MAX_REPEATS,
)

__all__ = ["BUILD_PASS", "check_model_size", "check_numbers", "meta_size", "nested_yamls"]

BUILD_PASS = 256  # the image size Ultralytics' model constructors run once to find the strides


def check_model_size(cfg: dict[str, Any], text: str, guard: contextlib.AbstractContextManager[Any]) -> None:
    """CheckpointError (one line) unless the model of ``cfg`` fits the budgets.

    The numbers (``nc``, the multipliers, rows and repeats) are checked first, in ``cfg`` and in any
    model yaml nested in a layer's arguments; then the layers are built on the ``meta`` device,
    inside ``guard`` (the same restrictions as the real build).
    """
    check_numbers(cfg, text)
    params, acts = meta_size(cfg, text, guard)
    if params > MAX_MODEL_PARAMS:
        raise CheckpointError(
            f"{text}: the model would have {params / 1e6:,.0f}M parameters, more than yolobn builds "
            f"({MAX_MODEL_PARAMS / 1e6:,.0f}M); check nc, the multipliers and the layer sizes"
        )
    if acts > MAX_BUILD_ACTIVATIONS:
        raise CheckpointError(
            f"{text}: the model's layer outputs for one {BUILD_PASS}-pixel image would hold {acts / 1e6:,.0f}M "
            f"values, more than yolobn allows ({MAX_BUILD_ACTIVATIONS / 1e6:,.0f}M); check the layer sizes"
        )


def check_numbers(cfg: dict[str, Any], text: str, where: str = "") -> None:
    """``nc``, ``channels``, the multipliers, the number of rows and each row's repeats."""
    at = f"{text}: {where}" if where else f"{text}: "
    nc = cfg.get("nc")
    if nc is not None and not (_number(nc) and 0 <= nc <= MAX_CLASSES):
        raise CheckpointError(f"{at}'nc: {_shown(nc)}' is not a class count from 0 to {MAX_CLASSES:,}")
    depth = _multipliers(cfg, at)
    rows = [r for s in ("backbone", "head") for r in (cfg.get(s) or []) if isinstance(cfg.get(s), list)]
    if len(rows) > MAX_LAYER_ROWS:
        raise CheckpointError(f"{at}{len(rows):,} layer rows, more than {MAX_LAYER_ROWS}; check the file")
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 4):
            continue  # a malformed row (possible with --trust): the build reports it
        n = row[1]
        if not _number(n):
            raise CheckpointError(f"{at}layer row {i}: repeats {_shown(n)} is not a number")
        repeats = max(round(n * depth), 1) if n > 1 else n
        if repeats > MAX_REPEATS:
            raise CheckpointError(
                f"{at}layer row {i} would repeat its block {repeats:,.0f} times (repeats {_shown(n)} x depth "
                f"{_shown(depth)}), more than {MAX_REPEATS}; check the file"
            )
        for j, nested in enumerate(nested_yamls(row[3])):
            check_numbers(nested, text, f"{where}layer row {i}, nested model {j + 1}: ")


def nested_yamls(args: Any) -> Iterator[dict[str, Any]]:
    """The model yamls written inside a layer's arguments (a row like ``[-1, 1, DetectionModel,
    [{backbone: ...}]]`` builds a whole model from them), at any depth of lists."""
    stack = [args]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if any(k in v for k in ("backbone", "head", "activation")):
                yield v
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


def _multipliers(cfg: dict[str, Any], at: str) -> float:
    """Check every depth/width multiplier the yaml gives; return the depth ``parse_model`` uses."""
    pairs = [("depth_multiple", cfg.get("depth_multiple")), ("width_multiple", cfg.get("width_multiple"))]
    scales = cfg.get("scales")
    if isinstance(scales, dict):
        for name, v in scales.items():
            if isinstance(v, list) and len(v) >= 2:
                pairs += [(f"scales.{name} depth", v[0]), (f"scales.{name} width", v[1])]
    for key, v in pairs:
        if v is not None and not (_number(v) and 0 < v <= MAX_MULTIPLIER):
            raise CheckpointError(
                f"{at}{key} {_shown(v)} is not a multiplier above 0 and at most {MAX_MULTIPLIER:g}"
            )
    depth = cfg.get("depth_multiple", 1.0)
    if isinstance(scales, dict) and scales:
        scale = cfg.get("scale") or next(iter(scales))
        chosen = scales.get(scale)
        if isinstance(chosen, list) and chosen:
            depth = chosen[0]
    return float(depth) if _number(depth) else 1.0


def meta_size(
    cfg: dict[str, Any], text: str, guard: contextlib.AbstractContextManager[Any]
) -> tuple[int, int]:
    """(parameters + buffer elements, layer-output elements of the build pass) of the layers of
    ``cfg``, built by Ultralytics' ``parse_model`` on the ``meta`` device."""
    from ultralytics.nn import tasks
    from ultralytics.nn.modules import Conv

    ch = cfg.get("channels", 3)
    if not (_number(ch) and 1 <= ch <= 64 and float(ch).is_integer()):
        raise CheckpointError(f"{text}: 'channels: {_shown(ch)}' is not an input channel count from 1 to 64")
    act = Conv.default_act  # parse_model sets it process-wide and restores it only when it returns
    try:
        with warnings.catch_warnings(), torch.device("meta"), guard:
            warnings.simplefilter("ignore")
            layers, _ = tasks.parse_model(copy.deepcopy(cfg), ch=int(ch), verbose=False)
            params = sum(p.numel() for p in layers.parameters()) + sum(b.numel() for b in layers.buffers())
            acts = _build_pass(layers, int(ch)) if params <= MAX_MODEL_PARAMS else 0
    except CheckpointError:
        raise
    except Exception as e:
        line = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{text}: the model yaml could not be built ({line})") from e
    finally:
        Conv.default_act = act
    return int(params), acts


def _build_pass(layers: torch.nn.Sequential, ch: int) -> int:
    """Layer-output elements of one ``BUILD_PASS`` image through ``layers`` (on meta), routed as
    Ultralytics' ``_predict_once`` routes it. Heads that read values (``.item()``) cannot run on
    meta: the count stops there, after every layer before the head."""
    total = 0
    outs: list[Any] = []
    x: Any = torch.zeros(1, ch, BUILD_PASS, BUILD_PASS)
    layers.eval()
    with contextlib.suppress(Exception), torch.no_grad():
        for m in layers:
            f = getattr(m, "f", -1)
            if f != -1:
                x = outs[f] if isinstance(f, int) else [x if j == -1 else outs[j] for j in f]
            x = m(x)
            outs.append(x)
            total += sum(t.numel() for t in _tensors(x))
            if total > MAX_BUILD_ACTIVATIONS:
                break
    return total


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    return []


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shown(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."
