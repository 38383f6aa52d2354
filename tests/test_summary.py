"""The inspection summary: findings as records (never parsed back from their words), eps per model,
and the terminal panel that shows them."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
from rich.console import Console

import yolobn
from yolobn.core.findings import CODES, Finding, describe, join
from yolobn.report.console import summary_panel


def panel_text(result) -> str:
    console = Console(width=250, record=True)
    console.print(summary_panel(result.meta.to_dict(), result.summary(), result.thresholds.to_dict()))
    return console.export_text()


@pytest.fixture
def sick(tiny):
    """TinyNet with one finding of several kinds: NaN and a negative var in b2.bn, seq.1 eps-dominated
    (and so an extreme scale), b2.bn's affine at init."""
    with torch.no_grad():
        tiny.b2.bn.running_var[2] = float("nan")
        tiny.b2.bn.running_var[0] = -0.5
        tiny.b2.bn.weight.fill_(1.0)
        tiny.b2.bn.bias.fill_(0.0)
        tiny.seq[1].running_var.fill_(1e-6)
    return tiny


def test_findings_are_records(sick):
    result = yolobn.inspect(sick)
    got = result.findings()
    assert [(f.code, f.name) for f in got] == [
        ("init_affine", "b2.bn"),
        ("non_finite", "b2.bn"),
        ("negative_var", "b2.bn"),
        ("eps_dominated", "seq.1"),
        ("extreme_scale", "seq.1"),
    ]
    assert got[0].value == 0.0 and got[1].value == ("running_var",) and got[3].value == 1.0
    assert got[4].value == pytest.approx(1 / (1e-6 + 1e-5) ** 0.5, rel=1e-6)
    # the text column is written from the records, layer by layer
    by_layer = result.layers.set_index("name")["findings"]
    for name in by_layer.index:
        assert by_layer[name] == join([f for f in got if f.name == name])
    assert by_layer["b1.bn"] == ""
    s = result.summary()
    assert s["findings"] == [{"name": f.name, "finding": describe(f)} for f in got]
    assert s["findings_by_kind"] == dict(sorted(Counter(f.code for f in got).items()))


def test_kind_comes_from_the_code_not_the_words(sick):
    # A layer whose name reads like another kind's words: parsing the text back would count it twice.
    result = yolobn.inspect(sick)
    assert describe(Finding("all_dead", "model.untrained.eps-dominated.bn")) == "all channels dead"
    kinds = result.summary()["findings_by_kind"]
    assert kinds == {
        "eps_dominated": 1,
        "extreme_scale": 1,
        "init_affine": 1,
        "negative_var": 1,
        "non_finite": 1,
    }
    assert set(kinds) <= set(CODES)
    with pytest.raises(ValueError, match="unknown finding code"):
        Finding("bogus", "x")


def test_layer_selection_keeps_only_its_findings(sick):
    result = yolobn.inspect(sick, select=["seq.*"])
    assert {f.name for f in result.findings()} == {"seq.1"}
    assert result.summary()["findings_by_kind"] == {"eps_dominated": 1, "extreme_scale": 1}


def test_every_code_has_words():
    values = {"non_finite": ("gamma", "running_var"), "eps_dominated": 0.75, "extreme_scale": 512.0}
    words = {c: describe(Finding(c, "m.bn", values.get(c, 1e-7))) for c in CODES}
    assert words["non_finite"] == "non-finite values in gamma, running_var"
    assert words["eps_dominated"] == "75% of channels eps-dominated"
    assert words["extreme_scale"] == "extreme scale |gamma/sqrt(var+eps)| = 512"
    assert words["init_affine"].startswith("gamma and beta still at init (1, 0) (max deviation 1e-07)")
    assert len(set(words.values())) == len(CODES)


def test_eps_per_model_in_summary_json_and_panel(tiny):
    # TinyNet: b1.bn and b2.bn eps 1e-3, seq.1 PyTorch's default 1e-5
    result = yolobn.inspect(tiny)
    assert result.summary()["eps"] == {"1e-05": 1, "0.001": 2}
    assert list(result.summary()["eps"]) == ["1e-05", "0.001"]  # smallest first
    assert json.loads(result.to_json())["summary"]["eps"] == {"1e-05": 1, "0.001": 2}
    assert "eps           1e-05 ×1 · 0.001 ×2" in panel_text(result)


def test_eps_of_a_detector_and_a_classifier(demo_model_loaded):
    demo = yolobn.inspect(demo_model_loaded)
    assert demo.summary()["eps"] == {"0.001": 81}
    assert "eps           0.001 (all 81 layers)" in panel_text(demo)
    cls = yolobn.inspect("yolo11n-cls.yaml")  # Ultralytics' classifiers keep PyTorch's 1e-5
    assert cls.summary()["eps"] == {"1e-05": 39}
    assert "eps           1e-05 (all 39 layers)" in panel_text(cls)


def test_panel_lists_the_findings_by_kind(demo_model_loaded):
    text = panel_text(yolobn.inspect(demo_model_loaded))
    assert "findings      init affine ×2, near init ×2" in text
    assert "model.23.cv2.2.0.bn: gamma and beta still at init (1, 0)" in text


def test_panel_says_when_the_family_is_unknown(tiny):
    text = panel_text(yolobn.inspect(tiny))
    assert "family        unknown" in text


def test_prediction_is_precision_and_recall_not_agreement():
    from yolobn.report.console import observed_panel
    from yolobn.run.observation import prediction_scores

    # the data-free rules found none of 130 observed-dead channels: an "agreement" over all channels
    # would read 96%; recall says 0%
    conf = {"both": 0, "predicted_only": 0, "observed_only": 130, "neither": 3070}
    p = prediction_scores(conf)
    assert p["recall"] == 0.0 and p["precision"] != p["precision"]  # NaN: nothing predicted dead
    assert prediction_scores({"both": 3, "predicted_only": 1, "observed_only": 9, "neither": 100}) == {
        "precision": 0.75,
        "recall": 0.25,
    }
    none_observed = prediction_scores({"both": 0, "predicted_only": 2, "observed_only": 0, "neither": 5})
    assert math.isnan(none_observed["recall"]) and none_observed["precision"] == 0.0
    summary = {
        "images": 96,
        "imgsz": 160,
        "observed_dead": 130,
        "observed_dead_share": 130 / 3200,
        "observed_dead_by_reason": {"flat": 0, "never positive": 130},
        "confusion": conf,
        "prediction": p,
        "drift_mean": 0.04,
        "most_drifted": [],
        "layers_not_reached": [],
    }
    console = Console(width=250, record=True)
    console.print(observed_panel(summary, {"dead_std": 1e-3, "min_positive": 0.0}))
    text = console.export_text()
    assert (
        "data-free prediction: recall 0.0% of 130 observed-dead channels, precision - (none predicted dead)"
        in text
    )
    assert "agreement" not in text
