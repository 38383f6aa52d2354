"""Watch the BatchNorm layers while a model trains: an Ultralytics callback.

``yolobn.track(model)`` registers on Ultralytics' callback system (``on_train_start``,
``on_fit_epoch_end``); training itself is unchanged (``model.train(...)`` as usual). Before the first
epoch (the model training starts from, as epoch 0; a resumed run: its start epoch) and after every
epoch it inspects the EMA model that Ultralytics saves (cast to fp16 and back, exactly as
``last.pt`` stores it), and writes:

- ``<save_dir>/yolobn/epochs.csv``: one row per epoch and BN layer, the same statistics as
  ``yolobn inspect`` (gamma, beta, running var and scale quantiles, dead and eps-dominated counts,
  findings), and the drift of the running statistics on a fixed sample of the training images
  (``drift``, ``drift_max``, ``drift_images``; ``yolobn.run.drift``): the same ``drift_images``
  images (32 by default, spread evenly over the sorted training split) at the training imgsz, the
  model in eval mode. A fine-tune whose steps are too large moves the weights faster than the
  running averages follow; the BN parameters barely change, the drift jumps;
- ``<save_dir>/yolobn/channels_epoch<N>.csv``: every channel at the chosen epochs (the last by default);
- when Ultralytics' TensorBoard integration is on, the headline scalars (dead channels,
  eps-dominated channels, gamma quantiles over all channels) under ``yolobn/``.

The callback only reads: no random numbers are drawn, no module changes mode, nothing is written
into the model (the drift runs on the fp16 copy), so the same seed gives the same weights with or
without it. What the drift costs per epoch: ``bench/bench_track.py`` and docs/benchmarks.md.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yolobn.bn.stats import bn_stats
from yolobn.core.errors import YolobnError
from yolobn.core.thresholds import Thresholds
from yolobn.io import ultra
from yolobn.report.export import channels_csv, layers_csv, write_texts
from yolobn.run.drift import SAMPLE, sample_drift, sample_files

__all__ = ["BNTracker", "DRIFT_EPOCH_COLUMNS", "EPOCH_COLUMNS", "epoch_stats", "read_run", "track"]

DRIFT_EPOCH_COLUMNS = ["drift", "drift_max", "drift_images"]

EPOCH_COLUMNS = [
    "epoch",
    "index",
    "name",
    "layer",
    "block",
    "role",
    "channels",
    "eps",
    *(
        f"{q}_{s}"
        for q in ("gamma", "beta", "running_var", "scale")
        for s in ("mean", "std", "p05", "p50", "p95")
    ),
    "dead",
    "constant",
    "off",
    "eps_dominated",
    "findings",
    *DRIFT_EPOCH_COLUMNS,
]


class BNTracker:
    """The callback object ``track`` registers; ``frames`` holds what was written so far."""

    def __init__(
        self,
        *,
        snapshots: Sequence[int] | str = "last",
        thresholds: Thresholds | None = None,
        tensorboard: bool = True,
        drift_images: int = SAMPLE,
    ) -> None:
        self.snapshots = snapshots
        self.thresholds = thresholds or Thresholds()
        self.tensorboard = tensorboard
        self.drift_images = drift_images
        self.drift_files: list[Path] | None = None  # the fixed sample, chosen before the first epoch
        self.drift_note: str | None = None  # why drift was not measured, when it was not
        self.frames: list[Any] = []
        self.out_dir: Path | None = None
        self.epochs_seen: set[int] = set()
        self.seconds: list[float] = []  # the callback's own time per epoch (bench/bench_track.py)
        self.drift_seconds: list[float] = []  # of which the drift on the sample

    def on_train_start(self, trainer: Any) -> None:
        """The model training starts from (epoch 0; a resumed run: the epoch it resumes after)."""
        if _rank(trainer) not in (-1, 0):
            return  # pragma: no cover - DDP workers: the main process writes
        self._record(trainer, int(getattr(trainer, "start_epoch", 0) or 0))

    def on_fit_epoch_end(self, trainer: Any) -> None:
        epoch = int(getattr(trainer, "epoch", 0)) + 1  # 1-based, as Ultralytics prints and stores
        if epoch > getattr(trainer, "epochs", 1 << 30) or epoch in self.epochs_seen:
            # Ultralytics' final validation of best.pt calls this once more: with epoch + 1 (8.4) or
            # with the last epoch again (8.3; see yolobn.io.ultra)
            return
        if _rank(trainer) not in (-1, 0):
            return  # pragma: no cover - DDP workers: the main process writes
        self._record(trainer, epoch)

    def _record(self, trainer: Any, epoch: int) -> None:
        t0 = time.perf_counter()
        ema = getattr(getattr(trainer, "ema", None), "ema", None)
        if ema is None:  # pragma: no cover - no EMA (custom trainers): the model being trained
            ema = trainer.model
        snap = snapshot(ema)
        layers, channels = bn_stats(snap, self.thresholds)
        t1 = time.perf_counter()
        drift = self._drift(trainer, snap, layers, channels)
        self.drift_seconds.append(time.perf_counter() - t1 if drift is not None else 0.0)
        for c in DRIFT_EPOCH_COLUMNS:
            layers[c] = drift[c].to_numpy() if drift is not None else float("nan")
        layers.insert(0, "epoch", epoch)
        self.epochs_seen.add(epoch)
        self.frames.append(layers[EPOCH_COLUMNS])
        self.out_dir = Path(trainer.save_dir) / "yolobn"
        files = {self.out_dir / "epochs.csv": _csv(self._table())}
        last = epoch >= int(trainer.epochs)
        if (
            self.snapshots == "last"
            and last
            or (not isinstance(self.snapshots, str) and epoch in self.snapshots)
        ):
            files[self.out_dir / f"channels_epoch{epoch}.csv"] = channels_csv(channels)

        write_texts(files)
        if self.tensorboard:
            _log_tensorboard(layers, channels, epoch)
        self.seconds.append(time.perf_counter() - t0)

    def _drift(self, trainer: Any, snap: Any, layers: Any, channels: Any) -> Any:
        """Per layer drift of ``snap`` on the fixed sample (None: not measured, ``drift_note`` says why)."""
        if self.drift_images <= 0:
            self.drift_note = "drift_images=0"
            return None
        if self.drift_files is None:
            self.drift_files = sample_files(_train_files(trainer), self.drift_images)
            if not self.drift_files:
                self.drift_note = "the trainer's dataset lists no training image files"
        if not self.drift_files:
            return None
        size = trainer.args.imgsz
        size = max(size) if isinstance(size, (list, tuple)) else int(size)
        try:
            return sample_drift(snap, layers, channels, self.drift_files, imgsz=size, task=trainer.args.task)
        except YolobnError as e:  # none of the sample decodes: training goes on, without drift
            self.drift_note = str(e)
            return None

    def _table(self) -> Any:
        import pandas as pd

        return pd.concat(self.frames, ignore_index=True)


def _rank(trainer: Any) -> int:
    return int(getattr(trainer.args, "rank", -1) if hasattr(trainer, "args") else -1)


def _train_files(trainer: Any) -> list[str]:
    """The training split's image files as the trainer's dataset lists them (detection, segmentation,
    pose, obb: ``im_files``; classification: ``samples``)."""
    ds = getattr(getattr(trainer, "train_loader", None), "dataset", None)
    files = getattr(ds, "im_files", None)
    samples = getattr(ds, "samples", None)
    if files is None and samples is not None:
        files = [s[0] for s in samples]
    return [str(f) for f in files or []]


def snapshot(model: Any) -> Any:
    """A copy of ``model`` as its checkpoint stores it: cast to fp16 and back."""
    import torch

    with torch.no_grad():
        return copy.deepcopy(model).half().float()


def epoch_stats(model: Any, thresholds: Thresholds) -> tuple[Any, Any]:
    """``bn_stats`` of ``model`` as its checkpoint stores it: a copy cast to fp16 and back."""
    return bn_stats(snapshot(model), thresholds)


def track(
    model: Any,
    *,
    snapshots: Sequence[int] | str = "last",
    thresholds: Thresholds | None = None,
    tensorboard: bool = True,
    drift_images: int = SAMPLE,
) -> BNTracker:
    """Watch the BatchNorm layers of ``model`` (an ``ultralytics.YOLO``) while it trains.

    Args:
        model: the ``YOLO`` object whose ``train()`` you call next.
        snapshots: epochs (1-based) with a per-channel CSV, or ``"last"``.
        thresholds: dead-channel thresholds (as ``yolobn inspect``).
        tensorboard: also log the headline scalars when Ultralytics' TensorBoard logging is on.
        drift_images: training images in the fixed drift sample (0: no drift; the cost per epoch is
            one eval-mode pass over them).

    Returns:
        The ``BNTracker`` registered on the model (its ``out_dir`` is set after the first epoch).

    Example:
        >>> model = YOLO("yolo11n.yaml")
        >>> yolobn.track(model)
        >>> model.train(data="data.yaml", epochs=50)   # writes runs/detect/train/yolobn/epochs.csv
        >>> # yolobn report --run runs/detect/train: the epoch where drift jumped, in red
    """
    if not hasattr(model, "add_callback"):
        raise YolobnError(
            f"track() needs an ultralytics YOLO model (with add_callback), got {type(model).__name__}"
        )
    tracker = BNTracker(
        snapshots=snapshots, thresholds=thresholds, tensorboard=tensorboard, drift_images=drift_images
    )
    model.add_callback(ultra.TRAIN_START_CALLBACK, tracker.on_train_start)
    model.add_callback(ultra.EPOCH_END_CALLBACK, tracker.on_fit_epoch_end)
    return tracker


def _csv(df: Any) -> str:
    return layers_csv(df)


def _log_tensorboard(layers: Any, channels: Any, epoch: int) -> None:
    try:
        from ultralytics.utils.callbacks import tensorboard as tb
    except ImportError:  # pragma: no cover
        return
    writer = getattr(tb, "WRITER", None)
    if writer is None:
        return
    g = channels["gamma"]
    scalars = {
        "yolobn/dead_channels": int(layers["dead"].sum()),
        "yolobn/eps_dominated_channels": int(layers["eps_dominated"].sum()),
        "yolobn/gamma_p05": float(g.quantile(0.05)),
        "yolobn/gamma_p50": float(g.quantile(0.5)),
        "yolobn/gamma_p95": float(g.quantile(0.95)),
    }
    drift = layers["drift"].astype(float) if "drift" in layers else None
    if drift is not None and drift.notna().any():
        scalars["yolobn/drift_mean"] = float(drift.mean())
        scalars["yolobn/drift_max_layer"] = float(drift.max())
    for k, v in scalars.items():
        writer.add_scalar(k, v, epoch)


def read_run(save_dir: str | Path) -> Any:
    """The ``epochs.csv`` a tracked training wrote (a DataFrame), for ``yolobn report --run``."""
    import pandas as pd

    p = Path(save_dir).expanduser() / "yolobn" / "epochs.csv"
    if not p.is_file():
        raise YolobnError(
            f"run folder {save_dir}: no yolobn/epochs.csv in it; train with yolobn.track(model) attached to write it"
        )
    try:
        df = pd.read_csv(p, keep_default_na=False, na_values=[""])
    except (ValueError, OSError) as e:
        raise YolobnError(f"run folder {save_dir}: yolobn/epochs.csv cannot be read ({e})") from None
    missing = [c for c in ("epoch", "name", "dead", "gamma_p50") if c not in df.columns]
    if missing:
        raise YolobnError(f"run folder {save_dir}: yolobn/epochs.csv lacks the columns {', '.join(missing)}")
    return df
