"""Per-layer and per-channel BatchNorm statistics as tidy pandas DataFrames.

All math is vectorised over channels (one torch op per quantity per layer) in float64, so that
the same checkpoint always gives the same numbers, and the same bytes once written as CSV.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.dead import Thresholds, classify
from yolobn.walk import BNBlock, find_blocks, unwrap

QUANTITIES = ("gamma", "beta", "running_mean", "running_var", "scale")
STATS = ("min", "max", "mean", "std", "p05", "p25", "p50", "p75", "p95")
_Q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)
REASON_NAMES = {0: "", 1: "constant", 2: "off"}

CHANNEL_COLUMNS = [
    "name", "layer", "channel", "act",
    "gamma", "beta", "running_mean", "running_var", "scale", "shift",
    "out_mean", "out_std", "var_over_eps",
    "constant", "off", "eps_dominated", "dead", "dead_reason",
]  # fmt: skip


def bn_stats(model: Any, thresholds: Thresholds | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Statistics of every BatchNorm of ``model``.

    Args:
        model: a ``yolobn.LoadedModel``, an ``nn.Module`` or an ``ultralytics.YOLO``; only read.
        thresholds: dead-channel criteria (``yolobn.Thresholds``); defaults apply when None.

    Returns:
        ``(layers, channels)``: ``layers`` has one row per BatchNorm (context from the walk, eps,
        momentum, num_batches_tracked, min/max/mean/std/quantiles of gamma, beta, running mean,
        running var and effective scale, dead counts by reason, health findings); ``channels`` has
        one row per channel (gamma, beta, running stats, effective scale and shift, the estimated
        BN output mean and std, the criteria flags and the dead reason). Both are keyed by the
        dotted module name (``name`` column), in module order. A model without BatchNorm gives
        two empty frames with the same columns.
    """
    th = thresholds or Thresholds()
    root = unwrap(model)
    blocks = find_blocks(root)
    modules = dict(root.named_modules())
    trained_hint = getattr(getattr(model, "meta", None), "trained", None)

    per_layer: list[dict[str, Any]] = []
    per_channel: list[dict[str, Any]] = []
    defaults: list[bool] = []
    init_affine: list[bool] = []
    for blk in blocks:
        bn = modules[blk.name]
        t = _tensors(bn)
        crit = classify(t["gamma"], t["beta"], t["running_var"], t["eps"], blk.act, th)
        scale = t["gamma"] / torch.sqrt(t["running_var"] + t["eps"])
        shift = t["beta"] - t["running_mean"] * scale
        n = blk.channels
        ch = {
            "name": [blk.name] * n,
            "layer": np.full(n, blk.layer, dtype=np.int64),
            "channel": np.arange(n, dtype=np.int64),
            "act": [blk.act] * n,
            "gamma": t["gamma"].numpy(),
            "beta": t["beta"].numpy(),
            "running_mean": t["running_mean"].numpy(),
            "running_var": t["running_var"].numpy(),
            "scale": scale.numpy(),
            "shift": shift.numpy(),
            "out_mean": t["beta"].numpy(),
            "out_std": crit["out_std"].numpy(),
            "var_over_eps": (t["running_var"] / t["eps"]).numpy(),
            "constant": crit["constant"].numpy(),
            "off": crit["off"].numpy(),
            "eps_dominated": crit["eps_dominated"].numpy(),
            "dead": crit["dead"].numpy(),
            "dead_reason": np.array([REASON_NAMES[i] for i in range(3)], dtype=object)[
                crit["reason"].numpy()
            ],
        }
        per_channel.append(ch)
        row = _layer_row(blk, bn, t, scale, crit, th)
        defaults.append(row.pop("_default_stats"))
        init_affine.append(row.pop("_init_affine"))
        per_layer.append(row)

    # Untrained running statistics are only a finding in a model that was trained at all.
    trained = trained_hint if trained_hint is not None else not all(defaults)
    for row, is_default, at_init in zip(per_layer, defaults, init_affine, strict=True):
        row["untrained_stats"] = bool(trained and is_default)
        row["init_affine"] = bool(trained and at_init)
        findings = row["findings"].split("; ") if row["findings"] else []
        if row["untrained_stats"]:
            findings.insert(0, "untrained running statistics (mean 0, var 1)")
        if row["init_affine"]:
            # Ultralytics applies no weight decay to BN: an exact 1/0 means no gradient ever reached it.
            findings.insert(0, "gamma and beta still at init (1, 0): no gradient reached this layer")
        row["findings"] = "; ".join(findings)

    layers = pd.DataFrame(per_layer, columns=layer_columns())
    # One DataFrame built from concatenated columns (not one frame per layer): same values, much faster.
    if per_channel:
        cat = {
            c: (
                [v for ch in per_channel for v in ch[c]]
                if c in ("name", "act")
                else np.concatenate([ch[c] for ch in per_channel])
            )
            for c in CHANNEL_COLUMNS
        }
        channels = pd.DataFrame(cat, columns=CHANNEL_COLUMNS)
    else:
        channels = pd.DataFrame(columns=CHANNEL_COLUMNS)
    return layers.reset_index(drop=True), channels


