"""What the BatchNorm channels do on real images: observed dead channels and drift.

Observed dead (a channel, over the whole image set)
    ``flat``: post-activation std below ``ObservedThresholds.dead_std``; ``never positive``: after
    a floored activation (SiLU, ReLU, ...), the share of positive pre-activations is at most
    ``ObservedThresholds.min_positive`` (0: never positive).

Drift (BN input observed on the images vs the stored running statistics), per channel
    ``mean_shift = (mean - running_mean) / sqrt(running_var + eps)`` (in running standard deviations),
    ``log_var_ratio = ln((var + eps) / (running_var + eps))``, and
    ``drift = KL(N(mean, var + eps) || N(running_mean, running_var + eps)) =
    (r + mean_shift**2 - 1 - ln r) / 2`` with ``r = exp(log_var_ratio)``: 0 when the stored
    statistics fit the data, 2 for a 2-sigma mean shift.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolobn.bn.dead import FLOOR_ACTIVATIONS
from yolobn.bn.inspection import Inspection, inspect, require_batchnorm
from yolobn.core.errors import YolobnError
from yolobn.core.gauss import gaussian_kl
from yolobn.core.table import Table
from yolobn.core.thresholds import ObservedThresholds
from yolobn.io.images import Progress, model_imgsz, resolve_images, run_images
from yolobn.io.loader import LoadedModel, load
from yolobn.run.device import on_device, parse_device
from yolobn.run.recording import LayerRecord, recording

__all__ = [
    "OBS_CHANNEL_COLUMNS",
    "OBS_LAYER_COLUMNS",
    "Observation",
    "add_observed",
    "kept",
    "observe",
    "prediction_scores",
    "prepare",
    "restored",
]


@dataclass
class Observation:
    """How the images were run; the observed columns themselves join the Inspection's tables.

    Attributes:
        images: the image files used, in the order read. skipped: files that could not be decoded.
        imgsz, batch, device: how they were run. thresholds: the observed dead-channel criteria.
    """

    images: list[str]
    imgsz: int
    batch: int
    device: str
    thresholds: ObservedThresholds
    skipped: list[str] = field(default_factory=list)
    ablation: dict[str, Any] | None = None
    sources: list[str] = field(
        default_factory=list
    )  # the images argument as given (files, folders)  # what ablating the observed-dead channels costs (ablation_effect)

    def summary(self, layers: Any, channels: Any, worst: int = 5) -> dict[str, Any]:
        """Headline numbers of the observed columns of ``layers``/``channels``.

        ``confusion`` counts the run channels by (data-free predicted dead, observed dead);
        ``prediction`` scores the data-free rules against the observation (see ``prediction_scores``).
        """
        ly, ch = layers, channels
        seen = ch["obs_count"] > 0
        pred, obs = ch["dead"] & seen, ch["obs_dead"] & seen
        conf = {
            "both": int((pred & obs).sum()),
            "predicted_only": int((pred & ~obs).sum()),
            "observed_only": int((~pred & obs & seen).sum()),
            "neither": int((~pred & ~obs & seen).sum()),
        }
        n_seen = int(seen.sum())
        drifted = ly[ly["obs_count"] > 0].sort_values(
            ["drift", "index"], ascending=[False, True], kind="stable"
        )
        return {
            "images": len(self.images),
            "images_skipped": len(self.skipped),
            "imgsz": self.imgsz,
            "bn_layers": len(ly),
            "layers_not_reached": [str(n) for n in ly.loc[ly["obs_count"] == 0, "name"]],
            "channels": len(ch),
            "channels_observed": n_seen,
            "predicted_dead": int(pred.sum()),
            "observed_dead": int(obs.sum()),
            "observed_dead_share": int(obs.sum()) / n_seen if n_seen else 0.0,
            "observed_dead_by_reason": {
                r: int(((ch["obs_reason"] == r) & seen).sum()) for r in ("flat", "never positive")
            },
            "confusion": conf,
            "prediction": prediction_scores(conf),
            "drift_mean": float(ly.loc[ly["obs_count"] > 0, "drift"].mean())
            if len(drifted)
            else float("nan"),
            "most_drifted": [
                {
                    "name": r.name,
                    "block": r.block,
                    "drift": float(r.drift),
                    "mean_shift_abs": float(r.mean_shift_abs),
                    "log_var_ratio_abs": float(r.log_var_ratio_abs),
                }
                for r in drifted.head(worst).itertuples()
            ],
            **({"ablation": self.ablation} if self.ablation is not None else {}),
        }

    def to_json_dict(self, layers: Any, channels: Any) -> dict[str, Any]:
        """Images, settings, observed thresholds and summary (the ``observed`` part of the JSON)."""
        return {
            "images": {"count": len(self.images), "files": self.images, "skipped": self.skipped},
            "imgsz": self.imgsz,
            "batch": self.batch,
            "device": self.device,
            "thresholds": self.thresholds.to_dict(),
            "summary": self.summary(layers, channels),
        }


def prediction_scores(confusion: dict[str, int]) -> dict[str, float]:
    """How well the data-free dead channels predict the observed ones: ``precision`` (the share of
    predicted-dead channels that are dead on the images) and ``recall`` (the share of observed-dead
    channels that were predicted); NaN when nothing was predicted / observed dead.

    Not an accuracy over all channels: live channels dominate, so "both alive" would make rules that
    find none of the dead channels look right 96% of the time.
    """
    both = confusion["both"]
    predicted = both + confusion["predicted_only"]
    observed = both + confusion["observed_only"]
    return {
        "precision": both / predicted if predicted else float("nan"),
        "recall": both / observed if observed else float("nan"),
    }


OBS_CHANNEL_COLUMNS = [
    "obs_count",
    "obs_in_mean",
    "obs_in_var",
    "obs_pre_mean",
    "obs_pre_std",
    "obs_pre_min",
    "obs_pre_max",
    "obs_positive_share",
    "obs_post_mean",
    "obs_post_std",
    "obs_dead",
    "obs_reason",
    "mean_shift",
    "log_var_ratio",
    "drift",
]
_LAYER_COUNTS = ("obs_dead", "dead_both", "dead_predicted_only", "dead_observed_only")
_LAYER_MEANS = (
    "mean_shift_abs",
    "mean_shift_abs_max",
    "log_var_ratio_abs",
    "log_var_ratio_abs_max",
    "drift",
    "drift_max",
)
OBS_LAYER_COLUMNS = ["obs_count", *_LAYER_COUNTS, "obs_dead_share", *_LAYER_MEANS]


def kept(ins: Inspection) -> dict[str, Any]:
    """The observed part of an observed Inspection as JSON-able data (``restored`` reads it back):
    a sweep keeps it with its rows, so that a resumed sweep does not run the images again."""
    ob = ins.observation
    if ob is None:
        raise YolobnError("kept: the inspection was not observed on images")
    ly, ch = ins.layers, ins.channels
    return {
        "layers": list(ly["name"]),
        "channels": len(ch),
        "layer_columns": {k: ly[k].tolist() for k in OBS_LAYER_COLUMNS},
        "channel_columns": {k: ch[k].tolist() for k in OBS_CHANNEL_COLUMNS},
        "observation": {
            "images": ob.images,
            "imgsz": ob.imgsz,
            "batch": ob.batch,
            "device": ob.device,
            "thresholds": ob.thresholds.to_dict(),
            "skipped": ob.skipped,
            "sources": ob.sources,
        },
    }


def restored(base: Inspection, state: dict[str, Any]) -> Inspection | None:
    """``base`` (data-free) with the observed columns of ``kept(...)``; None when they do not fit
    its layers and channels (another selection, another model), so that the caller observes again."""
    ly, ch = base.layers, base.channels
    try:
        if list(ly["name"]) != list(state["layers"]) or len(ch) != int(state["channels"]):
            return None
        lcols, ccols, ob = state["layer_columns"], state["channel_columns"], dict(state["observation"])
        if set(lcols) != set(OBS_LAYER_COLUMNS) or set(ccols) != set(OBS_CHANNEL_COLUMNS):
            return None
        ly, ch = ly.copy(), ch.copy()
        for k in OBS_LAYER_COLUMNS:
            ly[k] = np.asarray(lcols[k], dtype=np.int64 if k == "obs_count" or k in _LAYER_COUNTS else float)
        for k in OBS_CHANNEL_COLUMNS:
            ch[k] = np.asarray(ccols[k], dtype=_CHANNEL_DTYPES.get(k, float))
        observation = Observation(
            images=[str(p) for p in ob["images"]],
            imgsz=int(ob["imgsz"]),
            batch=int(ob["batch"]),
            device=str(ob["device"]),
            thresholds=ObservedThresholds(**ob["thresholds"]),
            skipped=[str(p) for p in ob["skipped"]],
            sources=[str(p) for p in ob["sources"]],
        )
    except (KeyError, TypeError, ValueError):
        return None
    return dataclasses.replace(
        base, layer_table=Table.from_frame(ly), channel_table=Table.from_frame(ch), observation=observation
    )


_CHANNEL_DTYPES: dict[str, Any] = {"obs_count": np.int64, "obs_dead": bool, "obs_reason": object}


def observe(
    model: Any = None,
    images: Sequence[str | os.PathLike[str]] | None = None,
    *,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 16,
    device: str | torch.device | None = "cpu",
    thresholds: Any = None,
    observed: ObservedThresholds | None = None,
    select: Sequence[str] | None = None,
    trust: bool = False,
    progress: Progress | None = None,
) -> Inspection:
    """Run images through the model and observe what every BatchNorm channel does.

    Args:
        model: checkpoint path, model yaml, nn.Module, ultralytics.YOLO, LoadedModel, None (demo), or
            a ``yolobn.Inspection``, whose tables, thresholds and layer selection are then used as they
            are (``thresholds`` and ``select`` are ignored).
        images: image files and/or folders; default: see ``default_images``.
        max_images: use at most this many images (the first ones, sorted).
        imgsz: inference size; default the checkpoint's training imgsz, else 640.
        batch: images per forward pass. device: ``cpu``, ``0``, ``cuda:0``...
        thresholds: data-free ``yolobn.Thresholds`` (for the predicted-dead column).
        observed: ``ObservedThresholds`` for the observed dead channels.
        select: BN layer patterns (as ``--layers``).
        progress: called as ``progress(images_done, images_total)``.

    Returns:
        A new ``Inspection`` whose tables carry the observed columns and whose ``observation``
        says how the images were run (``observed_summary()`` for the headline numbers). The
        model, and the caller's object, are left as they were.
    """

    obs_th = observed or ObservedThresholds()
    base = model if isinstance(model, Inspection) else None
    loaded, dev, paths, size = prepare(
        base.loaded if base else model, images, max_images, imgsz, batch, device, trust
    )
    if base is None:  # the data-free tables the observed columns join (same selection rule as inspect)
        base = inspect(loaded, thresholds=thresholds, select=select)
    layers, channels, selection = base.layers, base.channels, base.selection

    root = on_device(loaded.model, dev)
    skipped: list[Path] = []
    with recording(root, select=selection or None) as rec:
        run_images(
            root,
            paths,
            imgsz=size,
            batch=batch,
            device=dev,
            task=loaded.meta.task,
            progress=progress,
            skipped=skipped,
        )
        records = rec.records()
    modules = dict(root.named_modules())
    layers, channels = add_observed(layers, channels, records, modules, obs_th)
    bad = set(skipped)
    observation = Observation(
        sources=[os.fspath(p) for p in images] if images else [],
        images=[str(p) for p in paths if p not in bad],
        imgsz=size,
        batch=batch,
        device=str(dev),
        thresholds=obs_th,
        skipped=[str(p) for p in skipped],
    )
    return dataclasses.replace(
        base,
        layer_table=Table.from_frame(layers),
        channel_table=Table.from_frame(channels),
        observation=observation,
    )


def prepare(
    model: Any, images: Any, max_images: int | None, imgsz: int | None, batch: int, device: Any, trust: bool
) -> tuple[Any, torch.device, list[Path], int]:
    """Checked arguments, the loaded model, the image files and the inference size (observe, recalibrate)."""

    if batch < 1:
        raise YolobnError(f"batch {batch}: must be at least 1")
    dev = parse_device(device)

    loaded = model if isinstance(model, LoadedModel) else load(model, trust=trust)
    require_batchnorm(loaded)
    return loaded, dev, resolve_images(loaded, images, max_images), model_imgsz(loaded, imgsz)


def add_observed(
    layers: Any,
    channels: Any,
    records: dict[str, LayerRecord],
    modules: dict[str, nn.Module],
    obs_th: ObservedThresholds,
) -> tuple[Any, Any]:
    """The data-free tables with the observed columns added (new frames; same rows, same order)."""
    import pandas as pd

    cols: dict[str, list[np.ndarray]] = {c: [] for c in OBS_CHANNEL_COLUMNS}
    for name, c, act in zip(layers["name"], layers["channels"], layers["act"], strict=True):
        rec = records.get(name)
        bn = modules[name]
        per = _channel_values(rec, bn, int(c), act, obs_th)
        for k in OBS_CHANNEL_COLUMNS:
            cols[k].append(per[k])
    ch = channels.copy()
    for k in OBS_CHANNEL_COLUMNS:
        ch[k] = np.concatenate(cols[k]) if cols[k] else np.array([])
    ch["obs_dead"] = ch["obs_dead"].astype(bool)

    ly = layers.copy()
    seen = ch["obs_count"] > 0
    pred, obs = ch["dead"].astype(bool) & seen, ch["obs_dead"] & seen
    frame = pd.DataFrame(
        {
            "name": ch["name"],
            "obs_dead": obs,
            "dead_both": pred & obs,
            "dead_predicted_only": pred & ~obs,
            "dead_observed_only": ~pred & obs,
            "ms": ch["mean_shift"].abs(),
            "lv": ch["log_var_ratio"].abs(),
            "drift": ch["drift"],
        }
    )
    g = frame.groupby("name", sort=False)
    agg = pd.DataFrame(
        {
            "obs_dead": g["obs_dead"].sum(),
            "dead_both": g["dead_both"].sum(),
            "dead_predicted_only": g["dead_predicted_only"].sum(),
            "dead_observed_only": g["dead_observed_only"].sum(),
            "mean_shift_abs": g["ms"].mean(),
            "mean_shift_abs_max": g["ms"].max(),
            "log_var_ratio_abs": g["lv"].mean(),
            "log_var_ratio_abs_max": g["lv"].max(),
            "drift": g["drift"].mean(),
            "drift_max": g["drift"].max(),
        }
    )
    agg = agg.reindex(ly["name"])
    ly["obs_count"] = [int(records[n].inp.n) if n in records else 0 for n in ly["name"]]
    for k in _LAYER_COUNTS:
        ly[k] = agg[k].fillna(0).astype(np.int64).to_numpy()
    ly["obs_dead_share"] = np.where(ly["channels"] > 0, ly["obs_dead"] / ly["channels"].clip(lower=1), 0.0)
    for k in _LAYER_MEANS:
        ly[k] = agg[k].to_numpy(dtype=float)
    return ly.reset_index(drop=True), ch.reset_index(drop=True)


def _channel_values(
    rec: LayerRecord | None, bn: nn.Module, c: int, act: str, th: ObservedThresholds
) -> dict[str, np.ndarray]:
    nan = np.full(c, np.nan)
    if rec is None or rec.inp.n == 0:
        return {
            **{k: nan for k in OBS_CHANNEL_COLUMNS},
            "obs_count": np.zeros(c, dtype=np.int64),
            "obs_dead": np.zeros(c, dtype=bool),
            "obs_reason": np.array([""] * c, dtype=object),
        }
    n = rec.out.n
    in_mean, in_var = rec.inp.mean.cpu(), rec.inp.var.cpu()
    post_std = rec.post.var.cpu().clamp(min=0).sqrt() if rec.post.n else torch.full((c,), float("nan"))
    pos_share = rec.pos.cpu().to(torch.float64) / n
    flat = post_std < th.dead_std
    never = (pos_share <= th.min_positive) if act in FLOOR_ACTIVATIONS else torch.zeros(c, dtype=torch.bool)
    reason = np.where(flat.numpy(), "flat", np.where(never.numpy(), "never positive", "")).astype(object)
    rm = getattr(bn, "running_mean", None)
    rv = getattr(bn, "running_var", None)
    eps = float(getattr(bn, "eps", 1e-5))
    if isinstance(rm, torch.Tensor) and isinstance(rv, torch.Tensor):
        rm64 = rm.detach().to("cpu", torch.float64)
        rv64 = rv.detach().to("cpu", torch.float64)
        denom = rv64 + eps
        shift = (in_mean - rm64) / denom.sqrt()
        ratio = (in_var + eps) / denom
        log_ratio = ratio.log()
        drift = torch.from_numpy(gaussian_kl(in_mean, in_var + eps, rm64, denom))
    else:  # no stored statistics: nothing to drift from
        shift = log_ratio = drift = torch.full((c,), float("nan"), dtype=torch.float64)
    return {
        "obs_count": np.full(c, n, dtype=np.int64),
        "obs_in_mean": in_mean.numpy(),
        "obs_in_var": in_var.numpy(),
        "obs_pre_mean": rec.out.mean.cpu().numpy(),
        "obs_pre_std": rec.out.var.cpu().clamp(min=0).sqrt().numpy(),
        "obs_pre_min": rec.min.cpu().numpy(),
        "obs_pre_max": rec.max.cpu().numpy(),
        "obs_positive_share": pos_share.numpy(),
        "obs_post_mean": rec.post.mean.cpu().numpy() if rec.post.n else nan,
        "obs_post_std": post_std.numpy(),
        "obs_dead": (flat | never).numpy(),
        "obs_reason": reason,
        "mean_shift": shift.numpy(),
        "log_var_ratio": log_ratio.numpy(),
        "drift": drift.numpy(),
    }
