"""Per-layer and per-channel BatchNorm statistics: columns (``yolobn.core.table``), or pandas DataFrames.

All math is vectorised over channels in float64. Every number is the same to the last bit on any
CPU, with any thread count and in any channel order: elementwise IEEE operations (correctly
rounded everywhere), exact sums (``math.fsum``) and sorted-value quantiles; no torch reduction,
whose rounding depends on the CPU's vector width and the threads.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from yolobn.bn.dead import FLOOR_ACTIVATIONS, criteria
from yolobn.bn.port import port_figures
from yolobn.bn.walk import BNBlock, find_blocks, unwrap
from yolobn.core.findings import Finding, join
from yolobn.core.table import Table
from yolobn.core.thresholds import Thresholds

if TYPE_CHECKING:
    import pandas as pd  # the Python API's tables; computed without it

__all__ = [
    "CHANNEL_COLUMNS",
    "QUANTITIES",
    "REASON_NAMES",
    "STATS",
    "bn_stats",
    "dead_channels",
    "layer_columns",
    "stats_and_findings",
]

QUANTITIES = ("gamma", "beta", "running_mean", "running_var", "scale")
STATS = ("min", "max", "mean", "std", "p05", "p25", "p50", "p75", "p95")
_Q = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
REASON_NAMES = {0: "", 1: "constant", 2: "off"}
_REASONS = np.array([REASON_NAMES[i] for i in range(3)], dtype=object)
_BLOCK_FIELDS = tuple(BNBlock.__dataclass_fields__)
_GRAIN = 32768  # at::internal::GRAIN_SIZE: torch runs ops on tensors with fewer elements on one thread

CHANNEL_COLUMNS = [
    "name",
    "layer",
    "channel",
    "act",
    "gamma",
    "beta",
    "running_mean",
    "running_var",
    "scale",
    "shift",
    "out_mean",
    "out_std",
    "var_over_eps",
    "constant",
    "off",
    "eps_dominated",
    "dead",
    "dead_reason",
]


def bn_stats(model: Any, thresholds: Thresholds | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Statistics of every BatchNorm of ``model`` (``stats_and_findings`` without the findings).

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
    layers, channels, _ = stats_and_findings(model, thresholds)
    return layers.to_frame(), channels.to_frame()


def stats_and_findings(
    model: Any, thresholds: Thresholds | None = None
) -> tuple[Table, Table, list[Finding]]:
    """``bn_stats`` as tables of columns (no pandas), and the health findings as records
    (``yolobn.core.findings.Finding``), in layer order.

    The ``findings`` column of ``layers`` is these records in words (``yolobn.core.findings.join``).
    """
    th = thresholds or Thresholds()
    root = unwrap(model)
    blocks = find_blocks(root)
    modules = dict(root.named_modules())
    trained_hint = getattr(getattr(model, "meta", None), "trained", None)

    # Layers with the same channel count are stacked into (k, n) tensors: every quantity is then
    # one torch op per batch of layers (YOLO11x: 9 batches for 167 layers) instead of one per layer.
    # The ops are the same elementwise and row-wise ones, so the values are the same to the last bit.
    tensors = [_tensors(modules[blk.name]) for blk in blocks]
    batches = _width_batches(tensors)

    per_layer: list[dict[str, Any]] = [{} for _ in blocks]
    defaults: list[bool] = [False] * len(blocks)
    init_dev: list[float] = [float("nan")] * len(blocks)  # max |gamma - 1|, |beta| (NaN: no affine)
    where: list[tuple[int, int]] = [(0, 0)] * len(blocks)  # layer -> (batch, row)
    flat: list[dict[str, np.ndarray]] = []  # per batch: channel columns, rows flattened
    for g, idx in enumerate(batches):
        ts = [tensors[i] for i in idx]
        bns = [modules[blocks[i].name] for i in idx]
        gamma, beta, mean, var = (torch.stack([t[q] for t in ts]) for q in QUANTITIES[:4])
        eps = torch.tensor([[t["eps"]] for t in ts], dtype=torch.float64)
        floor = torch.tensor([[blocks[i].act in FLOOR_ACTIVATIONS] for i in idx])
        crit = criteria(gamma, beta, var, eps, floor, th)
        scale = gamma / torch.sqrt(var + eps)
        shift = beta - mean * scale
        flat.append(_channel_columns(gamma, beta, mean, var, eps, scale, shift, crit))
        values = {"gamma": gamma, "beta": beta, "running_mean": mean, "running_var": var, "scale": scale}
        desc = _describe_rows(values)
        finite = {k: torch.isfinite(x).all(1).tolist() for k, x in values.items()}
        abs_scale = torch.where(torch.isfinite(scale), scale.abs(), -torch.inf)
        max_abs = torch.where(torch.isfinite(scale).any(1), abs_scale.amax(1), torch.nan).tolist()
        sums = {k: crit[k].sum(1).tolist() for k in ("dead", "eps_dominated", "constant", "off")}
        neg_var = (var < 0).any(1).tolist()
        dev = (
            torch.maximum((gamma - 1).abs().amax(1), beta.abs().amax(1)).tolist()
            if gamma.shape[1]
            else [float("nan")] * len(idx)  # a layer without channels is at no value at all
        )
        at_default = ((mean == 0).all(1) & (var == 1).all(1)).tolist()
        port_eps, port_fp16 = port_figures(gamma, beta, mean, var, eps)
        for r, (i, bn) in enumerate(zip(idx, bns, strict=True)):
            where[i] = (g, r)
            row = _layer_row(
                blocks[i],
                bn,
                desc[r],
                {k: v[r] for k, v in finite.items()},
                neg_var[r],
                {k: int(v[r]) for k, v in sums.items()},
                max_abs[r],
                th,
            )
            row.update(port_eps=port_eps[r], port_fp16=port_fp16[r])
            init_dev[i] = dev[r] if bn.affine else float("nan")
            defaults[i] = bool(bn.track_running_stats and at_default[r])
            per_layer[i] = row

    # Untrained running statistics, and an affine at init, are only findings in a trained model.
    trained = trained_hint if trained_hint is not None else not all(defaults)
    findings = _init_findings(per_layer, defaults, init_dev, bool(trained), th)

    layers = Table.from_rows(per_layer, layer_columns())
    channels = _channel_table(blocks, tensors, batches, where, flat)
    return layers, channels, findings


def _width_batches(tensors: list[dict[str, Any]]) -> list[list[int]]:
    """Layers of the same channel count, in batches that stay under torch's intra-op grain size, so
    that every op runs on one thread: on a busy 2-core machine an OpenMP parallel region costs more
    than the op itself (~50x measured)."""
    by_width: dict[int, list[int]] = {}
    for i, t in enumerate(tensors):
        by_width.setdefault(t["gamma"].numel(), []).append(i)
    batches: list[list[int]] = []
    for n, idx in by_width.items():
        step = max(1, _GRAIN // (len(QUANTITIES) * n)) if n else len(idx)
        batches += [idx[c : c + step] for c in range(0, len(idx), step)]
    return batches


def _channel_columns(
    gamma: torch.Tensor,
    beta: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    crit: dict[str, torch.Tensor],
) -> dict[str, np.ndarray]:
    """The per-channel columns of one batch of layers, rows flattened."""
    cols = {
        "gamma": gamma,
        "beta": beta,
        "running_mean": mean,
        "running_var": var,
        "scale": scale,
        "shift": shift,
        "out_mean": beta,
        "out_std": crit["out_std"],
        "var_over_eps": var / eps,
        "constant": crit["constant"],
        "off": crit["off"],
        "eps_dominated": crit["eps_dominated"],
        "dead": crit["dead"],
    }
    out = {k: v.numpy().reshape(-1) for k, v in cols.items()}
    out["dead_reason"] = _REASONS[crit["reason"].numpy().reshape(-1)]
    return out


def _init_findings(
    per_layer: list[dict[str, Any]],
    defaults: list[bool],
    init_dev: list[float],
    trained: bool,
    th: Thresholds,
) -> list[Finding]:
    """Untrained running statistics and an affine at (or near) init, which are findings only in a
    trained model; every layer's findings, in order, written into its ``findings`` column."""
    findings: list[Finding] = []
    for row, is_default, d in zip(per_layer, defaults, init_dev, strict=True):
        row["untrained_stats"] = bool(trained and is_default)
        # Ultralytics applies no weight decay to BN: gamma/beta that stayed at (1, 0) got no gradient.
        row["init_affine"] = bool(trained and d <= th.init_tol)
        row["near_init"] = bool(trained and not row["init_affine"] and d <= th.near_init_tol)
        first = [
            Finding(code, row["name"], value)
            for code, value in (("init_affine", d), ("near_init", d), ("untrained_stats", None))
            if row[code]
        ]
        mine = first + row["findings"]
        findings += mine
        row["findings"] = join(mine)
    return findings


