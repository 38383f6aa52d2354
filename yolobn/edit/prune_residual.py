"""How far removal is from ablation: the border residual, layer by layer and at the output.

For every layer that had inputs removed, the ablated model's own input to that layer (recorded
with a hook, on real images) is run through the layer as the ablated model has it and as the pruned
model has it (the removed inputs deleted, their constant folded in). The two agree at interior
pixels to float rounding; at pixels whose kernel window reaches into the zero padding they differ
by the fold's border term (``yolobn.edit.prune``). Both are measured after the BatchNorm (in units
of that layer's output standard deviation on the images), so each layer's own residual is seen
apart from what earlier layers hand on. The end-to-end difference of the two models' outputs
shows what the residuals add up to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from yolobn.edit.prune_graph import Graph

__all__ = ["border_mask", "border_residual"]


def border_mask(conv: nn.Conv2d, h: int, w: int) -> torch.Tensor:
    """(H_out, W_out) True where the kernel window of ``conv`` on an h x w input reaches into the padding."""
    kh, kw = conv.kernel_size
    ones = torch.ones(1, 1, h, w)
    taps = F.conv2d(
        ones, torch.ones(1, 1, kh, kw), stride=conv.stride, padding=conv.padding, dilation=conv.dilation
    )
    return (taps[0, 0] < kh * kw - 0.5).cpu()


def border_residual(
    ablated: nn.Module,
    pruned: nn.Module,
    graph: Graph,
    channels: Mapping[str, Sequence[int]],
    batches: Sequence[torch.Tensor],
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per folded layer and at the output, pruned against ablated on ``batches`` (module docstring).

    Returns:
        ``layers``: one row per layer with removed inputs: ``layer, kind, kernel, removed_inputs,
        interior_max, border_max, border_mean`` (absolute differences after the BatchNorm, or of
        the layer's output where it has none, divided by ``scale``, that output's standard
        deviation) and ``border_pixels`` (share of output pixels at the border).
        ``summary``: the largest of each over the layers, and ``output_max`` / ``output_mean``:
        the difference of the two models' first outputs relative to the ablated output's largest
        absolute value.
    """
    ids = {graph.producers[bn].first + c for bn, cs in channels.items() for c in cs}
    pmods, amods = dict(pruned.named_modules()), dict(ablated.named_modules())
    stats: dict[str, dict[str, Any]] = {}
    handles = []
    for con in graph.consumers:
        rem = [j for j, chan in enumerate(con.inputs) if chan[0] in ids]
        if not rem or con.kind == "depthwise":
            continue
        keep_in = torch.tensor([j for j in range(len(con.inputs)) if con.inputs[j][0] not in ids])
        keep_out = _kept_outputs(graph, con.fold, ids)
        rec = stats.setdefault(con.module, {"kind": con.kind, "removed_inputs": len(rem), "n": 0})

        def hook(
            mod: nn.Module,
            inp: Any,
            con: Any = con,
            keep_in: Any = keep_in,
            keep_out: Any = keep_out,
            rec: dict[str, Any] = rec,
        ) -> None:
            _compare(mod, pmods, amods, con, inp[0], keep_in, keep_out, rec)

        handles.append(amods[con.module].register_forward_pre_hook(hook))
    out_diff = []
    try:
        with torch.no_grad():
            for x in batches:
                a, p = _first(ablated(x)), _first(pruned(x))
                out_diff.append(
                    (
                        (a - p).abs().max() / a.abs().max().clamp_min(1e-12),
                        (a - p).abs().mean() / a.abs().mean().clamp_min(1e-12),
                    )
                )
    finally:
        for h in handles:
            h.remove()
    rows = [_row(name, r) for name, r in stats.items() if r["n"]]
    layers = pd.DataFrame(
        rows,
        columns=[
            "layer",
            "kind",
            "kernel",
            "removed_inputs",
            "interior_max",
            "border_max",
            "border_mean",
            "border_pixels",
        ],
    )
    summary = {
        "layers": float(len(layers)),
        "interior_max": float(layers["interior_max"].max()) if len(layers) else 0.0,
        "border_max": float(layers["border_max"].max()) if len(layers) else 0.0,
        "border_mean": float(layers["border_mean"].mean()) if len(layers) else 0.0,
        "output_max": float(max(d[0] for d in out_diff)) if out_diff else float("nan"),
        "output_mean": float(np.mean([float(d[1]) for d in out_diff])) if out_diff else float("nan"),
    }
    return layers, summary


def _kept_outputs(graph: Graph, fold: str, ids: set[int]) -> torch.Tensor | None:
    """The output channels of a layer that stay (its own outputs may be removed too); None: all."""
    p = graph.producers.get(fold) if fold else None
    if p is None:
        return None
    return torch.tensor([c for c in range(p.channels) if p.first + c not in ids])


def _compare(
    mod: nn.Module,
    pmods: dict[str, nn.Module],
    amods: dict[str, nn.Module],
    con: Any,
    x: torch.Tensor,
    keep_in: torch.Tensor,
    keep_out: torch.Tensor | None,
    rec: dict[str, Any],
) -> None:
    pm: Any = pmods[con.module]
    am: Any = mod
    yp = pm(x[:, keep_in])  # the pruned layer has no hook
    if con.kind == "linear":
        ya = F.linear(x, am.weight, am.bias)
    else:  # not am(x): this runs inside am's own pre-hook
        ya = F.conv2d(x, am.weight, am.bias, am.stride, am.padding, am.dilation, am.groups)
        if con.fold:
            ya, yp = amods[con.fold](ya), pmods[con.fold](yp)
    if keep_out is not None:
        ya = ya[:, keep_out]
    d = (ya - yp).abs()
    scale = float(ya.std()) or 1.0
    rec["n"] += 1
    rec["scale"] = scale
    if con.kind == "linear" or d.dim() < 4:
        rec["kernel"] = "linear"
        rec["interior_max"] = max(rec.get("interior_max", 0.0), float(d.max()) / scale)
        rec["border_max"], rec["border_sum"], rec["border_n"], rec["border_pixels"] = 0.0, 0.0, 0, 0.0
        return
    mask = border_mask(am, x.shape[2], x.shape[3]).to(d.device)
    k = am.kernel_size
    rec["kernel"] = f"{k[0]}x{k[1]}/{am.stride[0]}"
    inner, edge = d[..., ~mask], d[..., mask]
    rec["interior_max"] = max(
        rec.get("interior_max", 0.0), float(inner.max()) / scale if inner.numel() else 0.0
    )
    rec["border_max"] = max(rec.get("border_max", 0.0), float(edge.max()) / scale if edge.numel() else 0.0)
    rec["border_sum"] = rec.get("border_sum", 0.0) + (float(edge.sum()) / scale if edge.numel() else 0.0)
    rec["border_n"] = rec.get("border_n", 0) + edge.numel()
    rec["border_pixels"] = float(mask.float().mean())


def _row(name: str, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "layer": name,
        "kind": r["kind"],
        "kernel": r["kernel"],
        "removed_inputs": r["removed_inputs"],
        "interior_max": r["interior_max"],
        "border_max": r["border_max"],
        "border_mean": r["border_sum"] / r["border_n"] if r["border_n"] else 0.0,
        "border_pixels": r["border_pixels"],
    }


def _first(out: Any) -> torch.Tensor:
    """The model's first output tensor (the decoded predictions, or the class probabilities)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model's output is {type(out).__name__}, not a tensor")
    return out.float()
