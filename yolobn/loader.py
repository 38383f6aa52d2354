"""Load Ultralytics models for inspection: the only module that reads checkpoints.

Safe by default: a ``.pt`` is unpickled with ``torch.load(weights_only=True)`` against Ultralytics'
own allow-list of model classes (``torch_safe_load(..., safe_only=True)``), so a checkpoint that
would run code when unpickled is refused instead of executed. ``trust=True`` allows a full
unpickle for checkpoints that need classes outside the allow-list.

Before torch ever sees a file, its first bytes are sniffed so that the common wrong inputs (an
empty or truncated file, an image, an ONNX or TorchScript export, a directory) get a one-line
explanation instead of a pickle traceback.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolobn.digest import sha256 as sha256_file
from yolobn.digest import take as take_digest
from yolobn.errors import CheckpointError
from yolobn.family import infer_family

DEMO_FILE = "demo_yolo11n_shapes.pt"

# Training arguments worth carrying into every report (the rest stay in the checkpoint).
_TRAIN_ARG_KEYS = ("imgsz", "epochs", "batch", "data", "optimizer", "lr0", "model", "pretrained")


@dataclass
class ModelMeta:
    """What is known about a loaded model; every report carries it.

    Attributes:
        source: what was asked for (a path, a name, ``"<demo>"``, ``"<nn.Module>"``).
        kind: ``checkpoint``, ``yaml``, ``module`` or ``demo``.
        path, sha256, size_bytes: the file read, when there is one.
        task, nc, names: Ultralytics task and class names.
        family: the model yaml it was built from (e.g. ``yolo11n.yaml``), when known.
        family_source: how ``family`` was found for a checkpoint (``yaml_file``, ``train_args.model``,
            ``structure``), or why it is unknown (see ``yolobn.family.infer_family``).
        model_class: the Python class of the model (``DetectionModel``...).
        ultralytics_version, date: the Ultralytics release and date that saved the checkpoint.
        train_args: a subset of the training arguments (imgsz, epochs, ...).
        train_metrics: final metrics stored in the checkpoint, when present.
        n_params: parameter count. n_batchnorm: BatchNorm modules found.
        fused: True when BatchNorm has been folded into the convolutions (nothing left to inspect).
        trained: False when every BatchNorm still has its initial running statistics (mean 0,
            var 1), as in a model built from a yaml.
        dtype_on_disk: the parameter dtype as stored (stripped checkpoints are fp16).
        notes: anything the reader should know about how the model was obtained.
        recalibration: how yolobn re-estimated the running statistics (``yolobn recalibrate``), or None.
    """

    source: str
    kind: str
    path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    task: str | None = None
    nc: int | None = None
    names: list[str] = field(default_factory=list)
    family: str | None = None
    family_source: str | None = None
    model_class: str = ""
    ultralytics_version: str | None = None
    date: str | None = None
    train_args: dict[str, Any] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    n_params: int = 0
    n_batchnorm: int = 0
    fused: bool = False
    trained: bool = True
    dtype_on_disk: str | None = None
    notes: list[str] = field(default_factory=list)
    recalibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A model ready for inspection: fp32, eval mode, unfused, owned by yolobn (a private copy)."""

    model: nn.Module
    meta: ModelMeta

    def __repr__(self) -> str:
        m = self.meta
        return (
            f"LoadedModel({m.model_class}, source={m.source!r}, task={m.task}, "
            f"bn={m.n_batchnorm}, params={m.n_params:,})"
        )


def demo_model_path() -> Path:
    """Path of the bundled demo checkpoint (YOLO11n trained on the synthetic shapes dataset)."""
    return Path(__file__).resolve().parent / "data" / DEMO_FILE


