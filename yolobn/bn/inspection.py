"""One call that does the whole data-free inspection: load, walk, statistics, dead channels, summary."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from yolobn._version import __version__
from yolobn.bn.stats import stats_and_findings
from yolobn.bn.walk import matches
from yolobn.core import notebook
from yolobn.core.errors import NoBatchNormError, YolobnError
from yolobn.core.findings import Finding, by_kind, describe
from yolobn.core.precision import json_safe
from yolobn.core.thresholds import Thresholds
from yolobn.io.loader import LoadedModel, ModelMeta, load

__all__ = [
    "Inspection",
    "SORT_KEYS",
    "eps_counts",
    "inspect",
    "rank_layers",
    "require_batchnorm",
    "select_layers",
    "sort_layers",
]

SORT_KEYS = {
    "index": ("index", True),
    "name": ("name", True),
    "dead": ("dead", False),
    "dead_share": ("dead_share", False),
    "eps": ("eps_dominated", False),
    "eps_share": ("eps_share", False),
    "channels": ("channels", False),
    "scale": ("max_abs_scale", False),
    "gamma": ("gamma_mean", True),
    "var": ("running_var_p50", True),
}


@dataclass
class Inspection:
    """Everything the data-free inspection found; the CLI and every report read only this."""

    loaded: LoadedModel
    thresholds: Thresholds
    layers: pd.DataFrame
    channels: pd.DataFrame
    selection: list[str] = field(default_factory=list)
    observation: Any = None  # yolobn.run.observation.Observation, when observed on images (observe())
    layer_findings: list[Finding] = field(default_factory=list)  # of the selected layers, in layer order

    @property
    def meta(self) -> ModelMeta:
        return self.loaded.meta

    def __repr__(self) -> str:
        s, m = self.summary(), self.meta
        obs = f", observed on {len(self.observation.images)} images" if self.observation is not None else ""
        return (
            f"Inspection({m.path or m.source}: {s['bn_layers']} BN layers, {s['dead']} dead channels, "
            f"{len(s['findings'])} findings{obs})"
        )

    def _repr_html_(self) -> str:
        s, m = self.summary(), self.meta
        items = [
            ("model", m.path or m.source),
            ("task", f"{m.task} · {m.nc or 0} classes"),
            ("BatchNorm", f"{s['bn_layers']} layers, {s['channels']:,} channels"),
            ("dead", f"{s['dead']:,} ({s['dead_share']:.1%})"),
            ("eps-dominated", f"{s['eps_dominated']:,}"),
            ("findings", ", ".join(f"{k} ×{v}" for k, v in s["findings_by_kind"].items()) or "none"),
        ]
        obs = self.observed_summary()
        cols = [
            "name",
            "block",
            "channels",
            "gamma_mean",
            "running_var_p50",
            "dead",
            "eps_dominated",
            "findings",
        ]
        if obs is not None:
            items.append(("observed dead", f"{obs['observed_dead']:,} on {obs['images']} images"))
            cols[-1:-1] = ["obs_dead", "drift"]
        return notebook.kv("yolobn inspection", items) + notebook.table(rank_layers(self.layers), cols)

    def findings(self) -> list[Finding]:
        """The health findings of the (selected) BN layers, as records, in layer order."""
        return list(self.layer_findings)

    def summary(self, worst: int = 5) -> dict[str, Any]:
        """Headline numbers: counts, dead share by reason, worst layers, eps, health findings.

        ``eps`` maps each BN eps in the model (its ``repr``, e.g. ``"0.001"``, ``"1e-05"``) to the
        number of layers using it, smallest eps first: ``{"0.001": 81}`` for a YOLO detector.
        ``findings`` lists ``{name, finding}`` (the words) and ``findings_by_kind`` counts them by code.
        """
        ly, ch = self.layers, self.channels
        n_ch = len(ch)
        dead_by = {r: int((ch["dead_reason"] == r).sum()) for r in ("constant", "off")}
        n_dead = int(ch["dead"].sum()) if n_ch else 0
        ranked = ly.sort_values(
            ["dead_share", "eps_share", "index"], ascending=[False, False, True], kind="stable"
        )
        ranked = ranked[(ranked["dead"] > 0) | (ranked["eps_dominated"] > 0)]
        records = self.findings()
        model_findings = []
        if not self.meta.trained:
            model_findings.append(
                "untrained model: every BatchNorm has its initial running statistics (mean 0, var 1)"
            )
        if self.meta.fused:
            model_findings.append("fused model: no BatchNorm left")
        return {
            "bn_layers": len(ly),
            "channels": n_ch,
            "dead": n_dead,
            "dead_share": _ratio(n_dead, n_ch),
            "dead_by_reason": dead_by,
            "dead_share_by_reason": {k: _ratio(v, n_ch) for k, v in dead_by.items()},
            "eps_dominated": int(ch["eps_dominated"].sum()) if n_ch else 0,
            "eps_dominated_share": _ratio(int(ch["eps_dominated"].sum()) if n_ch else 0, n_ch),
            "layers_with_dead": int((ly["dead"] > 0).sum()),
            "worst_layers": [
                {
                    "name": r.name,
                    "block": r.block,
                    "dead": int(r.dead),
                    "channels": int(r.channels),
                    "dead_share": float(r.dead_share),
                    "eps_share": float(r.eps_share),
                }
                for r in ranked.head(worst).itertuples()
            ],
            "eps": eps_counts(ly),
            "findings_by_kind": by_kind(records),
            "findings": [{"name": f.name, "finding": describe(f)} for f in records],
            "model_findings": model_findings,
            "bn_types": {k: int(v) for k, v in ly["bn_type"].value_counts().sort_index().items()},
            "roles": {k: int(v) for k, v in ly["role"].value_counts().sort_index().items()},
        }

    def observed_summary(self, worst: int = 5) -> dict[str, Any] | None:
        """Headline numbers of the observation on images (None when not observed)."""
        if self.observation is None:
            return None
        return self.observation.summary(self.layers, self.channels, worst)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document written by ``--json``: metadata, thresholds, summary and per-layer rows."""
        return json_safe(
            {
                "yolobn_version": __version__,
                "model": self.meta.to_dict(),
                "thresholds": self.thresholds.to_dict(),
                "selection": self.selection,
                "summary": self.summary(),
                **(
                    {"observed": self.observation.to_json_dict(self.layers, self.channels)}
                    if self.observation is not None
                    else {}
                ),
                "layers": self.layers.to_dict(orient="records"),
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n"


def inspect(
    source: Any = None,
    *,
    thresholds: Thresholds | None = None,
    select: Sequence[str] | None = None,
    trust: bool = False,
) -> Inspection:
    """Load ``source`` (see ``yolobn.load``) and run the data-free inspection.

    Args:
        source: checkpoint path, model yaml, nn.Module, ultralytics.YOLO, LoadedModel, or None (demo).
        thresholds: dead-channel thresholds.
        select: patterns that choose BN layers: globs on the dotted name (``model.2*``), or an exact
            block type, owner type or role (``C3k2``, ``DWConv``, ``backbone``). Any match keeps a layer.
        trust: allow a full unpickle (only for trusted files).

    Raises:
        NoBatchNormError: the model has no BatchNorm (fused checkpoint), or ``select`` matched none.
    """
    th = thresholds or Thresholds()
    loaded = source if isinstance(source, LoadedModel) else load(source, trust=trust)
    require_batchnorm(loaded)
    layers, channels, findings = stats_and_findings(loaded, th)
    selection = list(select or [])
    if selection:
        keep = select_layers(layers, selection)
        if not keep.any():
            raise YolobnError(
                f"--layers {' '.join(selection)}: matches none of the {len(layers)} BN layers; "
                "use a glob on names such as 'model.2*', a block type such as C3k2, or a role (backbone/neck/head)"
            )
        layers = layers[keep].reset_index(drop=True)
        kept = set(layers["name"])
        channels = channels[channels["name"].isin(kept)].reset_index(drop=True)
        findings = [f for f in findings if f.name in kept]
    return Inspection(
        loaded=loaded, thresholds=th, layers=layers, channels=channels, selection=selection,
        layer_findings=findings,
    )  # fmt: skip


def require_batchnorm(loaded: LoadedModel) -> None:
    """NoBatchNormError for a model without BatchNorm (a fused checkpoint): nothing to look at."""
    if loaded.meta.n_batchnorm == 0:
        what = "it is fused (BatchNorm folded into the convolutions)" if loaded.meta.fused else "it has none"
        raise NoBatchNormError(
            f"{loaded.meta.path or loaded.meta.source}: no BatchNorm layers to inspect: {what}; "
            "inspect the unfused checkpoint that training wrote (weights/best.pt or last.pt)"
        )


def select_layers(layers: pd.DataFrame, patterns: Sequence[str]) -> pd.Series:
    """Boolean mask of the layers matched by any pattern (name glob, block/owner type, or role)."""

    return pd.Series([matches(r, patterns) for r in layers.itertuples()], index=layers.index, dtype=bool)


def sort_layers(
    layers: pd.DataFrame, key: str, keys: dict[str, tuple[str, bool]] | None = None
) -> pd.DataFrame:
    """Rows ordered by ``keys[key]`` (column, ascending; ``SORT_KEYS`` by default), then model order;
    NaN last. ``rank``: the layers most worth a look first (``rank_layers``)."""
    if key == "rank":
        return rank_layers(layers)
    col, ascending = (keys or SORT_KEYS)[key]
    return layers.sort_values([col, "index"], ascending=[ascending, True], kind="stable")


def rank_layers(layers: pd.DataFrame) -> pd.DataFrame:
    """The layers most worth a look first: the most severe finding (non-finite, negative var, all
    dead, untrained statistics, at init, near init), the number of findings, dead share, observed
    dead share, eps-dominated share, drift (on images), then model order."""
    score = pd.DataFrame(index=layers.index)
    severity = pd.Series(0, index=layers.index)
    for level, flag in enumerate(
        _SEVERITY[::-1], start=1
    ):  # the last condition that holds is the most severe
        cond = flag(layers)
        if cond is not None:
            severity = severity.where(~cond.fillna(False).astype(bool), level)
    score["severity"] = severity
    score["findings"] = layers["findings"].fillna("").map(lambda t: t.count("; ") + 1 if t else 0)
    cols = ["severity", "findings", "dead_share", "obs_dead_share", "eps_share", "drift"]
    for c in cols[2:]:
        score[c] = layers[c].fillna(0) if c in layers.columns else 0.0
    score["index"] = layers["index"]
    order = score.sort_values([*cols, "index"], ascending=[False] * len(cols) + [True], kind="stable").index
    return layers.loc[order]


def _col(name: str) -> Callable[[pd.DataFrame], Any]:
    return lambda ly: ly[name] if name in ly.columns else None


_SEVERITY = (  # most severe first
    _col("nonfinite"),
    lambda ly: ly["running_var_min"] < 0 if "running_var_min" in ly.columns else None,
    lambda ly: (ly["dead"] == ly["channels"]) & (ly["channels"] > 0),
    _col("untrained_stats"),
    _col("init_affine"),
    _col("near_init"),
)


def eps_counts(layers: pd.DataFrame) -> dict[str, int]:
    """BN layers per eps value, keyed by the eps's ``repr`` (``{"0.001": 81}``), smallest eps first.

    YOLO detectors use 1e-3 and the -cls classifiers 1e-5 (PyTorch's default); a model mixing them
    shows every value with its count.
    """
    counts = layers["eps"].value_counts().sort_index()
    return {repr(float(e)): int(n) for e, n in counts.items()}


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0
