"""Where models run: ``--device`` parsed once, models moved without touching the caller's copy."""

from __future__ import annotations

import copy

import torch
from torch import nn

from yolobn.core.errors import YolobnError

__all__ = ["on_device", "parse_device"]


def parse_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "":
        return torch.device("cpu")
    text = str(device).strip().lower()
    if text.isdigit():
        text = f"cuda:{text}"
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise YolobnError(f"device {device}: unknown device; use cpu, 0 or cuda:0") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise YolobnError(f"device {device}: CUDA is not available on this machine; use device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise YolobnError(f"device {device}: no such GPU ({torch.cuda.device_count()} on this machine)")
    if dev.type == "mps":  # no float64 on MPS, and the statistics are accumulated in float64
        raise YolobnError(f"device {device}: MPS is not supported (no float64); use device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise YolobnError(f"device {device}: use cpu, 0, cuda:0 ...")
    return dev


def on_device(root: nn.Module, dev: torch.device) -> nn.Module:
    """``root`` itself when already on ``dev``, else a copy moved there (the caller's model stays put)."""
    for t in (*root.parameters(), *root.buffers()):
        if t.device == dev:
            return root
        break
    return copy.deepcopy(root).to(dev)