def load(source: Any = None, *, trust: bool = False, download: bool = True) -> LoadedModel:
    """Load a model for inspection without touching the file or the object passed in.

    Args:
        source: a checkpoint path (``.pt``), a model yaml (``yolo11n.yaml``, built untrained), an
            ``nn.Module``, an ``ultralytics.YOLO`` object, or ``None`` for the bundled demo model.
            A bare official name such as ``yolo11n.pt`` that is not on disk is downloaded by
            Ultralytics when the network allows.
        trust: allow a full (unsafe) unpickle of the checkpoint. Only for files you trust.
        download: allow the Ultralytics download of official names missing from disk.

    Returns:
        LoadedModel with an fp32, eval-mode private copy of the model and its metadata.

    Raises:
        CheckpointError: with a one-line message, for anything that is not a loadable model.
    """
    with quiet_ultralytics():
        if source is None:
            lm = _load_checkpoint(demo_model_path(), str(demo_model_path()), trust=False)
            lm.meta.kind = "demo"
            lm.meta.source = "<demo>"
            # Package-relative, so that reports of the demo model are the same on every machine.
            lm.meta.path = f"yolobn/data/{DEMO_FILE}"
            return lm
        if _is_yolo_object(source):  # before nn.Module: YOLO subclasses it but wraps the model
            return _from_module(source.model, "<ultralytics.YOLO>")
        if isinstance(source, nn.Module):
            return _from_module(source, "<nn.Module>")
        if not isinstance(source, (str, os.PathLike)):
            raise CheckpointError(
                f"cannot load a {type(source).__name__}: pass a path to a .pt checkpoint or model yaml, "
                "an nn.Module or an ultralytics.YOLO"
            )
        text = os.fspath(source)
        path = Path(text).expanduser()
        if path.suffix.lower() in (".yaml", ".yml"):
            return _from_yaml(text, trust=trust)
        if not path.exists():
            path = _fetch_missing(text, download)
        return _load_checkpoint(path, text, trust=trust)


# --------------------------------------------------------------------------------------------------
# checkpoints


def _fetch_missing(text: str, download: bool) -> Path:
    """A path that is not on disk: an official bare name goes to Ultralytics' download."""
    p = Path(text)
    if p.parent == Path(".") and _is_official_asset(p.name):
        if not download:
            raise CheckpointError(
                f"{text}: not on disk and downloads are disabled; pass the path to a local checkpoint"
            )
        try:
            got = Path(_download(p.name))
        except Exception as e:  # offline: ConnectionError, URLError, ...
            raise CheckpointError(
                f"{text}: not a local file and could not be downloaded ({type(e).__name__}); "
                f"download it where there is network and pass its local path, e.g. yolobn inspect ./{p.name}"
            ) from e
        if not got.is_file():
            raise CheckpointError(
                f"{text}: not a local file and could not be downloaded; pass the path to a local checkpoint"
            )
        return got
    raise CheckpointError(f"{text}: no such file; pass the path to a .pt checkpoint or a model yaml")


def _is_official_asset(name: str) -> bool:
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return name in GITHUB_ASSETS_NAMES


def _download(name: str) -> str:
    """Ultralytics' own asset download (kept separate so tests can stand in for the network)."""
    from ultralytics.utils.downloads import attempt_download_asset

    return attempt_download_asset(name)


_IMAGE_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"RIFF": "a RIFF (WebP/WAV) file",
    b"%PDF": "a PDF document",
    b"\x1f\x8b": "a gzip archive",
}


# pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2): the magic number torch's legacy format starts with.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def sniff(path: Path) -> str:
    """Classify a file by its first bytes; raise CheckpointError for anything torch cannot read.

    Returns ``"zip"`` (a torch.save archive) or ``"legacy"`` (pre-1.6 torch pickle format).
    """
    if path.is_dir():
        hint = next((str(c) for c in (path / "weights" / "best.pt", path / "best.pt") if c.is_file()), None)
        extra = f" (found {hint})" if hint else ""
        raise CheckpointError(f"{path}: is a directory; pass the .pt checkpoint file inside it{extra}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise CheckpointError(
            f"{path}: cannot be read ({e.strerror or e}); check the path and permissions"
        ) from e
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); copy or download the checkpoint again")
    for magic, what in _IMAGE_MAGIC.items():
        if head.startswith(magic):
            raise CheckpointError(
                f"{path}: is {what}, not a PyTorch checkpoint; pass a .pt file saved by Ultralytics"
            )
    if (
        path.suffix.lower() == ".onnx"
        or (head[:1] == b"\x08" and b"onnx" in head.lower())
        or (head[:1] == b"\x08" and b"pytorch" in head)
    ):
        raise CheckpointError(
            f"{path}: is an ONNX export, not a training checkpoint; inspect the .pt it was exported from"
        )
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(
                f"{path}: the zip archive is truncated or corrupt ({e}); copy or download the checkpoint again"
            ) from e
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise CheckpointError(
                f"{path}: is a TorchScript export, not a training checkpoint; inspect the .pt it was exported from"
            )
        if not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(
                f"{path}: is a zip archive but not a PyTorch checkpoint (no data.pkl inside)"
            )
        return "zip"
    if head.startswith(_LEGACY_MAGIC):  # torch's pre-1.6 format: a pickled magic number first
        return "legacy"
    raise CheckpointError(
        f"{path}: not a PyTorch checkpoint (unrecognised content); pass a .pt file saved by Ultralytics"
    )


