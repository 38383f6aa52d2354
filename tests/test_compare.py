"""yolobn compare: planted changes with closed-form answers, identical tensors give exactly zero,
unmatched layers are listed, several checkpoints give an audit."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

import yolobn
from tests.models import TinyNet, plant
from tests.run_main import run_main
from yolobn.bn.comparison import audit, compare


def test_identical_tensors_with_different_metadata_give_exactly_zero(demo_path, tmp_path, capsys):
    """last.pt / best.pt: same tensors, other date and metadata."""
    copy = tmp_path / "best.pt"
    yolobn.save_checkpoint(yolobn.load(), copy)  # new date, version and a yolobn record
    c = compare(str(demo_path), str(copy))
    s = c.summary()
    assert s["identical"] and s["changed_layers"] == 0 and s["change_mean"] == 0.0
    assert (
        (c.channels[["d_gamma", "d_beta", "d_running_mean", "d_running_var", "kl_in", "kl_out"]] == 0)
        .all()
        .all()
    )
    assert s["transitions"] == {"newly_dead": 0, "revived": 0, "dead_both": 0}
    code, out, _ = run_main(["compare", str(demo_path), str(copy)], capsys)
    assert code == 0 and "none: every BN tensor is identical" in out


def test_planted_changes_have_closed_form_answers():
    a = yolobn.load(plant(TinyNet()))
    m = plant(TinyNet())
    with torch.no_grad():
        m.b1.bn.weight[3] = 2.0  # healthy channel 3: gamma 1 -> 2 (var 1, eps 1e-3)
        m.b1.bn.weight[0] = 1.0  # channel 0 was constant (gamma 0): revived
        m.b1.bn.weight[6] = 0.0  # channel 6 was healthy: newly dead (constant)
        m.b1.bn.running_mean[7] = 0.0  # channel 7: mean -1 -> 0 (var 0.25)
        m.b1.bn.running_var[5] = 4.0  # channel 5: var 1 -> 4, mean 0 (KL is not symmetric here)
    c = compare(a, yolobn.load(m))
    ch = c.channels.set_index(["name", "channel"])
    assert ch.loc[("b1.bn", 3), "d_gamma"] == 1.0
    r = 4.0  # out std = |gamma| sqrt(var / (var + eps)): doubling gamma doubles it, the variance ratio is 4
    assert ch.loc[("b1.bn", 3), "kl_out"] == pytest.approx(0.5 * (r - 1 - math.log(r)), rel=1e-6)
    assert ch.loc[("b1.bn", 3), "kl_in"] == 0.0
    v0 = 0.25 + 1e-3  # KL(N(0, v0) || N(-1, v0)) = (0 - (-1))^2 / (2 v0)
    assert ch.loc[("b1.bn", 7), "kl_in"] == pytest.approx(1 / (2 * v0), rel=1e-6)
    # KL(B || A): the new checkpoint's statistics described by the old ones (0.3137 the other way round)
    r5 = (4.0 + 1e-3) / (1.0 + 1e-3)
    assert ch.loc[("b1.bn", 5), "kl_in"] == pytest.approx(0.5 * (r5 - 1 - math.log(r5)), rel=1e-6)
    assert ch.loc[("b1.bn", 0), "transition"] == "revived"
    assert ch.loc[("b1.bn", 6), "transition"] == "newly dead"
    assert ch.loc[("b1.bn", 1), "transition"] == "dead in both"  # var 0 in both
    untouched = ch.drop(index=[("b1.bn", k) for k in (0, 3, 5, 6, 7)])
    assert (untouched[["kl_in", "kl_out"]] == 0).all().all()
    s = c.summary()
    # dead in both: b1.bn channels 1 (var 0) and 2 (off), seq.1 channel 3 (off before ReLU)
    assert s["transitions"] == {"newly_dead": 1, "revived": 1, "dead_both": 3}
    assert s["most_changed"][0]["name"] == "b1.bn" and s["changed_layers"] == 1


class Wider(nn.Module):
    """TinyNet's first block, then a BN of another width and one with another name."""

    def __init__(self) -> None:
        super().__init__()
        base = TinyNet()
        self.b1 = base.b1
        self.b2 = base.b2
        self.b2.bn = nn.BatchNorm2d(4)
        self.extra = nn.Sequential(nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6))


def test_unmatched_layers_are_listed_not_a_crash():
    a, b = yolobn.load(plant(TinyNet())), yolobn.load(Wider())
    with torch.no_grad():
        b.model.b2.bn.weight.zero_()
    b.model.b2.bn = nn.BatchNorm2d(5)  # same name, other width
    c = compare(a, yolobn.load(b.model))
    assert c.mismatched == ["b2.bn"] and c.only_a == ["seq.1"] and c.only_b == ["extra.1"]
    assert list(c.layers["name"]) == ["b1.bn"]


def test_audit_of_several_models_and_the_cli(tmp_path, capsys, demo_path):
    res = audit([yolobn.load(plant(TinyNet())), str(demo_path), "yolo11n-cls.yaml"])
    t = res.table
    assert list(t["bn_layers"]) == [3, 81, 39] and len(res) == 3 and len(res.inspections) == 3
    assert list(t["source"])[1:] == [str(demo_path), "yolo11n-cls.yaml"]  # as given, not resolved
    assert json.loads(res.to_json())["audit"][2]["bn_layers"] == 39 and "<table" in res._repr_html_()
    assert t.loc[0, "dead"] == 4 and t.loc[2, "eps"] == "1e-05" and t.loc[1, "eps"] == "0.001"
    code, out, _ = run_main(
        ["compare", str(demo_path), "yolo11n-cls.yaml", "--csv", str(tmp_path / "a.csv")], capsys
    )
    assert code == 0 and "different architectures" in out
    assert list(pd.read_csv(tmp_path / "a.csv")["bn_layers"]) == [81, 39]


def test_cli_files_and_errors(tmp_path, capsys, demo_path):
    m = yolobn.load()
    with torch.no_grad():
        m.model.model[0].bn.weight.mul_(3)
    b = tmp_path / "b.pt"
    yolobn.save_checkpoint(m, b)
    files = [
        "--csv",
        str(tmp_path / "l.csv"),
        "--channels-csv",
        str(tmp_path / "c.csv"),
        "--json",
        str(tmp_path / "c.json"),
    ]
    code, out, _ = run_main(["compare", str(demo_path), str(b), *files], capsys)
    assert code == 0 and "model.0.bn" in out
    layers = pd.read_csv(tmp_path / "l.csv")
    assert layers.loc[layers["change"] > 0, "name"].tolist() == ["model.0.bn"]
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["summary"]["most_changed"][0]["name"] == "model.0.bn"
    assert len(pd.read_csv(tmp_path / "c.csv")) == 7688
    code, _, err = run_main(["compare", str(demo_path)], capsys)
    assert code == 2 and "at least two" in err
    code, _, err = run_main(["compare", str(demo_path), str(tmp_path / "nope.pt")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_the_one_gaussian_kl_in_closed_form():
    from yolobn.core.gauss import gaussian_kl

    kl = gaussian_kl([0.0, 1.0, 2.0], [4.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0])
    assert kl[0] == pytest.approx(0.5 * (4 - 1 - math.log(4)))  # 0.807; reversed it would be 0.318
    assert kl[1] == 0.0  # equal Gaussians: exactly zero
    assert kl[2] == pytest.approx(2.0)  # (2 - 0)^2 / 2
