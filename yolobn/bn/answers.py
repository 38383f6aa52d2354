"""The questions an inspection answers, as verdicts (``yolobn.core.verdict``).

- **training**: did training reach every layer (gamma and beta moved off their initial 1 and 0)?
- **dead**: which channels are dead, and can they go? Data-free rules first; on images, what is
  observed; with an ablation measured, what removing them costs.
- **port**: will the model survive a port with eps 1e-5 or fp16 arithmetic (``yolobn.bn.port``)?
- **drift**: do the running statistics fit these images (only after observing images)?

The next commands use the paths the user gave (``Paths``); a path yolobn cannot know is written as a
placeholder in capitals (``IMAGES``, ``DATA``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolobn.bn.port import TARGET_EPS
from yolobn.core.table import Table
from yolobn.core.thresholds import Levels
from yolobn.core.verdict import Verdict, command, worst

__all__ = ["Paths", "comparison_verdicts", "inspection_verdicts", "layer_severity", "recal_name"]

SHOWN = 3  # layers named in one line of evidence


@dataclass(frozen=True)
class Paths:
    """What the user gave, as they wrote it, for the next commands.

    Attributes:
        model: the model argument (None: the bundled demo, which every command defaults to).
        images: the image files or folders (None: not given; the demo's default images are implied).
        data: the dataset yaml (None: not given; the demo's ``shapes`` is implied).
        demo: whether the model is the bundled demo (its images and dataset are the defaults).
    """

    model: str | None = None
    images: tuple[str, ...] | None = None
    data: str | None = None
    demo: bool = False

    def images_arg(self) -> list[str] | None:
        if self.images:
            return list(self.images)
        return None if self.demo else ["IMAGES"]

    def data_arg(self) -> str | None:
        if self.data:
            return self.data
        return None if self.demo else "DATA"


def recal_name(model: str | None) -> str:
    """Where ``recalibrate`` writes by default in the next command: beside the model, ``-recal``."""
    if not model:
        return "demo-recal.pt"
    p = Path(model)
    return str(p.with_name(f"{p.stem}-recal{p.suffix or '.pt'}"))


def inspection_verdicts(ins: Any, paths: Paths, levels: Levels | None = None) -> list[Verdict]:
    """The answers of an ``Inspection`` (observed or not), most basic question first."""
    lv = levels or Levels()
    ly: Table = ins.layer_table
    out = [_training(ins, ly), _dead(ins, ly, paths, lv), _port(ly, paths, lv)]
    if ins.observation is not None and "drift" in ly:
        out.append(_drift(ins, ly, paths, lv))
    return out


def comparison_verdicts(
    cmp: Any, a: str | None, b: str | None, images: tuple[str, ...] | None = None
) -> list[Verdict]:
    """What changed between two checkpoints, and whether it broke BN. Data-free, only the BN
    parameters can be compared: whether B's stored statistics fit B's weights needs images."""
    q = "what changed, and did it break BN"
    s = cmp.summary()
    if s["identical"]:
        return [Verdict("change", q, "ok", "every BN tensor is identical")]
    moved = s["most_changed"]
    top = ", ".join(f"{m['name']} {m['change']:.3g}" for m in moved[:SHOWN])
    tr = s["transitions"]
    evidence = (
        f"BN parameters moved in {s['changed_layers']} of {s['matched_layers']} layers (mean change "
        f"{s['change_mean']:.3g} nats; most: {top}); {tr['newly_dead']} newly dead, {tr['revived']} revived "
        "channels. Whether B's stored statistics still fit its weights needs images"
    )
    nxt = command("compare", a or "A.pt", b or "B.pt", images=list(images) if images else ["IMAGES"])
    return [Verdict("change", q, "look", evidence, nxt, tuple(m["name"] for m in moved))]


def _names(ly: Table, mask: np.ndarray, order: np.ndarray | None = None) -> tuple[str, ...]:
    idx = np.flatnonzero(mask)
    if order is not None:
        idx = idx[np.argsort(-order[idx], kind="stable")]
    return tuple(str(ly["name"][i]) for i in idx)


def _listed(names: tuple[str, ...], values: list[str] | None = None) -> str:
    shown = [f"{n} {v}" if values else n for n, v in zip(names, values or [""] * len(names), strict=True)]
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(shown[:SHOWN]) + more


def _training(ins: Any, ly: Table) -> Verdict:
    q = "training reached every layer"
    if not ins.meta.trained:
        return Verdict(
            "training",
            q,
            "look",
            "an untrained model: every BatchNorm has its initial statistics (built from a yaml?)",
        )
    at = _names(ly, ly["init_affine"].astype(bool))
    near = _names(ly, ly["near_init"].astype(bool))
    if not at and not near:
        return Verdict("training", q, "ok", "every layer's gamma and beta moved off their initial 1 and 0")
    parts = []
    if at:
        parts.append(
            f"{len(at)} layer{'s' * (len(at) > 1)} never trained (gamma, beta still 1, 0): {_listed(at)}"
        )
    if near:
        parts.append(f"{len(near)} barely trained: {_listed(near)}")
    why = "; no gradient reached them (a branch no object reached at this imgsz, or a frozen layer)"
    return Verdict("training", q, "look", "; ".join(parts) + why, None, at + near)


def _dead(ins: Any, ly: Table, paths: Paths, lv: Levels) -> Verdict:
    q = "dead channels, and whether they can go"
    s = ins.summary()
    n = s["channels"]
    obs = ins.observation
    if obs is None:
        d = s["dead"]
        evidence = (
            f"data-free rules: {d:,} of {n:,} channels dead ({_pct(s['dead_share'])}); they cannot see "
            "channels that never activate on real images"
        )
        nxt = command("activations", paths.model, images=paths.images_arg())
        return Verdict("dead", q, "look", evidence, nxt, _names(ly, ly["dead"] > 0, ly["dead_share"]))
    o = ins.observed_summary()
    od, share = o["observed_dead"], o["observed_dead_share"]
    layers = _names(ly, ly["obs_dead"] > 0, ly["obs_dead_share"]) if "obs_dead" in ly else ()
    if od == 0:
        return Verdict("dead", q, "ok", f"no channel is flat or never positive on {o['images']} images")
    evidence = (
        f"{od:,} channels ({_pct(share)}) are dead on {o['images']} images (the data-free rules predicted "
        f"{o['predicted_dead']:,})"
    )
    ab = obs.ablation
    if ab is not None and math.isfinite(ab.get("delta", math.nan)):
        metric = str(ab["metric"]).replace("metrics/", "")
        evidence += f"; removing their output costs {ab['delta']:+.4f} {metric}"
    nxt = command("frontier", paths.model, data=paths.data_arg(), images=paths.images_arg())
    return Verdict("dead", q, lv.status(share, 0.0, lv.dead_act) if share else "ok", evidence, nxt, layers)


def _port(ly: Table, paths: Paths, lv: Levels) -> Verdict:
    q = "the model survives a port (eps 1e-5, fp16)"
    eps_fig = np.nan_to_num(ly["port_eps"].astype(np.float64), nan=0.0)
    fp16 = np.nan_to_num(ly["port_fp16"].astype(np.float64), nan=0.0, posinf=np.inf)
    if not len(ly):
        return Verdict("port", q, "ok", "no BatchNorm layer")
    status = worst([lv.status(float(eps_fig.max()), lv.port_look, lv.port_act),
                    lv.status(float(fp16.max()), lv.port_look, lv.port_act)])  # fmt: skip
    moved = eps_fig >= lv.port_look
    if bool((ly["eps"].astype(np.float64) == TARGET_EPS).all()):
        eps_text = "its eps is already 1e-5"
    elif moved.any():
        names = _names(ly, moved, eps_fig)
        values = [_pct(float(eps_fig[list(ly["name"]).index(nm)])) for nm in names]
        eps_text = f"with eps 1e-5, {len(names)} layer output{'s' * (len(names) > 1)} move by ≥1%: {_listed(names, values)}"
    else:
        eps_text = f"with eps 1e-5 no layer output moves by 1% (at most {_pct(float(eps_fig.max()))})"
    fp16_max = float(fp16.max())
    fp16_text = (
        "in fp16 some values overflow" if math.isinf(fp16_max) else f"in fp16 at most {_pct(fp16_max)}"
    )
    order = np.maximum(eps_fig, fp16)
    layers = _names(ly, order >= lv.port_look, order)
    nxt = None
    if status != "ok":
        impls = ["reference:eps=1e-5", "lowp:dtype=fp16"]
        nxt = command("swap", paths.model, impl=impls, data=paths.data_arg())
    return Verdict("port", q, status, f"{eps_text}; {fp16_text}", nxt, layers)


def _drift(ins: Any, ly: Table, paths: Paths, lv: Levels) -> Verdict:
    q = "the running statistics fit these images"
    reached = ly["obs_count"] > 0
    drift = ly["drift"].astype(np.float64)
    o = ins.observed_summary()
    if not reached.any():
        return Verdict("drift", q, "look", "no BatchNorm layer ran on the images")
    mean, top = float(np.nanmean(drift[reached])), float(np.nanmax(drift[reached]))
    status = worst([lv.status(mean, lv.drift_look, lv.drift_act),
                    lv.status(top, lv.drift_layer_look, lv.drift_layer_act)])  # fmt: skip
    worst_name = str(ly["name"][int(np.nanargmax(np.where(reached, drift, -np.inf)))])
    evidence = (
        f"mean drift {mean:.3g} nats over {int(reached.sum())} layers on {o['images']} images "
        f"(high from {lv.drift_look:g}, {lv.drift_act:g} needs recalibration); worst {worst_name} {top:.3g}"
    )
    layers = _names(ly, reached & (drift >= lv.drift_layer_look), drift)
    nxt = None
    if status != "ok":
        nxt = command(
            "recalibrate",
            paths.model,
            images=paths.images_arg(),
            o=recal_name(paths.model),
            data=paths.data_arg(),
        )
    return Verdict("drift", q, status, evidence, nxt, layers)


def layer_severity(ly: Table, levels: Levels | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per layer: its status as 0 ok, 1 look, 2 act, and a score that orders layers of one status
    (how far past the act level its worst number is). One rule for every table of layers: the worst
    finding, port figure, drift and dead share decide (docs/numbers.md)."""
    lv = levels or Levels()
    n = len(ly)
    sev, score = np.zeros(n, dtype=np.int64), np.zeros(n)

    def signal(value: np.ndarray, look: float, act: float) -> None:
        nonlocal sev, score
        v = np.nan_to_num(value.astype(np.float64), nan=0.0, posinf=1e9)
        level = np.where(v >= act, 2, np.where(v >= look, 1, 0))
        sev = np.maximum(sev, level)
        score = np.maximum(score, v / act if act > 0 else 0.0)

    def flag(col: str, level: int) -> None:
        nonlocal sev, score
        if col in ly:
            on = np.array([bool(x) and x == x for x in ly[col]], dtype=bool)
            sev = np.where(on, np.maximum(sev, level), sev)
            score = np.where(on, np.maximum(score, 1.0 if level == 1 else 10.0), score)

    for col in ("nonfinite",):
        flag(col, 2)
    if "running_var_min" in ly:
        signal(np.where(ly["running_var_min"].astype(np.float64) < 0, 1.0, 0.0), 0.5, 1.0)
    if n:
        signal(((ly["dead"] == ly["channels"]) & (ly["channels"] > 0)).astype(np.float64), 0.5, 1.0)
    for col in ("untrained_stats", "init_affine", "near_init"):
        flag(col, 1)
    for col in ("port_eps", "port_fp16"):
        if col in ly:
            signal(ly[col], lv.port_look, lv.port_act)
    if "drift" in ly:
        signal(ly["drift"], lv.drift_layer_look, lv.drift_layer_act)
    share = ly["obs_dead_share"] if "obs_dead_share" in ly else ly["dead_share"] if n else np.zeros(0)
    if n:
        signal(np.asarray(share, dtype=np.float64), 0.5, 1.0)  # a layer mostly dead is worth a look
    return sev, score


def _pct(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{100 * x:.2g}%" if x < 0.01 else f"{100 * x:.1f}%"