def _load_checkpoint(path: Path, source: str, *, trust: bool) -> LoadedModel:
    fmt = sniff(path)
    # Hash in a thread while torch unpickles: hashlib releases the GIL, and on a 100 MB checkpoint
    # the hash alone costs about as much as the safe load. The CLI starts it even earlier, before
    # importing torch (digest.prefetch); that hash is used when the file is unchanged since.
    with ThreadPoolExecutor(max_workers=1) as pool:  # its thread only starts on submit
        digest = take_digest(path) or pool.submit(_sha256, path)
        ckpt = read_checkpoint(path, trust=trust, fmt=fmt)
        sha = digest.result()
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path}: holds a pickled {type(ckpt).__name__}, not an Ultralytics checkpoint; "
            "load it in Python and pass the module to yolobn.load()"
        )
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, nn.Module):
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise CheckpointError(
                f"{path}: is a plain state_dict ({len(ckpt)} tensors, no architecture); build the model, "
                "load the weights into it and pass the module to yolobn.load(), or use the full checkpoint "
                "Ultralytics saves (best.pt/last.pt)"
            )
        if isinstance(model, dict):
            raise CheckpointError(
                f"{path}: stores a state_dict under 'model' (no architecture); use the full checkpoint "
                "Ultralytics saves (best.pt/last.pt)"
            )
        raise CheckpointError(
            f"{path}: is not an Ultralytics checkpoint (keys: {', '.join(sorted(map(str, ckpt))[:6]) or 'none'})"
        )
    if not _is_ultralytics_model(model):
        raise CheckpointError(
            f"{path}: holds a {type(model).__name__}, not an Ultralytics model; "
            "load it in Python and pass the module to yolobn.load()"
        )
    dtype = _param_dtype(model)
    model = model.float().eval()
    meta = _meta_from_module(model, source=source, kind="checkpoint")
    meta.path = str(path)
    meta.size_bytes = path.stat().st_size
    meta.sha256 = sha
    meta.dtype_on_disk = dtype
    meta.ultralytics_version = _str_or_none(ckpt.get("version"))
    meta.date = _str_or_none(ckpt.get("date"))
    train_args = ckpt.get("train_args") or {}
    if isinstance(train_args, dict):
        meta.train_args = {k: _plain(train_args[k]) for k in _TRAIN_ARG_KEYS if k in train_args}
    meta.family, meta.family_source = infer_family(model, train_args)
    metrics = ckpt.get("train_metrics") or {}
    if isinstance(metrics, dict):
        meta.train_metrics = {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    extra = ckpt.get("yolobn")
    if isinstance(extra, dict) and isinstance(extra.get("recalibration"), dict):
        meta.recalibration = json.loads(json.dumps(extra["recalibration"], default=str))
        meta.notes.append(
            f"running statistics recalibrated by yolobn on {meta.recalibration.get('images', '?')} images"
        )
    if trust:
        meta.notes.append("loaded with --trust: full unpickle, no allow-list")
    return LoadedModel(model, meta)


def read_checkpoint(path: Path, *, trust: bool, fmt: str = "zip") -> Any:
    from ultralytics.nn.tasks import torch_safe_load

    # torch_safe_load insists on a .pt suffix; give other names (best.pth, model.ckpt) a .pt alias.
    with _pt_alias(path) as p:
        if trust:
            return _trusted_load(p)
        try:
            # An absolute path: given a bare official name (yolo11n.pt), torch_safe_load treats a
            # damaged file as a corrupt download cache, deletes it and downloads again.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's pickle-protocol chatter; errors still raise
                ckpt, _ = torch_safe_load(str(p.absolute()), safe_only=True)
            return ckpt
        except TypeError as e:
            if fmt == "legacy" and "outside the supported" in str(e):
                raise CheckpointError(
                    f"{path}: uses torch's pre-1.6 serialization, which yolobn cannot check against the "
                    "allow-list; re-save it with a current torch, or re-run with --trust if you trust its source"
                ) from e
            raise CheckpointError(_explain_load_error(path, e)) from e
        except ModuleNotFoundError as e:
            raise CheckpointError(_explain_missing_module(path, e)) from e
        except AttributeError as e:
            # torch_safe_load reads `.model` off a non-dict object (a bare pickled module).
            m = re.search(r"'(\w+)' object has no attribute", str(e))
            what = m.group(1) if m else "object"
            raise CheckpointError(
                f"{path}: holds a pickled {what}, not an Ultralytics checkpoint; "
                "load it in Python and pass the module to yolobn.load()"
            ) from e
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: could not be read as a checkpoint ({_first_line(e)})") from e


def _trusted_load(path: Path) -> Any:
    """Full unpickle with Ultralytics' legacy module renames, but without its auto pip-install."""
    from ultralytics.nn.tasks import temporary_modules

    try:
        with temporary_modules(
            modules={
                "ultralytics.yolo.utils": "ultralytics.utils",
                "ultralytics.yolo.v8": "ultralytics.models.yolo",
                "ultralytics.yolo.data": "ultralytics.data",
            },
            attributes={
                "ultralytics.nn.modules.block.Silence": "torch.nn.Identity",
                "ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel",
            },
        ):
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except ModuleNotFoundError as e:
        raise CheckpointError(_explain_missing_module(path, e)) from e
    except Exception as e:
        raise CheckpointError(f"{path}: could not be unpickled ({_first_line(e)})") from e
    if isinstance(obj, torch.jit.ScriptModule):
        raise CheckpointError(f"{path}: is a TorchScript export; inspect the .pt it was exported from")
    if isinstance(obj, nn.Module) and not isinstance(obj, dict):
        inner = getattr(obj, "model", None)
        if _is_ultralytics_model(obj):
            return {"model": obj}
        if isinstance(inner, nn.Module) and _is_ultralytics_model(inner):
            return {"model": inner}
    return obj


def _explain_load_error(path: Path, e: TypeError) -> str:
    msg = str(e)
    cause = e.__cause__
    if "TorchScript" in msg:
        return f"{path}: is a TorchScript export, not a training checkpoint; inspect the .pt it was exported from"
    found = re.findall(r"GLOBAL ([\w.]+)", str(cause or ""))
    if "outside the supported" in msg and (found or "Unsupported global" in str(cause or "")):
        what = f" ({', '.join(dict.fromkeys(found))})" if found else ""
        return (
            f"{path}: refused to unpickle code outside the Ultralytics/torch allow-list{what}; the file may run "
            "code when loaded. If you trust its source, re-run with --trust"
        )
    if "empty, truncated or corrupted" in msg or "outside the supported" in msg:
        # A weights_only refusal that names no global is damaged pickle data, not a payload.
        detail = _first_line(cause) if cause else "unreadable"
        return f"{path}: the checkpoint is truncated or corrupt ({detail}); copy or download it again"
    return f"{path}: could not be loaded ({_first_line(e)})"


def _explain_missing_module(path: Path, e: ModuleNotFoundError) -> str:
    if e.name and e.name.split(".")[0] == "models":
        return (
            f"{path}: is a YOLOv5 checkpoint from the ultralytics/yolov5 repository, which the ultralytics "
            "package cannot load; use a YOLOv5u/YOLOv8+ checkpoint"
        )
    return (
        f"{path}: needs the Python module '{e.name}', which is not installed; yolobn never installs packages "
        "while loading: install it yourself if you trust the checkpoint"
    )


@contextlib.contextmanager
def _pt_alias(path: Path) -> Iterator[Path]:
    if path.suffix == ".pt":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="yolobn-") as d:
        alias = Path(d) / (path.stem + ".pt")
        try:
            alias.symlink_to(path.resolve())
        except OSError:  # no symlinks (some filesystems): fall back to reading through a copy
            import shutil

            shutil.copyfile(path, alias)
        yield alias


