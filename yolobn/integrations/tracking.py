"""Watch the BatchNorm layers while a model trains: an Ultralytics callback.

``yolobn.track(model)`` registers on Ultralytics' callback system (``on_fit_epoch_end``); training
itself is unchanged (``model.train(...)`` as usual). After every epoch it inspects the EMA model
that Ultralytics saves (cast to fp16 and back, exactly as ``last.pt`` stores it), and writes:

- ``<save_dir>/yolobn/epochs.csv``: one row per epoch and BN layer, the same statistics as
  ``yolobn inspect`` (gamma, beta, running var and scale quantiles, dead and eps-dominated counts,
  findings);
- ``<save_dir>/yolobn/channels_epoch<N>.csv``: every channel at the chosen epochs (the last by default);
- when Ultralytics' TensorBoard integration is on, the headline scalars (dead channels,
  eps-dominated channels, gamma quantiles over all channels) under ``yolobn/``.

The callback only reads: no random numbers are drawn, no module changes mode, nothing is written
into the model, so the same seed gives the same weights with or without it.
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

__all__ = ["BNTracker", "EPOCH_COLUMNS", "epoch_stats", "read_run", "track"]

EPOCH_COLUMNS = [
    "epoch", "index", "name", "layer", "block", "role", "channels", "eps",
    *(f"{q}_{s}" for q in ("gamma", "beta", "running_var", "scale") for s in ("mean", "std", "p05", "p50", "p95")),
    "dead", "constant", "off", "eps_dominated", "findings",
]  # fmt: skip


class BNTracker:
    """The callback object ``track`` registers; ``rows`` holds what was written so far."""

    def __init__(
        self,
        *,
        snapshots: Sequence[int] | str = "last",
        thresholds: Thresholds | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.snapshots = snapshots
        self.thresholds = thresholds or Thresholds()
        self.tensorboard = tensorboard
        self.frames: list[Any] = []
        self.out_dir: Path | None = None
        self.epochs_seen: set[int] = set()
        self.seconds: list[float] = []  # the callback's own time per epoch (bench/bench_track.py)

    def on_fit_epoch_end(self, trainer: Any) -> None:
        epoch = (
            int(getattr(trainer, "epoch", 0)) + 1
        )  # 1-based, as Ultralytics prints and stores in results.csv
        if epoch > getattr(trainer, "epochs", 1 << 30) or epoch in self.epochs_seen:
            # Ultralytics' final validation of best.pt calls this once more: with epoch + 1 (8.4) or
            # with the last epoch again (8.3; see yolobn.io.ultra)
            return
        if int(getattr(trainer.args, "rank", -1) if hasattr(trainer, "args") else -1) not in (-1, 0):
            return  # pragma: no cover - DDP workers: the main process writes
        t0 = time.perf_counter()
        ema = getattr(getattr(trainer, "ema", None), "ema", None)
        if ema is None:  # pragma: no cover - no EMA (custom trainers): the model being trained
            ema = trainer.model
        layers, channels = epoch_stats(ema, self.thresholds)
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

    def _table(self) -> Any:
        import pandas as pd

        return pd.concat(self.frames, ignore_index=True)


def epoch_stats(model: Any, thresholds: Thresholds) -> tuple[Any, Any]:
    """``bn_stats`` of ``model`` as its checkpoint stores it: a copy cast to fp16 and back."""
    import torch

    with torch.no_grad():
        snap = copy.deepcopy(model).half().float()
    return bn_stats(snap, thresholds)


def track(
    model: Any,
    *,
    snapshots: Sequence[int] | str = "last",
    thresholds: Thresholds | None = None,
    tensorboard: bool = True,
) -> BNTracker:
    """Watch the BatchNorm layers of ``model`` (an ``ultralytics.YOLO``) while it trains.

    Args:
        model: the ``YOLO`` object whose ``train()`` you call next.
        snapshots: epochs (1-based) with a per-channel CSV, or ``"last"``.
        thresholds: dead-channel thresholds (as ``yolobn inspect``).
        tensorboard: also log the headline scalars when Ultralytics' TensorBoard logging is on.

    Returns:
        The ``BNTracker`` registered on the model (its ``out_dir`` is set after the first epoch).

    Example:
        >>> model = YOLO("yolo11n.yaml")
        >>> yolobn.track(model)
        >>> model.train(data="data.yaml", epochs=50)   # writes runs/detect/train/yolobn/epochs.csv
    """
    if not hasattr(model, "add_callback"):
        raise YolobnError(
            f"track() needs an ultralytics YOLO model (with add_callback), got {type(model).__name__}"
        )
    tracker = BNTracker(snapshots=snapshots, thresholds=thresholds, tensorboard=tensorboard)
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
    for k, v in scalars.items():
        writer.add_scalar(k, v, epoch)


def read_run(save_dir: str | Path) -> Any:
    """The ``epochs.csv`` a tracked training wrote (a DataFrame), for ``yolobn report --run``."""
    import pandas as pd

    p = Path(save_dir).expanduser() / "yolobn" / "epochs.csv"
    if not p.is_file():
        raise YolobnError(
            f"--run {save_dir}: no yolobn/epochs.csv in it; train with yolobn.track(model) attached to write it"
        )
    try:
        df = pd.read_csv(p, keep_default_na=False, na_values=[""])
    except (ValueError, OSError) as e:
        raise YolobnError(f"--run {save_dir}: yolobn/epochs.csv cannot be read ({e})") from None
    missing = [c for c in ("epoch", "name", "dead", "gamma_p50") if c not in df.columns]
    if missing:
        raise YolobnError(f"--run {save_dir}: yolobn/epochs.csv lacks the columns {', '.join(missing)}")
    return df