def _channel_table(
    blocks: list[BNBlock],
    tensors: list[dict[str, Any]],
    batches: list[list[int]],
    where: list[tuple[int, int]],
    flat: list[dict[str, np.ndarray]],
) -> Table:
    """One table from the batch columns, put back in layer order (much faster than a table per layer)."""
    if not blocks:
        return Table({c: [] for c in CHANNEL_COLUMNS})
    sizes = [len(idx) * tensors[idx[0]]["gamma"].numel() for idx in batches]
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    counts = np.array([t["gamma"].numel() for t in tensors], dtype=np.int64)
    first = np.array([start[g] + r * c for (g, r), c in zip(where, counts, strict=True)], dtype=np.int64)
    layer_start = np.repeat(np.cumsum(counts) - counts, counts)
    channel = np.arange(int(counts.sum()), dtype=np.int64) - layer_start
    order = np.repeat(first, counts) + channel  # row of each channel in the batch-ordered columns
    cat: dict[str, Any] = {
        "name": [b.name for b, c in zip(blocks, counts.tolist(), strict=True) for _ in range(c)],
        "layer": np.repeat(np.array([b.layer for b in blocks], dtype=np.int64), counts),
        "channel": channel,
        "act": [b.act for b, c in zip(blocks, counts.tolist(), strict=True) for _ in range(c)],
    }
    for c in CHANNEL_COLUMNS[4:]:
        cat[c] = np.concatenate([f[c] for f in flat])[order]
    return Table({c: cat[c] for c in CHANNEL_COLUMNS})


