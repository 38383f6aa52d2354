"""Validation results shaped like Ultralytics' own (``.box.map``, ``.results_dict``, ``.fitness``,
``summary()``, ``to_df()``), so that code written for ``model.val()`` reads yolobn's results.

``Metrics`` is also the plain dict of Ultralytics' raw keys (``metrics/mAP50-95(B)``): the tables,
the rows files and the baseline cache store that dict. What only a fresh validation knows (mAP75,
per-class results, class names, the speed split, the validator's fitness) rides beside it as
attributes, and reads as NaN or empty on a result that came from the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from yolobn.core.notebook import kv, table

__all__ = ["Group", "Metrics", "details_of"]

GROUPS = {"B": "box", "M": "seg", "P": "pose"}
NAN = float("nan")


@dataclass
class Group:
    """One kind of result (boxes, masks, keypoints), with Ultralytics' attribute names."""

    map: float = NAN  # mAP50-95
    map50: float = NAN
    map75: float = NAN
    mp: float = NAN  # mean precision
    mr: float = NAN  # mean recall
    maps: list[float] = field(default_factory=list)  # mAP50-95 per class index (Ultralytics' convention)

    def __repr__(self) -> str:
        return f"(map={self.map:.4f}, map50={self.map50:.4f}, map75={self.map75:.4f}, mp={self.mp:.4f}, mr={self.mr:.4f})"


@dataclass
class Details:
    """What a fresh validation knows beyond the headline dict."""

    names: dict[int, str] = field(default_factory=dict)
    speed: dict[str, float] = field(
        default_factory=dict
    )  # ms per image: preprocess, inference, loss, postprocess
    fitness: float = NAN
    map75: dict[str, float] = field(default_factory=dict)  # per group tag
    maps: dict[str, list[float]] = field(default_factory=dict)
    per_class: list[dict[str, Any]] = field(default_factory=list)  # the rows of summary()


def details_of(validator: Any) -> Details:
    """Read mAP75, per-class results, names, speed and fitness off a finished Ultralytics validator."""
    met = getattr(validator, "metrics", None)
    names = {int(k): str(v) for k, v in dict(getattr(validator, "names", None) or {}).items()}
    d = Details(
        names=names, speed={str(k): float(v) for k, v in dict(getattr(validator, "speed", {}) or {}).items()}
    )
    if met is None:
        return d
    d.fitness = float(met.fitness) if isinstance(met.fitness, (int, float)) else NAN
    indices = [int(i) for i in getattr(met, "ap_class_index", ())]
    rows: dict[int, dict[str, Any]] = {i: {"class": names.get(i, str(i))} for i in indices}
    for tag, name in GROUPS.items():
        g = getattr(met, name, None)
        if g is None or not hasattr(g, "map75"):
            continue
        d.map75[tag] = float(g.map75)
        d.maps[tag] = [float(x) for x in g.maps]
        for k, i in enumerate(indices):
            p, r, ap50, ap = (float(x) for x in g.class_result(k))
            rows[i].update({f"{name}_p": p, f"{name}_r": r, f"{name}_map50": ap50, f"{name}_map": ap})
    d.per_class = [rows[i] for i in indices]
    return d


class Metrics(dict[str, float]):
    """Validation results: ``.box.map`` (mAP50-95), ``.box.map50``, ``.box.map75``, ``.box.mp``,
    ``.box.mr``, ``.box.maps`` (per class); ``.seg`` and ``.pose`` for masks and keypoints;
    ``.top1``/``.top5`` for classifiers; ``.results_dict``, ``.fitness``, ``.speed``, ``.names``,
    ``summary()`` (per class) and ``to_df()``, as on Ultralytics' metrics; ``.ms_per_image``.

    It is also the dict of Ultralytics' raw keys (``metrics/mAP50-95(B)``), which the tables and the
    baseline cache store; ``to_dict()`` gives readable names.
    """

    def __init__(self, values: dict[str, float] | None = None, details: Details | None = None) -> None:
        super().__init__(values or {})
        self.details = details or Details()

    def _group(self, tag: str) -> Group:
        def g(stat: str) -> float:
            return self.get(f"metrics/{stat}({tag})", NAN)

        return Group(
            map=g("mAP50-95"),
            map50=g("mAP50"),
            map75=self.details.map75.get(tag, NAN),
            mp=g("precision"),
            mr=g("recall"),
            maps=list(self.details.maps.get(tag, [])),
        )

    @property
    def box(self) -> Group:
        return self._group("B")

    @property
    def seg(self) -> Group:
        return self._group("M")

    @property
    def pose(self) -> Group:
        return self._group("P")

    @property
    def top1(self) -> float:
        return self.get("metrics/accuracy_top1", NAN)

    @property
    def top5(self) -> float:
        return self.get("metrics/accuracy_top5", NAN)

    @property
    def ms_per_image(self) -> float:
        return self.get("ms_per_image", NAN)

    @property
    def results_dict(self) -> dict[str, float]:
        """Ultralytics' ``results_dict``: the raw metric keys and ``fitness``."""
        out = {k: v for k, v in self.items() if k.startswith("metrics/")}
        out["fitness"] = self.fitness
        return out

    @property
    def fitness(self) -> float:
        """The validator's own fitness (its definition differs between Ultralytics releases:
        docs/compat.md); NaN on a result read from the cache."""
        return self.details.fitness

    @property
    def speed(self) -> dict[str, float]:
        """Milliseconds per image: preprocess, inference, loss, postprocess."""
        return dict(self.details.speed) or {"inference": self.ms_per_image}

    @property
    def names(self) -> dict[int, str]:
        return dict(self.details.names)

    def summary(self) -> list[dict[str, Any]]:
        """One dict per class with instances in the split: its name and, per kind of result,
        precision, recall, mAP50 and mAP50-95 (empty for classifiers and cached results)."""
        return [dict(r) for r in self.details.per_class]

    def to_df(self) -> pd.DataFrame:
        """``summary()`` as a DataFrame."""
        return pd.DataFrame(self.summary())

    def to_dict(self) -> dict[str, float]:
        """Readable names: ``box_map``, ``box_map50``, ``seg_map``, ``top1``, ``ms_per_image``, ..."""
        out: dict[str, float] = {}
        for k, v in self.items():
            if k.startswith("metrics/") and k.endswith(")"):
                stat, tag = k[len("metrics/") : -1].split("(")
                key = {"mAP50-95": "map", "mAP50": "map50", "precision": "mp", "recall": "mr"}.get(stat, stat)
                out[f"{GROUPS.get(tag, tag)}_{key}"] = v
            elif k.startswith("metrics/accuracy_"):
                out[k[len("metrics/accuracy_") :]] = v
            else:
                out[k.replace("metrics/", "")] = v
        return out

    def __repr__(self) -> str:
        parts = [f"{k}={v:.4f}" for k, v in self.to_dict().items() if not k.endswith(("_s", "ms_per_image"))]
        return f"Metrics({', '.join(parts)})"

    def _repr_html_(self) -> str:
        items = [(k, v) for k, v in self.to_dict().items() if not k.endswith("_s")]
        if not math.isnan(self.fitness) and "fitness" not in self:
            items.append(("fitness", self.fitness))
        html = kv("Metrics", items)
        if self.details.per_class:
            df = self.to_df()
            html += table(df, list(df.columns))
        return html
