"""Port risk, data-free: how much a BatchNorm layer's output moves when it is computed another way.

Two ports, each a per-layer figure relative to the layer's own output (0.01: the output moves by 1%
of its typical size), computed from the stored statistics alone, as if the input were distributed
as the running statistics say (mean ``mu``, variance ``v`` per channel):

``port_eps``: the BN is run with eps ``TARGET_EPS`` (1e-5, PyTorch's default) instead of its own
    (Ultralytics' detectors use 1e-3). The scale ``s = gamma / sqrt(v + eps)`` becomes ``s'``, so a
    channel's output changes by ``(s' - s)(x - mu)``, of standard deviation ``|s' - s| sqrt(v)``.
    The layer's figure is the root of the summed squares of these over the root of the summed
    output variances ``s^2 v``: ``sqrt(sum (s' - s)^2 v) / sqrt(sum s^2 v)``. Channels whose running
    variance is near or below eps dominate it: eps, not the data, sets their scale.
``port_fp16``: the BN is run in float16, as ``lowp:dtype=fp16`` does (input, scale and shift
    rounded to fp16, the multiply-add rounded again). Each rounding adds an error of standard
    deviation ``u / sqrt(3)`` times the magnitude rounded (``u = 2^-11``, fp16's unit roundoff):
    the input (``s * sqrt(mu^2 + v)``), the scale (the same), the shift ``b = beta - mu s`` and the
    output (``sqrt(beta^2 + s^2 v)``). The figure is the root of the summed error variances over the
    root of the summed output variances. Channels whose mean is large against their spread dominate
    it: fp16 rounds the mean and loses the spread. A layer where some value within six standard
    deviations of the mean would overflow fp16 (beyond 65504) gets ``inf``.

Sums are exact (``math.fsum``), so the figures are the same bits on every machine.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["FP16_MAX", "FP16_UNIT", "TARGET_EPS", "port_figures"]

TARGET_EPS = 1e-5  # PyTorch's BatchNorm default: what a port that forgets Ultralytics' eps gets
FP16_UNIT = 2.0**-11  # float16's unit roundoff (10 stored mantissa bits)
FP16_MAX = 65504.0  # the largest finite float16


def port_figures(
    gamma: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: torch.Tensor
) -> tuple[list[float], list[float]]:
    """``(port_eps, port_fp16)`` of each row of a (layers, channels) stack of float64 statistics
    (``eps``: a (layers, 1) column). NaN for a layer without output variance (all constant)."""
    g, b, mu, v, e = (t.numpy() for t in (gamma, beta, mean, var, eps))
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.clip(v, 0.0, None)  # a negative running variance is a finding of its own
        s = g / np.sqrt(v + e)
        s_target = g / np.sqrt(v + TARGET_EPS)
        out_var = s * s * v
        eps_var = (s_target - s) ** 2 * v
        shift = b - mu * s
        magnitude = 2 * s * s * (mu * mu + v) + shift * shift + (b * b + out_var)
        fp16_var = (FP16_UNIT * FP16_UNIT / 3) * magnitude
        reach = np.abs(mu) + 6 * np.sqrt(v)  # the input, within six standard deviations
        overflow = (np.maximum(reach, np.abs(s) * reach + np.abs(b)) > FP16_MAX).any(1)
    fp16 = [math.inf if o else r for o, r in zip(overflow.tolist(), _ratios(fp16_var, out_var), strict=True)]
    return _ratios(eps_var, out_var), fp16


def _ratios(num: np.ndarray, den: np.ndarray) -> list[float]:
    out = []
    for a, b in zip(num.tolist(), den.tolist(), strict=True):
        top, bottom = math.fsum(x for x in a if math.isfinite(x)), math.fsum(x for x in b if math.isfinite(x))
        out.append(math.sqrt(top / bottom) if bottom > 0 else float("nan"))
    return out
