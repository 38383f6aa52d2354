"""The prune frontier: how much of a model can be ablated before accuracy drops, by criterion.

Channels are ranked by a criterion and the lowest k% (over the whole model) are ablated for each
k in ``shares``: replaced, after their activation, by their observed mean (``yolobn.edit.ablation``),
the same way for every criterion, so that the comparison isolates the ranking. Each point is
validated with Ultralytics' validator on an unfused copy (``yolobn.evaluate.validation``).

Criteria
    ``observed``: the channel's post-activation standard deviation on the images. Replacing a
    channel by its mean adds an error whose mean square is exactly that variance, so this ranks by
    the error the ablation itself introduces.
    ``gamma``: ``|gamma|``, the network-slimming / Torch-Pruning BN-scale importance (data-free).
    ``random``: a control, one ranking per seed; its points are averaged over the seeds.

The summary gives, per criterion, the largest share removable within ``tolerance`` of the
baseline metric (every smaller share within it too); the same for the observed criterion within each role (backbone, neck, head:
ranked and ablated inside that role only); and the layers most ablated at the largest tolerated
observed share.

Physically removing channels (a smaller checkpoint) is ``yolobn prune`` (``yolobn.sweeps.pruning``):
the same rankings and constants, through a dependency graph; removal equals this ablation except at
border pixels (zero padding), which it measures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from yolobn.bn.answers import Paths, given_model, prune_name
from yolobn.bn.inspection import Inspection, inspect
from yolobn.core import notebook
from yolobn.core.digest import sha256
from yolobn.core.errors import YolobnError
from yolobn.core.limits import MAX_SEEDS
from yolobn.core.text import metric_label
from yolobn.core.thresholds import Levels, ObservedThresholds
from yolobn.core.verdict import Verdict, command, worst
from yolobn.edit.ablation import ablate, constants, plan_from
from yolobn.evaluate.validation import KEY_METRICS, validate
from yolobn.io.checks import require_runnable
from yolobn.io.images import model_imgsz, resolve_images
from yolobn.io.loader import LoadedModel, load
from yolobn.run.observation import kept, observe, restored
from yolobn.sweeps.fanout import Task, run_tasks, sweep_identity, worker_name
from yolobn.sweeps.rows import Row, RowStore, row_key
from yolobn.sweeps.variants import Settings, baseline_task

if TYPE_CHECKING:
    from yolobn.sweeps.fanout import Execution

__all__ = ["CRITERIA", "Frontier", "ROLES", "SHARES", "frontier", "importance", "lowest", "measure_plan"]

SHARES = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0)
CRITERIA = ("observed", "gamma", "random")
ROLES = ("backbone", "neck", "head")


@dataclass
class Frontier:
    """The frontier table and its summary.

    Attributes:
        points: one row per (criterion, seed, share) and per role for the observed criterion:
            ``criterion, scope, seed, share, channels_ablated, share_actual, <metric>, delta``.
        curve: ``points`` averaged over the random seeds (one row per criterion/scope/share).
        metric: the Ultralytics metric key; baseline: its value without ablation.
        tolerance: the drop that still counts as "removable".
        layers: per layer, the share ablated at the largest tolerated observed share.
    """

    points: pd.DataFrame
    curve: pd.DataFrame
    metric: str
    baseline: float
    tolerance: float
    layers: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (point, one-line reason)
    resumed: int = 0  # points read from an earlier run of the same sweep

    def __repr__(self) -> str:
        rem = ", ".join(f"{k} {v:g}%" for k, v in self.summary()["removable"].items())
        return f"Frontier({self.metric.replace('metrics/', '')} {self.baseline:.4f}; removable within {self.tolerance:g}: {rem})"

    def _repr_html_(self) -> str:
        s = self.summary()
        items = [
            ("metric", f"{self.metric.replace('metrics/', '')} baseline {self.baseline:.4f}"),
            ("removable", " · ".join(f"{k} {v:g}%" for k, v in s["removable"].items())),
            ("by role", " · ".join(f"{k} {v:g}%" for k, v in s["removable_by_role"].items())),
        ]
        c = self.curve[self.curve["scope"] == "all"].pivot_table(
            index="share", columns="criterion", values="delta"
        )
        c = c.reset_index()
        return (
            notebook.kv("yolobn frontier", items)
            + notebook.answers(self.verdicts())
            + notebook.table(c, list(c.columns), 20)
        )

    def paths(self) -> Paths:
        """The user's paths as far as the frontier knows them (model, images, dataset)."""
        m, st = self.meta or {}, self.settings or {}
        demo = m.get("kind") == "demo"
        model = given_model(m.get("kind"), m.get("source"))
        sources = tuple(st.get("sources") or ()) or None
        data = st.get("data")
        implied = data is None or (demo and data == "shapes")  # the demo's own dataset is its default
        return Paths(model, sources, None if implied else str(data), demo)

    def verdicts(self, paths: Paths | None = None, levels: Levels | None = None) -> list[Verdict]:
        """The answer to "how much can be removed, and by which ranking", with the ``prune`` command
        that removes it (``paths``: the user's paths for that command; default ``self.paths()``)."""
        lv, p = levels or Levels(), paths or self.paths()
        s = self.summary()
        rem: dict[str, float] = s["removable"]
        q = "how much can be removed, and by which ranking"
        label = metric_label(self.metric)
        if not rem:
            return []
        best = max(rem, key=lambda c: (rem[c], c == "observed"))
        share = rem[best]
        others = ", ".join(f"{c} {v:g}%" for c, v in rem.items() if c != best)
        within = f"within {self.tolerance:g} {label} of {self.baseline:.4f}"
        layers = tuple(str(r["name"]) for r in s["most_prunable_layers"] if r["ablated"] > 0)
        if share <= 0:
            status = "ok"
            evidence = f"no share of the channels can go {within} by any ranking ({others or best} 0%)"
            nxt = None
        else:
            status = "act" if share >= lv.removable_act else "look"
            evidence = f"{best} ranking: {share:g}% of the channels can go {within}"
            evidence += f" ({others})" if others else ""
            crit = best if best in ("observed", "gamma") else "observed"
            nxt = command(
                "prune",
                p.model,
                data=p.data_arg(),
                images=p.images_arg(),
                tolerance=f"{self.tolerance:g}",
                criterion=None if crit == "observed" else crit,
                o=prune_name(p.model),
            )
        n_points = int((self.points["share"] > 0).sum()) if len(self.points) else 0
        if self.failed:
            status = worst([status, "look"])
            evidence += f"; {len(self.failed)} of {n_points} points failed (frontier.json)"
        images = int(self.settings.get("images") or 0)
        if images < lv.min_images:
            status = lv.sampled(status, images)
            evidence += f"; observed on only {images} images: use {lv.min_images} or more before acting on it"
        return [Verdict("prune", q, status, evidence, nxt, layers)]

    def removable(self, criterion: str, scope: str = "all") -> float:
        """The largest share (%) such that it and every smaller share stay within the tolerance
        (mean drop over seeds): a later point back within the tolerance does not count, since
        the validation set is small and the curve noisy."""
        c = self.curve[(self.curve["criterion"] == criterion) & (self.curve["scope"] == scope)]
        best = 0.0
        for share, delta in sorted(zip(c["share"], c["delta"], strict=True)):
            if not delta >= -self.tolerance:
                break
            best = float(share)
        return best

    def summary(self) -> dict[str, Any]:
        crit = sorted(set(self.curve["criterion"]), key=lambda c: CRITERIA.index(c) if c in CRITERIA else 9)
        roles = sorted(set(self.curve["scope"]) - {"all"}, key=lambda r: ROLES.index(r) if r in ROLES else 9)
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "tolerance": self.tolerance,
            "removable": {c: self.removable(c) for c in crit},
            "removable_by_role": {r: self.removable("observed", r) for r in roles},
            "most_prunable_layers": [
                {
                    "name": r.name,
                    "role": r.role,
                    "channels": int(r.channels),
                    "ablated": int(r.ablated),
                    "share": float(r.share),
                }
                for r in self.layers.head(5).itertuples()
            ],
        }