def layer_columns() -> list[str]:
    context = list(BNBlock.__dataclass_fields__)
    bn = ["eps", "momentum", "num_batches_tracked", "affine"]
    dist = [f"{q}_{s}" for q in QUANTITIES for s in STATS]
    dead = [
        "dead",
        "dead_share",
        "constant",
        "off",
        "eps_dominated",
        "eps_share",
        "nonfinite",
        "untrained_stats",
        "init_affine",
        "near_init",
        "max_abs_scale",
        "port_eps",
        "port_fp16",
        "findings",
    ]
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
    return _describe_exact(finite.numpy()[None, :])[0]


def _describe_rows(values: dict[str, torch.Tensor]) -> list[list[list[float]]]:
    """Per row (layer) and quantity: min, max, mean, population std and quantiles.

    ``values`` maps each quantity to a (layers, channels) tensor; rows with a non-finite value
    (rare: corrupt or untracked statistics) are described per vector, from the finite values only.
    """
    xs = list(values.values())
    k, n = xs[0].shape
    m = len(xs)
    if n == 0:
        return [[[float("nan")] * len(STATS) for _ in xs] for _ in range(k)]
    x = torch.stack(xs, 1).reshape(k * m, n).numpy()  # rows: layer 0 gamma, beta, ..., layer 1 gamma, ...
    finite = np.isfinite(x).reshape(k, -1).all(1).tolist()
    out = _describe_exact(x)
    return [out[r * m : (r + 1) * m] if ok else [_describe(v[r]) for v in xs] for r, ok in enumerate(finite)]


