"""Observed statistics, observed dead channels and drift, with closed-form answers (recalibration:
test_recalibration.py)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import yolobn
from tests.models import EPS, Block, TinyNet, plant
from yolobn.core.errors import YolobnError
from yolobn.core.thresholds import ObservedThresholds
from yolobn.io.images import iter_batches
from yolobn.run.observation import observe
from yolobn.run.recording import Moments, recording


def _images(tmp_path, n=6, size=32, seed=0):
    """PNG images (lossless): at imgsz=size the letterbox is the identity, so the model input is
    exactly the pixels / 255 in RGB order."""
    rng = np.random.default_rng(seed)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):
        cv2.imwrite(str(d / f"{i:03d}.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return d


def _inputs(d, size=32):
    return torch.cat([x for x, _ in iter_batches(sorted(d.iterdir()), size, batch=100)])


# --------------------------------------------------------------------------------------------------
# streaming statistics


def test_streaming_moments_equal_torch_over_the_concatenation():
    g = torch.Generator().manual_seed(0)
    shapes = [
        (3, 5, 7, 9),
        (1, 5, 4, 4),
        (4, 5, 2, 11),
        (2, 5, 7, 9),
    ]  # spatial sizes differ, as letterbox groups do
    offset = torch.tensor([0.0, 100.0, -3.0, 1e-3, 5.0]).view(1, 5, 1, 1)
    scale = torch.tensor([1.0, 0.01, 2.0, 1e-4, 0.0]).view(1, 5, 1, 1)  # channel 4 constant
    batches = [torch.randn(*s, generator=g) * scale + offset for s in shapes]
    m = Moments(5)
    for b in batches:
        m.add_values(b)
    flat = torch.cat([b.transpose(0, 1).reshape(5, -1) for b in batches], 1).double()
    assert m.n == flat.shape[1]
    torch.testing.assert_close(m.mean, flat.mean(1), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(m.var, flat.var(1, correction=0), rtol=2e-5, atol=1e-12)
    assert float(m.var[4]) == 0.0


def _reference_records(model, batches):
    """What every BN and its activation saw, kept whole: the brute-force answer."""
    seen: dict[str, dict[str, list[torch.Tensor]]] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.BatchNorm2d):

            def hook(m, i, o, name=name):
                d = seen.setdefault(name, {"x": [], "y": []})
                d["x"].append(i[0].detach().clone())
                d["y"].append(o.detach().clone())

            handles.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        for b in batches:
            model(b)
    for h in handles:
        h.remove()
    return {
        k: {t: torch.cat([a.transpose(0, 1).reshape(a.shape[1], -1) for a in v[t]], 1).double() for t in v}
        for k, v in seen.items()
    }


@pytest.mark.parametrize("kind", ["tiny", "ultralytics-conv", "bn-subclass"])
def test_recorded_statistics_equal_torch_on_the_hooked_activations(kind):
    from ultralytics.nn.modules.conv import Conv

    torch.manual_seed(0)
    if kind == "tiny":
        model = plant(TinyNet())  # post-activation computed in the hook (SiLU, Identity, ReLU)
        acts = {"b1.bn": nn.SiLU(), "b2.bn": nn.Identity(), "seq.1": nn.ReLU()}
    elif kind == "ultralytics-conv":
        model = nn.Sequential(
            Conv(3, 8, 3, 2), Conv(8, 4, 1, 1)
        )  # post-activation from the Conv block's hook
        acts = {"0.bn": nn.SiLU(), "1.bn": nn.SiLU()}
    else:

        class MyBN(nn.BatchNorm2d):  # not a plain BatchNorm: moments measured on the output, not derived
            pass

        model = TinyNet()
        model.b1.bn = MyBN(8, eps=EPS)
        acts = {"b1.bn": nn.SiLU(), "b2.bn": nn.Identity(), "seq.1": nn.ReLU()}
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.1, 2)
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-1, 1)
    model.eval()
    batches = [torch.rand(4, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.rand(3, 3, 8, 24)]
    ref = _reference_records(model, batches)
    with recording(model) as rec, torch.no_grad():
        for b in batches:
            model(b)
    records = rec.records()
    assert set(records) == set(ref)
    hooked_owner = [t.owner is not None for t in rec.targets]
    assert all(hooked_owner) if kind == "ultralytics-conv" else not any(hooked_owner)
    for name, r in records.items():
        x, y = ref[name]["x"], ref[name]["y"]
        post = acts[name](y.float()).double()
        assert r.inp.n == r.out.n == r.post.n == x.shape[1]
        close = dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r.inp.mean, x.mean(1), **close)
        torch.testing.assert_close(r.inp.var, x.var(1, correction=0), **close)
        torch.testing.assert_close(r.out.mean, y.mean(1), **close)
        torch.testing.assert_close(r.out.var, y.var(1, correction=0), **close)
        torch.testing.assert_close(r.min, y.amin(1), **close)
        torch.testing.assert_close(r.max, y.amax(1), **close)
        assert torch.equal(r.pos, (y > 0).sum(1))
        torch.testing.assert_close(r.post.mean, post.mean(1), **close)
        torch.testing.assert_close(r.post.var, post.var(1, correction=0), **close)


class _Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom mid-forward")


def test_hooks_and_modes_are_restored_after_an_exception_mid_forward():
    model = nn.Sequential(plant(TinyNet()), _Boom())
    model.train()
    model[0].b2.eval()  # a mixed state, to be restored exactly
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"), recording(model):
        assert model.training is False  # eval inside
        assert any(m._forward_hooks for m in model.modules())
        model(torch.rand(1, 3, 8, 8))
    assert not any(m._forward_hooks for m in model.modules())
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------------------------------
# observed dead channels and drift: closed form


class OneBlock(nn.Module):
    """1x1 conv from RGB to 5 channels -> BN -> SiLU, with planted weights (see the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.b = Block(3, 5, 1, 1, nn.SiLU())

    def forward(self, x):
        return self.b(x)


def _plant_one_block(x: torch.Tensor) -> OneBlock:
    m = OneBlock().eval()
    r = x[:, 0].double()  # the red channel, what the conv passes on
    mean, var = float(r.mean()), float(r.var(correction=0))
    with torch.no_grad():
        m.b.conv.weight.zero_()
        m.b.conv.weight[:, 0, 0, 0] = torch.tensor([1.0, 1.0, 1.0, 1.0, 20.0])
        # ch0 alive everywhere; its running stats are exactly the data's
        # ch1 gamma 0: constant -1 (flat; predicted constant)
        # ch2 beta -5 with std 1: never positive but not flat (predicted off)
        # ch3 stale running mean 10: never positive, SiLU output ~ 0 (flat); predicted alive
        # ch4 input 20x wider than its running var says: alive on data, predicted off
        m.b.bn.weight.copy_(torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0]))
        m.b.bn.bias.copy_(torch.tensor([0.0, -1.0, -5.0, 1.0, -4.0]))
        m.b.bn.running_mean.copy_(torch.tensor([mean, mean, mean, 10.0, 0.0]))
        m.b.bn.running_var.copy_(torch.tensor([var, var, var, var, 1.0]))
    return m


