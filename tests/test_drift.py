"""Drift wherever the answer needs it (issue 20 §2): the committed broken fine-tune
(tests/fixtures/broken_finetune, made by scripts/make_broken_finetune.py) must be caught by
``compare --images``, ``activations`` and ``report --run``, each pointing to ``yolobn recalibrate``,
and recalibrating it must really recover accuracy. The verdict rules themselves on planted numbers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest

import yolobn
from tests.run_main import run_main
from yolobn.bn.answers import drift_jump, training_verdicts
from yolobn.integrations.tracking import read_run
from yolobn.report.run_page import JUMPED, epoch_drift, run_grids

FIXTURE = Path("tests/fixtures/broken_finetune")
LAST = FIXTURE / "weights" / "last.pt"
METRIC = "metrics/mAP50-95(B)"


def _train_images() -> Path:
    return yolobn.shapes_dataset().parent / "images" / "train"


def test_drift_jump_on_planted_epochs():
    assert drift_jump([0, 1, 2, 3], [0.05, 31.0, 1.3, 0.96]) == 1  # crossed drift_act (0.5) from below
    assert drift_jump([1, 2, 3], [0.05, 0.06, 0.3]) == 3  # ×5 and above drift_look (0.1)
    assert drift_jump([1, 2, 3], [0.05, 0.06, 0.09]) is None  # ×1.5 and below drift_look: no jump
    assert drift_jump([1, 2, 3], [0.6, 0.7, 0.8]) is None  # high from the start: nothing jumped
    assert drift_jump([0, 1, 2], [math.nan, 0.05, 0.9]) == 2  # unmeasured epochs are skipped
    assert drift_jump([1], [5.0]) is None


def test_training_verdicts_on_planted_epochs():
    names = ["model.1.bn"] * 3
    (v,) = training_verdicts([0, 1, 2], [0.04, 0.9, 0.8], [0.2, 9.0, 8.0], names, 32, "run/weights/last.pt")
    assert (
        v.status == "act" and "jumped at epoch 1 (0.04 → 0.9)" in v.evidence and v.layers == ("model.1.bn",)
    )
    assert v.next is not None and v.next.startswith("yolobn recalibrate run/weights/last.pt --images IMAGES")
    (ok,) = training_verdicts([0, 1], [0.03, 0.04], [0.1, 0.2], names[:2], 32, "last.pt")
    assert ok.status == "ok" and ok.next is None and "jumped" not in ok.evidence
    (unknown,) = training_verdicts([1, 2], [math.nan, math.nan], [math.nan] * 2, ["", ""], None, "last.pt")
    assert unknown.status == "look" and "not measured" in unknown.evidence
    assert unknown.next is not None and unknown.next.startswith("yolobn activations last.pt")


def _observed(cmp, drift_a, drift_b, effect=None):
    """``cmp`` with planted per-layer drift, as ``compare_images`` would attach it."""
    ly = cmp.layers.assign(drift_a=drift_a, drift_b=drift_b)
    ly["drift_rise"] = ly["drift_b"] - ly["drift_a"]
    obs = {
        "sources": ["imgs/"],
        "images": 8,
        "files": [],
        "skipped": [],
        "imgsz": 160,
        "batch": 16,
        "device": "cpu",
        "drift_mean_a": float(ly["drift_a"].mean()),
        "drift_mean_b": float(ly["drift_b"].mean()),
        "effect": effect,
    }
    return dataclasses.replace(cmp, layers=ly, observed=obs)


def test_comparison_drift_verdict_on_planted_drift(demo_model_loaded):
    from yolobn.bn.answers import comparison_verdicts

    cmp = yolobn.compare(demo_model_loaded, str(LAST))  # data-free: the BN parameters only
    n = len(cmp.layers)
    low, high = [0.03] * n, [0.03] * (n - 1) + [3.0]  # one layer past drift_layer_act (2.0)
    names = list(cmp.layers["name"])

    def drift_verdict(c):
        return [v for v in comparison_verdicts(c, "a.pt", "b.pt") if v.key == "drift"][0]

    ok = drift_verdict(_observed(cmp, low, low))
    assert ok.status == "ok" and ok.next is None
    act = drift_verdict(_observed(cmp, low, high))
    assert act.status == "act" and act.layers == (names[-1],) and "not measured" in act.evidence
    assert act.next == "yolobn recalibrate b.pt --images imgs/ -o b-recal.pt --data DATA"
    both = drift_verdict(_observed(cmp, high, high))  # A drifts as much: the images, not B's training
    assert both.status == "look" and "A drifts as much" in both.evidence
    e = {"data": "data.yaml", "metric": METRIC, "imgsz": 160, "a": 0.63, "b": 0.06, "b_recalibrated": 0.41}
    measured = drift_verdict(_observed(cmp, low, high, e))
    assert measured.status == "act" and "0.060 → 0.410 (+0.350; A 0.630)" in measured.evidence
    assert measured.next == "yolobn recalibrate b.pt --images imgs/ -o b-recal.pt --data data.yaml"
    useless = drift_verdict(_observed(cmp, low, high, {**e, "b_recalibrated": 0.05}))
    assert useless.status == "look" and useless.next is None and "weights themselves" in useless.evidence


@pytest.mark.slow
def test_fixture_compare_images_points_to_recalibrate(tmp_path, capsys, demo_path):
    images = str(_train_images())
    js, csv, html = tmp_path / "c.json", tmp_path / "c.csv", tmp_path / "c.html"
    argv = ["compare", str(demo_path), str(LAST), "--images", images, "--max-images", "16", "--top", "3"]
    code, out, err = run_main([*argv, "--json", str(js), "--csv", str(csv), "--html", str(html)], capsys)
    assert code == 0, err
    assert "yolobn recalibrate tests/fixtures/broken_finetune/weights/last.pt --images" in out.replace(
        "\n", " "
    )
    doc = json.loads(js.read_text())
    drift = next(v for v in doc["verdicts"] if v["key"] == "drift")
    assert drift["status"] == "act" and drift["next"].startswith(
        f"yolobn recalibrate {LAST} --images {images}"
    )
    assert "model.1.bn" in drift["layers"] and "not measured" in drift["evidence"]
    change = next(v for v in doc["verdicts"] if v["key"] == "change")
    assert change["status"] == "ok"  # the BN parameters hardly moved: only the images show it
    s = doc["summary"]["drift"]
    assert s["images"] == 16 and s["mean_b"] >= 0.5 and s["mean_b"] > s["mean_a"]
    assert doc["observed"]["images"] == 16 and doc["observed"]["effect"] is None
    ly = pd.read_csv(csv)
    assert {"drift_a", "drift_b", "drift_rise"} <= set(ly.columns)
    assert (
        ly["drift_rise"] - (ly["drift_b"] - ly["drift_a"])
    ).abs().max() < 1e-5  # the CSV keeps 7 significant digits
    top = ly.loc[ly["drift_rise"].idxmax()]
    assert top["name"] == "model.1.bn" and top["drift_rise"] > 2.0
    page = html.read_text()
    assert "Drift on the images" in page and "drift rise" in page and "yolobn recalibrate" in page


def test_fixture_activations_points_to_recalibrate(tmp_path, capsys):
    code, out, err = run_main(
        [
            "activations",
            str(LAST),
            "--images",
            str(_train_images()),
            "--max-images",
            "16",
            "--json",
            str(tmp_path / "a.json"),
        ],
        capsys,
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "a.json").read_text())
    drift = next(v for v in doc["verdicts"] if v["key"] == "drift")
    assert drift["status"] == "act" and drift["next"].startswith(f"yolobn recalibrate {LAST}")
    assert "yolobn recalibrate" in out


def test_fixture_report_run_is_red_at_the_jump(tmp_path, capsys):
    code, out, err = run_main(["report", "--run", str(FIXTURE), "-o", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert flat.startswith("answers act the running statistics fit the training images")
    assert "jumped at epoch 1" in flat and f"yolobn recalibrate {LAST} --images IMAGES" in flat
    d = epoch_drift(run_grids(read_run(FIXTURE)))
    assert d.jump == 1 and d.images == 32 and d.mean[0] < 0.1 and d.mean[-1] >= 0.5
    page = (tmp_path / "rep" / "training.html").read_text()
    assert JUMPED in page and "epoch 1: the drift jumped" in page and 'class="jump">epoch 1' in page


@pytest.mark.slow
def test_recalibrating_the_fixture_recovers_map():
    """``compare --data``'s measured effect: A, B, B recalibrated on the 96 training images, validated
    on the shapes val split (about a minute on 2 cores)."""
    cmp = yolobn.compare(yolobn.demo_model_path(), str(LAST), images=[str(_train_images())], data="shapes")
    e = cmp.observed["effect"]
    assert e["metric"] == METRIC and e["a"] > 0.5 and e["b"] < 0.2
    assert e["b_recalibrated"] - e["b"] >= 0.1
    (drift,) = [v for v in cmp.verdicts() if v.key == "drift"]
    assert drift.status == "act" and f"{e['b']:.3f} → {e['b_recalibrated']:.3f}" in drift.evidence
    assert drift.next is not None and "--data shapes" in drift.next


def test_report_run_without_drift_says_it_was_not_measured(tmp_path, capsys):
    """A run tracked by an older yolobn (no drift columns): the page and the answer say so, no crash."""
    run = tmp_path / "old"
    (run / "yolobn").mkdir(parents=True)
    read_run(FIXTURE).drop(columns=["drift", "drift_max", "drift_images"]).to_csv(
        run / "yolobn" / "epochs.csv", index=False
    )
    code, out, err = run_main(["report", "--run", str(run), "-o", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    flat = " ".join(out.split())
    assert flat.startswith(
        "answers look the running statistics fit the training images drift was not measured"
    )
    assert f"yolobn activations {run}/weights/last.pt --images IMAGES" in flat
    page = (tmp_path / "rep" / "training.html").read_text()
    assert (
        "Not measured in this run" in page
        and "the drift jumped" not in page
        and "plot-drift-epochs" not in page
    )


def test_an_observed_answer_on_too_few_images_says_look_not_act():
    """Two photos are not evidence enough to act on: act needs Levels.min_images images."""
    from yolobn.core.thresholds import Levels

    lv = Levels()
    assert lv.sampled("act", lv.min_images - 1) == "look" and lv.sampled("act", lv.min_images) == "act"
    assert lv.sampled("look", 1) == "look" and lv.sampled("ok", 1) == "ok"
    obs = yolobn.observe(yolobn.load(str(FIXTURE / "weights" / "last.pt")), max_images=2)  # two photos
    v = {x.key: x for x in obs.verdicts()}
    assert v["drift"].status == "look" and "only 2 images" in v["drift"].evidence


def test_dead_channels_under_drifted_statistics_point_to_recalibrate_first():
    """The broken fine-tune shows hundreds of channels dead on images whose statistics it no longer
    fits: the answer is to recalibrate and measure again, not to prune them."""
    obs = yolobn.observe(yolobn.load(str(FIXTURE / "weights" / "last.pt")), ["examples/images"])
    v = {x.key: x for x in obs.verdicts()}
    assert v["drift"].status == "act"
    assert v["dead"].status == "look" and "recalibrate, then measure again" in v["dead"].evidence
    assert v["dead"].next is not None and v["dead"].next.startswith("yolobn recalibrate")


def test_recalibration_answer_reads_the_validation_before_and_after():
    from yolobn.bn.answers import Paths
    from yolobn.run.recalibration import recalibration_verdicts

    info = {"layers": 81, "images": 96, "drift_after": {"max_layer_mean": 6e-16}}
    paths = Paths("last.pt", ("val/",), None, False)
    (v,) = recalibration_verdicts(info, paths, "last-recal.pt")
    assert (v.key, v.status) == ("recalibrated", "look") and "accuracy not measured" in v.evidence
    assert v.next == "yolobn recalibrate last.pt --images val/ --data DATA -o last-recal.pt --force"
    (v,) = recalibration_verdicts(info, Paths(None, None, None, True), "demo-recal.pt")
    assert v.next == "yolobn recalibrate --data shapes -o demo-recal.pt --force"  # the demo's own dataset
    up = {**info, "validation": {"data": "d.yaml", "mAP50-95(B) before": 0.08, "mAP50-95(B) after": 0.33}}
    (v,) = recalibration_verdicts(up, paths, "last-recal.pt")
    assert v.status == "ok" and v.next is None
    assert v.evidence == (
        "statistics of 81 layers re-estimated on 96 images (drift left 6e-16); "
        "mAP50-95 (box) 0.0800 → 0.3300 (+0.2500): use last-recal.pt"
    )
    down = {**info, "validation": {"mAP50-95(B) before": 0.6294, "mAP50-95(B) after": 0.62}}
    (v,) = recalibration_verdicts(down, paths, "x.pt")
    assert v.status == "act" and "keep the original unless the data has changed" in v.evidence
