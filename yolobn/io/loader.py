"""Load Ultralytics models for inspection: the only module that reads checkpoints.

Safe by default: a ``.pt`` is unpickled with ``torch.load(weights_only=True)`` against yolobn's own
allow-list, built from the installed Ultralytics (``yolobn.io.allowlist``: the same rules on every
supported release), so a checkpoint that would run code when unpickled is refused instead of
executed, and one that needs classes the installed release lacks says which, and which release
runs it. ``trust=True`` allows a full unpickle for checkpoints that need classes outside the
allow-list.

Before torch sees a file, ``yolobn.io.sniff`` classifies its first bytes (a FIFO, an empty file, an
image, an export get one line each); while torch reads it, ``yolobn.core.digest`` hashes it and checks
the CRC of every zip record; after, ``yolobn.io.checks`` validates everything read before any other
module uses it, and runs the model once to tell whether it runs with the installed Ultralytics.
Model yamls are built by ``yolobn.io.yamlmodel``.
"""

from __future__ import annotations

import copy
import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolobn.core.digest import Digest, take
from yolobn.core.digest import scan as scan_file
from yolobn.core.errors import CheckpointError
from yolobn.core.notebook import kv
from yolobn.data import DEMO_FILE, demo_model_path, demo_sha256
from yolobn.io import allowlist, checks, ultra
from yolobn.io.family import infer_family
from yolobn.io.quiet import quiet_ultralytics
from yolobn.io.sniff import (
    detail,
    explain_load_error,
    explain_missing_module,
    read_pickle_bytes,
    refusal,
    scan_pickle,
    sniff,
)
from yolobn.io.yamlmodel import build_from_yaml

__all__ = [
    "LoadedModel",
    "ModelMeta",
    "is_yolo_object",
    "load",
    "read_checkpoint",
    "source_file",
]


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
            ``structure``), or why it is unknown (see ``yolobn.io.family.infer_family``).
        model_class: the Python class of the model (``DetectionModel``...).
        ultralytics_version, date: the Ultralytics release and date that saved the checkpoint.
        train_args: a subset of the training arguments (imgsz, epochs, ...).
        train_metrics: final metrics stored in the checkpoint, when present.
        n_params: parameter count. n_batchnorm: BatchNorm modules found.
        fused: True when BatchNorm has been folded into the convolutions (nothing left to inspect).
        trained: False when every BatchNorm still has its initial running statistics (mean 0,
            var 1), as in a model built from a yaml.
        dtype_on_disk: the parameter dtype as stored (stripped checkpoints are fp16).
        notes: anything the reader should know about how the model was obtained (a damaged file,
            a model that cannot run with the installed Ultralytics, ...).
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
    """A model ready for inspection: fp32, eval mode, unfused, owned by yolobn (a private copy).

    ``run_error`` is set (a one-line message) when the model does not run with the installed
    Ultralytics: its statistics can be read, but nothing can be run through it.
    """

    model: nn.Module
    meta: ModelMeta
    run_error: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        m = self.meta
        changed = "".join(f", {n}" for n in self.changes())
        return (
            f"{type(self).__name__}({m.model_class}, source={m.source!r}, task={m.task}, "
            f"bn={m.n_batchnorm}, params={m.n_params:,}{changed})"
        )

    def changes(self) -> list[str]:
        """How yolobn changed this model from the file it was read from (none for a plain load)."""
        rec = self.meta.recalibration
        return [f"recalibrated on {rec.get('images', '?')} images"] if rec else []

    def _repr_html_(self) -> str:
        m = self.meta
        items: list[tuple[str, Any]] = [
            ("source", m.source),
            ("kind", m.kind),
            ("class", m.model_class),
            ("task", m.task),
            ("family", m.family),
            ("classes", len(m.names)),
            ("BatchNorm layers", m.n_batchnorm),
            ("parameters", f"{m.n_params:,}"),
            ("Ultralytics", m.ultralytics_version),
            *[("changed", c) for c in self.changes()],
            *[("note", n) for n in m.notes],
        ]
        return kv(type(self).__name__, [(k, v) for k, v in items if v not in (None, "")])


def source_file(meta: ModelMeta) -> Path | None:
    """The file a model was read from, as a real path (the bundled demo's ``meta.path`` is
    package-relative; a copy of the demo is its own file)."""
    if meta.kind == "demo" and meta.source == "<demo>":
        return demo_model_path()
    return Path(meta.path).expanduser() if meta.path else None


