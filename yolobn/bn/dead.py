"""Data-free dead-channel criteria, from a BatchNorm's own tensors only.

For a BatchNorm in eval mode, channel c computes ``y = gamma * (x - mu) / sqrt(var + eps) + beta``
with ``mu, var`` the running statistics of its input x on the training data. If x had exactly that
mean and variance, y has mean ``beta`` and standard deviation
``|gamma| * sqrt(var / (var + eps))``. The criteria below read that estimated output distribution:

``constant`` (dead)
    The estimated output std is below ``const_std``: the channel emits (nearly) the same value for
    every input, whether because gamma is ~0 or because the running variance is ~0 (the conv before
    it produced a constant on the training data). Its effect can be folded into the next layer's bias.
``off`` (dead)
    After an activation with a floor (SiLU, ReLU, GELU, Hardswish, Mish, ELU), the pre-activation
    mean lies so far below zero that even ``beta + off_sigma * std`` is negative: the activation
    output is pinned near its floor for almost all inputs (fewer than ~0.13 % positive at 3 sigma
    under a Gaussian approximation).
``eps_dominated`` (a finding, not dead)
    ``running_var < eps_factor * eps``: eps, not the data, sets the output scale. These are exactly
    the channels that break when a model is ported with another eps (Ultralytics uses 1e-3, PyTorch's
    default is 1e-5): at ``eps_factor=0.1`` the scale changes by more than 3x.

Every threshold is a field of ``Thresholds`` and a CLI option.
"""

from __future__ import annotations

import torch

from yolobn.core.thresholds import Thresholds

__all__ = ["FLOOR_ACTIVATIONS", "criteria"]

# Activations whose output is (close to) constant for very negative input.
FLOOR_ACTIVATIONS = frozenset({"SiLU", "ReLU", "ReLU6", "GELU", "Hardswish", "Mish", "ELU", "CELU", "SELU"})


def criteria(
    gamma: torch.Tensor,
    beta: torch.Tensor,
    var: torch.Tensor,
    eps: float | torch.Tensor,
    floor: bool | torch.Tensor,
    th: Thresholds,
) -> dict[str, torch.Tensor]:
    """The data-free criteria of BatchNorm channels, vectorised (float64 tensors of any shape):
    ``eps`` and ``floor`` (the activation has a floor) broadcast against them, e.g. a (layers, 1)
    column for a stack of equal-width layers.

    Returns:
        dict of tensors: ``out_std``, ``constant``, ``off``, ``eps_dominated``, ``dead`` and
        ``reason`` (int codes: 0 alive, 1 constant, 2 off; constant wins over off).
    """
    out_std = gamma.abs() * torch.sqrt(var / (var + eps))
    constant = out_std < th.const_std
    off = ((beta + th.off_sigma * out_std) < 0) & floor
    eps_dom = var < th.eps_factor * eps
    reason = torch.where(constant, 1, torch.where(off, 2, 0))
    return {
        "out_std": out_std,
        "constant": constant,
        "off": off & ~constant,
        "eps_dominated": eps_dom,
        "dead": constant | off,
        "reason": reason,
    }
