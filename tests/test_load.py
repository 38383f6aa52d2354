"""Library-level loading: good checkpoints, private copies, and every bad input as one-line CheckpointError.

The helpers at the top (``build_model``, ``save_checkpoint``, ``make_bad_input``, ``BAD_INPUTS``) are also
used by ``test_cli_errors.py``. Nothing here touches the network: ``yolobn.loader._download`` and
Ultralytics' ``attempt_download_asset`` are replaced wherever a download could be attempted.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import os
import pathlib
import pickle
import random
import shutil
import warnings
import zipfile
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path

import pytest
import torch
from torch import nn

import yolobn
from yolobn.errors import CheckpointError, NoBatchNormError, YolobnError

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "1")

MODEL_YAML = "yolo11n.yaml"
MARKER_NAME = "pwned.marker"  # a malicious payload would create this file next to the checkpoint
ONNX_BYTES = b"\x08\x08\x12\x07pytorch\x1a\x052.1.0" + b":" + bytes(range(256)) * 4  # ModelProto header
BUS_JPG = Path(__import__("ultralytics").__file__).parent / "assets" / "bus.jpg"


# --------------------------------------------------------------------------------------------------
# helpers shared with test_cli_errors.py


@functools.lru_cache(maxsize=1)
def build_model() -> nn.Module:
    """A YOLO11n DetectionModel (nc=3) with running statistics moved off their defaults, like a trained one.

    Built once per session and shared by both test files: callers must not modify it (deepcopy first).
    """
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    m = DetectionModel(MODEL_YAML, nc=3, verbose=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


def save_checkpoint(model: nn.Module, path: Path, **extra) -> Path:
    """Save the way Ultralytics' trainer (after strip_optimizer) does: an fp16 copy under 'model'."""
    ckpt = {
        "model": deepcopy(model).half(),
        "ema": None,
        "date": "2025-06-01T12:00:00",
        "version": "8.4.190",
        "train_args": {"imgsz": 160, "epochs": 3},
        **extra,
    }
    torch.save(ckpt, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TouchPayload:
    """Unpickling this creates ``marker`` through pathlib (no shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class ExecPayload:
    """Unpickling this runs Python source through builtins.exec."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').close()",))


def _tiny_png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format="PNG")


def _torchscript(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in recent torch
        torch.jit.script(nn.Linear(2, 2)).save(str(path))


def _random_bytes(path: Path) -> None:
    data = random.Random(0).randbytes(1 << 14)
    assert data[:1] not in (b"\x80", b"\x08", b"P", b"B", b"G", b"\x89", b"\xff", b"%", b"R", b"\x1f")
    path.write_bytes(data)


def _truncated(path: Path, model: nn.Module) -> None:
    full = save_checkpoint(model, path.with_name("full.pt"))
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()


def _foreign_module() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))


