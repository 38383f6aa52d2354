"""The walk finds every BatchNorm exactly once, with the right context, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import ultralytics
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import yolobn
from yolobn.bn.walk import find_blocks

YAMLS = sorted(Path(ultralytics.__file__).parent.glob("cfg/models/**/*.yaml"))


def _bn_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, _BatchNorm)]


def test_every_shipped_yaml_is_found():
    assert len(YAMLS) >= 40, "Ultralytics ships 45 (8.3.0) to ~66 (8.4) model yamls; the glob found too few"


# the largest builds (4-10 s each here) run with the slow tests; every yaml still runs in CI
LARGE = {
    "yolov3",
    "yolov3-spp",
    "yolov9e",
    "yolov9e-seg",
    "yolov10x",
    "yolov10l",
    "rtdetr-resnet101",
    "rtdetr-x",
}
CASES = [pytest.param(p, marks=pytest.mark.slow) if p.stem in LARGE else p for p in YAMLS]


@pytest.mark.parametrize("yaml_path", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_coverage_every_batchnorm_once(yaml_path):
    lm = yolobn.load(str(yaml_path))
    model = lm.model
    blocks = find_blocks(lm)
    names = [b.name for b in blocks]
    assert names == _bn_names(model)  # same set, same (module) order, each once
    assert len(set(names)) == len(names)
    assert len(blocks) == lm.meta.n_batchnorm > 0
    for b in blocks:
        if b.owner in ("Conv", "DWConv"):
            # Ultralytics Conv: the conv that feeds it and the activation after it are always known.
            assert b.conv.endswith(".conv") and b.conv_kind == "Conv2d", b
            assert b.act, b
            assert b.out_channels == b.channels, b
        assert b.role in ("backbone", "neck", "head"), b
        assert b.layer >= 0 and b.block, b


def test_context_of_yolo11n():
    blocks = {b.name: b for b in find_blocks(yolobn.load("yolo11n.yaml"))}
    b0 = blocks["model.0.bn"]
    assert (b0.block, b0.owner, b0.role, b0.conv, b0.in_channels, b0.out_channels) == (
        "Conv",
        "Conv",
        "backbone",
        "model.0.conv",
        3,
        16,
    )
    assert (b0.kernel, b0.stride, b0.groups, b0.dilation, b0.act, b0.act_shared) == (
        "3x3",
        "2x2",
        1,
        "1x1",
        "SiLU",
        True,
    )
    assert blocks["model.2.m.0.cv1.bn"].block == "C3k2"
    assert blocks["model.9.cv1.bn"].block == "SPPF"
    # roles from the yaml: 11 backbone layers (0-10), neck 11-22, Detect (23) is the head
    assert {b.role for b in blocks.values() if b.layer <= 10} == {"backbone"}
    assert {b.role for b in blocks.values() if 11 <= b.layer <= 22} == {"neck"}
    assert {b.role for b in blocks.values() if b.layer == 23} == {"head"}
    assert any(b.owner == "DWConv" and b.groups == b.in_channels for b in blocks.values() if b.layer == 23)
    # C2PSA attention convs use Identity, not the shared SiLU
    idents = [b for b in blocks.values() if b.act == "Identity"]
    assert idents and all(not b.act_shared for b in idents) and all(b.block == "C2PSA" for b in idents)


def test_shared_silu_is_one_instance_listed_once():
    from ultralytics.nn.modules.conv import Conv

    model = yolobn.load("yolo11n.yaml").model
    shared = [b for b in find_blocks(model) if b.act_shared]
    assert len(shared) > 50
    # named_modules lists the shared instance once: hooking it would fire once per Conv, which is why
    # the walk starts from the BNs.
    listed = [n for n, m in model.named_modules() if m is Conv.default_act]
    assert len(listed) == 1


def test_rtdetr_sequential_projection_and_repconv_identity_bn():
    from ultralytics.nn.modules.conv import RepConv

    blocks = find_blocks(yolobn.load("rtdetr-l.yaml"))
    proj = [b for b in blocks if b.owner == "Sequential"]
    assert len(proj) == 3 and all(b.conv_kind == "Conv2d" and b.conv.endswith(".0") for b in proj)
    assert all(b.block == "RTDETRDecoder" and b.role == "head" for b in proj)

    rep = nn.Sequential(RepConv(8, 8, bn=True))  # the identity branch is a bare BN with no conv
    rb = {b.name: b for b in find_blocks(rep)}
    assert set(rb) == {"0.bn", "0.conv1.bn", "0.conv2.bn"}
    assert rb["0.bn"].conv == "" and rb["0.bn"].owner == "RepConv" and rb["0.bn"].act == "SiLU"
    assert rb["0.conv1.bn"].kernel == "3x3" and rb["0.conv2.bn"].kernel == "1x1"


def test_other_batchnorm_kinds_are_found():
    m = nn.Sequential(
        nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4), nn.BatchNorm3d(2)
    )
    blocks = find_blocks(m)
    assert [b.bn_type for b in blocks] == ["BatchNorm1d", "SyncBatchNorm", "BatchNorm3d"]
    assert blocks[1].conv == "2" and blocks[0].conv == ""  # a Linear is not a conv
    assert all(b.layer == -1 and b.role == "unknown" for b in blocks)


def test_walk_does_not_change_the_model():
    model = yolobn.load("yolo11n.yaml").model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [(n, type(m)) for n, m in model.named_modules()]
    find_blocks(model)
    yolobn.bn_stats(model)
    assert model.training
    assert types == [(n, type(m)) for n, m in model.named_modules()]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_accepts_yolo_object_and_loaded_model():
    from ultralytics import YOLO

    y = YOLO("yolo11n.yaml")
    assert [b.name for b in find_blocks(y)] == _bn_names(y.model)
    df = yolobn.blocks_frame(y)
    assert list(df.index) == _bn_names(y.model) and "act_shared" in df.columns
