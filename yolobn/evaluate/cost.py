"""What a model costs to run: parameters, FLOPs (Ultralytics' own counter) and CPU latency.

Latency is only meaningful as a ratio measured in one run (these machines are shared and noisy):
``latency`` times several models in alternation, each fused as Ultralytics fuses it for
inference, on one CPU thread (several threads on a busy machine wait for each other far longer than
they compute), and reports the fastest run of each (what the model costs when nothing interferes).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
from torch import nn
from ultralytics.utils.torch_utils import get_flops

from yolobn.io.quiet import quiet_ultralytics

__all__ = ["count_params", "gflops", "latency"]


def count_params(model: nn.Module) -> int:
    """Every parameter (trainable or not), as Ultralytics' model summary counts them."""
    return int(sum(p.numel() for p in model.parameters()))


def gflops(model: nn.Module, imgsz: int) -> float:
    """GFLOPs of one ``imgsz`` image by Ultralytics' own counter (``utils.torch_utils.get_flops``,
    thop underneath); NaN when it cannot count (thop missing or the model not traceable)."""
    with quiet_ultralytics():
        v = float(get_flops(copy.deepcopy(model).float().eval(), imgsz))
    return v if v > 0 else float("nan")


def latency(
    models: Sequence[nn.Module],
    imgsz: int,
    *,
    repeats: int = 15,
    warmup: int = 3,
    batch: int = 1,
    channels: int = 3,
    threads: int = 1,
) -> list[float]:
    """Milliseconds per forward pass of each model, the fastest of ``repeats`` (fused copies, CPU,
    ``threads`` threads, ``torch.inference_mode``), timed in alternation so that a slow moment of
    the machine costs every model alike."""
    nets = [_fused(m) for m in models]
    x = torch.rand(batch, channels, imgsz, imgsz)
    times: list[list[float]] = [[] for _ in nets]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                for n in nets:
                    n(x)
            for _ in range(repeats):
                for k, n in enumerate(nets):
                    t0 = time.perf_counter()
                    n(x)
                    times[k].append(1000 * (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(before)
    return [min(t) for t in times]


def _fused(model: nn.Module) -> nn.Module:
    net: nn.Module = copy.deepcopy(model).float().cpu().eval()
    fuse = getattr(net, "fuse", None)
    if callable(fuse):
        with quiet_ultralytics():
            net = fuse(verbose=False) if "verbose" in fuse.__code__.co_varnames else fuse()
    return net.eval()
