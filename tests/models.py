"""Tiny models with planted BatchNorm values and closed-form answers."""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-3

# Planted channels of TinyNet.bn1 (eps 1e-3, followed by SiLU):
#   gamma, beta, running_mean, running_var, expected dead reason, eps-dominated
PLANTED = [
    (0.0, 0.5, 0.1, 1.0, "constant", False),  # gamma 0: output is beta whatever the input
    (1.0, 0.2, 0.3, 0.0, "constant", True),  # var 0: the conv before emitted a constant
    (1.0, -5.0, 0.0, 1.0, "off", False),  # 5 sigma below zero before SiLU
    (1.0, 0.0, 0.0, 1.0, "", False),  # healthy
    (1.0, 0.1, 0.0, 1e-5, "", True),  # var << eps: eps sets the scale (finding, not dead)
    (1.0, -2.0, 0.0, 1.0, "", False),  # -2 + 3 * 0.9995 > 0: not off at off_sigma 3
    (0.5, -1.0, 2.0, 4.0, "", False),  # healthy, non-trivial mean
    (-2.0, 1.0, -1.0, 0.25, "", False),  # negative gamma: |gamma| counts
]


class Block(nn.Module):
    """Conv -> BN -> act, named like Ultralytics' Conv (conv, bn, act)."""

    def __init__(self, c1: int, c2: int, k: int, s: int, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=EPS)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class TinyNet(nn.Module):
    """b1: conv 3x3/2 -> bn (planted) -> SiLU; b2: conv 1x1 -> bn -> Identity; seq: dwconv -> bn -> ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = Block(3, 8, 3, 2, nn.SiLU())
        self.b2 = Block(8, 4, 1, 1, nn.Identity())
        self.seq = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(4), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(self.b2(self.b1(x)))


def plant(model: TinyNet) -> TinyNet:
    g, b, m, v = (torch.tensor([row[i] for row in PLANTED], dtype=torch.float32) for i in range(4))
    with torch.no_grad():
        model.b1.bn.weight.copy_(g)
        model.b1.bn.bias.copy_(b)
        model.b1.bn.running_mean.copy_(m)
        model.b1.bn.running_var.copy_(v)
        # b2.bn has an Identity after it after it: a very negative beta is not "off".
        model.b2.bn.bias.copy_(torch.tensor([-5.0, 0.0, 0.0, 0.0]))
        model.b2.bn.running_var.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        # seq.1 before ReLU: channel 3 off; running stats otherwise default-ish but trained.
        model.seq[1].bias.copy_(torch.tensor([0.0, 0.1, 0.2, -10.0]))
        model.seq[1].running_var.copy_(torch.tensor([0.5, 0.5, 0.5, 0.5]))
    return model.eval()
