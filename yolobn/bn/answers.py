"""The questions an inspection answers, as verdicts (``yolobn.core.verdict``).

- **training**: did training reach every layer (gamma and beta moved off their initial 1 and 0)?
- **dead**: which channels are dead, and can they go? Data-free rules first; on images, what is
  observed; with an ablation measured, what removing them costs.
- **port**: will the model survive a port with eps 1e-5 or fp16 arithmetic (``yolobn.bn.port``)?
- **drift**: do the running statistics fit these images (only after observing images)?

A comparison answers what changed and, on images, whether B's statistics still fit its weights
(``comparison_verdicts``); a tracked training whether the saved model's statistics fit the training
images, epoch by epoch (``training_verdicts``, with the epoch where the drift jumped: ``drift_jump``).

The next commands use the paths the user gave (``Paths``); a path yolobn cannot know is written as a
placeholder in capitals (``IMAGES``, ``DATA``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolobn.bn.port import TARGET_EPS
from yolobn.core.table import Table
from yolobn.core.text import metric_label
from yolobn.core.thresholds import Levels
from yolobn.core.verdict import Verdict, command, worst

__all__ = [
    "JUMP",
    "SHOWN",
    "Paths",
    "comparison_verdicts",
    "drift_jump",
    "given_model",
    "inspection_verdicts",
    "layer_severity",
    "listed",
    "prune_name",
    "recal_name",
    "training_verdicts",
]

SHOWN = 3  # layers named in one line of evidence
JUMP = 3.0  # a mean drift this many times the epoch before's (and at least drift_look) is a jump


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


def given_model(kind: str | None, source: str | None) -> str | None:
    """The model argument of a next command: None for the demo (every command's default) and for a
    model that was not read from a file (``<module>``), else its source as the user gave it."""
    if kind == "demo" or not source or source.startswith("<"):
        return None
    return source


def recal_name(model: str | None) -> str:
    """Where ``recalibrate`` writes in the next command: beside the model, ``-recal``."""
    return _beside(model, "recal")


def prune_name(model: str | None) -> str:
    """Where ``prune`` writes in the next command: beside the model, ``-pruned``."""
    return _beside(model, "pruned")


def _beside(model: str | None, tag: str) -> str:
    if not model:
        return f"demo-{tag}.pt"
    p = Path(model)
    return str(p.with_name(f"{p.stem}-{tag}{p.suffix or '.pt'}"))


def inspection_verdicts(ins: Any, paths: Paths, levels: Levels | None = None) -> list[Verdict]:
    """The answers of an ``Inspection`` (observed or not), most basic question first."""
    lv = levels or Levels()
    ly: Table = ins.layer_table
    out = [_training(ins, ly), _dead(ins, ly, paths, lv), _port(ly, paths, lv)]
    if ins.observation is not None and "drift" in ly:
        drift = _drift(ins, ly, paths, lv)
        out.append(drift)
        if drift.status == "act" and out[1].status == "act":
            out[1] = _dead_after_drift(out[1], drift)
    return out


def _dead_after_drift(dead: Verdict, drift: Verdict) -> Verdict:
    """Channels observed dead under statistics that do not fit the images (a fine-tune that broke BN)
    may be dead only because of that: recalibrate first, then look again (the demo's broken fine-tune
    shows 755 dead channels on 8 images, the demo itself a fraction of that)."""
    evidence = f"{dead.evidence}; measured under drifted running statistics: recalibrate, then measure again"
    return dataclasses.replace(dead, status="look", evidence=evidence, next=drift.next)


def comparison_verdicts(
    cmp: Any, a: str | None, b: str | None, levels: Levels | None = None
) -> list[Verdict]:
    """What changed between two checkpoints, and whether it broke BN. Data-free, only the BN parameters
    can be compared, and the answer says that whether B's stored statistics still fit B's weights needs
    images; with ``cmp.observed`` (both run on the same images) the drift answers it."""
    lv = levels or Levels()
    q = "what changed, and did it break BN"
    s = cmp.summary()
    if s["identical"]:
        return [Verdict("change", q, "ok", "every BN tensor is identical")]
    moved = s["most_changed"]
    top = listed([m["name"] for m in moved[:SHOWN]], [f"{m['change']:.3g}" for m in moved[:SHOWN]])
    tr = s["transitions"]
    evidence = (
        f"BN parameters moved in {s['changed_layers']} of {s['matched_layers']} layers (mean change "
        f"{s['change_mean']:.3g} nats; most: {top}); {tr['newly_dead']} newly dead, {tr['revived']} revived "
        "channels"
    )
    names = tuple(m["name"] for m in moved)
    if cmp.observed is None:
        evidence += ". Whether B's stored statistics still fit its weights needs images"
        nxt = command("compare", a or "A.pt", b or "B.pt", images=["IMAGES"])
        return [Verdict("change", q, "look", evidence, nxt, names)]
    status = "look" if tr["newly_dead"] else "ok"  # whether BN still fits: the drift answer below
    change = Verdict("change", q, status, evidence + "; whether B's statistics fit: see drift", None, names)
    return [change, _compare_drift(cmp, b, lv)]


def _compare_drift(cmp: Any, b: str | None, lv: Levels) -> Verdict:
    """B's drift on the images, against A's on the same images (``yolobn.run.drift.compare_images``)."""
    q = "B's running statistics fit its weights (on these images)"
    obs, ly = cmp.observed, cmp.layers
    da, db = ly["drift_a"].astype(np.float64), ly["drift_b"].astype(np.float64)
    ran = np.isfinite(db) & np.isfinite(da)
    if not ran.any():
        return Verdict("drift", q, "look", "no BatchNorm layer of both models ran on the images")
    rise = np.where(ran, db - da, np.nan)
    mean_a, mean_b = float(np.mean(da[ran])), float(np.mean(db[ran]))
    top_b, top_rise = float(np.max(db[ran])), float(np.max(rise[ran]))
    own = worst(
        [
            lv.status(mean_b, lv.drift_look, lv.drift_act),
            lv.status(top_b, lv.drift_layer_look, lv.drift_layer_act),
        ]
    )
    rose = worst(
        [
            lv.status(mean_b - mean_a, lv.drift_look, lv.drift_act),
            lv.status(top_rise, lv.drift_layer_look, lv.drift_layer_act),
        ]
    )
    risen = ran & (rise >= lv.drift_layer_look)
    order = np.flatnonzero(risen)[np.argsort(-rise[risen], kind="stable")]
    layers = tuple(str(ly["name"].iloc[i]) for i in order)
    shown = [f"{da[i]:.3g}→{db[i]:.3g}" for i in order]
    evidence = (
        f"on {obs['images']} images (imgsz {obs['imgsz']}): mean drift B {mean_b:.3g} nats, A {mean_a:.3g} "
        f"(high from {lv.drift_look:g}, {lv.drift_act:g} needs recalibration); rose by ≥{lv.drift_layer_look:g} "
        f"in {len(layers)} of {int(ran.sum())} layers" + (f": {listed(layers, shown)}" if layers else "")
    )
    if own == "ok":
        return Verdict("drift", q, "ok", evidence, None, layers)
    status = lv.sampled(own, int(obs["images"]))
    if rose == "ok":
        status = "look"
        evidence += "; A drifts as much: the images differ from what both were trained on, not B's training"
    effect = obs.get("effect")
    demo_images = not obs.get("sources") and getattr(cmp.b.meta, "kind", None) == "demo"
    paths = Paths(
        model=b or "B.pt",
        images=tuple(obs.get("sources") or ()) or None,
        data=effect["data"] if effect else None,
        demo=demo_images,
    )
    nxt: str | None = command(
        "recalibrate",
        paths.model,
        images=paths.images_arg(),
        o=recal_name(paths.model),
        data=paths.data_arg(),
    )
    if effect is None:
        evidence += "; what recalibrating B would recover was not measured (--data)"
    else:
        metric = metric_label(str(effect["metric"]))
        gain = effect["b_recalibrated"] - effect["b"]
        evidence += (
            f"; recalibrating B on these images: {metric} {effect['b']:.3f} → {effect['b_recalibrated']:.3f} "
            f"({gain:+.3f}; A {effect['a']:.3f})"
        )
        if not gain > 0:
            status, nxt = "look", None
            evidence += ": recalibration does not recover it, the weights themselves changed"
    return Verdict("drift", q, status, evidence, nxt, layers)


def drift_jump(epochs: Sequence[int], mean: Sequence[float], levels: Levels | None = None) -> int | None:
    """The epoch where the drift jumped: the first whose mean drift crossed ``drift_act`` from below,
    or reached ``JUMP`` times the epoch before's while at least ``drift_look`` (None: no jump). The
    first epoch is never a jump: there is nothing before it to jump from."""
    lv = levels or Levels()
    for i in range(1, len(epochs)):
        prev, cur = float(mean[i - 1]), float(mean[i])
        if not (math.isfinite(prev) and math.isfinite(cur)) or cur < lv.drift_look:
            continue
        if prev < lv.drift_act <= cur or cur >= JUMP * prev:
            return int(epochs[i])
    return None


def training_verdicts(
    epochs: Sequence[int],
    mean: Sequence[float],
    top: Sequence[float],
    top_names: Sequence[str],
    images: int | None,
    model: str,
    levels: Levels | None = None,
) -> list[Verdict]:
    """The answer of a tracked training (``yolobn report --run``): do the saved model's running
    statistics fit the training images? Judged at the last epoch (what ``last.pt`` holds), with the
    epoch where the drift jumped.

    Args:
        epochs: the epochs in order; mean, top: per epoch the mean drift over the layers and the
            largest layer drift (NaN: not measured); top_names: the layer with the largest drift.
        images: training images in the drift sample. model: the run's ``weights/last.pt`` as written.
    """
    lv = levels or Levels()
    q = "the running statistics fit the training images"
    measured = [i for i, m in enumerate(mean) if math.isfinite(float(m))]
    if not measured:
        evidence = (
            "drift was not measured in this run (tracked with drift_images=0, or by an older yolobn); the "
            "BN parameters alone cannot show whether the stored statistics still fit the weights"
        )
        return [Verdict("drift", q, "look", evidence, command("activations", model, images=["IMAGES"]))]
    first, last = measured[0], measured[-1]
    m_last, t_last = float(mean[last]), float(top[last])
    status = worst(
        [
            lv.status(m_last, lv.drift_look, lv.drift_act),
            lv.status(t_last, lv.drift_layer_look, lv.drift_layer_act),
        ]
    )
    evidence = (
        f"mean drift of the saved model on {images or '?'} training images: {float(mean[first]):.3g} at epoch "
        f"{epochs[first]}"
        + (f" → {m_last:.3g} at epoch {epochs[last]}" if last != first else "")
        + f" (high from {lv.drift_look:g}, {lv.drift_act:g} needs recalibration)"
    )
    seen = [int(epochs[i]) for i in measured]
    jump = drift_jump(seen, [float(mean[i]) for i in measured], lv)
    if jump is not None:
        k = seen.index(jump)
        before, after = float(mean[measured[k - 1]]), float(mean[measured[k]])
        evidence += f"; jumped at epoch {jump} ({before:.3g} → {after:.3g})"
    evidence += f"; worst layer at epoch {epochs[last]}: {top_names[last]} {t_last:.3g}"
    nxt = None
    if status != "ok":
        nxt = command("recalibrate", model, images=["IMAGES"], o=recal_name(model), data="DATA")
        evidence += " (IMAGES: the training images)"
    return [Verdict("drift", q, status, evidence, nxt, (str(top_names[last]),) if status != "ok" else ())]


def _names(ly: Table, mask: np.ndarray, order: np.ndarray | None = None) -> tuple[str, ...]:
    idx = np.flatnonzero(mask)
    if order is not None:
        idx = idx[np.argsort(-order[idx], kind="stable")]
    return tuple(str(ly["name"][i]) for i in idx)


def listed(names: Sequence[str], values: Sequence[str] | None = None) -> str:
    """``name value, name value, name value and N more``: the first ``SHOWN`` of ``names`` (worst
    first), with their values when given."""
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
            f"{len(at)} layer{'s' * (len(at) > 1)} never trained (gamma, beta still 1, 0): {listed(at)}"
        )
    if near:
        parts.append(f"{len(near)} barely trained: {listed(near)}")
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
        metric = metric_label(str(ab["metric"]))
        evidence += f"; removing their output costs {ab['delta']:+.4f} {metric}"
    # prune ranks every channel as the frontier does, keeps the largest share within the tolerance
    # and writes the smaller checkpoint: the step that acts on this answer
    nxt = command(
        "prune", paths.model, data=paths.data_arg(), images=paths.images_arg(), o=prune_name(paths.model)
    )
    status, evidence = _few_images(lv.status(share, 0.0, lv.dead_act) if share else "ok", evidence, o, lv)
    return Verdict("dead", q, status, evidence, nxt, layers)


def _few_images(status: str, evidence: str, observed: dict[str, Any], lv: Levels) -> tuple[str, str]:
    """An observed answer on fewer than ``min_images`` images: at most look, and the evidence says why."""
    images = int(observed["images"])
    if images >= lv.min_images:
        return status, evidence
    return lv.sampled(
        status, images
    ), f"{evidence}; only {images} images: use {lv.min_images} or more before acting on it"


def _port(ly: Table, paths: Paths, lv: Levels) -> Verdict:
    q = "the model survives a port (eps 1e-5, fp16)"
    eps_fig = np.nan_to_num(ly["port_eps"].astype(np.float64), nan=0.0)
    fp16 = np.nan_to_num(ly["port_fp16"].astype(np.float64), nan=0.0, posinf=np.inf)
    if not len(ly):
        return Verdict("port", q, "ok", "no BatchNorm layer")
    status = worst(
        [
            lv.status(float(eps_fig.max()), lv.port_look, lv.port_act),
            lv.status(float(fp16.max()), lv.port_look, lv.port_act),
        ]
    )
    moved = eps_fig >= lv.port_look
    if bool((ly["eps"].astype(np.float64) == TARGET_EPS).all()):
        eps_text = "its eps is already 1e-5"
    elif moved.any():
        names = _names(ly, moved, eps_fig)
        values = [_pct(float(eps_fig[list(ly["name"]).index(nm)])) for nm in names]
        eps_text = f"with eps 1e-5, {len(names)} layer output{'s' * (len(names) > 1)} move by ≥1%: {listed(names, values)}"
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
    status = worst(
        [
            lv.status(mean, lv.drift_look, lv.drift_act),
            lv.status(top, lv.drift_layer_look, lv.drift_layer_act),
        ]
    )
    worst_name = str(ly["name"][int(np.nanargmax(np.where(reached, drift, -np.inf)))])
    evidence = (
        f"mean drift {mean:.3g} nats over {int(reached.sum())} layers on {o['images']} images "
        f"(high from {lv.drift_look:g}, {lv.drift_act:g} needs recalibration); worst {worst_name} {top:.3g}"
    )
    status, evidence = _few_images(status, evidence, o, lv)
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
