"""BatchNorm implementations against nn.BatchNorm2d, and swap() on real Ultralytics models."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

import yolobn
from yolobn.core.errors import YolobnError
from yolobn.edit.impls import FixedPointBatchNorm2d, FrozenBatchNorm2d, ReferenceBatchNorm2d, fold_into_conv
from yolobn.edit.impls import parse as parse_impl
from yolobn.edit.swapping import swap


def _trained_bn(c: int = 6, momentum: float | None = 0.1, seed: int = 0) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c, eps=1e-3, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.1)
    return bn


@pytest.mark.parametrize("momentum", [0.1, 0.03, None])
def test_reference_matches_batchnorm_in_train_mode_including_running_stats(momentum):
    bn = _trained_bn(momentum=momentum)
    ref = ReferenceBatchNorm2d.from_batchnorm(bn)
    bn.train()
    ref.train()
    g = torch.Generator().manual_seed(1)
    for step in range(5):
        x = torch.randn(4, 6, 5, 7, generator=g) * (step + 1) + step
        torch.testing.assert_close(ref(x), bn(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ref.running_mean, bn.running_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ref.running_var, bn.running_var, rtol=1e-6, atol=1e-6)
        assert int(ref.num_batches_tracked) == int(bn.num_batches_tracked) == step + 1


def test_reference_matches_batchnorm_in_eval_mode_and_gradients():
    bn = _trained_bn().eval()
    ref = ReferenceBatchNorm2d.from_batchnorm(bn).eval()
    x = torch.randn(3, 6, 4, 4, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    torch.testing.assert_close(ref(x), bn(x2), rtol=1e-6, atol=1e-6)
    bn(x2).sum().backward()
    ref(x).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


def test_reference_with_another_eps_differs_exactly_where_expected():
    bn = _trained_bn().eval()
    ref = ReferenceBatchNorm2d.from_batchnorm(bn, eps=1e-5)
    x = torch.randn(2, 6, 3, 3)
    want = (x - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 1e-5)
    want = want * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(ref.eval()(x), want)
    assert not torch.allclose(ref(x), bn(x))


def test_frozen_and_folded_equal_eval_batchnorm():
    bn = _trained_bn().eval()
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(FrozenBatchNorm2d.from_batchnorm(bn)(x), bn(x), rtol=1e-5, atol=1e-5)
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
    inp = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(fold_into_conv(conv, bn)(inp), bn(conv(inp)), rtol=1e-5, atol=1e-5)


def test_fixed_point_error_is_bounded_by_half_a_step():
    bn = _trained_bn().eval()
    fp = FixedPointBatchNorm2d.from_batchnorm(bn)
    fp.bits = 8
    scale, _ = FrozenBatchNorm2d.from_batchnorm(bn).scale_shift()
    q = FixedPointBatchNorm2d.quantize(scale, 8)
    step = scale.abs().max() / 127
    assert (q - scale).abs().max() <= step / 2 + 1e-7
    assert len(torch.unique(torch.round(q / step))) <= 255
    x = torch.randn(2, 6, 4, 4)
    assert not torch.equal(fp(x), bn(x))  # it really rounds


def test_swap_leaves_the_original_untouched_and_replaces_modules():
    lm = yolobn.load("yolo11n.yaml")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    out = swap(lm, "reference")
    assert out.model is not lm.model
    n_bn = lm.meta.n_batchnorm
    assert sum(isinstance(m, ReferenceBatchNorm2d) for m in out.model.modules()) == n_bn
    assert sum(isinstance(m, nn.BatchNorm2d) for m in out.model.modules()) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in lm.model.modules()) == n_bn
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())
    # no forward was patched: every module's forward is its class's
    assert not any("forward" in vars(m) for m in out.model.modules())


@pytest.mark.parametrize(
    "spec,tol",
    [("reference", 1e-5), ("frozen", 1e-5), ("folded", 1e-5), ("lowp:dtype=bf16", None), ("identity", None)],
)
def test_swapped_demo_outputs(spec, tol, demo_path):
    lm = yolobn.load(demo_path)
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = lm.model(x)[0]
        got = swap(lm, spec).model(x)[0]
    diff = ((got - base).abs().max() / base.abs().max()).item()  # relative to the output range
    if tol is not None:
        assert diff < tol, diff
    else:
        assert diff > 1e-4, diff  # a real change (reference/frozen/folded stay near 1e-7), not a no-op


def test_folded_replaces_bn_by_identity_and_biases_the_conv():
    lm = yolobn.load("yolo11n.yaml")
    out = swap(lm, "folded")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in out.model.modules()) == 0
    assert out.swap.folded and len(out.swap.folded) == lm.meta.n_batchnorm
    assert out.model.model[0].conv.bias is not None and isinstance(out.model.model[0].bn, nn.Identity)


def test_layer_selection():
    lm = yolobn.load("yolo11n.yaml")
    out = swap(lm, "identity", layers=["model.2.*", "SPPF"])
    ids = {r for r in out.swap.replaced}
    assert ids and all(n.startswith(("model.2.", "model.9.")) for n in ids)
    assert isinstance(out.model.model[0].bn, nn.BatchNorm2d)
    with pytest.raises(YolobnError, match="matches none"):
        swap(lm, "identity", layers=["nothing*"])


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("nope", "unknown implementation"),
        ("reference:eps", "not key=value"),
        ("reference:eps=abc", "not a number"),
        ("reference:bits=3", "unknown option"),
        ("lowp:dtype=int4", "use one of fp16"),
        ("fixedpoint:bits=1", "between 2 and 32"),
        ("no_such_module_xyz.sub:Cls", "cannot import"),
        ("torch.nn:NoSuchClass", "has no attribute"),
        ("torch:tensor", "not an nn.Module subclass"),
    ],
)
def test_bad_impl_specs_are_one_line_errors(spec, msg):
    with pytest.raises(YolobnError, match=msg) as ei:
        s = parse_impl(spec)
        if s.name == "fixedpoint":
            swap(nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)), s)
    assert "\n" not in str(ei.value)


def test_custom_class_from_file(tmp_path):
    f = tmp_path / "mybn.py"
    f.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Doubling(nn.Module):
                @classmethod
                def from_batchnorm(cls, bn):
                    m = cls(); m.bn = bn; return m
                def forward(self, x):
                    return 2 * self.bn(x)

            class Broken(nn.Module):
                def __init__(self, *a, **k):
                    raise RuntimeError("nope")

            class Squash(nn.Module):
                @classmethod
                def from_batchnorm(cls, bn):
                    return cls()
                def forward(self, x):
                    return x.mean(1)  # drops the channel axis: wrong shape
            """
        )
    )
    net = nn.Sequential(nn.Conv2d(1, 2, 1), _trained_bn(2)).eval()
    out = swap(net, f"{f}:Doubling")
    x = torch.randn(1, 1, 3, 3)
    torch.testing.assert_close(out(x), 2 * net(x))
    with pytest.raises(YolobnError, match="building Broken from a BatchNorm failed"):
        swap(net, f"{f}:Broken")
    with pytest.raises(YolobnError, match="must keep the shape"):
        swap(net, f"{f}:Squash")
    with pytest.raises(YolobnError, match="is not a file"):
        parse_impl(f"{tmp_path / 'missing.py'}:X")


def test_parsing_a_custom_spec_names_it_and_only_the_edit_layer_imports_it(tmp_path):
    from yolobn.core.registry import parse_impl as name_only

    f = tmp_path / "marker_impl.py"
    marker = tmp_path / "imported"
    f.write_text(f"open({str(marker)!r}, 'w').close()\nimport torch\nNorm = torch.nn.BatchNorm2d\n")
    impl = name_only(f"{f}:Norm")
    assert impl.is_custom and impl.custom is None and impl.kind == "layer" and not marker.exists()
    assert parse_impl(impl).custom is not None and marker.exists()