def _zip_without_pickle(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a checkpoint")


# kind -> (file name, builder(path, model), words of which at least one must be in the message)
BAD_INPUTS: dict[str, tuple[str, Callable[[Path, nn.Module], object], tuple[str, ...]]] = {
    "missing": ("missing.pt", lambda p, m: None, ("no such file",)),
    "directory": ("runs", lambda p, m: p.mkdir(), ("directory",)),
    "empty": ("empty.pt", lambda p, m: p.write_bytes(b""), ("empty",)),
    "truncated": ("truncated.pt", _truncated, ("truncated", "corrupt")),
    "random": ("random.pt", lambda p, m: _random_bytes(p), ("not a PyTorch checkpoint",)),
    "jpeg": ("bus.pt", lambda p, m: shutil.copyfile(BUS_JPG, p), ("JPEG",)),
    "png": ("image.pt", lambda p, m: _tiny_png(p), ("PNG",)),
    "torchscript": ("scripted.pt", lambda p, m: _torchscript(p), ("TorchScript",)),
    "onnx": ("model.onnx", lambda p, m: p.write_bytes(ONNX_BYTES), ("ONNX",)),
    "onnx_as_pt": ("exported.pt", lambda p, m: p.write_bytes(ONNX_BYTES), ("ONNX",)),
    "state_dict": ("weights.pt", lambda p, m: torch.save(m.state_dict(), p), ("state_dict",)),
    "state_dict_in_dict": (
        "sd_ckpt.pt",
        lambda p, m: torch.save({"model": m.state_dict(), "epoch": 3}, p),
        ("state_dict",),
    ),
    "pickled_module": ("seq.pt", lambda p, m: torch.save(_foreign_module(), p), ("Sequential",)),
    "foreign_model_in_dict": (
        "foreign.pt",
        lambda p, m: torch.save({"model": _foreign_module(), "epoch": 3}, p),
        ("not an Ultralytics model",),
    ),
    "zip_not_torch": ("archive.pt", lambda p, m: _zip_without_pickle(p), ("no data.pkl",)),
    "malicious": (
        "evil.pt",
        lambda p, m: torch.save({"model": TouchPayload(p.parent / MARKER_NAME)}, p),
        ("--trust",),
    ),
}


def make_bad_input(kind: str, directory: Path, model: nn.Module) -> Path:
    """Create the bad input ``kind`` in ``directory`` and return its path (not created for 'missing')."""
    name, build, _ = BAD_INPUTS[kind]
    path = directory / name
    build(path, model)
    return path


def expected_words(kind: str) -> tuple[str, ...]:
    return BAD_INPUTS[kind][2]


def damaged_zip_checkpoint(model: nn.Module, path: Path) -> Path:
    """A checkpoint whose zip directory is intact but one tensor record is missing (a botched copy)."""
    full = save_checkpoint(model, path.with_name(path.stem + "_full.pt"))
    with zipfile.ZipFile(full) as zin, zipfile.ZipFile(path, "w") as zout:
        names = zin.namelist()
        dropped = next(n for n in names if "/data/" in n and not n.endswith("data.pkl"))
        for n in names:
            if n != dropped:
                zout.writestr(zin.getinfo(n), zin.read(n))
    full.unlink()
    return path


def damaged_pickle_checkpoint(model: nn.Module, path: Path) -> Path:
    """A structurally valid checkpoint zip whose data.pkl has 64 bytes zeroed (bit rot, a bad disk)."""
    save_checkpoint(model, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data.pkl"))
    ho = info.header_offset
    name_len = int.from_bytes(data[ho + 26 : ho + 28], "little")
    extra_len = int.from_bytes(data[ho + 28 : ho + 30], "little")
    start = ho + 30 + name_len + extra_len + info.file_size // 2
    data[start : start + 64] = bytes(64)
    path.write_bytes(bytes(data))
    return path


def assert_one_line_naming(msg: str, path: Path | str) -> None:
    assert "\n" not in msg and "\r" not in msg, msg
    assert Path(path).name in msg, msg
    assert "Traceback" not in msg, msg


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return build_model()


@pytest.fixture(scope="module")
def good_ckpt(model, tmp_path_factory) -> Path:
    return save_checkpoint(model, tmp_path_factory.mktemp("good") / "best.pt")


# --------------------------------------------------------------------------------------------------
# 1. a good checkpoint


def test_good_checkpoint_loads_with_metadata(good_ckpt, model, capsys):
    before = (sha256(good_ckpt), good_ckpt.stat().st_mtime_ns, good_ckpt.stat().st_size)
    capsys.readouterr()
    lm = yolobn.load(good_ckpt)
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # the library never prints

    params = list(lm.model.parameters())
    assert params and all(p.dtype == torch.float32 for p in params)
    assert all(b.dtype == torch.float32 for b in lm.model.buffers() if b.is_floating_point())
    assert not any(m.training for m in lm.model.modules())

    meta = lm.meta
    assert meta.kind == "checkpoint"
    assert meta.path == str(good_ckpt)
    assert meta.sha256 == before[0] == hashlib.sha256(good_ckpt.read_bytes()).hexdigest()
    assert meta.size_bytes == before[2]
    assert meta.task == "detect"
    assert meta.nc == 3 and len(meta.names) == 3
    assert meta.family == MODEL_YAML
    assert meta.model_class == "DetectionModel"
    assert meta.ultralytics_version == "8.4.190"
    assert meta.date == "2025-06-01T12:00:00"
    assert meta.train_args == {"imgsz": 160, "epochs": 3}
    assert meta.dtype_on_disk == "float16"
    assert meta.n_batchnorm == sum(isinstance(m, nn.BatchNorm2d) for m in lm.model.modules()) > 0
    assert meta.n_params == sum(p.numel() for p in params)
    assert meta.fused is False
    assert meta.trained is True  # running statistics were moved off (0, 1) in build_model
    assert meta.to_dict()["sha256"] == meta.sha256

    expected = deepcopy(model).half().float().state_dict()  # the weights after the fp16 round trip
    got = lm.model.state_dict()
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(got[k], v), k

    assert (sha256(good_ckpt), good_ckpt.stat().st_mtime_ns, good_ckpt.stat().st_size) == before


# --------------------------------------------------------------------------------------------------
# 2. in-memory models: a private copy


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_untouched(module: nn.Module, snap: dict[str, torch.Tensor], dtype, training: bool) -> None:
    sd = module.state_dict()
    assert sd.keys() == snap.keys()
    for k, v in snap.items():
        assert sd[k].dtype == v.dtype and torch.equal(sd[k], v), k
    assert {p.dtype for p in module.parameters()} == {dtype}
    assert all(m.training is training for m in module.modules())


def _assert_private(lm, module: nn.Module) -> None:
    assert lm.model is not module
    assert not any(m.training for m in lm.model.modules())
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}
    theirs = {p.data_ptr() for p in module.parameters()}
    assert not theirs & {p.data_ptr() for p in lm.model.parameters()}


def test_load_module_returns_private_copy(model):
    caller = deepcopy(model).half().train()
    snap = _snapshot(caller)
    lm = yolobn.load(caller)
    _assert_untouched(caller, snap, torch.float16, training=True)
    _assert_private(lm, caller)
    assert lm.meta.kind == "module" and lm.meta.source == "<nn.Module>"
    assert lm.meta.dtype_on_disk == "float16" and lm.meta.n_batchnorm > 0
    with torch.no_grad():  # writing into the copy does not reach the caller
        next(lm.model.parameters()).add_(1.0)
    _assert_untouched(caller, snap, torch.float16, training=True)


@pytest.fixture(scope="module")
def yolo_obj():
    from ultralytics import YOLO

    yolo = YOLO(MODEL_YAML)
    yolo.model.train()
    return yolo


def test_load_yolo_object_leaves_caller_untouched(yolo_obj):
    snap = _snapshot(yolo_obj.model)
    lm = yolobn.load(yolo_obj)
    _assert_untouched(yolo_obj.model, snap, torch.float32, training=True)
    assert yolo_obj.model.training is True
    _assert_private(lm, yolo_obj.model)
    assert lm.model is not yolo_obj
    assert lm.meta.task == "detect" and lm.meta.n_batchnorm > 0


def test_load_yolo_object_unwraps_the_model(yolo_obj):
    lm = yolobn.load(yolo_obj)
    assert lm.meta.source == "<ultralytics.YOLO>"
    assert lm.meta.model_class == "DetectionModel"
    assert type(lm.model) is type(yolo_obj.model)
    result = yolobn.inspect(yolo_obj)
    assert len(result.layers) == lm.meta.n_batchnorm


# --------------------------------------------------------------------------------------------------
# 3. a model yaml


def test_yaml_builds_untrained_model():
    lm = yolobn.load(MODEL_YAML)
    assert lm.meta.trained is False
    assert lm.meta.kind == "yaml"
    assert lm.meta.family == MODEL_YAML
    assert lm.meta.task == "detect" and lm.meta.n_batchnorm > 0
    assert not any(m.training for m in lm.model.modules())


def test_missing_yaml_is_one_line_error():
    with pytest.raises(CheckpointError) as ei:
        yolobn.load("no_such_model_xyz.yaml")
    assert_one_line_naming(str(ei.value), "no_such_model_xyz.yaml")
    assert "no such model yaml" in str(ei.value)


def test_unsupported_object_type_is_error():
    with pytest.raises(CheckpointError, match="cannot load a int"):
        yolobn.load(123)


# --------------------------------------------------------------------------------------------------
# 4. bad inputs


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_is_one_line_checkpoint_error(kind, tmp_path, model):
    path = make_bad_input(kind, tmp_path, model)
    existed = path.is_file()
    before = sha256(path) if existed else None
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = str(ei.value)
    assert_one_line_naming(msg, path)
    assert any(w in msg for w in expected_words(kind)), msg
    assert isinstance(ei.value, YolobnError)
    if existed:
        assert sha256(path) == before  # the bad file is left alone
    assert not (tmp_path / MARKER_NAME).exists()


def test_directory_hints_at_best_pt(tmp_path):
    run = tmp_path / "train"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "best.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(run)
    msg = str(ei.value)
    assert_one_line_naming(msg, run)
    assert "directory" in msg and str(Path("weights") / "best.pt") in msg


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_random_bytes_starting_like_a_pickle(tmp_path):
    # os.urandom content starts with 0x80 (the pickle PROTO opcode) one time in 256.
    path = tmp_path / "noise.pt"
    path.write_bytes(b"\x80" + random.Random(1).randbytes(4096))
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    assert_one_line_naming(str(ei.value), path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["junk_after_pickle_header", "damaged_data_pkl"])
def test_corrupt_pickle_is_not_called_unsafe(how, tmp_path, model):
    path = tmp_path / "damaged.pt"
    if how == "junk_after_pickle_header":
        path.write_bytes(b"\x80" + random.Random(1).randbytes(4096))
    else:
        damaged_pickle_checkpoint(model, path)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = str(ei.value)
    assert_one_line_naming(msg, path)
    assert "--trust" not in msg, msg
    assert "corrupt" in msg or "not a PyTorch checkpoint" in msg, msg


# --------------------------------------------------------------------------------------------------
# 5. malicious pickles are refused without running


@pytest.mark.parametrize("payload", [TouchPayload, ExecPayload], ids=["pathlib_touch", "builtins_exec"])
def test_malicious_pickle_is_refused_without_running(payload, tmp_path):
    marker = tmp_path / MARKER_NAME
    path = tmp_path / "evil.pt"
    torch.save({"model": payload(marker), "date": "2025-06-01"}, path)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = str(ei.value)
    assert_one_line_naming(msg, path)
    assert "--trust" in msg
    assert not marker.exists()

    # positive control: this payload really does create the marker when unpickled without protection
    control = tmp_path / "control.marker"
    pickle.loads(pickle.dumps(payload(control)))
    assert control.exists()


# --------------------------------------------------------------------------------------------------
# 6. missing files and downloads


def test_official_name_offline_is_one_line_error(tmp_path, monkeypatch, offline_network):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load("yolo11n.pt")
    msg = str(ei.value)
    assert_one_line_naming(msg, "yolo11n.pt")
    assert "could not be downloaded" in msg and "ConnectionError" in msg
    assert offline_network == ["yolo11n.pt"]
    assert list(tmp_path.iterdir()) == []


def test_official_name_with_downloads_disabled(tmp_path, monkeypatch, offline_network):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load("yolo11n.pt", download=False)
    assert_one_line_naming(str(ei.value), "yolo11n.pt")
    assert "downloads are disabled" in str(ei.value)
    assert offline_network == []


@pytest.mark.parametrize("name", ["mymodel.pt", "sub/yolo11n.pt"])
def test_unofficial_missing_name_is_not_downloaded(name, tmp_path, monkeypatch, offline_network):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(name)
    assert_one_line_naming(str(ei.value), name)
    assert "no such file" in str(ei.value)
    assert offline_network == []


@pytest.mark.parametrize(
    "name",
    [
        "mine.pt",
        "yolo11n.pt",
    ],
)
def test_damaged_checkpoint_in_cwd_is_left_alone(name, tmp_path, monkeypatch, model, offline_network):
    monkeypatch.chdir(tmp_path)
    path = damaged_zip_checkpoint(model, tmp_path / name)
    before = sha256(path)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(name)
    msg = str(ei.value)
    assert path.is_file(), "yolobn deleted the user's file"
    assert sha256(path) == before
    assert offline_network == []
    assert_one_line_naming(msg, name)
    assert "truncated or corrupt" in msg, msg


# --------------------------------------------------------------------------------------------------
# 7. fused checkpoints


@pytest.fixture(scope="module")
def fused_ckpt(model, tmp_path_factory) -> Path:
    fused = deepcopy(model).fuse(verbose=False)
    for mod in fused.modules():  # Ultralytics rebinds forward on instances; that does not pickle safely
        mod.__dict__.pop("forward", None)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    return save_checkpoint(fused, tmp_path_factory.mktemp("fused") / "fused.pt")


def test_fused_checkpoint_loads_as_fused(fused_ckpt):
    lm = yolobn.load(fused_ckpt)
    assert lm.meta.fused is True
    assert lm.meta.n_batchnorm == 0
    assert lm.meta.task == "detect"


def test_inspect_fused_checkpoint_says_fused(fused_ckpt):
    with pytest.raises(NoBatchNormError) as ei:
        yolobn.inspect(fused_ckpt)
    msg = str(ei.value)
    assert_one_line_naming(msg, fused_ckpt)
    assert "fused" in msg


# --------------------------------------------------------------------------------------------------
# 8. other suffixes


@pytest.mark.parametrize("name", ["best.pth", "BEST.PT"])
def test_non_pt_suffix_loads(name, good_ckpt, tmp_path):
    path = tmp_path / name
    shutil.copyfile(good_ckpt, path)
    lm = yolobn.load(path)
    assert lm.meta.path == str(path)
    assert lm.meta.sha256 == sha256(good_ckpt)
    assert lm.meta.n_batchnorm > 0 and lm.meta.nc == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no alias left behind


def test_public_functions_are_not_shadowed_by_submodules():
    import yolobn.inspection
    import yolobn.loader  # noqa: F401

    assert callable(yolobn.load) and callable(yolobn.inspect)


def test_the_library_prints_nothing_even_on_first_use():
    """Ultralytics resets its logger when first imported; loading must stay quiet from a cold start
    (a classification yaml makes Ultralytics log a model summary whatever verbose says)."""
    import subprocess
    import sys

    code = "import yolobn; yolobn.load('yolo11n-cls.yaml'); yolobn.load()"
    env = {k: v for k, v in os.environ.items() if k != "YOLO_VERBOSE"}  # a user's default: verbose
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)