def test_planted_dead_channels_are_observed_dead_and_live_ones_are_not(tmp_path):
    d = _images(tmp_path)
    x = _inputs(d)
    model = _plant_one_block(x)
    a = observe(model, [str(d)], imgsz=32, batch=4)
    ch = a.channels.set_index("channel")
    assert list(ch["obs_dead"]) == [False, True, True, True, False]
    assert list(ch["obs_reason"]) == ["", "flat", "never positive", "flat", ""]
    assert list(ch["dead"]) == [False, True, True, False, True]  # the data-free prediction
    assert a.observed_summary()["confusion"] == {
        "both": 2,
        "predicted_only": 1,
        "observed_only": 1,
        "neither": 1,
    }
    assert a.observed_summary()["prediction"] == {"precision": 2 / 3, "recall": 2 / 3}
    row = a.layers.iloc[0]
    assert (row.obs_dead, row.dead_both, row.dead_predicted_only, row.dead_observed_only) == (3, 2, 1, 1)
    assert int(ch.loc[0, "obs_count"]) == 6 * 32 * 32
    assert ch.loc[2, "obs_positive_share"] == 0 and ch.loc[2, "obs_post_std"] > 1e-3
    assert 0.3 < ch.loc[0, "obs_positive_share"] < 0.7


def test_drift_is_zero_on_the_data_the_statistics_came_from_and_exact_for_a_planted_shift(tmp_path):
    d = _images(tmp_path)
    x = _inputs(d)
    model = _plant_one_block(x)
    r = x[:, 0].double()
    mean, var = float(r.mean()), float(r.var(correction=0))
    a = observe(model, [str(d)], imgsz=32, batch=4)
    ch = a.channels.set_index("channel")
    assert abs(ch.loc[0, "mean_shift"]) < 1e-6 and abs(ch.loc[0, "log_var_ratio"]) < 1e-6
    assert ch.loc[0, "drift"] < 1e-10
    # ch3's stored mean is 10 instead of the data's mean: shift in running std, closed form
    assert ch.loc[3, "mean_shift"] == pytest.approx((mean - 10.0) / math.sqrt(var + EPS), rel=1e-6)
    # Plant a 2-sigma shift with the right variance: mean_shift 2, log ratio 0, KL = 2**2 / 2 = 2
    with torch.no_grad():
        model.b.bn.running_mean[0] = mean - 2 * math.sqrt(var + EPS)
    ch = observe(model, [str(d)], imgsz=32, batch=4).channels.set_index("channel")
    assert ch.loc[0, "mean_shift"] == pytest.approx(2.0, rel=1e-6)
    assert ch.loc[0, "drift"] == pytest.approx(2.0, rel=1e-5)


