"""The one Gaussian KL divergence: drift (observed statistics against the stored ones), the change
between two checkpoints (``compare``) and the recalibration check all use it."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["gaussian_kl"]


def gaussian_kl(m1: Any, v1: Any, m0: Any, v0: Any) -> np.ndarray:
    """``KL(N(m1, v1) || N(m0, v0))`` per element, in nats, as float64; exactly 0 where both are equal.

    ``0.5 * (v1/v0 + (m1 - m0)**2 / v0 - 1 - log(v1/v0))``: the cost of describing data distributed
    as the first Gaussian (the images, the new checkpoint) with the second (the stored statistics,
    the old checkpoint). Arguments are arrays (or CPU tensors) of one shape, variances > 0.
    """
    m1, v1, m0, v0 = (np.asarray(x, dtype=np.float64) for x in (m1, v1, m0, v0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = v1 / v0
        kl = 0.5 * (r + (m1 - m0) ** 2 / v0 - 1 - np.log(r))
    return np.where((m1 == m0) & (v1 == v0), 0.0, kl)
