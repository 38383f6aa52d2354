"""yolobn.track: a real 2-epoch Ultralytics training on the bundled shapes dataset, with and without
the callback (same seed): epochs.csv has a row per epoch and layer (epoch 0: the start model), its
last epoch equals `yolobn inspect` of the saved last.pt, its drift equals `yolobn.observe` of last.pt
on the same sample of training images, and the final weights are the same bit for bit."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import torch

import yolobn
from yolobn.core.errors import YolobnError
from yolobn.integrations.tracking import DRIFT_EPOCH_COLUMNS, EPOCH_COLUMNS, read_run
from yolobn.report.export import layers_csv

pytestmark = pytest.mark.slow  # real Ultralytics trainings: CI runs them (pytest -m slow)

EPOCHS = 2


def _train(tmp_path, name: str, tracked: bool):
    from ultralytics import YOLO

    m = YOLO("yolo11n.yaml")
    tracker = yolobn.track(m, snapshots=[1, EPOCHS]) if tracked else None
    m.train(
        data=str(yolobn.shapes_dataset()),
        epochs=EPOCHS,
        imgsz=64,
        batch=16,
        workers=0,
        plots=False,
        seed=0,
        deterministic=True,
        project=str(tmp_path),
        name=name,
        exist_ok=True,
        verbose=False,
        amp=False,
        device="cpu",
    )
    return tmp_path / name, tracker


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return _train(d, "tracked", True), _train(d, "plain", False)


def test_epochs_csv_has_a_row_per_epoch_and_layer(runs):
    (run, tracker), _ = runs
    ep = read_run(run)
    n_bn = yolobn.load(str(run / "weights" / "last.pt")).meta.n_batchnorm
    assert list(ep.columns) == EPOCH_COLUMNS
    assert len(ep) == (EPOCHS + 1) * n_bn and sorted(set(ep["epoch"])) == list(range(EPOCHS + 1))
    assert tracker.out_dir == run / "yolobn"
    # drift on the fixed sample each epoch: 32 of the 96 training images, every layer measured
    assert len(tracker.drift_files) == 32 and len(tracker.drift_seconds) == EPOCHS + 1
    assert (ep["drift_images"] == 32).all() and ep["drift"].notna().all() and (ep["drift"] >= 0).all()
    assert (ep["drift_max"] >= ep["drift"]).all()
    for e in (1, EPOCHS):
        assert len(pd.read_csv(run / "yolobn" / f"channels_epoch{e}.csv")) == int(
            ep.loc[ep["epoch"] == e, "channels"].sum()
        )


def test_last_epoch_equals_inspect_of_last_pt(runs):
    (run, _), _ = runs
    ep = read_run(run)
    last = ep[ep["epoch"] == EPOCHS].drop(columns="epoch").reset_index(drop=True)
    ins = yolobn.inspect(str(run / "weights" / "last.pt"))
    static = [c for c in EPOCH_COLUMNS[1:] if c not in DRIFT_EPOCH_COLUMNS]
    mine = pd.read_csv(io.StringIO(layers_csv(ins.layers[static])), keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(last[static], mine, check_exact=True)
    first = ep[ep["epoch"] == 1].reset_index(drop=True)
    assert not first["gamma_p50"].equals(last["gamma_p50"])  # the epochs are really different snapshots


def test_drift_per_epoch_equals_observe_of_last_pt(runs):
    (run, tracker), _ = runs
    ep = read_run(run)
    last = ep[ep["epoch"] == EPOCHS].reset_index(drop=True)
    obs = yolobn.observe(str(run / "weights" / "last.pt"), tracker.drift_files, imgsz=64)
    assert list(obs.layers["name"]) == list(last["name"])
    pd.testing.assert_series_equal(
        last["drift"], obs.layers["drift"].astype(float), rtol=1e-4, check_names=False
    )
    start = ep[ep["epoch"] == 0]["drift"].mean()
    assert start != last["drift"].mean()  # epoch 0 is the untrained start model, not a copy of the last


def test_training_is_not_disturbed(runs):
    (tracked, _), (plain, _) = runs
    a = torch.load(tracked / "weights" / "last.pt", weights_only=False)["model"].state_dict()
    b = torch.load(plain / "weights" / "last.pt", weights_only=False)["model"].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (plain / "yolobn").exists()


def test_track_needs_a_yolo_model_and_read_run_a_tracked_folder(tmp_path):
    with pytest.raises(YolobnError, match="ultralytics YOLO"):
        yolobn.track(torch.nn.Linear(1, 1))
    with pytest.raises(YolobnError, match="no yolobn/epochs.csv"):
        read_run(tmp_path)


def test_headline_scalars_go_to_ultralytics_tensorboard_writer(monkeypatch, demo_model_loaded):
    """When Ultralytics' TensorBoard integration is on, its WRITER gets the headline scalars (here a
    recording stand-in for the SummaryWriter: tensorboard itself is not a dependency)."""
    import ultralytics.utils.callbacks.tensorboard as tb

    from yolobn.integrations.tracking import _log_tensorboard, epoch_stats

    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[(tag, step)] = value

    w = Writer()
    monkeypatch.setattr(tb, "WRITER", w, raising=False)
    layers, channels = epoch_stats(demo_model_loaded.model, yolobn.Thresholds())
    _log_tensorboard(layers, channels, 7)
    assert w.scalars[("yolobn/dead_channels", 7)] == int(layers["dead"].sum())
    assert w.scalars[("yolobn/eps_dominated_channels", 7)] == int(layers["eps_dominated"].sum())
    assert w.scalars[("yolobn/gamma_p50", 7)] == pytest.approx(float(channels["gamma"].median()))
    assert (
        w.scalars[("yolobn/gamma_p05", 7)]
        < w.scalars[("yolobn/gamma_p50", 7)]
        < w.scalars[("yolobn/gamma_p95", 7)]
    )
    monkeypatch.setattr(tb, "WRITER", None, raising=False)
    _log_tensorboard(layers, channels, 8)  # integration off: nothing to write to, no error
    assert ("yolobn/dead_channels", 8) not in w.scalars
