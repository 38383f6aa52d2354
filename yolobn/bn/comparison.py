"""Compare checkpoints: what changed in the BatchNorm layers between two models, or a model-zoo audit.

Two checkpoints of the same architecture (``compare(a, b)``) are matched layer by layer by dotted
name (a layer matches when its name and channel count agree). Per channel, the change is measured
with the same Gaussian KL divergence as drift (``yolobn.run.observation``), in nats, on two sides of
the BatchNorm:

``kl_in``
    the BN's running statistics, ``KL(N(mean_b, var_b + eps) || N(mean_a, var_a + eps))``: how
    differently B normalises its input than A did;
``kl_out``
    the BN's estimated output distribution, ``KL(N(beta_b, s_b^2) || N(beta_a, s_a^2))`` with
    ``s = |gamma| * sqrt(var / (var + eps))`` (floored at ``const_std`` so that a dead channel
    stays finite): what the layer hands on.

Both are exactly 0 for identical tensors and grow with the change; a layer's ``change`` is the mean
over its channels of ``kl_in + kl_out``. Dead channels (data-free criteria of each model with the
same thresholds) are compared channel by channel: newly dead (alive in A, dead in B), revived,
dead in both; likewise eps-dominated channels.

More than two checkpoints, or different architectures, give an audit instead (``audit``): one row
per checkpoint with its headline numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from yolobn._version import __version__
from yolobn.bn.answers import comparison_verdicts
from yolobn.bn.inspection import Inspection, inspect
from yolobn.core import notebook
from yolobn.core.gauss import gaussian_kl
from yolobn.core.precision import json_safe
from yolobn.core.thresholds import Thresholds
from yolobn.core.verdict import Verdict

__all__ = ["Audit", "Comparison", "EPS_TRANSITIONS", "QUANTITIES", "TRANSITIONS", "audit", "compare"]

QUANTITIES = ("gamma", "beta", "running_mean", "running_var")


@dataclass
class Comparison:
    """Two inspected checkpoints, matched layer by layer.

    Attributes:
        a, b: the two ``Inspection`` results (A is the reference: "before").
        layers: one row per matched layer: medians and spreads (IQR) of each quantity in A and B,
            ``kl_in``, ``kl_out``, ``change``, and the dead/eps-dominated transitions.
        channels: one row per channel of the matched layers: A and B values, deltas, KLs, flags.
        only_a, only_b: layer names in one model only; ``mismatched``: same name, other width.
        observed: None (data-free), or how both were run on the same images
            (``yolobn.run.drift.compare_images``): then ``layers`` has ``drift_a``, ``drift_b``,
            ``drift_rise`` and ``channels`` ``drift_a``, ``drift_b``; ``observed["effect"]`` is what
            recalibrating B on the images did to its accuracy, when measured.
    """

    a: Any
    b: Any
    layers: pd.DataFrame
    channels: pd.DataFrame
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    observed: dict[str, Any] | None = None

    def summary(self, worst: int = 5) -> dict[str, Any]:
        ly, ch = self.layers, self.channels
        ranked = ly.sort_values(["change", "index"], ascending=[False, True], kind="stable")
        ranked = ranked[ranked["change"] > 0]
        return {
            "a": _source(self.a),
            "b": _source(self.b),
            "matched_layers": len(ly),
            "matched_channels": len(ch),
            "only_a": self.only_a,
            "only_b": self.only_b,
            "mismatched": self.mismatched,
            "identical": bool(len(ly))
            and not self.only_a
            and not self.only_b
            and not self.mismatched
            and bool((ch[[f"d_{q}" for q in QUANTITIES]].to_numpy() == 0).all()),
            "changed_layers": int((ly["change"] > 0).sum()),
            "change_mean": float(ly["change"].mean()) if len(ly) else 0.0,
            "transitions": {k: int(ly[k].sum()) for k in TRANSITIONS},
            "eps_transitions": {k: int(ly[k].sum()) for k in EPS_TRANSITIONS},
            "most_changed": [
                {
                    "name": r.name,
                    "block": r.block,
                    "change": float(r.change),
                    "kl_in": float(r.kl_in),
                    "kl_out": float(r.kl_out),
                }
                for r in ranked.head(worst).itertuples()
            ],
            **({"drift": _drift_summary(ly, self.observed, worst)} if self.observed is not None else {}),
        }

    def verdicts(self) -> list[Verdict]:
        """The answer to "what changed, and did it break BN" (``yolobn.bn.answers``)."""
        return comparison_verdicts(self, _given(self.a), _given(self.b))

    def to_json_dict(self) -> dict[str, Any]:
        return dict(
            json_safe(
                {
                    "yolobn_version": __version__,
                    "a": self.a.meta.to_dict(),
                    "b": self.b.meta.to_dict(),
                    "thresholds": self.a.thresholds.to_dict(),
                    "verdicts": [v.to_dict() for v in self.verdicts()],
                    "summary": self.summary(),
                    **({"observed": _observed_json(self.observed)} if self.observed is not None else {}),
                    "layers": self.layers.to_dict(orient="records"),
                }
            )
        )

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n"

    def __repr__(self) -> str:
        s = self.summary()
        what = (
            "identical"
            if s["identical"]
            else f"{s['changed_layers']} of {s['matched_layers']} layers changed"
        )
        return f"Comparison({s['a']} -> {s['b']}: {what})"

    def _repr_html_(self) -> str:
        s = self.summary()
        change = (
            "none: identical" if s["identical"] else f"{s['changed_layers']} of {s['matched_layers']} layers"
        )
        items = [
            ("A", s["a"]),
            ("B", s["b"]),
            ("change", change),
            (
                "dead transitions",
                ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["transitions"].items()),
            ),
        ]
        ly = self.layers.sort_values(["change", "index"], ascending=[False, True], kind="stable")
        cols = ["name", "block", "channels", "kl_in", "kl_out", "change", "newly_dead", "revived"]
        if self.observed is not None:
            cols += ["drift_a", "drift_b", "drift_rise"]
            items.append(
                ("drift (mean, nats)", f"A {s['drift']['mean_a']:.3g}, B {s['drift']['mean_b']:.3g}")
            )
        return notebook.kv("yolobn compare", items) + notebook.table(ly, cols)


TRANSITIONS = ("newly_dead", "revived", "dead_both")
EPS_TRANSITIONS = ("newly_eps_dominated", "no_longer_eps_dominated")


def _drift_summary(ly: pd.DataFrame, observed: dict[str, Any], worst: int) -> dict[str, Any]:
    """Drift of A and B on the same images: means over the layers that ran, the layers whose drift
    rose most."""
    rise = ly["drift_rise"].to_numpy(dtype=float)
    ran = np.isfinite(ly["drift_b"].to_numpy(dtype=float))
    order = ly[ran & np.isfinite(rise)].assign(_r=rise[ran & np.isfinite(rise)])
    order = order.sort_values(["_r", "index"], ascending=[False, True], kind="stable")
    return {
        "images": observed["images"],
        "imgsz": observed["imgsz"],
        "layers_run": int(ran.sum()),
        "mean_a": observed["drift_mean_a"],
        "mean_b": observed["drift_mean_b"],
        "max_b": float(np.nanmax(ly["drift_b"].to_numpy(dtype=float))) if ran.any() else math.nan,
        "most_risen": [
            {
                "name": r.name,
                "drift_a": float(r.drift_a),
                "drift_b": float(r.drift_b),
                "rise": float(r.drift_rise),
            }
            for r in order.head(worst).itertuples()
        ],
        "effect": observed.get("effect"),
    }


def _observed_json(observed: dict[str, Any]) -> dict[str, Any]:
    """How the images were run (the file list as read, the arguments as given)."""
    keys = ("sources", "images", "files", "skipped", "imgsz", "batch", "device", "effect")
    return {k: observed.get(k) for k in keys}


def _source(ins: Any) -> str:
    return str(ins.meta.path or ins.meta.source)


def compare(a: Any, b: Any, *, thresholds: Thresholds | None = None, trust: bool = False) -> Comparison:
    """Match two models' BatchNorm layers by name and measure what changed (see the module docstring).

    Args:
        a, b: anything ``yolobn.inspect`` takes (path, LoadedModel, Inspection, ...). A is "before".
        thresholds: dead-channel thresholds, the same for both.
        trust: full unpickle (trusted files only).
    """

    th = thresholds or Thresholds()
    ia = a if isinstance(a, Inspection) else inspect(a, thresholds=th, trust=trust)
    ib = b if isinstance(b, Inspection) else inspect(b, thresholds=th, trust=trust)
    la, lb = ia.layers.set_index("name", drop=False), ib.layers.set_index("name", drop=False)
    names_b = set(lb.index)
    matched = [n for n in la.index if n in names_b and la.at[n, "channels"] == lb.at[n, "channels"]]
    mismatched = [n for n in la.index if n in names_b and la.at[n, "channels"] != lb.at[n, "channels"]]
    only_a = [n for n in la.index if n not in names_b]
    only_b = [n for n in lb.index if n not in set(la.index)]
    channels = _channel_changes(ia, ib, matched, th)
    layers = _layer_changes(la.loc[matched].reset_index(drop=True), lb.loc[matched], channels)
    return Comparison(ia, ib, layers, channels, only_a, only_b, mismatched)


def _channel_changes(ia: Any, ib: Any, names: list[str], th: Thresholds) -> pd.DataFrame:
    keep = set(names)
    ca = ia.channels[ia.channels["name"].isin(keep)].reset_index(drop=True)
    cb = (
        ib.channels[ib.channels["name"].isin(keep)]
        .set_index(["name", "channel"])
        .loc[list(zip(ca["name"], ca["channel"], strict=True))]
        .reset_index()
    )
    eps_a = ca["name"].map(ia.layers.set_index("name")["eps"]).to_numpy(dtype=float)
    eps_b = ca["name"].map(ib.layers.set_index("name")["eps"]).to_numpy(dtype=float)
    out = pd.DataFrame({"name": ca["name"], "layer": ca["layer"], "channel": ca["channel"]})
    for q in QUANTITIES:
        va, vb = ca[q].to_numpy(dtype=float), cb[q].to_numpy(dtype=float)
        out[f"{q}_a"], out[f"{q}_b"] = va, vb
        out[f"d_{q}"] = np.where(va == vb, 0.0, vb - va)  # exactly 0 for equal values (also inf/inf)
    out["kl_in"] = gaussian_kl(
        cb["running_mean"].to_numpy(float),
        cb["running_var"].to_numpy(float) + eps_b,
        ca["running_mean"].to_numpy(float),
        ca["running_var"].to_numpy(float) + eps_a,
    )
    floor = max(th.const_std, 1e-12)
    s_a = np.maximum(ca["out_std"].to_numpy(float), floor)
    s_b = np.maximum(cb["out_std"].to_numpy(float), floor)
    out["kl_out"] = gaussian_kl(cb["beta"].to_numpy(float), s_b**2, ca["beta"].to_numpy(float), s_a**2)
    da, db = ca["dead"].to_numpy(bool), cb["dead"].to_numpy(bool)
    ea, eb = ca["eps_dominated"].to_numpy(bool), cb["eps_dominated"].to_numpy(bool)
    out["dead_a"], out["dead_b"] = da, db
    out["transition"] = np.select(
        [~da & db, da & ~db, da & db], ["newly dead", "revived", "dead in both"], ""
    )
    out["eps_dominated_a"], out["eps_dominated_b"] = ea, eb
    return out


def _layer_changes(la: pd.DataFrame, lb: pd.DataFrame, ch: pd.DataFrame) -> pd.DataFrame:
    cols = ["index", "name", "layer", "block", "role", "channels"]
    out = la[cols].copy().reset_index(drop=True)
    g = ch.groupby("name", sort=False)
    for q in QUANTITIES:
        for side in ("a", "b"):
            out[f"{q}_p50_{side}"] = g[f"{q}_{side}"].median().reindex(out["name"]).to_numpy()
            q75, q25 = g[f"{q}_{side}"].quantile(0.75), g[f"{q}_{side}"].quantile(0.25)
            out[f"{q}_iqr_{side}"] = (q75 - q25).reindex(out["name"]).to_numpy()
        out[f"{q}_max_abs_delta"] = (
            g[f"d_{q}"].apply(lambda d: float(np.abs(d).max())).reindex(out["name"]).to_numpy()
        )
    out["kl_in"] = g["kl_in"].mean().reindex(out["name"]).to_numpy()
    out["kl_out"] = g["kl_out"].mean().reindex(out["name"]).to_numpy()
    out["change"] = out["kl_in"] + out["kl_out"]
    for k, label in (("newly_dead", "newly dead"), ("revived", "revived"), ("dead_both", "dead in both")):
        out[k] = (
            (ch["transition"] == label).groupby(ch["name"], sort=False).sum().reindex(out["name"]).to_numpy()
        )
    ea, eb = ch["eps_dominated_a"], ch["eps_dominated_b"]
    out["newly_eps_dominated"] = (
        (~ea & eb).groupby(ch["name"], sort=False).sum().reindex(out["name"]).to_numpy()
    )
    out["no_longer_eps_dominated"] = (
        (ea & ~eb).groupby(ch["name"], sort=False).sum().reindex(out["name"]).to_numpy()
    )
    out["eps_a"] = la["eps"].to_numpy()
    out["eps_b"] = lb["eps"].to_numpy()
    return out


# --------------------------------------------------------------------------------------------------
# audit: more than two checkpoints, or different architectures


@dataclass
class Audit:
    """A model-zoo audit: ``table`` has one row per checkpoint (``source`` as the user gave it),
    ``inspections`` the full result behind each row."""

    table: pd.DataFrame
    inspections: list[Inspection]

    def __len__(self) -> int:
        return len(self.table)

    def to_json_dict(self) -> dict[str, Any]:
        return dict(
            json_safe(
                {
                    "yolobn_version": __version__,
                    "models": [i.meta.to_dict() for i in self.inspections],
                    "audit": self.table.to_dict(orient="records"),
                }
            )
        )

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n"

    def __repr__(self) -> str:
        rows = ", ".join(f"{r.source}: dead {r.dead}" for r in self.table.itertuples())
        return f"Audit({len(self)} checkpoints; {rows})"

    def _repr_html_(self) -> str:
        return notebook.kv("Audit", [("checkpoints", len(self))]) + notebook.table(
            self.table, list(self.table.columns)
        )


def audit(sources: Sequence[Any], *, thresholds: Thresholds | None = None, trust: bool = False) -> Audit:
    """One row per checkpoint with its headline numbers (a model-zoo audit).

    Columns: source, task, family, classes, bn_layers, channels, dead, dead_share, eps_dominated,
    findings, gamma_p50 (the median of all channels' gamma), near_initial_share (the share of
    layers whose gamma/beta are at or near their initial 1/0), eps (the distinct eps values).
    """

    th = thresholds or Thresholds()
    rows, done = [], []
    for s in sources:
        ins = s if isinstance(s, Inspection) else inspect(s, thresholds=th, trust=trust)
        done.append(ins)
        summ, m = ins.summary(), ins.meta
        ly = ins.layers
        near = ly["findings"].fillna("").str.contains("init", regex=False)
        rows.append(
            {
                "source": _given(ins) or m.source,
                "task": m.task,
                "family": m.family,
                "classes": m.nc,
                "bn_layers": summ["bn_layers"],
                "channels": summ["channels"],
                "dead": summ["dead"],
                "dead_share": summ["dead_share"],
                "eps_dominated": summ["eps_dominated"],
                "findings": len(summ["findings"]),
                "gamma_p50": float(ins.channels["gamma"].median()) if len(ins.channels) else math.nan,
                "near_initial_share": float(near.mean()) if len(ly) else 0.0,
                "eps": ", ".join(f"{e:g}" for e in sorted(set(ly["eps"]))),
            }
        )
    return Audit(pd.DataFrame(rows), done)


def _given(ins: Any) -> str | None:
    """The model's file as the user gave it (the demo's path in a clone; None for an in-memory model)."""
    m = ins.meta
    if m.kind == "demo":
        return str(m.path)
    return None if m.source.startswith("<") else m.source