def test_observe_leaves_the_model_alone_and_checks_its_input(tmp_path):
    d = _images(tmp_path, n=2)
    m = yolobn.load(plant(TinyNet()))
    m.model.train()
    state = {k: v.clone() for k, v in m.model.state_dict().items()}
    observe(m, [str(d)], imgsz=32, batch=1)
    assert m.model.training and all(torch.equal(state[k], v) for k, v in m.model.state_dict().items())
    assert not any(x._forward_hooks for x in m.model.modules())
    with pytest.raises(YolobnError, match="no such file or folder"):
        observe(m, [str(tmp_path / "nope")], imgsz=32)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(YolobnError, match="not an image"):
        observe(m, [str(tmp_path / "notes.txt")], imgsz=32)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(YolobnError, match="none of the 1 image"):
        observe(m, [str(bad)], imgsz=32)
    # one damaged file among good ones is skipped and reported, the rest is used
    (d / "zz-damaged.png").write_bytes(b"\x89PNG truncated")
    a = observe(m, [str(d)], imgsz=32)
    assert a.observation.skipped == [str(d / "zz-damaged.png")] and len(a.observation.images) == 2
    assert a.observed_summary()["images_skipped"] == 1 and int(a.layers["obs_count"].iloc[0]) == 2 * 16 * 16
    with pytest.raises(ValueError, match="min_positive"):
        ObservedThresholds(min_positive=1.0)


def test_preprocessing_is_ultralytics_predict(demo_path):
    """The model input equals Ultralytics' own predictor's for the same image and imgsz."""
    from ultralytics import YOLO

    from yolobn.io.images import sample_images as default_images

    bus = [p for p in default_images() if p.name == "bus.jpg"][0]
    y = YOLO(str(demo_path))
    y.predict(str(bus), imgsz=320, verbose=False)
    ref = y.predictor.preprocess([cv2.imread(str(bus))]).cpu()
    ours, names = next(iter_batches([bus], 320, stride=32, batch=4))
    assert names == [bus]
    assert ours.shape == ref.shape and torch.equal(ours, ref)