# --------------------------------------------------------------------------------------------------
# yaml and in-memory models


def _from_yaml(text: str, *, trust: bool = False) -> LoadedModel:
    from ultralytics.nn import tasks

    try:
        cfg = tasks.yaml_model_load(text)
    except (FileNotFoundError, AssertionError) as e:
        raise CheckpointError(
            f"{text}: no such model yaml (not on disk nor shipped with Ultralytics); check the name or path"
        ) from e
    except Exception as e:
        raise CheckpointError(f"{text}: cannot read the model yaml ({_first_line(e)})") from e
    if not isinstance(cfg, dict) or "backbone" not in cfg:
        raise CheckpointError(f"{text}: not an Ultralytics model yaml (no 'backbone' section)")
    if not trust:
        check_model_yaml(cfg, text)
    notes = ["built from a yaml: untrained weights and running statistics"]
    cfg = copy.deepcopy(cfg)
    if _drop_torchvision_weights(cfg):
        notes.append("TorchVision backbone built without its pretrained weights (yolobn never downloads)")
    cls = _model_class_for(cfg, text)
    try:
        with warnings.catch_warnings(), _restricted_build(not trust):
            warnings.simplefilter("ignore")
            model = cls(cfg, verbose=False)
    except Exception as e:
        raise CheckpointError(f"{text}: the model yaml could not be built ({_first_line(e)})") from e
    model = model.float().eval()
    meta = _meta_from_module(model, source=text, kind="yaml")
    meta.family = Path(str(cfg.get("yaml_file", text))).name
    p = Path(text)
    if p.is_file():
        meta.path = str(p)
        meta.sha256 = _sha256(p)
        meta.size_bytes = p.stat().st_size
    meta.notes.extend(notes)
    return LoadedModel(model, meta)


def check_model_yaml(cfg: dict, text: str) -> None:
    """Refuse a model yaml whose fields Ultralytics would run as Python.

    ``parse_model`` calls ``eval()`` on ``activation:`` and looks module names up in its own
    globals. Allowed: an activation of the form ``[torch.]nn.Class(literal, ...)`` naming an
    ``nn.Module`` class, and module names that resolve (as Ultralytics resolves them) to an
    ``nn.Module`` subclass. Anything else is refused; ``trust=True`` skips this check.
    """
    act = cfg.get("activation")
    if act is not None and not _literal_nn_call(act):
        raise CheckpointError(
            f"{text}: refused: 'activation: {_short(act)}' is Python code, not a torch.nn activation such as "
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
                    f"{text}: {section} row {i}: expected [from, repeats, module, args], got {_short(layer)}"
                )
            if not _is_layer_class(layer[2]):
                raise CheckpointError(
                    f"{text}: refused: {section} row {i} names {_short(layer[2])}, which is not a model layer "
                    "(an nn.Module class); re-run with --trust if you trust this yaml"
                )