def layer_columns() -> list[str]:
    context = list(BNBlock.__dataclass_fields__)
    bn = ["eps", "momentum", "num_batches_tracked", "affine"]
    dist = [f"{q}_{s}" for q in QUANTITIES for s in STATS]
    dead = [
        "dead", "dead_share", "constant", "off", "eps_dominated", "eps_share",
        "nonfinite", "untrained_stats", "init_affine", "max_abs_scale", "findings",
    ]  # fmt: skip
    return context + bn + dist + dead


def _tensors(bn: _BatchNorm) -> dict[str, Any]:
    n = bn.num_features

    def f64(x: torch.Tensor | None, fill: float) -> torch.Tensor:
        if x is None:
            return torch.full((n,), fill, dtype=torch.float64)
        return x.detach().to("cpu", torch.float64).reshape(-1).clone()

    return {
        "gamma": f64(bn.weight, 1.0),
        "beta": f64(bn.bias, 0.0),
        # Without tracked statistics BN always normalises with batch statistics: NaN says "not stored".
        "running_mean": f64(bn.running_mean, float("nan")),
        "running_var": f64(bn.running_var, float("nan")),
        "eps": float(bn.eps),
    }


def _describe(x: torch.Tensor) -> list[float]:
    finite = x[torch.isfinite(x)]
    if finite.numel() == 0:
        return [float("nan")] * len(STATS)
    q = torch.quantile(finite, _Q).tolist()
    std = float(finite.std(correction=0)) if finite.numel() > 1 else 0.0
    return [float(finite.min()), float(finite.max()), float(finite.mean()), std, *q]


def _describe_all(xs: list[torch.Tensor]) -> list[list[float]]:
    """min, max, mean, population std and quantiles of several equal-length vectors in one pass."""
    x = torch.stack(xs)
    if not bool(torch.isfinite(x).all()):  # rare (corrupt or untracked stats): per vector, finite values only
        return [_describe(v) for v in xs]
    q = torch.quantile(x, _Q, dim=1).T  # (n_vectors, 5)
    std = x.std(dim=1, correction=0) if x.shape[1] > 1 else torch.zeros(x.shape[0], dtype=x.dtype)
    out = torch.cat(
        [x.amin(1, keepdim=True), x.amax(1, keepdim=True), x.mean(1, keepdim=True), std[:, None], q], 1
    )
    return out.tolist()


def _layer_row(
    blk: BNBlock,
    bn: _BatchNorm,
    t: dict[str, Any],
    scale: torch.Tensor,
    crit: dict[str, torch.Tensor],
    th: Thresholds,
) -> dict[str, Any]:
    row: dict[str, Any] = blk.to_dict()
    nbt = getattr(bn, "num_batches_tracked", None)
    row.update(
        eps=float(bn.eps),
        momentum=float(bn.momentum) if bn.momentum is not None else float("nan"),
        num_batches_tracked=int(nbt) if nbt is not None else -1,
        affine=bool(bn.affine),
    )
    values = {
        "gamma": t["gamma"],
        "beta": t["beta"],
        "running_mean": t["running_mean"],
        "running_var": t["running_var"],
        "scale": scale,
    }
    for q, desc in zip(values, _describe_all(list(values.values())), strict=True):
        row.update(zip((f"{q}_{s}" for s in STATS), desc, strict=True))

    n = blk.channels
    findings: list[str] = []
    nonfinite = [k for k, x in values.items() if k != "scale" and not bool(torch.isfinite(x).all())]
    if bn.track_running_stats and nonfinite:
        findings.append(f"non-finite values in {', '.join(nonfinite)}")
    if bool((t["running_var"] < 0).any()):
        findings.append("negative running_var")
    dead = int(crit["dead"].sum())
    eps_dom = int(crit["eps_dominated"].sum())
    finite_scale = scale[torch.isfinite(scale)]
    max_abs_scale = float(finite_scale.abs().max()) if finite_scale.numel() else float("nan")
    if eps_dom and eps_dom / n >= th.eps_share:
        findings.append(f"{eps_dom / n:.0%} of channels eps-dominated")
    if max_abs_scale > th.extreme_scale:
        findings.append(f"extreme scale |gamma/sqrt(var+eps)| = {max_abs_scale:.3g}")
    if n and dead == n:
        findings.append("all channels dead")
    row.update(
        dead=dead,
        dead_share=dead / n if n else 0.0,
        constant=int(crit["constant"].sum()),
        off=int(crit["off"].sum()),
        eps_dominated=eps_dom,
        eps_share=eps_dom / n if n else 0.0,
        nonfinite=bool(nonfinite) and bn.track_running_stats,
        untrained_stats=False,
        init_affine=False,
        max_abs_scale=max_abs_scale,
        findings="; ".join(findings),
        _init_affine=bool(bn.affine and bool((t["gamma"] == 1).all()) and bool((t["beta"] == 0).all())),
        _default_stats=bool(
            bn.track_running_stats
            and bool((t["running_mean"] == 0).all())
            and bool((t["running_var"] == 1).all())
        ),
    )
    return row
