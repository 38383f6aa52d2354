"""Models built from an Ultralytics model yaml, and the check that keeps a yaml from running code.

``parse_model`` calls ``eval()`` on a model yaml's ``activation:`` and looks module names up in its
own globals: a yaml is code in disguise. ``check_model_yaml`` refuses anything but plain
``torch.nn`` activations and real layer classes unless the user passes ``--trust``;
``build_from_yaml`` then builds the untrained model (the loader adds the metadata).
"""

from __future__ import annotations

import contextlib
import copy
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from yolobn.core.errors import CheckpointError
from yolobn.core.text import one_line


def build_from_yaml(text: str, *, trust: bool = False) -> tuple[nn.Module, dict, list[str]]:
    """Build the untrained model of a model yaml (a path, or a name shipped with Ultralytics).

    Returns:
        (fp32 eval-mode model, the yaml's dict, notes for the report).

    Raises:
        CheckpointError: a missing or malformed yaml, or (without ``trust``) one that would run code.
    """
    from ultralytics.nn import tasks

    p = Path(text).expanduser()
    if p.exists():
        st = p.stat()
        if stat.S_ISDIR(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{text}: not a regular file; pass a model yaml file")
    try:
        cfg = tasks.yaml_model_load(text)
    except (FileNotFoundError, AssertionError) as e:
        raise CheckpointError(
            f"{text}: no such model yaml (not on disk nor shipped with Ultralytics); check the name or path"
        ) from e
    except Exception as e:
        raise CheckpointError(f"{text}: cannot read the model yaml ({one_line(e)})") from e
    if not isinstance(cfg, dict) or "backbone" not in cfg:
        raise CheckpointError(f"{text}: not an Ultralytics model yaml (no 'backbone' section)")
    if not trust:
        check_model_yaml(cfg, text)
    notes = ["built from a yaml: untrained weights and running statistics"]
    cfg = copy.deepcopy(cfg)
    if _drop_torchvision_weights(cfg):
        notes.append("TorchVision backbone built without its pretrained weights (yolobn never downloads)")
    try:
        cls = _model_class_for(cfg, text)
        with warnings.catch_warnings(), restricted_build(not trust):
            warnings.simplefilter("ignore")
            model = cls(cfg, verbose=False)
    except Exception as e:
        raise CheckpointError(f"{text}: the model yaml could not be built ({one_line(e)})") from e
    return model.float().eval(), cfg, notes


def check_model_yaml(cfg: dict, text: str) -> None:
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
    local = None
    if on:
        try:
            from ultralytics.nn.tasks import _SafeLoad

            local = _SafeLoad._local if getattr(_SafeLoad, "SUPPORTED", False) else None
        except (ImportError, AttributeError):
            local = None
    if local is None:
        yield
        return
    was = getattr(local, "active", False)
    local.active = True
    try:
        yield
    finally:
        local.active = was


def _drop_torchvision_weights(cfg: dict) -> bool:
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


def _model_class_for(cfg: dict, text: str) -> type:
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
        return getattr(tasks, "YOLOESegModel" if task == "segment" else "YOLOEModel")
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
    return getattr(tasks, by_task.get(task, "DetectionModel"))
