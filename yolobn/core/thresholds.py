"""The dead-channel thresholds: one home for their defaults, validation and help text.

This module imports nothing heavy, so that the CLI builds its options from the dataclass fields
(``cli.options``) without importing torch. The criteria themselves live in ``yolobn.bn.dead``
(data-free) and ``yolobn.run.observation`` (observed on images).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, cast

from yolobn.core.limits import MAX_IMGSZ, MIN_IMGSZ

__all__ = [
    "MAX_IMGSZ",
    "MIN_IMGSZ",
    "Levels",
    "ObservedThresholds",
    "Thresholds",
    "options",
]  # imgsz: see limits


def _opt(default: float, flag: str, metavar: str, help: str, *, share: bool = False) -> Any:
    """A threshold field: its default, CLI flag and help text (``share``: a value in [0, 1])."""
    return field(default=default, metadata={"flag": flag, "metavar": metavar, "help": help, "share": share})


def _check(obj: Any) -> None:
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"threshold {f.name} must be a finite number >= 0, got {v!r}")
        if f.metadata.get("share") and v > 1:
            raise ValueError(f"threshold {f.name} is a share between 0 and 1, got {v}")


@dataclass(frozen=True)
class Thresholds:
    """Tunable thresholds of the data-free criteria (see ``yolobn.bn.dead``).

    Attributes:
        const_std: a channel is ``constant`` when its estimated BN output std is below this.
        off_sigma: a channel is ``off`` when ``beta + off_sigma * std < 0`` before a floored activation.
        eps_factor: a channel is ``eps_dominated`` when ``running_var < eps_factor * eps``.
        eps_share: a layer gets a finding when at least this share of its channels is eps-dominated.
        extreme_scale: a layer gets a finding when some ``|gamma / sqrt(var + eps)|`` exceeds this.
        init_tol: gamma and beta are "still at init" when every channel is within this of (1, 0).
            In units of the normalised output (whose std is ~|gamma| ~ 1): 1e-5 changes the BN output
            by at most 1e-5 of its std, below float16 resolution (~5e-4 at 1, where a stripped
            checkpoint stores gamma) and ~100 float32 steps at 1, while any optimizer step with a real
            gradient moves a parameter further (an Adam step is ~lr, 1e-3..1e-2). So "at init" reads
            "no gradient, or a negligible one".
        near_init_tol: gamma and beta are "near init" when every channel is within this of (1, 0)
            (and not at init): the layer barely trained.
    """

    const_std: float = _opt(1e-3, "--const-std", "X", "constant below this output std (default 1e-3)")
    off_sigma: float = _opt(3.0, "--off-sigma", "K", "off when beta + K*std < 0 (default 3)")
    eps_factor: float = _opt(0.1, "--eps-factor", "F", "eps-dominated when var < F*eps (default 0.1)")
    eps_share: float = _opt(
        0.5, "--eps-share", "S", "layer finding at this eps-dominated share (default 0.5)", share=True
    )
    extreme_scale: float = _opt(
        100.0, "--extreme-scale", "X", "layer finding when |scale| exceeds this (default 100)"
    )
    init_tol: float = _opt(
        1e-5, "--init-tol", "T", "gamma/beta still at init when all within T of (1, 0) (default 1e-5)"
    )
    near_init_tol: float = _opt(
        0.02, "--near-init-tol", "T", "gamma/beta near init when all within T of (1, 0) (default 0.02)"
    )

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ObservedThresholds:
    """Criteria of the observed dead channels (see ``yolobn.run.observation``).

    Attributes:
        dead_std: ``flat`` when the post-activation std over all images and positions is below this.
        min_positive: ``never positive`` when, before a floored activation, the share of positive
            pre-activations is at most this (0: not one positive value).
    """

    dead_std: float = _opt(
        1e-3, "--dead-std", "X", "flat when the post-activation std is below X (default 1e-3)"
    )
    min_positive: float = _opt(
        0.0,
        "--min-positive",
        "S",
        "never positive when at most this share of pre-activations is > 0 (default 0)",
        share=True,
    )

    def __post_init__(self) -> None:
        _check(self)
        if self.min_positive >= 1:
            raise ValueError(f"threshold min_positive is a share below 1, got {self.min_positive}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Levels:
    """When a number makes an answer say *look* or *act* (``yolobn.core.verdict``); docs/numbers.md
    says where each value comes from.

    Attributes:
        port_look, port_act: a layer's port figure (``yolobn.bn.port``: how much its output moves
            with eps 1e-5, or in fp16, relative to its size). The demo's ``model.0.bn`` moves 11% with
            eps 1e-5, and that one layer costs 0.0069 mAP50-95; a typical layer moves 0.1%.
        drift_look, drift_act: the mean drift over the layers (nats). The demo on its own training
            images: 0.04; a fine-tune that broke BN: 1.04; a darkened copy of the images: 3.1.
        drift_layer_look, drift_layer_act: one layer's drift (the demo's largest on its own images
            is 0.18; the broken fine-tune's model.1.bn is 10.7).
        dead_act: the observed dead share above which pruning is worth measuring (the demo: 2.4%).
        removable_act: the share of the channels (%) that a frontier can ablate within its tolerance
            from which pruning is the next step (*act*); above 0, *look*. The demo: 5% by the observed
            ranking at 0.005 mAP50-95 (act).
        min_images: fewer images than this and an observed answer (dead channels, drift) says at
            most *look*: two photos are not evidence enough to act on (the demo's 96 images are).
    """

    port_look: float = 0.01
    port_act: float = 0.05
    drift_look: float = 0.1
    drift_act: float = 0.5
    drift_layer_look: float = 0.5
    drift_layer_act: float = 2.0
    dead_act: float = 0.01
    removable_act: float = 5.0
    min_images: int = 8

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"level {f.name} must be a finite number >= 0, got {v!r}")

    def status(self, value: float, look: float, act: float) -> str:
        """``act``, ``look`` or ``ok`` for ``value`` against two of these levels (NaN: ``ok``)."""
        if not math.isfinite(value) and value != math.inf:
            return "ok"
        return "act" if value >= act else "look" if value >= look else "ok"

    def sampled(self, status: str, images: int) -> str:
        """``status`` of an answer observed on ``images`` images: *act* needs ``min_images``."""
        return "look" if status == "act" and images < self.min_images else status

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def options(cls: type) -> list[tuple[str, str, float, str, str]]:
    """``(field, flag, default, metavar, help)`` for every threshold of ``cls`` (the CLI's options)."""
    return [
        (f.name, f.metadata["flag"], cast(float, f.default), f.metadata["metavar"], f.metadata["help"])
        for f in fields(cls)
    ]