def importance(ins: Any, criterion: str, seed: int = 0) -> np.ndarray:
    """Per channel of ``ins.channels`` (in order): lower means ablated first."""
    ch = ins.channels
    if criterion == "observed":
        if "obs_post_std" not in ch.columns:
            raise YolobnError("frontier: the observed criterion needs the model observed on images")
        observed: np.ndarray = ch["obs_post_std"].to_numpy(np.float64)
        return observed
    if criterion == "gamma":
        gamma: np.ndarray = np.abs(ch["gamma"].to_numpy(np.float64))
        return gamma
    if criterion == "random":
        return np.random.default_rng(seed).random(len(ch))
    raise YolobnError(f"frontier: unknown criterion {criterion!r}; use {', '.join(CRITERIA)}")


def lowest(ins: Any, score: np.ndarray, share: float, mask: np.ndarray | None = None) -> dict[str, list[int]]:
    """The ``share`` % lowest-scoring channels (among ``mask``), per layer; ties in model order."""
    ch = ins.channels
    idx = np.flatnonzero(mask if mask is not None else np.ones(len(ch), bool))
    k = int(math.floor(len(idx) * share / 100 + 1e-9))
    if k <= 0:
        return {}
    s = np.nan_to_num(score[idx], nan=np.inf)  # channels never run rank last
    chosen = idx[np.argsort(s, kind="stable")[:k]]
    out: dict[str, list[int]] = {}
    for name, c in zip(ch["name"].to_numpy()[chosen], ch["channel"].to_numpy()[chosen], strict=True):
        out.setdefault(str(name), []).append(int(c))
    return {n: sorted(v) for n, v in out.items()}


