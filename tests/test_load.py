"""Library-level loading: good checkpoints, private copies, and every bad input as one-line CheckpointError.

The bad inputs and checkpoint builders come from ``tests/corpus.py`` (shared with ``test_cli_errors.py``).
Nothing here touches the network: ``yolobn.io.loader._download`` and Ultralytics' ``attempt_download_asset``
are replaced wherever a download could be attempted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import random
import shutil
from copy import deepcopy
from pathlib import Path

import pytest
import torch
from torch import nn

import yolobn
from tests.corpus import (
    BAD_INPUTS,
    MARKER_NAME,
    MODEL_YAML,
    ExecPayload,
    TouchPayload,
    build_model,
    damaged_pickle_checkpoint,
    damaged_zip_checkpoint,
    expected_words,
    make_bad_input,
    save_checkpoint,
    sha256,
)
from yolobn.core.errors import CheckpointError, NoBatchNormError, YolobnError

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "1")


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
    import yolobn.bn.inspection
    import yolobn.io.loader  # noqa: F401

    assert callable(yolobn.load) and callable(yolobn.inspect)


@pytest.mark.slow
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


# --------------------------------------------------------------------------------------------------
# 9. issue 9: what is read is checked, and every refusal says what the file is


def _demo_with(tmp_path: Path, edit, name: str = "m.pt") -> Path:
    from tests.corpus import demo_ckpt, save

    ck = demo_ckpt()
    edit(ck)
    return save(ck, tmp_path / name)


def test_fifo_is_refused_without_blocking(tmp_path):
    from tests.corpus import deadline

    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with deadline(20), pytest.raises(CheckpointError, match="not a regular file"):
        yolobn.load(fifo)


@pytest.mark.parametrize("kind", ["indexerror", "keyerror"])
def test_unpickler_errors_are_a_corrupt_file(kind, tmp_path):
    from tests.corpus_cases import _pickle_bug

    path = _pickle_bug(kind)(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = str(ei.value)
    assert_one_line_naming(msg, path)
    assert "truncated or corrupt" in msg and "Error" in msg and "--trust" not in msg


@pytest.mark.parametrize("kind", ["protocol0", "protocol4", "protocol5", "inst", "obj", "getattr_chain"])
def test_code_outside_the_allow_list_is_called_so(kind, tmp_path):
    from tests.corpus import raw_pickles, save, torch_zip

    marker = tmp_path / MARKER_NAME
    path = tmp_path / "evil.pt"
    if kind.startswith("protocol"):
        save({"model": TouchPayload(marker)}, path, pickle_protocol=int(kind[-1]))
    else:
        torch_zip(path, raw_pickles(marker)[kind])
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = str(ei.value)
    assert_one_line_naming(msg, path)
    assert "refused: the file asks to run code outside the allow-list" in msg and "--trust" in msg
    assert "corrupt" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["inst", "obj", "getattr_chain"])
def test_hand_written_payloads_are_real(kind, tmp_path, monkeypatch):
    """Positive control: plain pickle does run them (so the refusal above is what protects)."""
    from tests.corpus import raw_pickles

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / MARKER_NAME
    with contextlib.suppress(Exception):  # the getattr chain's result is not a checkpoint
        pickle.loads(raw_pickles(marker)[kind])
    assert marker.exists()


def test_a_benign_newer_protocol_is_not_called_code(tmp_path):
    from tests.corpus import demo_ckpt, save

    path = save(demo_ckpt(), tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = str(ei.value)
    assert "pickle protocol 4" in msg and "refused" not in msg and "corrupt" not in msg


def test_bare_saved_model_is_named_as_such(tmp_path):
    from tests.corpus import demo_ckpt

    path = tmp_path / "bare.pt"
    torch.save(demo_ckpt()["model"], path)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    assert "bare DetectionModel" in str(ei.value) and "Sequential" not in str(ei.value)


def test_non_pt_suffix_errors_name_the_users_file(tmp_path):
    """A .pth goes through a temporary .pt alias: an error must name the user's file, never the alias."""
    from tests.corpus_cases import _pickle_bug

    path = _pickle_bug("keyerror")(tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    assert str(path) in str(ei.value) and "yolobn-" not in str(ei.value)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda ck: ck["model"].model[0].bn._buffers.__setitem__("running_var", torch.ones(3)), "shape (3,)"),
        (lambda ck: ck["model"].model[1].bn.__dict__.__setitem__("eps", "abc"), "eps is 'abc'"),
        (lambda ck: ck["model"].model[1].bn.__dict__.pop("momentum"), "has no 'momentum'"),
        (lambda ck: setattr(ck["model"], "names", {0: "a", "b": "c"}), "'names' keys"),
        (lambda ck: ck.__setitem__("ema", torch.zeros(3)), "'ema' holds a Tensor"),
    ],
    ids=["bn_length", "eps_type", "momentum_missing", "names_mixed", "ema_tensor"],
)
def test_malformed_contents_name_what_is_wrong(edit, words, tmp_path):
    path = _demo_with(tmp_path, edit)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = str(ei.value)
    assert_one_line_naming(msg, path)
    assert words in msg and "damaged" in msg, msg


