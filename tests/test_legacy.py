"""Checkpoints saved by old Ultralytics releases load safely (weights_only) with the current one.

The fixtures in tests/fixtures/legacy/ were written by the releases themselves (their own DetectionModel,
ModelEMA, save_model and strip_optimizer; see make_fixtures.md there): tiny YOLOv8 detection models with
planted BatchNorm values, ``model.0.bn`` with running_var 0.5 everywhere and gamma 0 in channel 0.
"""

from __future__ import annotations

import hashlib
import pickletools
import re
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import yolobn

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
FILES = sorted(LEGACY.glob("ultralytics-*-tiny.pt"))
EXPECTED = {"8.0.20", "8.0.150", "8.1.0", "8.2.0", "8.3.0"}

# Why each fixture is there: pickled globals the current release only accepts through its legacy aliases
# or its numpy allow-list entries. Checked so that a regenerated fixture keeps covering its case.
LEGACY_GLOBALS = {
    "8.0.20": {
        "ultralytics.yolo.utils.IterableSimpleNamespace",  # pre-8.0.44 package layout
        "ultralytics.nn.modules.Conv",  # modules.py before it became a package (8.0.90)
    },
    "8.0.150": {"ultralytics.utils.IterableSimpleNamespace"},  # model.args left as a namespace
    "8.1.0": {"numpy._core.multiarray.scalar", "numpy.dtype"},  # np.float64 metrics, numpy 2
    "8.2.0": {"numpy._core.multiarray.scalar", "ultralytics.utils.IterableSimpleNamespace"},
    "8.3.0": {"numpy.core.multiarray.scalar", "numpy.dtype"},  # np.float64 metrics, numpy 1.26
}


def pickled_globals(path: Path) -> set[str]:
    """Every ``module.name`` the checkpoint's data.pkl refers to, read from its opcodes.

    (``torch.serialization.get_unsafe_globals_in_checkpoint`` is no use here: it leaves out whatever a
    previous load in this process has already registered as safe.)
    """
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    found, pushed, memo = set(), [], {}
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":  # protocol <= 3 (torch.save's default is 2): "module name"
            found.add(arg.replace(" ", "."))
            pushed.append(None)
        elif op.name == "STACK_GLOBAL":  # protocol 4+: module and name pushed as two strings
            found.add(f"{pushed[-2]}.{pushed[-1]}")
            pushed.append(None)
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            pushed.append(arg)
        elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op.name in ("BINGET", "LONG_BINGET", "GET"):
            pushed.append(memo.get(arg))
        else:
            pushed.append(None)
    return found


def release(path: Path) -> str:
    m = re.fullmatch(r"ultralytics-(.+)-tiny\.pt", path.name)
    assert m, path.name
    return m.group(1)


def test_fixture_set_complete():
    assert {release(p) for p in FILES} == EXPECTED
    for p in FILES:
        assert p.stat().st_size < 400_000, f"{p.name}: {p.stat().st_size} bytes; keep fixtures small"


@pytest.fixture(scope="module", params=FILES, ids=[release(p) for p in FILES])
def legacy(request):
    path = request.param
    return path, yolobn.load(path)


def test_loads_safely(legacy):
    path, m = legacy
    ver = release(path)
    meta = m.meta
    assert meta.ultralytics_version == ver
    assert meta.kind == "checkpoint"
    assert not any("trust" in n for n in meta.notes)  # the allow-listed weights_only load, not --trust
    assert meta.model_class == "DetectionModel"
    assert meta.task == "detect"
    assert meta.names == ["a", "b"] and meta.nc == 2
    assert meta.family == "yolov8n-tiny.yaml"
    assert meta.dtype_on_disk == "float16"  # strip_optimizer halves the model
    assert meta.train_args["imgsz"] == 64 and meta.train_args["data"] == "tiny-shapes.yaml"
    assert meta.trained and not meta.fused
    assert meta.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    p = next(m.model.parameters())
    assert p.dtype == torch.float32
    assert not m.model.training


def test_fixture_covers_its_legacy_globals(legacy):
    path, _ = legacy
    found = pickled_globals(path)
    assert LEGACY_GLOBALS[release(path)] <= found


def test_blocks_match_batchnorm_modules(legacy):
    _, m = legacy
    n_bn = sum(isinstance(x, nn.BatchNorm2d) for x in m.model.modules())
    assert n_bn > 40
    assert len(yolobn.find_blocks(m)) == n_bn == m.meta.n_batchnorm


def test_planted_values_come_through(legacy):
    _, m = legacy
    layers, channels = yolobn.bn_stats(m)
    row = layers[layers["name"] == "model.0.bn"].iloc[0]
    assert row["running_var_min"] == row["running_var_max"] == 0.5
    ch0 = channels[(channels["name"] == "model.0.bn") & (channels["channel"] == 0)].iloc[0]
    assert ch0["gamma"] == 0.0
    assert bool(ch0["dead"]) and ch0["dead_reason"] == "constant"
    dead = yolobn.dead_channels(m)
    first = dead[dead["name"] == "model.0.bn"]
    assert list(zip(first["channel"], first["reason"], strict=True)) == [(0, "constant")]


def test_trusted_load_gives_the_same_weights(legacy):
    path, m = legacy
    t = yolobn.load(path, trust=True)
    assert t.meta.ultralytics_version == m.meta.ultralytics_version
    a, b = m.model.state_dict(), t.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
