"""The same file is read the same way on every supported Ultralytics release (8.3.0 to 8.x).

yolobn's allow-list (``yolobn.io.allowlist``) replaces ``torch_safe_load(safe_only=True)``, which
means a stand-in for every Ultralytics class in 8.3 ("is not an Ultralytics checkpoint" for the demo)
and an allow-list in 8.4. CI runs this file with the newest release and with 8.3.0 (``.ci/run``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import pytest
import torch
import ultralytics
from torch import nn

import yolobn
from tests.corpus import MARKER_NAME, demo_ckpt, pickle_record, replace_record, save
from tests.run_main import run_main
from yolobn.core.errors import CheckpointError, YolobnError

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


def one_line(msg: str, path: Path) -> str:
    assert "\n" not in msg and path.name in msg and "Traceback" not in msg, msg
    return msg


def test_every_checkpoint_loads_on_the_installed_release(demo_path):
    """The demo (saved by 8.4.190) and the files of 8.0.20 ... 8.3.0, with their planted values."""
    demo = yolobn.load(demo_path)
    assert demo.meta.n_batchnorm == 81 and demo.meta.ultralytics_version == "8.4.190"
    assert demo.run_error is None
    for path in sorted(LEGACY.glob("ultralytics-*-tiny.pt")):
        lm = yolobn.load(path)
        bn = dict(lm.model.named_modules())["model.0.bn"]
        assert bool((bn.running_var == 0.5).all()) and float(bn.weight[0]) == 0.0, path.name
        assert lm.run_error is None, path.name


def _with_class(tmp_path: Path, old: bytes, new: bytes, version: str = "8.4.190") -> Path:
    """The demo checkpoint saved by ``version`` with the pickled class name ``old`` renamed ``new``."""
    assert len(old) == len(new)
    ck = demo_ckpt()
    ck["version"] = version
    src = save(ck, tmp_path / "src.pt")
    data = pickle_record(src)
    assert data.count(b"\n" + old + b"\n") == 1
    return replace_record(
        src, tmp_path / "needs.pt", "data.pkl", data.replace(b"\n" + old + b"\n", b"\n" + new + b"\n")
    )


def test_a_class_this_release_lacks_is_named_with_the_release_that_runs_it(tmp_path, monkeypatch):
    """A YOLO12 block (A2C2f, first in 8.3.78) in a file saved by 8.4.190, on a release without it."""
    import ultralytics.nn.modules.block as block

    monkeypatch.delattr(block, "A2C2f", raising=False)  # as in 8.3.0 .. 8.3.77
    path = _with_class(tmp_path, b"C2PSA", b"A2C2f")
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = one_line(str(ei.value), path)
    assert "saved by Ultralytics 8.4.190" in msg, msg
    assert f"the installed Ultralytics {ultralytics.__version__} does not have" in msg, msg
    assert "(ultralytics.nn.modules.block.A2C2f)" in msg and "8.3.78 or newer" in msg, msg
    assert "not an Ultralytics checkpoint" not in msg and "refused" not in msg, msg


def test_an_unknown_class_points_at_the_release_that_saved_the_file(tmp_path, capsys):
    path = _with_class(tmp_path, b"C2PSA", b"C2PSX", version="8.4.999")
    code, _, err = run_main(["inspect", str(path)], capsys)
    assert code == 2
    line = one_line(err.strip(), path)
    assert "saved by Ultralytics 8.4.999" in line and "ultralytics.nn.modules.block.C2PSX" in line, line
    assert "Ultralytics 8.4.999, which saved it, or a newer 8.x runs it" in line, line


def _constructor_call(marker: Path) -> object:
    """An object that unpickles as ``DetectionModel(cfg)`` with a yaml whose activation is code: the
    constructor's ``parse_model`` ``eval()``s it (8.3 always; 8.4 outside its own restricted load)."""
    from ultralytics.nn.tasks import DetectionModel

    cfg = {
        "nc": 3,
        "activation": f'__import__("pathlib").Path("{marker}").touch() or __import__("torch").nn.SiLU()',
        "backbone": [[-1, 1, "Conv", [16, 3, 2]]],
        "head": [[[-1], 1, "Detect", ["nc"]]],
    }

    class Call:
        def __reduce__(self):
            return (DetectionModel, (cfg,))

    return Call()


def test_a_file_that_calls_an_allowed_class_is_refused(tmp_path):
    marker = tmp_path / MARKER_NAME
    path = tmp_path / "call.pt"
    torch.save({"model": _constructor_call(marker), "date": "2025-06-01"}, path)
    with pytest.raises(CheckpointError) as ei:
        yolobn.load(path)
    msg = one_line(str(ei.value), path)
    assert "refused" in msg and "ultralytics.nn.tasks.DetectionModel" in msg and "--trust" in msg, msg
    assert not marker.exists()
    # The control: the class on a plain allow-list lets the same file run its code.
    from ultralytics.nn.tasks import DetectionModel

    with torch.serialization.safe_globals([DetectionModel]), contextlib.suppress(Exception):
        torch.load(path, weights_only=True)  # only whether the code ran matters
    assert marker.exists()


