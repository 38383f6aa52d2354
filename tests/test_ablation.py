"""Ablation: chosen channels constant after the activation, every other channel bit-identical, a
truly constant channel reproduced exactly; through swap on the demo model."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

import yolobn
from tests.models import TinyNet, plant
from yolobn.core.errors import YolobnError
from yolobn.edit.ablation import AblationPlan, ablate, constants, plan_dead, plan_from


def _images(d, n=4):
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        px = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(px).save(d / f"{i}.png")
    return d


def _x():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_only_the_chosen_channels_change_and_become_constant():
    m = yolobn.load(plant(TinyNet()))
    ins = yolobn.inspect(m)
    plan = plan_from({"b1.bn": [3, 6]}, ins)
    ab = ablate(m, plan)
    feats = {}

    def grab(name):
        return lambda mod, i, o: feats.__setitem__(name, o.detach())

    m.model.b1.register_forward_hook(grab("orig"))
    ab.b1.register_forward_hook(grab("abl"))
    with torch.no_grad():
        m.model(_x())
        ab(_x())
    o, a = feats["orig"], feats["abl"]
    keep = [c for c in range(8) if c not in (3, 6)]
    assert torch.equal(o[:, keep], a[:, keep])  # bit-identical
    for c in (3, 6):
        assert torch.all(a[:, c] == a[0, c, 0, 0])
    # data-free constants: act(beta) after the SiLU; channel 6 has beta -1: SiLU(-1) = -0.2689, not 0
    assert a[0, 6, 0, 0].item() == pytest.approx(-1 / (1 + math.e), rel=1e-6)
    assert not any(isinstance(x, type(ab.b1.act)) and x is m.model.b1.act for x in ab.modules())  # a copy


def test_a_truly_constant_channel_gives_exactly_the_original_output(tmp_path):
    m = yolobn.load(plant(TinyNet()))  # b1.bn channel 0: gamma 0, so the BN output is beta whatever the input
    for ins in (yolobn.inspect(m), yolobn.observe(m, [str(_images(tmp_path))], imgsz=32)):
        ab = ablate(m, plan_from({"b1.bn": [0]}, ins))
        with torch.no_grad():
            assert torch.equal(m.model(_x()), ab(_x()))


def test_observed_constants_are_the_post_activation_means(tmp_path):
    m = yolobn.load(plant(TinyNet()))
    ins = yolobn.observe(m, [str(_images(tmp_path))], imgsz=32)
    c = constants(ins)
    ch = ins.channels[ins.channels["name"] == "b1.bn"]
    healthy = ch["channel"] == 3
    assert c["b1.bn"][3] == pytest.approx(float(ch.loc[healthy, "obs_post_mean"].iloc[0]), rel=0, abs=0)
    plan = plan_dead(ins, "observed")
    assert plan.source == "observed" and plan.count == int(ins.channels["obs_dead"].sum())
    with pytest.raises(YolobnError, match="needs the model observed"):
        plan_dead(yolobn.inspect(m), "observed")


def test_the_original_model_is_untouched():
    m = yolobn.load(plant(TinyNet()))
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    ablate(m, plan_from({"b1.bn": [1, 2], "seq.1": [3]}, yolobn.inspect(m)))
    assert all(torch.equal(before[k], v) for k, v in m.model.state_dict().items())
    assert not any(type(x).__name__ == "Ablated" for x in m.model.modules())


def test_empty_plan_changes_nothing():
    m = yolobn.load(plant(TinyNet()))
    with torch.no_grad():
        assert torch.equal(m.model(_x()), ablate(m, AblationPlan())(_x()))


@pytest.mark.slow
def test_ablate_through_swap_on_the_demo(demo_model_loaded):
    sw = yolobn.swap(demo_model_loaded, "ablate:dead=datafree")
    assert sw.swap.detail["channels_ablated"] == 0  # the demo has no data-free dead channels
    sw = yolobn.swap(demo_model_loaded, "ablate:dead=observed,max=8,imgsz=64")
    n = sw.swap.detail["channels_ablated"]
    assert n > 0 and sw.swap.detail["ablated_share"] == pytest.approx(n / 7688)
    assert sum(type(x).__name__ == "Ablated" for x in sw.model.modules()) == len(sw.swap.replaced)


def test_report_with_images_and_data_says_what_ablating_the_observed_dead_costs(tmp_path, capsys):
    import json

    from yolobn.cli import main

    out = tmp_path / "r"
    assert main(["report", "--images", "--max-images", "16", "--data", "shapes", "-o", str(out), "-q"]) == 0
    ab = json.loads((out / "summary.json").read_text())["observed"]["summary"]["ablation"]
    obs = json.loads((out / "summary.json").read_text())["observed"]["summary"]
    assert ab["channels"] == obs["observed_dead"] > 0 and ab["metric"] == "metrics/mAP50-95(B)"
    assert ab["delta"] == pytest.approx(ab["ablated"] - ab["baseline"], abs=2e-7)
    html = (out / "report.html").read_text()
    assert f"{ab['channels']:,} channels observed dead" in html and f"{ab['ablated']:.4f}" in html
    capsys.readouterr()
    assert main(["report", "--data", "shapes", "-o", str(tmp_path / "x")]) == 2
    assert "needs --images" in capsys.readouterr().err and not (tmp_path / "x").exists()
