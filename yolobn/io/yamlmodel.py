"""Models built from an Ultralytics model yaml, and the check that keeps a yaml from running code.

``parse_model`` calls ``eval()`` on a model yaml's ``activation:`` and looks module names up in its
own globals: a yaml is code in disguise. ``check_model_yaml`` refuses anything but plain
``torch.nn`` activations and real layer classes unless the user passes ``--trust``;
``build_from_yaml`` then builds the untrained model (the loader adds the metadata).
"""

from __future__ import annotations

import contextlib
import copy
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from torch import nn

from yolobn.core.errors import CheckpointError, YolobnError
from yolobn.core.text import one_line
from yolobn.io import ultra
from yolobn.io.modelsize import check_model_size, nested_yamls
from yolobn.io.yamlfile import read_yaml

__all__ = [
    "build_from_yaml",
    "check_model_yaml",
    "is_layer_class",
    "literal_nn_call",
    "restricted_build",
]


def build_from_yaml(text: str, *, trust: bool = False) -> tuple[nn.Module, dict[str, Any], list[str]]:
    """Build the untrained model of a model yaml (a path, or a name shipped with Ultralytics).

    The yaml is read by yolobn's reader (its budgets), checked for code (unless ``trust``) and sized
    on the ``meta`` device (``yolobn.io.modelsize``) before Ultralytics builds anything from it.

    Returns:
        (fp32 eval-mode model, the yaml's dict, notes for the report).

    Raises:
        CheckpointError: a missing, malformed or oversized yaml, or (without ``trust``) one that would
            run code.
    """
    cfg = read_model_yaml(text)
    if "backbone" not in cfg:
        raise CheckpointError(f"{text}: not an Ultralytics model yaml (no 'backbone' section)")
    if not trust:
        check_model_yaml(cfg, text)
    notes = ["built from a yaml: untrained weights and running statistics"]
    cfg = copy.deepcopy(cfg)
    if _drop_torchvision_weights(cfg):
        notes.append("TorchVision backbone built without its pretrained weights (yolobn never downloads)")
    check_model_size(cfg, text, restricted_build(not trust))
    try:
        cls = _model_class_for(cfg, text)
        with warnings.catch_warnings(), restricted_build(not trust), ultra.keep_default_act():
            warnings.simplefilter("ignore")
            model = cls(cfg, verbose=False)
    except Exception as e:
        raise CheckpointError(f"{text}: the model yaml could not be built ({one_line(e)})") from e
    ultra.undo_stride_probe(model)
    return model.float().eval(), cfg, notes


def read_model_yaml(text: str) -> dict[str, Any]:
    """The dict of a model yaml, as Ultralytics' ``yaml_model_load`` gives it (with ``scale`` and
    ``yaml_file``), but read by yolobn's reader: a file on disk, or one shipped with Ultralytics
    (``yolo11n.yaml`` is ``cfg/models/11/yolo11.yaml`` at scale n). Never downloaded."""
    from ultralytics.nn import tasks

    p = Path(text).expanduser()
    if p.exists() or p.is_symlink():
        found = p
    elif "://" in text:
        raise CheckpointError(f"{text}: yolobn reads model yamls from disk; download it and pass its path")
    else:
        p, found = _shipped_yaml(p, text)
    try:
        cfg = read_yaml(found, text, hint=" (backbone, head, nc, ...)")
    except CheckpointError:
        raise
    except YolobnError as e:
        raise CheckpointError(str(e)) from None
    cfg["scale"] = tasks.guess_model_scale(p)
    cfg["yaml_file"] = str(p)
    return cfg


def _shipped_yaml(p: Path, text: str) -> tuple[Path, Path]:
    """(the name as Ultralytics renames it, the shipped file) for a model yaml name not on disk."""
    from ultralytics.utils.checks import check_yaml

    if p.stem in (f"yolov{d}{x}6" for x in "nsmlx" for d in (5, 8)):  # yolov8n6 -> yolov8n-p6
        p = p.with_name(re.sub(r"(\d+)([nslmx])6(.+)?$", r"\1\2-p6\3", p.stem) + p.suffix)
    unified = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", str(p))  # yolo11n.yaml -> yolo11.yaml
    try:
        found = check_yaml(p, hard=False) or check_yaml(unified)
    except (FileNotFoundError, AssertionError, OSError):
        found = None
    if not found:
        raise CheckpointError(
            f"{text}: no such model yaml (not on disk nor shipped with Ultralytics); check the name or path"
        )
    return p, Path(found)


def check_model_yaml(cfg: dict[str, Any], text: str) -> None:
    """Refuse a model yaml whose fields Ultralytics would run as Python.

    ``parse_model`` calls ``eval()`` on ``activation:`` and looks module names up in its own
    globals. Allowed: an activation of the form ``[torch.]nn.Class(literal, ...)`` naming an
    ``nn.Module`` class, and module names that resolve (as Ultralytics resolves them) to an
    ``nn.Module`` subclass. Anything else is refused; ``trust=True`` skips this check.
    """
    act = cfg.get("activation")
    if act is not None and not literal_nn_call(act):
        raise CheckpointError(
            f"{text}: refused: 'activation: {one_line(act, 60)}' is Python code, not a torch.nn activation such as "
            "nn.SiLU() or nn.LeakyReLU(0.1); re-run with --trust if you trust this yaml"
        )
    for section in ("backbone", "head"):
        layers = cfg.get(section)
        if layers is None:
            continue
        if not isinstance(layers, list):
            raise CheckpointError(f"{text}: '{section}' must be a list of [from, repeats, module, args] rows")
        for i, layer in enumerate(layers):
            if not (isinstance(layer, list) and len(layer) == 4 and isinstance(layer[3], list)):
                raise CheckpointError(
                    f"{text}: {section} row {i}: expected [from, repeats, module, args], got {one_line(layer, 60)}"
                )
            if not is_layer_class(layer[2]):
                raise CheckpointError(
                    f"{text}: refused: {section} row {i} names {one_line(layer[2], 60)}, which is not a model layer "
                    "(an nn.Module class); re-run with --trust if you trust this yaml"
                )
            _check_nested(layer, f"{text}: {section} row {i}")


