"""Experiment files: checked before any work, then one results table and a sensitivity ranking."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from yolobn.cli import main
from yolobn.core.errors import YolobnError
from yolobn.sweeps.experiment import read_config


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOBN_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "text,msg",
    [
        ("variants: []", "non-empty list"),
        ("variants: [{layers: [x]}]", "needs an 'impl'"),
        ("variants: [{impl: nope}]", "unknown implementation"),
        ("variants: [{impl: reference, colour: red}]", "unknown key"),
        ("modle: x.pt\nvariants: [reference]", "unknown key(s) modle"),
        ("model: best.pt\nvariants: [reference]", "'data' is required"),
        ("sensitivity: {top: 3}\nvariants: [reference]", "needs an 'impl'"),
        ("variants: [reference\n  - x: :", "not valid YAML"),
    ],
)
def test_bad_experiment_files(tmp_path, text, msg):
    f = tmp_path / "e.yaml"
    f.write_text(text)
    with pytest.raises(YolobnError) as ei:
        read_config(f)
    assert msg in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.slow
def test_experiment_end_to_end(tmp_path, cache, capsys, no_stray_runs):
    f = tmp_path / "e.yaml"
    f.write_text(
        "data: shapes\nvariants:\n  - reference\n  - {impl: identity, layers: [head], name: no-head-bn}\n"
        "sensitivity: {impl: 'reference:eps=0.5', layers: ['model.0.bn', 'model.23.cv2.0.0.bn'], top: 2}\n"
    )
    out = tmp_path / "out"
    assert main(["experiment", str(f), "-o", str(out)]) == 0
    res = pd.read_csv(out / "results.csv")
    assert list(res["variant"]) == ["baseline (nn.BatchNorm2d)", "reference", "no-head-bn"]
    delta = dict(zip(res["variant"], res["mAP50-95(B) delta"], strict=True))
    assert abs(delta["reference"]) <= 0.001 and delta["no-head-bn"] < -0.05
    sens = pd.read_csv(out / "sensitivity.csv")
    assert sorted(sens["layer"]) == ["model.0.bn", "model.23.cv2.0.0.bn"]
    assert list(sens["delta"]) == sorted(sens["delta"])  # ranked, worst first
    doc = json.loads((out / "results.json").read_text())
    assert doc["metric"] == "metrics/mAP50-95(B)" and len(doc["results"]) == 3
    html = (out / "experiment.html").read_text()
    assert 'id="plot-sensitivity"' in html and "http" not in html.replace("http-equiv", "")
    assert "most sensitive" in capsys.readouterr().out
    no_stray_runs()  # the validator's save_dir was private, and is gone


def test_experiment_bad_file_writes_nothing(tmp_path, capsys):
    f = tmp_path / "e.yaml"
    f.write_text("variants: [{impl: nope}]")
    out = tmp_path / "out"
    assert main(["experiment", str(f), "-o", str(out)]) == 2
    assert "unknown implementation" in capsys.readouterr().err
    assert not out.exists()
