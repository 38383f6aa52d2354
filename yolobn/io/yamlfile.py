"""The one reader of yaml files: dataset yamls, experiment files and model yamls.

A yaml file is untrusted input, and a small one can be large once read: an alias bomb (``a: &a
[x, x]``, ``b: &b [*a, *a]``, ... ten lines) expands to 10^9 nodes, which PyYAML builds as shared
lists in an instant but which hangs whatever walks it later (a check, ``str()``, Ultralytics). So
``read_yaml`` measures the file before it builds anything: its size on disk, then, from the flat
event stream of the parser (no recursion, nothing built), the nesting depth and the number of
nodes *after* expanding every alias. Only a file within ``yolobn.core.limits`` is then built, with
the safe loader (libyaml's when installed). This module imports neither torch nor Ultralytics.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from yolobn.core.errors import YolobnError
from yolobn.core.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

__all__ = ["check_events", "load_yaml", "parse_yaml", "read_yaml"]


def read_yaml(path: str | os.PathLike[str], what: str, *, hint: str = "") -> dict[str, Any]:
    """A yaml file that holds a mapping, read within the budgets; a one-line YolobnError otherwise.

    Args:
        path: the file.
        what: how the error lines name it (``"--data data.yaml"``).
        hint: the keys expected, for the error when the file is not a mapping (``" (path, val, names)"``).
    """
    doc = load_yaml(path, what)
    if not isinstance(doc, dict):
        raise YolobnError(f"{what}: expected a mapping of keys{hint}, got {_kind(doc)}")
    return doc


def load_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """Whatever the yaml file holds, read within the budgets (see ``read_yaml``)."""
    text = _read_text(Path(path), what)
    return parse_yaml(text, what)


def parse_yaml(text: str, what: str) -> Any:
    """A yaml document from text, checked (``check_events``) before it is built."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    try:
        check_events(yaml.parse(text, Loader=loader), what)
        return yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None)
        why = f" ({' '.join(str(problem).split())[:80]})" if problem else ""
        raise YolobnError(f"{what}: not valid YAML{where}{why}") from None
    except (ValueError, OverflowError):  # a number with thousands of digits (int() refuses it)
        raise YolobnError(f"{what}: holds a number too long to read; fix the file") from None
    except RecursionError:  # not reached within MAX_YAML_DEPTH; kept for the pure-Python loader
        raise YolobnError(f"{what}: nested too deeply to be a yaml file") from None


def check_events(events: Any, what: str) -> int:
    """Walk a yaml event stream and return the document's node count after expanding aliases.

    Raises YolobnError past ``MAX_YAML_DEPTH`` or ``MAX_YAML_NODES``, and for an alias that names a
    list or mapping it is inside (a structure that contains itself). Each collection's expanded
    size is summed as its end event arrives, and every anchor remembers the size it stands for, so
    an alias costs one addition however much it expands to.
    """
    import yaml

    open_: list[list[Any]] = [[0, None]]  # [expanded size so far, anchor] of each open collection
    sizes: dict[str, int] = {}  # anchor -> the expanded size of the node it names
    for ev in events:
        if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(open_) > MAX_YAML_DEPTH:
                raise YolobnError(
                    f"{what}: nested more than {MAX_YAML_DEPTH} levels deep; yolobn reads yaml files up to "
                    "that depth"
                )
            open_.append([1, ev.anchor])
            continue
        if isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size, anchor = open_.pop()
        elif isinstance(ev, yaml.ScalarEvent):
            size, anchor = 1, ev.anchor
        elif isinstance(ev, yaml.AliasEvent):
            if any(a == ev.anchor for _, a in open_):
                raise YolobnError(
                    f"{what}: the alias *{ev.anchor} refers to a list or mapping it is inside (a structure "
                    "that contains itself); write the values out"
                )
            size, anchor = sizes.get(ev.anchor, 1), None  # an undefined alias: the loader reports it
        else:
            continue
        if anchor is not None:
            sizes[anchor] = size
        open_[-1][0] += size
        if open_[-1][0] > MAX_YAML_NODES:
            raise YolobnError(
                f"{what}: expands to more than {MAX_YAML_NODES:,} values (YAML aliases repeat what they "
                "name); yolobn reads yaml files up to that size"
            )
    return int(open_[0][0])


def _read_text(p: Path, what: str) -> str:
    """The file as text: a regular file, within MAX_YAML_BYTES (checked before reading), UTF-8."""
    try:
        st = p.stat()
    except OSError as e:
        raise YolobnError(f"{what}: cannot be read ({e.strerror or e}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise YolobnError(f"{what}: is a folder; pass a yaml file")
    if not stat.S_ISREG(st.st_mode):
        raise YolobnError(f"{what}: not a regular file (a pipe, socket or device); pass a yaml file")
    too_big = f"{what}: larger than {MAX_YAML_BYTES >> 20} MB, too large for a yaml file yolobn reads"
    if st.st_size > MAX_YAML_BYTES:
        raise YolobnError(too_big)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)  # the size on disk can change, or lie
    except OSError as e:
        raise YolobnError(f"{what}: cannot be read ({e.strerror or e})") from None
    if len(raw) > MAX_YAML_BYTES:
        raise YolobnError(too_big)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise YolobnError(f"{what}: not a text file (not UTF-8)") from None


def _kind(v: Any) -> str:
    if v is None:
        return "an empty file"
    return f"a {type(v).__name__}"