def _check_nested(row: list[Any], where: str) -> None:
    """A row can build a whole model (``[-1, 1, DetectionModel, [{backbone: ...}]]``): the model
    yamls written in its arguments get the same check, and a model class given a file name (which
    Ultralytics would read and build unchecked) is refused."""
    for nested in nested_yamls(row[3]):
        check_model_yaml(nested, f"{where} (a nested model)")
    if _is_model_class(row[2]) and any(isinstance(a, str) for a in row[3]):
        raise CheckpointError(
            f"{where}: refused: builds a nested {row[2]} from a file name; write the nested model's yaml "
            "inline, or trust this yaml (trust=True; --trust on the command line) if you trust its source"
        )


def _is_model_class(m: Any) -> bool:
    from ultralytics.nn import tasks

    obj = vars(tasks).get(m) if isinstance(m, str) else None
    return isinstance(obj, type) and issubclass(obj, tasks.BaseModel)


def literal_nn_call(act: Any) -> bool:
    """``nn.X(...)`` or ``torch.nn.X(...)`` with literal arguments, X an nn.Module subclass."""
    import ast

    if not isinstance(act, str) or len(act) > 200:
        return False
    try:
        call = ast.parse(act.strip(), mode="eval").body
    except SyntaxError:
        return False
    if not isinstance(call, ast.Call):
        return False
    parts = []
    node: ast.AST = call.func
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return False
    parts.append(node.id)
    if parts[1:] not in (["nn"], ["nn", "torch"]):
        return False
    klass = getattr(nn, parts[0], None)
    if not (isinstance(klass, type) and issubclass(klass, nn.Module)):
        return False
    try:
        for a in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(a)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return all(k.arg is not None for k in call.keywords)  # no **kwargs


def is_layer_class(m: Any) -> bool:
    """Whether Ultralytics' ``parse_model`` resolves the module name ``m`` to an nn.Module class."""
    if not isinstance(m, str):
        return False
    if m.startswith("nn."):
        obj = getattr(nn, m[3:], None)
    elif m.startswith("torchvision.ops."):
        import torchvision

        obj = getattr(torchvision.ops, m[16:], None)
    else:
        from ultralytics.nn import tasks

        obj = vars(tasks).get(m)
    return isinstance(obj, type) and issubclass(obj, nn.Module)


@contextlib.contextmanager
def restricted_build(on: bool) -> Iterator[None]:
    """Also ask Ultralytics for its own no-eval model construction, where this release has it.

    ``_SafeLoad`` (ultralytics >= 8.4) marks a thread as restricted while a weights-only load runs;
    ``parse_model`` then resolves ``activation`` without ``eval()``. yolobn's own check
    (``check_model_yaml``) does not depend on it: this is a second lock on the same door.
    """
    safe = ultra.restricted_build() if on else None
    local = getattr(safe, "_local", None) if getattr(safe, "SUPPORTED", False) else None
    if local is None:
        yield
        return
    was = getattr(local, "active", False)
    local.active = True
    try:
        yield
    finally:
        local.active = was


def _drop_torchvision_weights(cfg: dict[str, Any]) -> bool:
    """TorchVision layers default to downloading pretrained weights; build them untrained instead."""
    changed = False
    for section in ("backbone", "head"):
        layers = cfg.get(section)
        for layer in layers if isinstance(layers, list) else []:
            if not (isinstance(layer, list) and len(layer) >= 4 and isinstance(layer[3], list)):
                continue  # a malformed row (possible with --trust): the build reports it
            if layer[2] == "TorchVision" and len(layer[3]) >= 3 and layer[3][2]:
                layer[3] = [*layer[3][:2], None, *layer[3][3:]]
                changed = True
    return changed


def _model_class_for(cfg: dict[str, Any], text: str) -> type:
    from ultralytics.nn import tasks

    name = Path(str(cfg.get("yaml_file", text))).name.lower()
    head = cfg.get("head")
    heads = {
        str(r[2]) for r in (head if isinstance(head, list) else []) if isinstance(r, list) and len(r) >= 3
    }
    if "RTDETRDecoder" in heads or "rtdetr" in name:
        return tasks.RTDETRDetectionModel
    task = tasks.guess_model_task(cfg)
    if "yoloe" in name:
        return cast(type, getattr(tasks, "YOLOESegModel" if task == "segment" else "YOLOEModel"))
    if "world" in name:
        return tasks.WorldModel
    by_task = {
        "detect": "DetectionModel",
        "segment": "SegmentationModel",
        "classify": "ClassificationModel",
        "pose": "PoseModel",
        "obb": "OBBModel",
        "semantic": "SemanticSegmentationModel",
        "depth": "DepthModel",
    }
    return cast(type, getattr(tasks, by_task.get(task, "DetectionModel")))
