"""Per-layer and per-channel statistics against closed-form values computed independently in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import yolobn
from tests.models import EPS, PLANTED


def test_channel_values_closed_form(tiny):
    _, ch = yolobn.bn_stats(tiny)
    bn1 = ch[ch["name"] == "b1.bn"].sort_values("channel")
    g, b, m, v = (np.array([row[i] for row in PLANTED], dtype=np.float64) for i in range(4))
    g32, b32, m32, v32 = (x.astype(np.float32).astype(np.float64) for x in (g, b, m, v))
    scale = g32 / np.sqrt(v32 + EPS)
    np.testing.assert_allclose(bn1["gamma"], g32)
    np.testing.assert_allclose(bn1["beta"], b32)
    np.testing.assert_allclose(bn1["running_mean"], m32)
    np.testing.assert_allclose(bn1["running_var"], v32)
    np.testing.assert_allclose(bn1["scale"], scale, rtol=1e-12)
    np.testing.assert_allclose(bn1["shift"], b32 - m32 * scale, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(bn1["out_mean"], b32)
    np.testing.assert_allclose(bn1["out_std"], np.abs(g32) * np.sqrt(v32 / (v32 + EPS)), rtol=1e-12)
    np.testing.assert_allclose(bn1["var_over_eps"], v32 / EPS, rtol=1e-12)


def test_effective_scale_and_shift_reproduce_bn_eval_output(tiny):
    # y = scale * x + shift must equal what nn.BatchNorm2d computes in eval mode.
    _, ch = yolobn.bn_stats(tiny)
    bn1 = ch[ch["name"] == "b1.bn"].sort_values("channel")
    x = torch.randn(2, 8, 5, 5)
    want = tiny.b1.bn(x).double()
    s = torch.tensor(bn1["scale"].to_numpy()).view(1, -1, 1, 1)
    t = torch.tensor(bn1["shift"].to_numpy()).view(1, -1, 1, 1)
    torch.testing.assert_close(x.double() * s + t, want, rtol=1e-5, atol=1e-5)


def test_layer_rows_closed_form(tiny):
    layers, _ = yolobn.bn_stats(tiny)
    assert list(layers["name"]) == ["b1.bn", "b2.bn", "seq.1"]
    r = layers.set_index("name").loc["b1.bn"]
    g = np.array([row[0] for row in PLANTED])
    assert r["channels"] == 8 and r["eps"] == pytest.approx(EPS)
    assert r["gamma_min"] == g.min() and r["gamma_max"] == g.max()
    assert r["gamma_mean"] == pytest.approx(g.mean())
    assert r["gamma_std"] == pytest.approx(g.std())  # population std
    for q, col in ((0.05, "p05"), (0.25, "p25"), (0.5, "p50"), (0.75, "p75"), (0.95, "p95")):
        assert r[f"gamma_{col}"] == pytest.approx(np.quantile(g, q)), col
    assert r["dead"] == 3 and r["constant"] == 2 and r["off"] == 1
    assert r["dead_share"] == pytest.approx(3 / 8)
    assert r["eps_dominated"] == 2 and r["eps_share"] == pytest.approx(2 / 8)
    assert r["max_abs_scale"] == pytest.approx(1 / np.sqrt(EPS))  # channel 1: gamma 1, var 0
    assert r["act"] == "SiLU" and r["conv"] == "b1.conv" and r["kernel"] == "3x3" and r["stride"] == "2x2"


def test_health_findings(tiny):
    with torch.no_grad():
        tiny.b2.bn.running_var[2] = float("nan")
        tiny.seq[1].running_var.fill_(1e-6)  # every channel eps-dominated, scale ~ 1/sqrt(1e-5)
    layers, _ = yolobn.bn_stats(tiny)
    f = layers.set_index("name")["findings"]
    assert "non-finite values in running_var" in f["b2.bn"]
    assert layers.set_index("name")["nonfinite"]["b2.bn"]
    assert "100% of channels eps-dominated" in f["seq.1"]
    assert "extreme scale" in f["seq.1"]  # 1 / sqrt(1e-6 + 1e-5) = 301 > 100
    assert f["b1.bn"] == ""  # bn1 has 25% eps-dominated (< 50%) and max scale 31.6 (< 100)


def test_untrained_stats_flagged_only_in_a_trained_model(tiny):
    fresh = nn.BatchNorm2d(8)
    tiny.b2.bn = nn.BatchNorm2d(4)  # default running stats in an otherwise trained model
    layers, _ = yolobn.bn_stats(tiny)
    assert layers.set_index("name").loc["b2.bn", "untrained_stats"]
    assert "untrained running statistics" in layers.set_index("name").loc["b2.bn", "findings"]
    # A model where every BN has default statistics is untrained as a whole: no per-layer finding.
    layers, _ = yolobn.bn_stats(nn.Sequential(nn.Conv2d(3, 8, 1), fresh))
    assert not layers["untrained_stats"].any()


def test_large_layer_matches_numpy():
    # A 4096-channel BN: every row present, and the constant count equals an independent numpy count.
    bn = nn.BatchNorm2d(4096)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(-1, 1, 4096))
    layers, ch = yolobn.bn_stats(nn.Sequential(nn.Conv2d(3, 4096, 1), bn))
    assert len(ch) == 4096 and layers["channels"].item() == 4096
    g = bn.weight.detach().double().numpy()
    want = (np.abs(g) * np.sqrt(1 / (1 + 1e-5)) < 1e-3).sum()
    assert want == 4  # the four linspace points closest to 0 (step 2/4095)
    assert ch["constant"].sum() == want


def test_stats_do_not_mutate_the_model(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    types = [type(m) for m in tiny.modules()]
    training = [m.training for m in tiny.modules()]
    yolobn.bn_stats(tiny)
    yolobn.dead_channels(tiny)
    after = tiny.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert types == [type(m) for m in tiny.modules()]
    assert training == [m.training for m in tiny.modules()]


def test_bn_without_affine_or_running_stats():
    m = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, affine=False), nn.BatchNorm2d(4, track_running_stats=False)
    )
    layers, ch = yolobn.bn_stats(m)
    assert list(layers["affine"]) == [False, True]
    assert (ch[ch["name"] == "1"]["gamma"] == 1).all()
    assert ch[ch["name"] == "2"]["running_var"].isna().all()
    assert not layers["nonfinite"].any()  # NaN means "not stored", not corruption


def test_affine_still_at_init_is_a_finding_in_a_trained_model(tiny):
    with torch.no_grad():
        tiny.b2.bn.weight.fill_(1.0)
        tiny.b2.bn.bias.fill_(0.0)
    layers, _ = yolobn.bn_stats(tiny)
    r = layers.set_index("name")
    assert r.loc["b2.bn", "init_affine"] and "no gradient reached" in r.loc["b2.bn", "findings"]
    assert not r.loc["b1.bn", "init_affine"] and not r.loc["seq.1", "init_affine"]
    # an untrained model (yaml) has every layer at init: not a per-layer finding
    layers, _ = yolobn.bn_stats(yolobn.load("yolov8n.yaml"))
    assert not layers["init_affine"].any() and not layers["near_init"].any()


@pytest.mark.parametrize(
    "gamma, beta, code",
    [
        (1.0, 1.9e-9, "init_affine"),  # the demo's stride-32 box branch: moved by float noise only
        (1.0, 0.0, "init_affine"),
        (1.0 - 4e-6, -8e-6, "init_affine"),
        (1.0, 0.013, "near_init"),  # a third-party YOLOv8n's class branch after 50 epochs
        (1.013, -0.013, "near_init"),
        (1.0, 0.05, None),
        (0.95, 0.0, None),
    ],
)
def test_affine_at_or_near_init_within_tolerances(tiny, gamma, beta, code):
    from yolobn.bn.stats import stats_and_findings
    from yolobn.core.findings import Finding

    with torch.no_grad():
        tiny.b2.bn.weight.fill_(1.0)
        tiny.b2.bn.bias.fill_(0.0)
        tiny.b2.bn.weight[1] = gamma  # one channel carries the largest deviation
        tiny.b2.bn.bias[3] = beta
    layers, _, findings = stats_and_findings(tiny)
    r = layers.to_frame().set_index("name").loc["b2.bn"]
    assert bool(r["init_affine"]) == (code == "init_affine")
    assert bool(r["near_init"]) == (code == "near_init")
    dev = max(abs(np.float32(gamma) - 1.0), abs(np.float32(beta)))
    want = [Finding(code, "b2.bn", pytest.approx(dev, rel=1e-6))] if code else []
    assert [f for f in findings if f.name == "b2.bn"] == want
    assert {f.name for f in findings} <= {"b2.bn"}  # b1, seq.1 are far from init


def test_init_tolerances_are_thresholds(tiny):
    from yolobn.bn.stats import stats_and_findings

    with torch.no_grad():
        tiny.b2.bn.weight.fill_(1.0)
        tiny.b2.bn.bias.fill_(0.013)

    def codes(**kw):
        return [f.code for f in stats_and_findings(tiny, yolobn.Thresholds(**kw))[2]]

    assert codes() == ["near_init"]
    assert codes(near_init_tol=0.01) == []
    assert codes(init_tol=0.02) == ["init_affine"]


def test_demo_stride32_box_branch_is_at_init(demo_model_loaded):
    # README: gamma 1, beta ~1e-9..1e-6 in the stride-32 box branch (no gradient on 160 px images);
    # the stride-16 one moved by a few 1e-3 only.
    layers, _ = yolobn.bn_stats(demo_model_loaded)
    r = layers.set_index("name")
    assert list(r.index[r["init_affine"]]) == ["model.23.cv2.2.0.bn", "model.23.cv2.2.1.bn"]
    assert list(r.index[r["near_init"]]) == ["model.23.cv2.1.0.bn", "model.23.cv2.1.1.bn"]
    assert "(almost) no gradient reached this layer" in r.loc["model.23.cv2.2.0.bn", "findings"]


# ------------------------------------------------------------------- the same bits on every machine


def _bits(df) -> dict[str, bytes]:
    """Every column as bytes: float columns bit for bit (NaN included), others as their text."""
    return {
        c: df[c].to_numpy(dtype=np.float64).tobytes()
        if df[c].dtype.kind == "f"
        else "\n".join(map(str, df[c])).encode()
        for c in df.columns
    }


def _wide_model() -> nn.Module:
    # A BN wide enough (2**17 channels) for torch to split a reduction across threads, with one NaN
    # running_var so that its rows are described vector by vector: the case where torch's sums
    # differed with the thread count.
    n = 1 << 17
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(n)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(n) * 0.3 + 1)
        bn.bias.copy_(torch.randn(n))
        bn.running_mean.copy_(torch.randn(n))
        bn.running_var.copy_(torch.rand(n) * 3)
        bn.running_var[5] = float("nan")
    return nn.Sequential(nn.Conv2d(3, n, 1), bn).eval()


@pytest.mark.slow
def test_statistics_and_written_bytes_do_not_depend_on_the_thread_count(demo_model_loaded, tmp_path):
    from yolobn.report.html import report_files

    threads = torch.get_num_threads()
    out: dict[int, tuple] = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            wide = yolobn.bn_stats(_wide_model())
            ins = yolobn.inspect(demo_model_loaded)
            files = {p.name: text.encode() for p, text in report_files(ins, tmp_path).items()}
            out[n] = (_bits(wide[0]), _bits(wide[1]), _bits(ins.layers), _bits(ins.channels), files)
    finally:
        torch.set_num_threads(threads)
    for k, what in enumerate(("wide layers", "wide channels", "demo layers", "demo channels", "files")):
        diff = [c for c in out[1][k] if out[1][k][c] != out[2][k][c]]
        assert diff == [], (what, diff)


def _permuted(model: nn.Module, seed: int) -> nn.Module:
    """A copy whose every BN has its channels in another order (all four tensors alike)."""
    import copy

    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
            p = torch.randperm(bn.num_features, generator=g)
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[p].clone())
    return m


def test_per_layer_statistics_do_not_depend_on_the_channel_order(demo_model_loaded):
    layers, channels = yolobn.bn_stats(demo_model_loaded.model)
    for seed in (0, 1):
        ly, ch = yolobn.bn_stats(_permuted(demo_model_loaded.model, seed))
        got, want = _bits(ly), _bits(layers)
        assert [c for c in want if got[c] != want[c]] == []
        # the channel rows are the same rows, in the new order
        key = ["name", "gamma", "beta", "running_mean", "running_var"]
        a = channels.sort_values(key, kind="stable").drop(columns="channel").reset_index(drop=True)
        b = ch.sort_values(key, kind="stable").drop(columns="channel").reset_index(drop=True)
        assert _bits(a) == _bits(b)


CAPABILITY = """
import pickle, sys, torch, yolobn
ins = yolobn.inspect()
pickle.dump((torch.backends.cpu.get_cpu_capability(), ins.layers, ins.channels), open(sys.argv[1], "wb"))
"""


@pytest.mark.slow
def test_statistics_are_the_same_bits_on_a_cpu_without_avx(demo_model_loaded, tmp_path):
    # Another CPU, emulated: torch's DEFAULT kernels (no AVX2/AVX512, no fused multiply-add) in a fresh
    # process. Before the fix, quantiles and means differed in the last bits (issue 9).
    import os
    import pickle
    import subprocess
    import sys

    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "YOLO_VERBOSE": "False"}
    subprocess.run([sys.executable, "-c", CAPABILITY, str(tmp_path / "out.pkl")], env=env, check=True)
    capability, layers, channels = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert capability == "DEFAULT"
    ins = yolobn.inspect(demo_model_loaded)
    assert [c for c, v in _bits(ins.layers).items() if _bits(layers)[c] != v] == []
    assert _bits(ins.channels) == _bits(channels)