def load(
    source: Any = None, *, trust: bool = False, download: bool = True, strict: bool = False
) -> LoadedModel:
    """Load a model for inspection without touching the file or the object passed in.

    Args:
        source: a checkpoint path (``.pt``), a model yaml (``yolo11n.yaml``, built untrained), an
            ``nn.Module``, an ``ultralytics.YOLO`` object, or ``None`` for the bundled demo model.
            A bare official name such as ``yolo11n.pt`` that is not on disk is downloaded by
            Ultralytics when the network allows.
        trust: allow a full (unsafe) unpickle of the checkpoint. Only for files you trust.
        download: allow the Ultralytics download of official names missing from disk.
        strict: refuse a checkpoint whose zip records fail their CRC check (by default the damage
            is a note in ``meta.notes``).

    Returns:
        LoadedModel with an fp32, eval-mode private copy of the model and its metadata.

    Raises:
        CheckpointError: with a one-line message, for anything that is not a loadable model.
        YolobnError: the installed Ultralytics is outside the releases yolobn supports.
    """
    with quiet_ultralytics():
        ultra.check_supported()
        if source is None:
            lm = _load_checkpoint(demo_model_path(), str(demo_model_path()), trust=False, strict=strict)
            lm.meta.kind = "demo"
            lm.meta.source = "<demo>"
            # Package-relative, so that reports of the demo model are the same on every machine.
            lm.meta.path = f"yolobn/data/{DEMO_FILE}"
            return lm
        if is_yolo_object(source):  # before nn.Module: YOLO subclasses it but wraps the model
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
        lm = _load_checkpoint(path, text, trust=trust, strict=strict)
        if lm.meta.sha256 == demo_sha256():  # the demo by its path, or a copy: its defaults apply
            lm.meta.kind = "demo"
        return lm


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


def _load_checkpoint(path: Path, source: str, *, trust: bool, strict: bool = False) -> LoadedModel:
    fmt = sniff(path)
    # Scan (hash + zip CRCs) in a thread while torch unpickles: hashlib and zlib release the GIL.
    # The CLI starts it even earlier, before importing torch (digest.prefetch); that scan is used
    # when the file is unchanged since.
    with ThreadPoolExecutor(max_workers=1) as pool:  # its thread only starts on submit
        scanned: Future[Digest] = take(path) or pool.submit(_scan, path)
        ckpt = read_checkpoint(path, trust=trust, fmt=fmt)
        found = scanned.result()
    model = _model_in(ckpt, path)
    checks.check_model(model, str(path))
    dtype = _param_dtype(model)
    model = model.float().eval()
    meta = _meta_from_module(model, source=source, kind="checkpoint")
    meta.path = str(path)
    meta.size_bytes = path.stat().st_size
    meta.sha256 = found.sha256
    meta.dtype_on_disk = dtype
    fields = checks.plain_fields(ckpt)
    meta.ultralytics_version, meta.date = fields["version"], fields["date"]
    meta.train_args, meta.train_metrics = fields["train_args"], fields["train_metrics"]
    meta.family, meta.family_source = infer_family(model, meta.train_args)
    if fields["recalibration"] is not None:
        meta.recalibration = fields["recalibration"]
        meta.notes.append(
            f"running statistics recalibrated by yolobn on {meta.recalibration.get('images', '?')} images"
        )
    if found.damaged:
        damage = (
            f"{len(found.damaged)} of {found.records} zip records fail their CRC check (first: "
            f"{found.damaged[0]}): the file is damaged (a bad copy or disk) and some values may be wrong"
        )
        if strict:
            raise CheckpointError(f"{path}: {damage}; copy or download it again (refused by --strict)")
        meta.notes.append(f"damaged file: {damage}; copy or download it again (--strict refuses such files)")
    if trust:
        meta.notes.append("loaded with --trust: full unpickle, no allow-list")
    loaded = LoadedModel(model, meta)
    failure = checks.probe(model, path, meta.ultralytics_version)
    if failure is not None:
        loaded.run_error = failure[0]
        meta.notes.append(failure[1])
    return loaded


def _model_in(ckpt: Any, path: Path) -> nn.Module:
    """The Ultralytics model inside what was unpickled, or a one-line CheckpointError saying what it is."""
    if isinstance(ckpt, nn.Module) and (
        _is_ultralytics_model(ckpt) or _is_ultralytics_model(getattr(ckpt, "model", None))
    ):
        raise CheckpointError(
            f"{path}: holds a bare {type(ckpt).__name__} saved with torch.save(model), not an Ultralytics checkpoint; "
            "save it as a checkpoint (torch.save({'model': model}, path)) or pass the module to yolobn.load()"
        )
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path}: holds a pickled {type(ckpt).__name__}, not an Ultralytics checkpoint; "
            "load it in Python and pass the module to yolobn.load()"
        )
    model = checks.checkpoint_model(ckpt, str(path))
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
        keys = ", ".join(sorted(map(str, ckpt))[:6]) or "none"
        raise CheckpointError(f"{path}: is not an Ultralytics checkpoint (keys: {keys[:120]})")
    if not _is_ultralytics_model(model):
        raise CheckpointError(
            f"{path}: holds a {type(model).__name__}, not an Ultralytics model; "
            "load it in Python and pass the module to yolobn.load()"
        )
    return model