def _describe_exact(x: np.ndarray) -> list[list[float]]:
    """min, max, mean, population std and quantiles of each row of a finite float64 (rows, n) array.

    The same bits on every CPU, for any thread count and any channel order: sums are exact
    (``math.fsum``, correctly rounded), and quantiles interpolate the sorted values with separate
    IEEE operations. Torch's reductions instead depend on the vector width and threads, and its
    quantile interpolation uses a fused multiply-add on AVX2 but not on other CPUs (ulp
    differences that then show up in every written file).
    """
    n = x.shape[1]
    s = np.sort(x + 0.0, axis=1)  # + 0.0 turns -0.0 into 0.0: the sort does not order the two
    mean = np.array([math.fsum(r) for r in x.tolist()]) / n
    dev = x - mean[:, None]
    std = np.sqrt(np.array([math.fsum(r) for r in (dev * dev).tolist()]) / n)
    # linear interpolation between closest ranks, as numpy/torch's default, one formula everywhere
    pos = _Q * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = pos - lo
    a, b = s[:, lo], s[:, hi]
    d = b - a
    q = np.where(w < 0.5, a + w * d, b - d * (1 - w))
    rows: list[list[float]] = np.column_stack([s[:, 0], s[:, -1], mean, std, q]).tolist()
    return rows


def _layer_row(
    blk: BNBlock,
    bn: _BatchNorm,
    desc: list[list[float]],
    finite: dict[str, bool],
    negative_var: bool,
    counts: dict[str, int],
    max_abs_scale: float,
    th: Thresholds,
) -> dict[str, Any]:
    row: dict[str, Any] = {f: getattr(blk, f) for f in _BLOCK_FIELDS}
    nbt = getattr(bn, "num_batches_tracked", None)
    row.update(
        eps=float(bn.eps),
        momentum=float(bn.momentum) if bn.momentum is not None else float("nan"),
        num_batches_tracked=int(nbt) if nbt is not None else -1,
        affine=bool(bn.affine),
    )
    for q, d in zip(QUANTITIES, desc, strict=True):
        row.update(zip((f"{q}_{s}" for s in STATS), d, strict=True))

    n = blk.channels
    findings: list[Finding] = []  # as records; bn_stats adds the init ones and writes them as words
    nonfinite = [k for k in QUANTITIES[:4] if not finite[k]]
    if bn.track_running_stats and nonfinite:
        findings.append(Finding("non_finite", blk.name, tuple(nonfinite)))
    if negative_var:
        findings.append(Finding("negative_var", blk.name))
    dead = counts["dead"]
    eps_dom = counts["eps_dominated"]
    if eps_dom and eps_dom / n >= th.eps_share:
        findings.append(Finding("eps_dominated", blk.name, eps_dom / n))
    if max_abs_scale > th.extreme_scale:
        findings.append(Finding("extreme_scale", blk.name, max_abs_scale))
    if n and dead == n:
        findings.append(Finding("all_dead", blk.name))
    row.update(
        dead=dead,
        dead_share=dead / n if n else 0.0,
        constant=counts["constant"],
        off=counts["off"],
        eps_dominated=eps_dom,
        eps_share=eps_dom / n if n else 0.0,
        nonfinite=bool(nonfinite) and bn.track_running_stats,
        untrained_stats=False,
        init_affine=False,
        near_init=False,
        max_abs_scale=max_abs_scale,
        findings=findings,
    )
    return row


def dead_channels(model: Any, thresholds: Thresholds | None = None) -> pd.DataFrame:
    """The dead channels of every BatchNorm, found without data.

    Args:
        model: a ``yolobn.LoadedModel``, an ``nn.Module`` or an ``ultralytics.YOLO``.
        thresholds: criteria thresholds; defaults to ``Thresholds()``.

    Returns:
        pandas DataFrame, one row per dead channel: ``name``, ``layer``, ``channel``, ``reason``
        (``constant`` or ``off``) and the values the decision was made on.
    """
    _, channels = bn_stats(model, thresholds)
    cols = ["name", "layer", "channel", "dead_reason", "gamma", "beta", "running_var", "out_std", "act"]
    dead = channels.loc[channels["dead"], cols].rename(columns={"dead_reason": "reason"})
    return dead.reset_index(drop=True)