def test_a_flipped_bit_is_a_finding_or_refused_with_strict(tmp_path, demo_path):
    from tests.corpus import flip_tensor_bit

    path = flip_tensor_bit(demo_path, tmp_path / "flipped.pt")
    lm = yolobn.load(path)  # torch itself reads it without a word
    damage = [n for n in lm.meta.notes if "CRC" in n]
    assert len(damage) == 1 and "1 of 509 zip records" in damage[0], lm.meta.notes
    assert lm.meta.sha256 == sha256(path)
    with pytest.raises(CheckpointError, match="CRC check.*--strict"):
        yolobn.load(path, strict=True)
    assert not any("CRC" in n for n in yolobn.load(demo_path, strict=True).meta.notes)


def test_a_model_that_cannot_run_here_is_named(tmp_path):
    import ultralytics

    from tests.corpus_cases import _cannot_run
    from yolobn.io.checks import require_runnable

    lm = yolobn.load(_demo_with(tmp_path, _cannot_run))
    assert lm.run_error and "model.10.m.0.attn (Attention)" in lm.run_error
    assert "written by ultralytics 8.3.63" in lm.run_error and ultralytics.__version__ in lm.run_error
    assert "AttributeError" in lm.run_error and "qkv" in lm.run_error
    assert any("cannot run" in n for n in lm.meta.notes)
    with pytest.raises(CheckpointError, match="cannot run here"):
        require_runnable(lm)


def test_good_models_run(demo_model_loaded):
    from yolobn.io.checks import probe_forward

    assert demo_model_loaded.run_error is None
    assert probe_forward(build_model()) is None
    assert not any("cannot run" in n for n in demo_model_loaded.meta.notes)


def test_the_probe_names_the_innermost_failing_module_and_leaves_the_model_as_it_was():
    from yolobn.io.checks import probe_forward

    class Broken(nn.Module):
        def forward(self, x):
            return self.missing(x)

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sequential(nn.BatchNorm2d(4), Broken())).train()
    msg = probe_forward(net)
    assert msg.startswith("1.1 (Broken) fails: AttributeError")
    assert all(m.training for m in net.modules())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in net.modules())


def test_pickle_scan_parses_without_running(tmp_path):
    from tests.corpus import raw_pickles
    from yolobn.io.sniff import scan_pickle

    marker = tmp_path / MARKER_NAME
    inst = scan_pickle(raw_pickles(marker)["inst"])
    assert inst.ok and inst.calling == {"INST"} and inst.globals == ["io.FileIO"]
    p4 = scan_pickle(pickle.dumps(TouchPayload(marker), protocol=4))
    assert p4.ok and p4.protocol == 4 and "pathlib.Path.touch" in p4.globals
    assert not scan_pickle(b"\x80\x02}q\x00(").ok  # cut short
    assert scan_pickle(pickle.dumps({1: {2}}, protocol=2)).globals == ["builtins.set"]  # py2 names mapped
    assert not marker.exists()