def read_checkpoint(path: Path, *, trust: bool, fmt: str = "zip") -> Any:
    """Unpickle a checkpoint: yolobn's allow-list (``yolobn.io.allowlist``), or a full unpickle with ``trust``.

    Every failure is a one-line CheckpointError that says what the file is (damaged, asking to
    run code, needing classes the installed Ultralytics lacks, an unsupported pickle protocol, not
    a checkpoint) and names the user's path.
    """
    if trust:
        return _trusted_load(path)
    names = None
    if fmt == "zip":  # list what the pickle asks for before anything is unpickled
        data = read_pickle_bytes(path)
        scan = scan_pickle(data) if data is not None else None
        if scan is not None and scan.ok:
            names = scan.globals
            bad = allowlist.refused(names)
            if bad or scan.calling:
                raise CheckpointError(refusal(path, bad or sorted(scan.calling)))
            gone = allowlist.missing(names)
            if gone:
                raise CheckpointError(ultra.missing_classes_message(path, gone, scan.fields.get("version")))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol chatter; errors still raise
            return allowlist.load(path, names)
    except ModuleNotFoundError as e:
        raise CheckpointError(explain_missing_module(path, e)) from e
    except Exception as e:  # the unpickler of a damaged file raises anything (IndexError, KeyError...)
        raise CheckpointError(explain_load_error(path, e, fmt, alias=path, outside=allowlist.refused)) from e


def _trusted_load(path: Path) -> Any:
    """Full unpickle with Ultralytics' legacy module renames, but without its auto pip-install."""
    try:
        with ultra.legacy_renames():
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except ModuleNotFoundError as e:
        raise CheckpointError(explain_missing_module(path, e)) from e
    except Exception as e:
        raise CheckpointError(f"{path}: could not be unpickled ({detail(e, path, path)})") from e
    if isinstance(obj, torch.jit.ScriptModule):
        raise CheckpointError(f"{path}: is a TorchScript export; inspect the .pt it was exported from")
    return obj


# --------------------------------------------------------------------------------------------------
# yaml and in-memory models


def _from_yaml(text: str, *, trust: bool = False) -> LoadedModel:
    model, cfg, notes = build_from_yaml(text, trust=trust)
    meta = _meta_from_module(model, source=text, kind="yaml")
    meta.family = Path(str(cfg.get("yaml_file", text))).name
    p = Path(text)
    if p.is_file():
        meta.path = str(p)
        meta.sha256 = _scan(p).sha256
        meta.size_bytes = p.stat().st_size
    meta.notes.extend(notes)
    return LoadedModel(model, meta)


def _from_module(module: nn.Module, source: str) -> LoadedModel:
    if not isinstance(module, nn.Module):
        raise CheckpointError(f"{source}: holds no nn.Module model")
    dtype = _param_dtype(module)
    # A private copy: casting and eval() must not touch the caller's model.
    model = copy.deepcopy(module).float().eval()
    checks.check_model(model, source)
    meta = _meta_from_module(model, source=source, kind="module")
    meta.dtype_on_disk = dtype
    return LoadedModel(model, meta)


def _meta_from_module(model: nn.Module, *, source: str, kind: str) -> ModelMeta:
    from torch.nn.modules.batchnorm import _BatchNorm

    meta = ModelMeta(source=source, kind=kind, model_class=type(model).__name__)
    names = getattr(model, "names", None)
    if names is not None:
        meta.names = checks.class_names(names, source)
    meta.nc = len(meta.names) or None
    cfg = getattr(model, "yaml", None)
    if isinstance(cfg, dict):
        yf = cfg.get("yaml_file")
        meta.family = Path(str(yf)).name if isinstance(yf, (str, os.PathLike)) and yf else None
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

        task = guess_model_task(model)
        return task if isinstance(task, str) else None
    except Exception:  # guessing is best effort; the report then says 'unknown'
        return None


def _is_ultralytics_model(model: Any) -> bool:
    try:
        from ultralytics.nn.tasks import BaseModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, BaseModel)


def is_yolo_object(obj: Any) -> bool:
    """An ``ultralytics.YOLO`` (or other ``Model``): an nn.Module that wraps the real model in ``.model``."""
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


def _scan(path: Path) -> Digest:
    """SHA-256 and zip CRC check of ``path`` (when the CLI did not start it early)."""
    return scan_file(path)