def frontier(
    model: Any = None,
    data: str = "shapes",
    images: Sequence[str] | None = None,
    *,
    shares: Sequence[float] = SHARES,
    criteria: Sequence[str] = CRITERIA,
    seeds: int = 3,
    roles: bool = True,
    tolerance: float = 0.005,
    max_images: int | None = None,
    imgsz: int | None = None,
    batch: int = 16,
    device: str = "cpu",
    trust: bool = False,
    strict: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    execution: Execution | None = None,
) -> Frontier:
    """Ablate the lowest k% of channels by each criterion and validate each point (module docstring).

    Args:
        model: anything ``yolobn.load`` takes. data: the validation dataset (``yolobn.io.datasets``).
        images: where the channels are observed (the constants and the observed criterion);
            default: the demo's training images, else Ultralytics' samples.
        shares: the percentages to ablate. criteria: any of ``observed``, ``gamma``, ``random``.
        seeds: random rankings averaged. roles: also the observed frontier within each role.
        tolerance: the metric drop that still counts as removable.
        strict: refuse a damaged checkpoint (see ``yolobn.load``).
        execution: where the points are validated (here, or one Ray task each) and whether
            finished rows are kept and resumed (``yolobn.sweeps.fanout.Execution``; default: here, nothing kept).
    """

    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise YolobnError(f"frontier: seeds {seeds!r}: must be a whole number from 1 to {MAX_SEEDS}")
    loaded = model if isinstance(model, LoadedModel) else load(model, trust=trust, strict=strict)
    require_runnable(loaded)
    size = model_imgsz(loaded, imgsz)
    bad = [c for c in criteria if c not in CRITERIA]
    if bad:
        raise YolobnError(f"frontier: unknown criterion {bad[0]!r}; use {', '.join(CRITERIA)}")
    if any(not 0 <= s < 100 for s in shares):
        raise YolobnError("frontier: shares are percentages from 0 to below 100")
    settings = Settings(data=data, imgsz=size, batch=batch, device=device, trust=trust)
    ins = _observed(loaded, images, max_images, size, batch, device, settings, execution, progress)
    metric = KEY_METRICS.get(loaded.meta.task or "detect", KEY_METRICS["detect"])[0]
    runs = [(c, "all", s) for c in criteria for s in (range(seeds) if c == "random" else [0])]
    if roles and "observed" in criteria:
        runs += [("observed", r, 0) for r in ROLES if (ins.channels["name"].map(_role_of(ins)) == r).any()]
    rows, b, failed, resumed = _points(loaded, ins, runs, shares, metric, settings, execution, progress)
    points = pd.DataFrame(rows).sort_values(["criterion", "scope", "seed", "share"], kind="stable")
    points = points.reset_index(drop=True)
    if "error" in points.columns:
        points["error"] = points["error"].fillna("")
    curve = (
        points.groupby(["criterion", "scope", "share"], sort=False)
        .agg(
            **{
                metric: (metric, "mean"),
                "delta": ("delta", "mean"),
                "delta_min": ("delta", "min"),
                "delta_max": ("delta", "max"),
                "channels_ablated": ("channels_ablated", "mean"),
                "seeds": ("seed", "nunique"),
            }
        )
        .reset_index()
    )
    fr = Frontier(points, curve, metric, b, tolerance, pd.DataFrame(), meta=loaded.meta.to_dict())
    fr.failed, fr.resumed = failed, resumed
    fr.layers = _most_prunable(ins, fr.removable("observed") if "observed" in criteria else 0.0)
    fr.settings = {
        "data": data,
        "imgsz": size,
        "batch": batch,
        "images": len(ins.observation.images),
        "sources": [str(p) for p in images] if images else [],
        "shares": list(shares),
        "criteria": list(criteria),
        "seeds": seeds,
    }
    return fr


