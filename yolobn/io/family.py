"""Which model yaml a checkpoint was built from (its "family", e.g. ``yolov8n.yaml``), and how we know.

Checkpoints since early 8.0 releases record it in ``model.yaml["yaml_file"]``. Older YOLOv8 files
carry a yaml with ``depth_multiple`` / ``width_multiple`` and no name; for those the family is
inferred, in this order:

1. ``train_args["model"]``, when it names a yaml Ultralytics ships (``yolov8n.pt``, ``yolov8n.yaml``,
   ``/runs/yolov8s-seg.pt``) or any ``.yaml``, unless the structure below says otherwise;
2. the structure: the layer list (``from``, repeats, module type of every backbone and head layer)
   equal to one shipped yaml's, and the depth/width multiples equal to one of its ``scales``.

``infer_family`` says which one answered (``how``): ``"yaml_file"``, ``"train_args.model"``,
``"structure"``, or, with no family, why none could be told.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any

from yolobn.core.errors import YolobnError
from yolobn.io.yamlfile import load_yaml

__all__ = ["infer_family", "scaled_name"]

# Ultralytics' own rule (ultralytics.nn.tasks.yaml_model_load): yolov8n-seg.yaml -> yolov8-seg.yaml.
_UNSCALE = re.compile(r"(\d+)([nslmx])(.+)?$")


def infer_family(model: Any, train_args: Any = None) -> tuple[str | None, str]:
    """The model yaml ``model`` was built from, and how that was found.

    Args:
        model: an Ultralytics model (its ``yaml`` dict is read), or anything else (then unknown).
        train_args: the checkpoint's ``train_args``, a dict or a namespace (only ``model`` is read), or None.

    Returns:
        ``(family, how)``: e.g. ``("yolov8n.yaml", "train_args.model")``. ``family`` is None when it
        cannot be told; ``how`` then says why.
    """
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict):
        return None, "the model carries no yaml"
    if cfg.get("yaml_file"):
        return Path(str(cfg["yaml_file"])).name, "yaml_file"
    named = _from_train_args(train_args)
    matches, exact = _from_structure(cfg)
    if named and (not matches or named in matches):
        return named, "train_args.model"
    if len(exact) == 1:
        said = f" (train_args.model says {named})" if named else ""
        return exact[0], "structure" + said
    if exact:
        return None, f"the structure matches {len(exact)} shipped yamls: {', '.join(exact)}"
    ta = train_args.get("model") if isinstance(train_args, dict) else getattr(train_args, "model", None)
    return None, (
        "no yaml_file in the checkpoint"
        + (f", train_args.model is {_basename(str(ta))}" if ta else ", no train_args.model")
        + ", and the structure matches no yaml Ultralytics ships"
    )


def scaled_name(yaml_name: str, scale: str) -> str:
    """The name Ultralytics gives ``yaml_name`` at ``scale``: ``yolov8-seg.yaml`` + ``n`` ->
    ``yolov8n-seg.yaml`` (the scale letter after the version number, as ``guess_model_scale`` reads it)."""
    stem, suffix = yaml_name.rsplit(".", 1)
    return re.sub(r"(\d+)", rf"\g<1>{scale}", stem, count=1) + "." + suffix


def _from_train_args(train_args: Any) -> str | None:
    """``yolov8n.yaml`` for ``model=yolov8n.pt`` (or any path ending so), or a ``.yaml`` named as is."""
    # A dict, or the namespace some old releases saved (attribute access then).
    raw = train_args.get("model") if isinstance(train_args, dict) else getattr(train_args, "model", None)
    if not isinstance(raw, str) or not raw.strip():
        return None
    name = _basename(raw.strip())
    stem, _, suffix = name.rpartition(".")
    if suffix not in ("pt", "yaml", "yml") or not stem:
        return None
    shipped = _shipped()
    if f"{stem}.yaml" in shipped or _UNSCALE.sub(r"\1\3", stem) + ".yaml" in shipped:
        return f"{stem}.yaml"
    # A custom yaml is still the yaml the model was built from; a custom .pt (best.pt) says nothing.
    return name if suffix in ("yaml", "yml") else None


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path)[-1]  # a path saved on Windows too


def _from_structure(cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Shipped yamls (at a scale) with ``cfg``'s layer list and multiples: all of them, and those
    whose arguments also agree when any do (ties broken, e.g. yolov9t vs yolov9s, which differ only
    in channels; old YOLOv8 l/x yamls wrote 512 where the shipped one writes 1024 capped at 512)."""
    layers = _layers(cfg)
    if not layers:
        return [], []
    depth, width = _multiples(cfg)
    matches: list[str] = []
    exact: list[str] = []
    for name, ship in _shipped().items():
        if _signature(layers) != _signature(_layers(ship)):
            continue
        scales = ship.get("scales") or {}
        at = [s for s, v in scales.items() if _close(v[0], depth) and _close(v[1], width)]
        if not scales and _close(depth, 1.0) and _close(width, 1.0):
            found = [name]
        else:
            found = [name if len(scales) == 1 else scaled_name(name, s) for s in at]
        matches += found
        if _same_args(layers, _layers(ship)):
            exact += found
    return matches, exact or matches


def _multiples(cfg: dict[str, Any]) -> tuple[float, float]:
    """(depth, width) the model was scaled by, as ``parse_model`` reads them."""
    scales = cfg.get("scales")
    if isinstance(scales, dict) and scales:
        v = scales.get(cfg.get("scale")) or next(iter(scales.values()))
        return float(v[0]), float(v[1])
    return float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0))


def _layers(cfg: dict[str, Any]) -> list[list[Any]]:
    out = []
    for section in ("backbone", "head"):
        for layer in cfg.get(section) or []:
            if not isinstance(layer, (list, tuple)) or len(layer) < 3:
                return []
            out.append(list(layer))
    return out


def _signature(layers: list[list[Any]]) -> list[tuple[Any, Any, str]]:
    def frm(f: Any) -> Any:
        return tuple(f) if isinstance(f, (list, tuple)) else f

    return [(frm(f), n, re.sub(r"^(torch\.)?(nn\.)?", "", str(m))) for f, n, m, *_ in layers]


def _same_args(a: list[list[Any]], b: list[list[Any]]) -> bool:
    """Equal arguments, a name (``nc``, ``None``) matching anything: ``parse_model`` may have replaced it."""
    for la, lb in zip(a, b, strict=True):
        xa, xb = (la[3] if len(la) > 3 else []), (lb[3] if len(lb) > 3 else [])
        if len(xa) != len(xb):
            return False
        if any(
            x != y and not isinstance(x, str) and not isinstance(y, str) for x, y in zip(xa, xb, strict=True)
        ):
            return False
    return True


def _close(a: Any, b: float) -> bool:
    try:
        return math.isclose(float(a), b, rel_tol=1e-6)
    except (TypeError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, dict[str, Any]]:
    """Every model yaml Ultralytics ships, by file name (read once, only for files without a name)."""
    from ultralytics import cfg

    root = Path(cfg.__file__).parent / "models"
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*.yaml")):
        try:
            d = load_yaml(p, str(p))
        except YolobnError:  # a broken install: that file just cannot match
            continue
        if isinstance(d, dict):
            out[p.name] = d
    return out
