"""Text from input files, made safe to show: control characters visible, messages on one line.

Strings inside checkpoints and yamls (class names, the saved Ultralytics version, ``train_args``,
layer names, file names) are untrusted: an escape sequence in a class name can set the terminal's
title or clear the screen, and a bidi override can make a name read backwards. ``visible`` writes
such characters the way ``repr`` does (``\\x1b``, ``\\u202e``) and leaves ordinary Unicode alone;
``one_line`` is the one way a message or a value is clipped to a single line. Torch-free.
"""

from __future__ import annotations

import re
import reprlib
import traceback
from pathlib import PurePath
from typing import Any

from yolobn.core.errors import YolobnError

# C0 controls, DEL, C1 controls; the bidi marks, embeddings, overrides and isolates (they reorder
# the text around them); the Unicode line and paragraph separators (a line break to some terminals).
_UNSAFE = [
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_VISIBLE = {c: repr(chr(c))[1:-1] for c in _UNSAFE}  # "\x1b", "\n", "\u202e", as repr writes them
_VISIBLE_LINES = {c: v for c, v in _VISIBLE.items() if c != 0x0A}


def visible(s: str, *, newlines: bool = False) -> str:
    """``s`` with every control character, DEL and bidi control written as ``repr`` does
    (``newlines``: except ``\\n``, for text already laid out in lines).

    ``"a\\x1b[2Jb"`` -> ``"a\\\\x1b[2Jb"`` (a backslash, then ``x1b``); é, 中文 and emoji stay as
    they are. Backslashes are left alone, so ``visible(visible(s)) == visible(s)``: applying it at
    more than one layer is harmless.
    """
    return s.translate(_VISIBLE_LINES if newlines else _VISIBLE)


def one_line(x: Any, n: int = 160, *, typed: bool = False) -> str:
    """``x`` as one line of at most ``n`` characters (clipped with ``...``), control characters visible.

    A string: its runs of whitespace (newlines too) become one space. An exception: its message the
    same way; with ``typed``, prefixed by its type unless it is a ``YolobnError`` (whose message is
    written for the user). An exception without a message says its type and where it was raised
    (``AssertionError at run/layerwise.py:402 in _prepare_cache``), so a reason is never empty.
    None: ``""``. Anything else: its ``repr`` (bounded: ``reprlib``, 3 levels deep).
    """
    if x is None:
        return ""
    if isinstance(x, BaseException):
        text = _message(x)
        if not text:
            text = f"{type(x).__name__}{_where(x)}"
        elif typed and not isinstance(x, YolobnError):
            text = f"{type(x).__name__}: {text}"
    else:
        text = x if isinstance(x, str) else _repr(x)
    text = visible(" ".join(text.split()))
    return text if len(text) <= n else text[: max(n - 3, 0)] + "..."


def _message(e: BaseException) -> str:
    try:
        return str(e).strip()
    except Exception:  # a damaged exception whose __str__ fails
        return ""


_REPR = reprlib.Repr()  # bounded in size and depth: an unpickled list can hold itself 2^60 times
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 160, 160


def _repr(v: Any) -> str:
    try:
        return _REPR.repr(v)
    except Exception:  # repr() of a damaged or absurdly nested object
        return f"<{type(v).__name__}>"


def _where(e: BaseException) -> str:
    """`` at folder/file.py:LINE in function`` of the innermost frame that raised ``e`` ('' if never raised)."""
    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ is not None else []
    if not frames:
        return ""
    f = frames[-1]
    path = "/".join(PurePath(f.filename).parts[-2:])
    return f" at {path}:{f.lineno} in {f.name}"


__all__ = ["metric_label", "one_line", "visible"]


_KINDS = {"B": "box", "M": "mask", "P": "pose"}


def metric_label(key: str) -> str:
    """``metrics/mAP50-95(B)`` -> ``mAP50-95 (box)``; ``metrics/accuracy_top1`` -> ``top-1 accuracy``
    (pages and answers; the terminal's tables keep Ultralytics' own keys)."""
    k = key.removeprefix("metrics/")
    m = re.fullmatch(r"accuracy_top(\d+)", k)
    if m:
        return f"top-{m.group(1)} accuracy"
    m = re.fullmatch(r"(.+)\(([A-Z])\)", k)
    return f"{m.group(1)} ({_KINDS.get(m.group(2), m.group(2))})" if m else k.replace("_", " ")
