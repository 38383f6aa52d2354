"""Data-free dead-channel criteria on planted channels with closed-form answers."""

from __future__ import annotations

import math

import pytest

import yolobn
from tests.models import EPS, PLANTED


def test_planted_reasons_exact(tiny):
    _, ch = yolobn.bn_stats(tiny)
    bn1 = ch[ch["name"] == "b1.bn"].set_index("channel")
    assert list(bn1["dead_reason"]) == [row[4] for row in PLANTED]
    assert list(bn1["eps_dominated"]) == [row[5] for row in PLANTED]
    assert list(bn1["dead"]) == [row[4] != "" for row in PLANTED]


def test_off_needs_a_floored_activation(tiny):
    _, ch = yolobn.bn_stats(tiny)
    bn2 = ch[ch["name"] == "b2.bn"]
    assert bn2["act"].eq("Identity").all()
    assert not bn2["off"].any()  # beta -5 but nothing clips it
    seq = ch[ch["name"] == "seq.1"]
    assert list(seq["off"]) == [False, False, False, True]  # ReLU after, beta -10
    assert list(seq["dead_reason"]) == ["", "", "", "off"]


def test_thresholds_are_tunable(tiny):
    # At off_sigma 1, channel 5 (beta -2, std ~1) becomes off; at 6, channel 2 (beta -5) is no longer off.
    _, ch = yolobn.bn_stats(tiny, yolobn.Thresholds(off_sigma=1.0))
    assert ch[(ch["name"] == "b1.bn")]["off"].tolist()[5]
    _, ch = yolobn.bn_stats(tiny, yolobn.Thresholds(off_sigma=6.0))
    assert not ch[(ch["name"] == "b1.bn")]["off"].tolist()[2]
    # eps_factor 0: nothing is eps-dominated.
    _, ch = yolobn.bn_stats(tiny, yolobn.Thresholds(eps_factor=0.0))
    assert not ch["eps_dominated"].any()
    _, ch = yolobn.bn_stats(tiny, yolobn.Thresholds(const_std=2.0))
    # channel 7 has the largest output std, 2 * sqrt(0.25 / 0.251) = 1.996: constant at 2, not at 1.99.
    assert ch[ch["name"] == "b1.bn"]["constant"].all()
    _, ch = yolobn.bn_stats(tiny, yolobn.Thresholds(const_std=1.99))
    assert ch[ch["name"] == "b1.bn"]["constant"].tolist() == [True] * 7 + [False]


def test_constant_boundary_closed_form(tiny):
    # channel 7: |gamma| * sqrt(var / (var + eps)) = 2 * sqrt(0.25 / 0.251)
    _, ch = yolobn.bn_stats(tiny)
    std7 = ch[(ch["name"] == "b1.bn") & (ch["channel"] == 7)]["out_std"].item()
    assert std7 == pytest.approx(2 * math.sqrt(0.25 / (0.25 + EPS)), rel=1e-12)


def test_dead_channels_lists_reasons(tiny):
    dead = yolobn.dead_channels(tiny)
    got = {(r.name, r.channel, r.reason) for r in dead.itertuples()}
    assert got == {
        ("b1.bn", 0, "constant"),
        ("b1.bn", 1, "constant"),
        ("b1.bn", 2, "off"),
        ("seq.1", 3, "off"),
    }


def test_invalid_thresholds_rejected():
    with pytest.raises(ValueError, match="const_std"):
        yolobn.Thresholds(const_std=-1)
    with pytest.raises(ValueError, match="eps_share"):
        yolobn.Thresholds(eps_share=2)