def _short(v: Any, n: int = 60) -> str:
    s = repr(v) if not isinstance(v, str) else v
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 3] + "..."


def _literal_nn_call(act: Any) -> bool:
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


def _is_layer_class(m: Any) -> bool:
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
def _restricted_build(on: bool) -> Iterator[None]:
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
        for layer in cfg.get(section) or []:
            if len(layer) >= 4 and layer[2] == "TorchVision" and len(layer[3]) >= 3 and layer[3][2]:
                layer[3] = [*layer[3][:2], None, *layer[3][3:]]
                changed = True
    return changed


def _model_class_for(cfg: dict, text: str) -> type:
    from ultralytics.nn import tasks

    name = Path(str(cfg.get("yaml_file", text))).name.lower()
    heads = {str(layer[2]) for layer in (cfg.get("head") or []) if len(layer) >= 3}
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


def _from_module(module: nn.Module, source: str) -> LoadedModel:
    if not isinstance(module, nn.Module):
        raise CheckpointError(f"{source}: holds no nn.Module model")
    dtype = _param_dtype(module)
    # A private copy: casting and eval() must not touch the caller's model.
    model = copy.deepcopy(module).float().eval()
    meta = _meta_from_module(model, source=source, kind="module")
    meta.dtype_on_disk = dtype
    return LoadedModel(model, meta)


def _meta_from_module(model: nn.Module, *, source: str, kind: str) -> ModelMeta:
    from torch.nn.modules.batchnorm import _BatchNorm

    meta = ModelMeta(source=source, kind=kind, model_class=type(model).__name__)
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        meta.names = [str(names[k]) for k in sorted(names)]
    elif isinstance(names, (list, tuple)):
        meta.names = [str(n) for n in names]
    meta.nc = len(meta.names) or None
    cfg = getattr(model, "yaml", None)
    if isinstance(cfg, dict):
        yf = cfg.get("yaml_file")
        meta.family = Path(str(yf)).name if yf else None
    meta.task = _task_of(model)
    meta.n_params = int(sum(p.numel() for p in model.parameters()))
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    meta.n_batchnorm = len(bns)
    # Trained = some BN has moved off its initial running statistics (mean 0, var 1).
    meta.trained = not bns or any(
        m.running_mean is not None
        and m.running_var is not None
        and not (bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all()))
        for m in bns
    )
    meta.fused = meta.n_batchnorm == 0 and any(isinstance(m, nn.Conv2d) for m in model.modules())
    return meta


def _task_of(model: nn.Module) -> str | None:
    task = getattr(model, "task", None)
    if isinstance(task, str):
        return task
    if not _is_ultralytics_model(model):
        return None
    try:
        from ultralytics.nn.tasks import guess_model_task

        return guess_model_task(model)
    except Exception:  # guessing is best effort; the report then says 'unknown'
        return None


def _is_ultralytics_model(model: Any) -> bool:
    try:
        from ultralytics.nn.tasks import BaseModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, BaseModel)


def _is_yolo_object(obj: Any) -> bool:
    try:
        from ultralytics.engine.model import Model
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, Model)


# --------------------------------------------------------------------------------------------------
# helpers


def _param_dtype(model: nn.Module) -> str | None:
    p = next(model.parameters(), None)
    return str(p.dtype).replace("torch.", "") if p is not None else None


def _sha256(path: Path) -> str:
    return sha256_file(path)


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _plain(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool, type(None))) else str(v)


def _first_line(e: BaseException | None) -> str:
    if e is None:
        return ""
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= 160 else line[:157] + "..."


@contextlib.contextmanager
def quiet_ultralytics() -> Iterator[None]:
    """The library never prints: hush Ultralytics' logger while it loads or builds a model."""
    # Import first: Ultralytics configures (and resets the level of) its logger at import time.
    import ultralytics.utils  # noqa: F401

    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