def test_the_allow_list_is_exactly_yolobns(tmp_path):
    """A class the process registered as safe elsewhere is not accepted in a checkpoint, and the
    process's own list is there again afterwards."""
    ck = demo_ckpt()
    ck["extra"] = argparse.Namespace(a=1)
    path = save(ck, tmp_path / "ns.pt")
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        with pytest.raises(CheckpointError, match=r"refused.*argparse\.Namespace"):
            yolobn.load(path)
        assert argparse.Namespace in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()


def test_module_classes_are_resolved_only_from_ultralytics_nn_and_torch_nn():
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import IterableSimpleNamespace

    from yolobn.io import allowlist

    assert allowlist.resolve("ultralytics.nn.tasks.DetectionModel") is DetectionModel
    assert allowlist.resolve("ultralytics.nn.tasks.YOLOv10DetectionModel") is DetectionModel  # legacy name
    assert allowlist.resolve("ultralytics.nn.modules.block.Silence") is nn.Identity  # legacy name
    assert allowlist.resolve("ultralytics.nn.modules.Conv") is not None  # 8.0.20's modules.py
    assert allowlist.resolve("ultralytics.yolo.utils.IterableSimpleNamespace") is IterableSimpleNamespace
    assert allowlist.resolve("torch.nn.modules.conv.Conv2d") is nn.Conv2d
    for bad in (
        "ultralytics.nn.tasks.yaml_model_load",  # a function
        "ultralytics.nn.tasks.torch",  # a module
        "ultralytics.nn.tasks.Path",  # a class, not a layer
        "ultralytics.engine.model.Model",  # outside ultralytics.nn
        "ultralytics.nn.tasks._SafeLoad",
        "os.system",
        "builtins.eval",
        "torch.load",
    ):
        assert allowlist.resolve(bad) is None, bad
    assert allowlist.missing(["ultralytics.nn.modules.block.NoSuchBlock", "os.nothing"]) == [
        "ultralytics.nn.modules.block.NoSuchBlock"
    ]


def test_legacy_renames_are_undone():
    import ultralytics.nn.modules.block as block

    from yolobn.io import ultra

    had = hasattr(block, "Silence")
    with ultra.legacy_renames():
        assert block.Silence is nn.Identity
        assert sys.modules["ultralytics.yolo.utils"] is sys.modules["ultralytics.utils"]
    assert hasattr(block, "Silence") is had
    assert "ultralytics.yolo.utils" not in sys.modules


def test_trusted_load_of_a_legacy_file_keeps_its_names():
    lm = yolobn.load(LEGACY / "ultralytics-8.0.20-tiny.pt", trust=True)
    assert lm.meta.n_batchnorm == 49
    assert "ultralytics.yolo.utils" not in sys.modules


@pytest.mark.parametrize(
    "version, words", [("8.2.103", "needs Ultralytics 8.3.0"), ("9.0.0", "does not know")]
)
def test_an_unsupported_release_is_one_line(version, words, monkeypatch, capsys):
    import ultralytics

    monkeypatch.setattr(ultralytics, "__version__", version)
    with pytest.raises(YolobnError, match=words):
        yolobn.load()
    code, _, err = run_main(["inspect"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert version in err and "pip install 'ultralytics>=8.3.0,<9'" in err, err


def test_a_model_built_from_a_yaml_has_its_initial_statistics():
    """8.3.x probes the strides in train mode, which moves every BatchNorm's running statistics."""
    lm = yolobn.load("yolo11n.yaml")
    bns = [m for m in lm.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(bool((m.running_var == 1).all()) and bool((m.running_mean == 0).all()) for m in bns)
    assert lm.meta.trained is False


def test_release_numbers():
    from yolobn.io import ultra

    assert ultra.release("8.3.0") == (8, 3, 0) and ultra.release("8.4.190") > ultra.release("8.3.253")
    assert ultra.release(None) is None and ultra.release("dev") is None
    assert ultra.runs_it(["ultralytics.nn.modules.head.Segment26"], "8.4.7").startswith(
        "Ultralytics 8.4.0 or newer"
    )


def test_an_rtdetr_checkpoint_runs_the_forward_check(tmp_path):
    """8.3's RT-DETR decoder selects all 300 queries: the forward check needs an image with enough
    anchors (at 64 px it failed with "selected index k out of range" on 8.3)."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    cfg = {
        "nc": 2,
        "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "Conv", [8, 3, 2]]]
        + [[-1, 1, "Conv", [16, 3, 2]] for _ in range(3)],  # P3, P4, P5 at layers 2, 3, 4
        "head": [[[2, 3, 4], 1, "RTDETRDecoder", ["nc", 32, 300, 4, 4, 1]]],
        "yaml_file": "rtdetr-tiny.yaml",
    }
    torch.manual_seed(0)
    model = RTDETRDetectionModel(cfg, verbose=False)
    ck = demo_ckpt()
    model.names, model.args = {0: "a", 1: "b"}, ck["model"].args
    ck["model"], ck["ema"] = model.half().eval(), None
    path = save(ck, tmp_path / "rtdetr.pt")
    lm = yolobn.load(path)
    assert lm.meta.model_class == "RTDETRDetectionModel" and lm.meta.n_batchnorm > 0
    assert lm.run_error is None, lm.run_error
