"""What recalibrating B would recover: the measured effect behind ``compare A B --images DIR --data DATA``.

A, B, and B recalibrated on the comparison's images (``yolobn.run.recalibration``, exact population
statistics) are validated on the same dataset at the same imgsz, with Ultralytics' validator
(``yolobn.evaluate.validation``, never fused). The recalibrated copy is not written anywhere:
``yolobn recalibrate`` writes it when the answer says so.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from yolobn.bn.comparison import Comparison
from yolobn.evaluate.validation import KEY_METRICS, validate
from yolobn.run.recalibration import recalibrate

__all__ = ["recalibration_effect"]


def recalibration_effect(
    cmp: Comparison,
    data: str | os.PathLike[str],
    *,
    batch: int = 16,
    device: str = "cpu",
    trust: bool = False,
) -> Comparison:
    """``cmp`` (a Comparison observed on images) with ``observed["effect"]`` filled in.

    Args:
        cmp: the result of ``yolobn.run.drift.compare_images``.
        data: the dataset to validate on (``shapes``, or a dataset yaml).
        batch, device: for the recalibration and the validations.
        trust: the dataset yaml's download script may run (trusted files only).

    Returns:
        A new Comparison; ``observed["effect"]`` = ``{"data", "metric", "a", "b", "b_recalibrated",
        "imgsz"}`` (the task's headline metric, e.g. ``metrics/mAP50-95(B)``).
    """
    if cmp.observed is None:
        raise ValueError("recalibration_effect needs a comparison observed on images (compare_images)")
    obs = cmp.observed
    size = int(obs["imgsz"])
    metric = KEY_METRICS.get(cmp.b.meta.task or "detect", KEY_METRICS["detect"])[0]

    def score(model: Any) -> float:
        m = validate(model, data, imgsz=size, batch=batch, device=device, trust=trust)
        return float(m.get(metric, float("nan")))

    recal = recalibrate(cmp.b.loaded, obs["files"], imgsz=size, batch=max(batch, 1), device=device)
    effect = {
        "data": os.fspath(data),
        "metric": metric,
        "imgsz": size,
        "a": score(cmp.a.loaded),
        "b": score(cmp.b.loaded),
        "b_recalibrated": score(recal),
    }
    return dataclasses.replace(cmp, observed={**obs, "effect": effect})
