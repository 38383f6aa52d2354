"""Swap-and-validate with Ultralytics' own validator on the demo model and the bundled shapes dataset."""

from __future__ import annotations

import json

import pytest
from torch import nn

import yolobn
from yolobn.cli import main
from yolobn.edit.impls import ReferenceBatchNorm2d
from yolobn.edit.swapping import swap
from yolobn.evaluate.validation import baseline, validate

MAP = "metrics/mAP50-95(B)"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("YOLOBN_CACHE", str(d))
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def demo():
    return yolobn.load()


@pytest.fixture(scope="module")
def base(demo, cache):
    return validate(demo, "shapes")


def test_fusion_would_hide_a_swap():
    # The trap this module exists for: Ultralytics' fuse() folds any `bn` back into its conv. Part of
    # the layers only: 8.3's is_fused() takes a model with fewer than 10 torch BatchNorms as fused
    # already (a full swap escapes there by accident), 8.4 folds either way.
    swapped = swap(yolobn.load("yolo11n.yaml"), "reference", layers=["model.2.*"])
    assert sum(isinstance(m, ReferenceBatchNorm2d) for m in swapped.model.modules()) > 0
    swapped.model.fuse(verbose=False)
    assert sum(isinstance(m, ReferenceBatchNorm2d) for m in swapped.model.modules()) == 0


def test_reference_stays_within_0_001_of_the_baseline(demo, base):
    assert base[MAP] > 0.05  # a model that detects something, or the comparison means nothing
    ref = validate(swap(demo, "reference"), "shapes")
    assert abs(ref[MAP] - base[MAP]) <= 0.001


def test_a_wrong_implementation_shows_a_clear_drop(demo, base):
    # eps 0.5 instead of 1e-3: every channel's scale shrinks; the validator must see it.
    wrong = validate(swap(demo, "reference:eps=0.5"), "shapes")
    assert wrong[MAP] < 0.5 * base[MAP]
    gone = validate(swap(demo, "identity"), "shapes")
    assert gone[MAP] < 0.5 * base[MAP]


def test_validation_runs_the_swapped_modules_and_leaves_the_model_alone(demo, base):
    swapped = swap(demo, "frozen")
    types = [type(m) for m in swapped.model.modules()]
    validate(swapped, "shapes")
    assert [type(m) for m in swapped.model.modules()] == types
    assert "fuse" not in vars(swapped.model)  # the no-op fuse lives on validate()'s private copy only
    assert sum(isinstance(m, nn.BatchNorm2d) for m in demo.model.modules()) == demo.meta.n_batchnorm


def test_baseline_is_cached_by_checkpoint_and_settings(demo, cache):
    m1, hit1 = baseline(demo, "shapes", imgsz=160, batch=16, device="cpu")
    m2, hit2 = baseline(demo, "shapes", imgsz=160, batch=16, device="cpu")
    assert (hit1, hit2) == (False, True) and m1[MAP] == m2[MAP]
    assert len(list((cache / "val").glob("*.json"))) == 1


def test_cli_swap_writes_table(tmp_path, cache, capsys, no_stray_runs):
    out = tmp_path / "swap"
    assert main(["swap", "--impl", "reference", "--impl", "identity", "-o", str(out)]) == 0
    doc = json.loads((out / "swap.json").read_text())
    rows = {r["variant"]: r for r in doc["results"]}
    assert abs(rows["reference"]["mAP50-95(B) delta"]) <= 0.001
    assert rows["identity"]["mAP50-95(B) delta"] < -0.05
    assert rows["reference"]["swapped"] == 81 and rows["reference"]["max_rel_diff"] < 1e-4
    assert (out / "swap.csv").read_text().startswith("variant,")
    assert "identity" in capsys.readouterr().out
    no_stray_runs()  # the validator's save_dir was private, and is gone


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["swap", "--impl", "nope"], "unknown implementation"),
        (["swap", "some.pt", "--impl", "reference"], "--data or --images is required"),
        (["swap", "--impl", "reference", "--data", "/nonexistent/dir/"], "not on disk"),
    ],
)
def test_cli_swap_bad_input(argv, msg, tmp_path, capsys, cache):
    out = tmp_path / "o"
    assert main([*argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1
    assert not out.exists()


def test_label_free_agreement(demo):
    from yolobn.data.synth import shapes_dataset
    from yolobn.evaluate.agreement import agreement
    from yolobn.io.images import collect_images

    images = collect_images([str(shapes_dataset().parent / "images" / "val")], 12)
    same = agreement(demo, swap(demo, "reference"), images, 160)
    assert same["box_agreement"] == 1.0 and same["boxes_a"] > 0 and same["max_rel_diff"] < 1e-5
    gone = agreement(demo, swap(demo, "identity"), images, 160)
    assert gone["box_agreement"] == 0.0 and gone["boxes_b"] == 0
    # no boxes on either side (two BN-less models find nothing): agreement is unknown, not perfect
    dead = swap(demo, "identity")
    nobox = agreement(dead, swap(demo, "identity"), images, 160)
    assert nobox["boxes_a"] == nobox["boxes_b"] == 0 and nobox["box_agreement"] != nobox["box_agreement"]


def test_cli_label_free_only(tmp_path, cache):
    out = tmp_path / "o"
    assert main(["swap", "--impl", "identity", "--images", "-o", str(out), "-q"]) == 0
    doc = json.loads((out / "swap.json").read_text())
    assert doc["data"] is None and len(doc["images"]) > 0
    assert doc["results"][1]["box_agreement"] == 0.0


def test_metrics_read_like_ultralytics(demo, base):
    """The attributes code written for ``model.val()`` reaches for, tied to each other in closed form."""
    import pickle

    import numpy as np

    b = base.box
    assert b.map == base[MAP] and b.map50 == base["metrics/mAP50(B)"]
    assert b.map <= b.map75 <= b.map50  # mAP50-95 averages AP over IoU 0.5..0.95, which falls with IoU
    assert len(b.maps) == len(demo.meta.names) and np.isclose(
        np.mean(b.maps), b.map
    )  # every class has instances
    assert list(base.names.values()) == list(demo.meta.names)
    rows = base.summary()
    assert [r["class"] for r in rows] == list(base.names.values())
    assert np.allclose([r["box_map"] for r in rows], b.maps)
    assert list(base.to_df()["box_map50"]) == [r["box_map50"] for r in rows]
    assert base.results_dict["metrics/mAP50-95(B)"] == b.map and "fitness" in base.results_dict
    assert np.isfinite(base.fitness) and set(base.speed) >= {"preprocess", "inference", "postprocess"}
    assert np.isnan(base.seg.map) and base.seg.maps == [] and np.isnan(base.top1)
    again = pickle.loads(pickle.dumps(base))  # rows travel to Ray workers and back
    assert again.box.map75 == b.map75 and again.summary() == rows
    assert "<table" in base._repr_html_() and "box_map" in base._repr_html_()


def test_progress_labels_say_what_finished_not_what_runs(demo, base, cache):
    """A cached baseline is never shown as being validated: each label names the task that finished."""
    from yolobn.sweeps.variants import Settings, Variant, run_variants

    seen: list[tuple[str, int, int]] = []
    run_variants(demo, [Variant.of("reference")], Settings(data="shapes"), progress=lambda *a: seen.append(a))
    labels = [label for label, _, _ in seen]
    assert labels[-1] == "done" and "baseline done" in labels
    assert not any(label.startswith("validating") for label in labels)
