"""One call that does the whole data-free inspection: load, walk, statistics, dead channels, summary.

The inspection is computed and summarised on tables of columns (``yolobn.core.table``): the terminal
path never imports pandas. ``Inspection.layers`` and ``.channels`` are pandas DataFrames, built when
asked for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from yolobn._version import __version__
from yolobn.bn.answers import Paths, given_model, inspection_verdicts, layer_severity
from yolobn.bn.stats import stats_and_findings
from yolobn.bn.walk import matches
from yolobn.core import notebook
from yolobn.core.errors import NoBatchNormError, YolobnError
from yolobn.core.findings import Finding, by_kind, describe
from yolobn.core.precision import json_safe, json_text
from yolobn.core.table import Table
from yolobn.core.thresholds import Levels, Thresholds
from yolobn.core.verdict import Verdict
from yolobn.io.loader import LoadedModel, ModelMeta, load

if TYPE_CHECKING:
    import pandas as pd  # the Python API's tables; the inspection itself runs without it

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
    layer_table: Table  # one row per BN layer (``bn_stats``' columns; observed ones after ``observe``)
    channel_table: Table  # one row per channel
    selection: list[str] = field(default_factory=list)
    observation: Any = None  # yolobn.run.observation.Observation, when observed on images (observe())
    layer_findings: list[Finding] = field(default_factory=list)  # of the selected layers, in layer order

    @property
    def layers(self) -> pd.DataFrame:
        """One row per BN layer, as a pandas DataFrame (see ``yolobn.bn_stats``)."""
        return self.layer_table.to_frame()

    @property
    def channels(self) -> pd.DataFrame:
        """One row per channel, as a pandas DataFrame (see ``yolobn.bn_stats``)."""
        return self.channel_table.to_frame()

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
        return (
            notebook.kv("yolobn inspection", items)
            + notebook.answers(self.verdicts())
            + notebook.table(rank_layers(self.layer_table), cols)
        )

    def verdicts(self, paths: Paths | None = None, levels: Levels | None = None) -> list[Verdict]:
        """The answers of this inspection (``yolobn.bn.answers``), with next commands for ``paths``
        (default: the model as it was given, the images it was observed on)."""
        return inspection_verdicts(self, paths or self.paths(), levels)

    def paths(self) -> Paths:
        """The user's paths as far as the inspection knows them (the model, the observed images)."""
        m = self.meta
        obs = self.observation
        images = tuple(obs.sources) if obs is not None and obs.sources else None
        data = str(obs.ablation["data"]) if obs is not None and obs.ablation else None
        return Paths(given_model(m.kind, m.source), images, data, m.kind == "demo")

    def findings(self) -> list[Finding]:
        """The health findings of the (selected) BN layers, as records, in layer order."""
        return list(self.layer_findings)

    def summary(self, worst: int = 5) -> dict[str, Any]:
        """Headline numbers: counts, dead share by reason, worst layers, eps, health findings.

        ``eps`` maps each BN eps in the model (its ``repr``, e.g. ``"0.001"``, ``"1e-05"``) to the
        number of layers using it, smallest eps first: ``{"0.001": 81}`` for a YOLO detector.
        ``findings`` lists ``{name, finding}`` (the words) and ``findings_by_kind`` counts them by code.
        """
        ly, ch = self.layer_table, self.channel_table
        n_ch = len(ch)
        reasons = ch["dead_reason"] if n_ch else np.array([], dtype=object)
        dead_by = {r: int((reasons == r).sum()) for r in ("constant", "off")}
        n_dead = int(ch["dead"].sum()) if n_ch else 0
        n_eps = int(ch["eps_dominated"].sum()) if n_ch else 0
        worst_rows = [i for i in _order(ly, [("dead_share", False), ("eps_share", False)])]
        worst_rows = [i for i in worst_rows if ly["dead"][i] > 0 or ly["eps_dominated"][i] > 0][:worst]
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
            "eps_dominated": n_eps,
            "eps_dominated_share": _ratio(n_eps, n_ch),
            "layers_with_dead": int((ly["dead"] > 0).sum()) if len(ly) else 0,
            "worst_layers": [
                {
                    "name": str(ly["name"][i]),
                    "block": str(ly["block"][i]),
                    "dead": int(ly["dead"][i]),
                    "channels": int(ly["channels"][i]),
                    "dead_share": float(ly["dead_share"][i]),
                    "eps_share": float(ly["eps_share"][i]),
                }
                for i in worst_rows
            ],
            "eps": eps_counts(ly),
            "findings_by_kind": by_kind(records),
            "findings": [{"name": f.name, "finding": describe(f)} for f in records],
            "model_findings": model_findings,
            "bn_types": _counts(ly["bn_type"]),
            "roles": _counts(ly["role"]),
        }

    def observed_summary(self, worst: int = 5) -> dict[str, Any] | None:
        """Headline numbers of the observation on images (None when not observed)."""
        if self.observation is None:
            return None
        observed: dict[str, Any] = self.observation.summary(self.layers, self.channels, worst)
        return observed

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON document written by ``--json``: metadata, thresholds, summary and per-layer rows."""
        doc: dict[str, Any] = json_safe(
            {
                "yolobn_version": __version__,
                "model": self.meta.to_dict(),
                "thresholds": self.thresholds.to_dict(),
                "selection": self.selection,
                "verdicts": [v.to_dict() for v in self.verdicts()],
                "summary": self.summary(),
                **(
                    {"observed": self.observation.to_json_dict(self.layers, self.channels)}
                    if self.observation is not None
                    else {}
                ),
                "layers": self.layers.to_dict(orient="records"),
            }
        )
        return doc

    def to_json(self) -> str:
        return json_text(self.to_json_dict())


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
                f"layers {' '.join(selection)}: matches none of the {len(layers)} BN layers; "
                "use a glob on names such as 'model.2*', a block type such as C3k2, or a role (backbone/neck/head)"
            )
        layers = layers.filter(keep)
        kept = set(layers["name"].tolist())
        channels = channels.filter(np.array([n in kept for n in channels["name"]], dtype=bool))
        findings = [f for f in findings if f.name in kept]
    return Inspection(
        loaded=loaded,
        thresholds=th,
        layer_table=layers,
        channel_table=channels,
        selection=selection,
        layer_findings=findings,
    )


def require_batchnorm(loaded: LoadedModel) -> None:
    """NoBatchNormError for a model without BatchNorm (a fused checkpoint): nothing to look at."""
    if loaded.meta.n_batchnorm == 0:
        what = "it is fused (BatchNorm folded into the convolutions)" if loaded.meta.fused else "it has none"
        raise NoBatchNormError(
            f"{loaded.meta.path or loaded.meta.source}: no BatchNorm layers to inspect: {what}; "
            "inspect the unfused checkpoint that training wrote (weights/best.pt or last.pt)"
        )


def select_layers(layers: Table, patterns: Sequence[str]) -> np.ndarray:
    """Boolean mask of the layers matched by any pattern (name glob, block/owner type, or role)."""
    return np.array([matches(r, patterns) for r in layers.itertuples()], dtype=bool)


def sort_layers(layers: Any, key: str, keys: dict[str, tuple[str, bool]] | None = None) -> Any:
    """Rows ordered by ``keys[key]`` (column, ascending; ``SORT_KEYS`` by default), then model order;
    NaN last. ``rank``: the layers most worth a look first (``rank_layers``). A ``Table`` in, a
    ``Table`` out; a DataFrame in, a DataFrame out."""
    if key == "rank":
        return rank_layers(layers)
    col, ascending = (keys or SORT_KEYS)[key]
    return _take(layers, _order(_table(layers), [(col, ascending)]))


def rank_layers(layers: Any, levels: Levels | None = None) -> Any:
    """The layers most worth a look first: by status (act, look, ok) from the worst of each layer's
    findings, port figures, drift and dead share (``yolobn.bn.answers.layer_severity``), then by
    how far past its level that number is, then model order."""
    t = _table(layers)
    if not len(t):
        return _take(layers, np.arange(0))
    sev, score = layer_severity(t, levels)
    return _take(layers, np.lexsort([t["index"], -score, -sev]))


def _order(t: Table, by: list[tuple[str, bool]]) -> np.ndarray:
    """Row order by the columns ``by`` (name, ascending), NaN last, then model order (stable)."""
    if not len(t):
        return np.arange(0)
    keys: list[np.ndarray] = [t["index"]]
    for col, ascending in reversed(by):
        v = t[col]
        if v.dtype == object:  # text: ranks of the sorted distinct values
            v = np.unique(v.astype(str), return_inverse=True)[1]
        v = v.astype(np.float64)
        keys += [v if ascending else -v, np.isnan(v)]  # NaN last, whichever the direction
    return np.lexsort(keys)


def _table(layers: Any) -> Table:
    return layers if isinstance(layers, Table) else Table.from_frame(layers)


def _take(layers: Any, order: np.ndarray) -> Any:
    if isinstance(layers, Table):
        return layers.take(order)
    return layers.iloc[order]


def eps_counts(layers: Any) -> dict[str, int]:
    """BN layers per eps value, keyed by the eps's ``repr`` (``{"0.001": 81}``), smallest eps first.

    YOLO detectors use 1e-3 and the -cls classifiers 1e-5 (PyTorch's default); a model mixing them
    shows every value with its count.
    """
    counts = Counter(float(e) for e in _table(layers)["eps"])
    return {repr(e): n for e, n in sorted(counts.items())}


def _counts(values: np.ndarray) -> dict[str, int]:
    return dict(sorted(Counter(str(v) for v in values).items()))


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0