def _observed(
    loaded: Any,
    images: Sequence[str] | None,
    max_images: int | None,
    size: int,
    batch: int,
    device: str,
    settings: Settings,
    execution: Execution | None,
    progress: Callable[[str, int, int], None] | None,
) -> Inspection:
    """The model observed on the images, kept with the sweep's rows: a resumed frontier reads it
    back instead of running the images again. Its key is the sweep's identity (checkpoint, dataset,
    settings, versions) and the images' contents (sha256 of each file, in order)."""

    ex = execution
    identity = sweep_identity(loaded, settings) if ex is not None and (ex.keep_rows or ex.resume) else None
    base = inspect(loaded)
    seen = (lambda d, t: progress("observing images", d, t)) if progress else None
    if ex is None or identity is None:
        return observe(
            base, images, max_images=max_images, imgsz=size, batch=batch, device=device, progress=seen
        )
    paths = resolve_images(loaded, images, max_images)
    ident = {
        "kind": "observation",
        "images": [[str(p), sha256(p)] for p in paths],
        "thresholds": ObservedThresholds().to_dict(),
    }
    key = row_key(identity, ident)
    found = RowStore.for_identity(identity, ex.rows_dir).finished([key]) if ex.resume else {}
    if key in found:
        ins = restored(base, found[key].value)
        if ins is not None:
            if progress:
                progress("observation resumed", 1, 1)
            if ex.notify:
                ex.notify(f"resuming: the observation of {len(paths)} images from an earlier run")
            return ins
    t0 = time.perf_counter()
    ins = observe(base, images, max_images=max_images, imgsz=size, batch=batch, device=device, progress=seen)
    if ex.keep_rows:
        with RowStore.for_identity(identity, ex.rows_dir) as store:
            store.write(Row(key, "observation", True, kept(ins), "", time.perf_counter() - t0, worker_name()))
    return ins


