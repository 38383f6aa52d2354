"""End-to-end: `yolobn activations`, `yolobn inspect --images`, `yolobn recalibrate` on the demo model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import yolobn
from tests.run_main import run_main
from yolobn.cli import main


def test_activations_on_the_demo_writes_consistent_files(tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(
        [
            "activations",
            "--max-images",
            "8",
            "--sort",
            "drift",
            "--top",
            "5",
            "--csv",
            str(out / "l.csv"),
            "--channels-csv",
            str(out / "c.csv"),
            "--json",
            str(out / "a.json"),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert (
        "BatchNorm layers on 8 images" in text
        and "5 of 81 layers, sorted by drift" in text
        and "observed dead" in text
    )
    layers = pd.read_csv(out / "l.csv", keep_default_na=False)
    ch = pd.read_csv(out / "c.csv", keep_default_na=False)
    doc = json.loads((out / "a.json").read_text())
    s = doc["observed"]["summary"]
    assert len(layers) == 81 and len(ch) == layers["channels"].sum() == s["channels"]
    assert doc["observed"]["images"]["count"] == 8 and doc["observed"]["imgsz"] == 160
    counts = layers.set_index("name")["obs_count"]
    assert counts["model.0.bn"] == 8 * 80 * 80  # stride 2 at 160 px: every position of every image
    assert counts["model.9.cv1.bn"] == 8 * 5 * 5  # SPPF, stride 32
    obs = ch["obs_dead"].astype(str).eq("True")
    assert s["observed_dead"] == int(obs.sum()) == int(layers["obs_dead"].sum())
    c = s["confusion"]
    assert sum(c.values()) == len(ch)
    assert c["both"] + c["observed_only"] == s["observed_dead"]
    assert c["both"] + c["predicted_only"] == int(ch["dead"].astype(str).eq("True").sum())
    worst = s["most_drifted"][0]
    assert worst["drift"] == pytest.approx(float(layers["drift"].max()))
    assert worst["name"] in text
    # the data-free rules predict none of the demo's dead channels: recall 0, precision undefined (null),
    # not a 90%+ "agreement" carried by the live channels
    observed = c["both"] + c["observed_only"]
    assert observed > 100 and c["both"] + c["predicted_only"] == 0
    assert "agreement" not in s
    assert s["prediction"] == {"precision": None, "recall": 0.0}
    assert (
        f"data-free prediction: recall 0.0% of {observed:,} observed-dead channels, precision - (none predicted dead)"
        in text
    )


def test_inspect_with_images_adds_the_observed_columns(tmp_path, capsys):
    rc = main(
        [
            "inspect",
            "--images",
            "--max-images",
            "4",
            "--csv",
            str(tmp_path / "l.csv"),
            "--channels-csv",
            str(tmp_path / "c.csv"),
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "obs dead" in text and "observed on the images" in text
    layers = pd.read_csv(tmp_path / "l.csv", keep_default_na=False)
    ch = pd.read_csv(tmp_path / "c.csv", keep_default_na=False)
    # the same numbers as the library's own observation of the same 4 images, to the 7 digits written
    want = yolobn.observe(None, max_images=4)
    assert list(layers["name"]) == list(want.layers["name"]) and len(ch) == len(want.channels)
    for col in ("obs_count", "obs_dead", "dead_both", "dead_observed_only", "dead_predicted_only"):
        assert layers[col].tolist() == want.layers[col].tolist(), col
    for col in ("gamma_mean", "drift", "drift_max", "mean_shift_abs", "log_var_ratio_abs"):
        np.testing.assert_allclose(layers[col].astype(float), want.layers[col], rtol=1e-6, err_msg=col)
    assert ch["obs_dead"].astype(str).eq("True").tolist() == want.channels["obs_dead"].tolist()
    assert ch["obs_reason"].tolist() == want.channels["obs_reason"].tolist()
    for col in ("gamma", "obs_pre_mean", "obs_post_std", "obs_positive_share", "mean_shift", "drift"):
        np.testing.assert_allclose(
            ch[col].astype(float), want.channels[col], rtol=1e-6, atol=1e-30, err_msg=col
        )
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["observed"]["images"]["count"] == 4
    assert doc["observed"]["images"]["files"] == want.observation.images
    obs = want.observed_summary()
    got = doc["observed"]["summary"]
    for key in (
        "observed_dead",
        "predicted_dead",
        "confusion",
        "observed_dead_by_reason",
        "layers_not_reached",
    ):
        assert got[key] == obs[key], key
    assert got["drift_mean"] == pytest.approx(obs["drift_mean"], rel=1e-6)
    assert doc["summary"]["dead"] == want.summary()["dead"]  # the data-free summary is still there


@pytest.mark.slow
def test_recalibrate_writes_a_loadable_checkpoint_and_never_the_input(tmp_path, capsys, demo_path):
    out = tmp_path / "recal.pt"
    assert main(["recalibrate", "-o", str(out), "--max-images", "16", "--batch", "8"]) == 0
    assert "recalibrated the running statistics of 81 BN layers on 16 images" in capsys.readouterr().out
    m = yolobn.load(out)
    assert m.meta.recalibration["images"] == 16 and m.meta.recalibration["batch"] == 8
    # exists: refused without --force, then replaced with it
    assert main(["recalibrate", "-o", str(out), "--max-images", "4", "--batch", "4"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["recalibrate", "-o", str(out), "--max-images", "4", "--batch", "4", "--force", "-q"]) == 0
    assert yolobn.load(out).meta.recalibration["images"] == 4
    # the input itself: refused even with --force
    src = tmp_path / "in.pt"
    src.write_bytes(demo_path.read_bytes())
    before = src.read_bytes()
    assert main(["recalibrate", str(src), "-o", str(src), "--force"]) == 2
    assert "is the input checkpoint" in capsys.readouterr().err
    assert src.read_bytes() == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["activations", "--images", "/no/such/dir"], "no such file or folder"),
        (["activations", "--max-images", "0"], "--max-images 0: must be at least 1"),
        (["activations", "--device", "cuda:0"], "device cuda:0: CUDA is not available"),
        (["activations", "--device", "tpu9"], "unknown device"),
        (["activations", "--dead-std", "-1"], "--dead-std -1: must be at least 0"),
        (["activations", "--min-positive", "1"], "min_positive"),
        (["activations", "--layers", "nothing*"], "matches none"),
        (["recalibrate", "-o", "x.pt", "--batch", "0"], "--batch 0: must be at least 1"),
        (["recalibrate"], "required: -o/--out"),
        (["inspect", "--images", "README.md"], "not an image"),
        (["activations", "--images", "imgs/", "best.pt"], "put MODEL before --images"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("not an image")
    rc, _, err = run_main(argv, capsys)
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
