"""A worked example of a custom BatchNorm for `yolobn swap --impl examples/custom_bn.py:PerTensorInt8BatchNorm`.

The contract (either one):
- a classmethod ``from_batchnorm(bn)`` that returns the new module built from a trained
  ``nn.BatchNorm2d`` (the recommended form: you decide what to copy), or
- a constructor with BatchNorm2d's arguments (``num_features, eps=, momentum=, affine=,
  track_running_stats=``) whose instance accepts ``load_state_dict(bn.state_dict())``.

The module must be an ``nn.Module`` and return a tensor of the input's shape. yolobn builds one
instance per swapped BatchNorm, on a copy of the model, and validates that copy unfused.

This one models an accelerator that applies BN as an int8 multiply-add: the per-channel scale and
shift are rounded to 8-bit integers with one power-of-two exponent per layer.
"""

from __future__ import annotations

import torch
from torch import nn


class PerTensorInt8BatchNorm(nn.Module):
    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", self._round(scale))
        self.register_buffer("shift", self._round(shift))

    @staticmethod
    def _round(v: torch.Tensor) -> torch.Tensor:
        # one power-of-two step per layer, chosen so that max |v| fits in int8
        exp = torch.ceil(torch.log2(v.abs().max().clamp_min(1e-12) / 127))
        step = torch.pow(2.0, exp)
        return torch.clamp(torch.round(v / step), -127, 127) * step

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> PerTensorInt8BatchNorm:
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias.detach() - bn.running_mean * scale
        return cls(scale, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)