def _points(
    loaded: Any,
    ins: Any,
    runs: list[tuple[str, str, int]],
    shares: Sequence[float],
    metric: str,
    settings: Any,
    execution: Execution | None,
    progress: Callable[[str, int, int], None] | None,
) -> tuple[list[dict[str, Any]], float, list[tuple[str, str]], int]:
    """Validate every point: each distinct set of channels is one task (ties and small shares often
    choose the same set); returns the rows, the baseline, the failures and the resumed count."""

    todo = [(c, scope, seed, k) for c, scope, seed in runs for k in shares if k > 0]
    tasks, index, chosen_at = [baseline_task()], {}, []
    consts = constants(ins)  # once: every plan takes its channels' constants from these
    role = ins.channels["name"].map(_role_of(ins)).to_numpy()
    for c, scope, seed, k in todo:
        mask = None if scope == "all" else role == scope
        chosen = lowest(ins, importance(ins, c, seed), k, mask)
        key = tuple(sorted((n, tuple(v)) for n, v in chosen.items()))
        if key not in index:
            plan = plan_from(chosen, ins, consts)
            ident = {"kind": "ablate", "channels": plan.channels, "values": plan.values}
            index[key] = len(tasks)
            tasks.append(
                Task("yolobn.sweeps.frontier:measure_plan", {"plan": plan}, f"{c} {scope} {k:g}%", ident)
            )
        total = len(ins.channels) if mask is None else int(mask.sum())
        chosen_at.append((index[key], sum(len(v) for v in chosen.values()), total))

    def step(label: str, done: int, n: int) -> None:
        if progress:
            progress(label if done < n else "done", done, n)

    outs = run_tasks(loaded, settings, tasks, execution, progress=step if progress else None)
    b = float(outs[0].value["metrics"].get(metric, math.nan))
    rows = []
    for (c, scope, seed, k), (i, n, total) in zip(todo, chosen_at, strict=True):
        o = outs[i]
        v = float(o.value["metrics"].get(metric, math.nan)) if o.ok else math.nan
        rows.append(
            {
                "criterion": c,
                "scope": scope,
                "seed": seed,
                "share": float(k),
                "channels_ablated": n,
                "share_actual": 100 * n / total,
                metric: v,
                "delta": v - b,
            }
        )
        if not o.ok:
            rows[-1]["error"] = o.error
    for c, scope, seed in runs:  # the 0% point of every series is the baseline
        rows.append(
            {
                "criterion": c,
                "scope": scope,
                "seed": seed,
                "share": 0.0,
                "channels_ablated": 0,
                "share_actual": 0.0,
                metric: b,
                "delta": 0.0,
            }
        )
    failed = [(o.task.label, o.error) for o in outs if not o.ok]
    return rows, b, failed, sum(o.resumed for o in outs)


def measure_plan(loaded: Any, s: Any, spec: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """Task: validate the model with the planned channels ablated (``yolobn.edit.ablation``)."""

    net = ablate(loaded, spec["plan"])
    kw = {"imgsz": s.imgsz, "batch": s.batch, "device": s.device, "trust": s.trust}
    m = validate(LoadedModel(net, loaded.meta), s.data, loaders=ctx.loaders, **kw)
    return {"metrics": m, "channels_ablated": spec["plan"].count}


def _role_of(ins: Any) -> dict[str, str]:
    return dict(zip(ins.layers["name"], ins.layers["role"], strict=True))


def _most_prunable(ins: Any, share: float) -> pd.DataFrame:
    chosen = lowest(ins, importance(ins, "observed"), share) if "obs_post_std" in ins.channels.columns else {}
    ly = ins.layers[["name", "role", "channels"]].copy()
    ly["ablated"] = ly["name"].map(lambda n: len(chosen.get(n, []))).astype(int)
    ly["share"] = ly["ablated"] / ly["channels"].clip(lower=1)
    return ly.sort_values(["share", "ablated"], ascending=False, kind="stable").reset_index(drop=True)
