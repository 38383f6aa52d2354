"""The prune frontier: the ranking and share rules on planted scores, the removable-share rule, and
the demo end to end (each point equal to validating the same ablation directly)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import yolobn
from tests.models import TinyNet, plant
from yolobn.cli import main
from yolobn.sweeps.frontier import Frontier, frontier, importance, lowest


def test_lowest_takes_the_floor_of_the_share_ties_in_model_order():
    ins = yolobn.inspect(yolobn.load(plant(TinyNet())))  # 8 + 4 + 4 = 16 channels
    score = np.array([5, 1, 1, 9, 9, 9, 9, 9, 0, 9, 9, 9, 1, 9, 9, 9], dtype=float)
    assert lowest(ins, score, 0) == {}
    assert lowest(ins, score, 10) == {"b2.bn": [0]}  # floor(1.6) = 1: the lowest score
    assert lowest(ins, score, 25) == {
        "b1.bn": [1, 2],
        "b2.bn": [0],
        "seq.1": [0],
    }  # 4: the 0 and the three 1s
    assert lowest(ins, score, 20) == {"b1.bn": [1, 2], "b2.bn": [0]}  # 3: the 0, then the 1s in model order
    got = lowest(ins, score, 25, mask=np.r_[np.ones(8, bool), np.zeros(8, bool)])  # only b1.bn: floor(2) = 2
    assert got == {"b1.bn": [1, 2]}
    score[1] = np.nan  # never observed: ranked last
    assert lowest(ins, score, 10) == {"b2.bn": [0]} and 1 not in lowest(ins, score, 20).get("b1.bn", [])


def test_importance_by_criterion():
    ins = yolobn.inspect(yolobn.load(plant(TinyNet())))
    assert np.array_equal(importance(ins, "gamma"), np.abs(ins.channels["gamma"].to_numpy()))
    assert np.array_equal(importance(ins, "random", 1), importance(ins, "random", 1))
    assert not np.array_equal(importance(ins, "random", 1), importance(ins, "random", 2))
    with pytest.raises(yolobn.YolobnError, match="observed on images"):
        importance(ins, "observed")


def test_removable_is_the_prefix_within_tolerance():
    curve = pd.DataFrame(
        {
            "criterion": "observed",
            "scope": "all",
            "share": [0, 1, 5, 10, 20],
            "delta": [0, -0.001, -0.004, -0.02, 0.003],
        }
    )
    fr = Frontier(curve, curve, "m", 0.6, 0.005, pd.DataFrame())
    assert fr.removable("observed") == 5  # 20% is back within the tolerance, but 10% was not
    fr.tolerance = 0.0005
    assert fr.removable("observed") == 0


@pytest.mark.slow
def test_demo_frontier_points_are_the_direct_ablations():
    from yolobn.bn.inspection import inspect
    from yolobn.edit.ablation import ablate, plan_from
    from yolobn.io.loader import LoadedModel
    from yolobn.run.observation import observe

    fr = frontier(None, "shapes", shares=(0, 5), criteria=("observed", "gamma"), roles=False, max_images=16)
    c = fr.curve.set_index(["criterion", "share"])
    assert c.loc[("observed", 0.0), "delta"] == 0.0
    assert c.loc[("gamma", 5.0), "channels_ablated"] == math.floor(7688 * 0.05)
    m = yolobn.load()
    ins = observe(inspect(m), max_images=16)
    chosen = lowest(ins, np.abs(ins.channels["gamma"].to_numpy()), 5)
    direct = yolobn.validate(LoadedModel(ablate(m, plan_from(chosen, ins)), m.meta), "shapes")[fr.metric]
    assert c.loc[("gamma", 5.0), fr.metric] == direct
    s = fr.summary()
    assert set(s["removable"]) == {"observed", "gamma"} and s["baseline"] == fr.baseline


@pytest.mark.slow
def test_frontier_cli(tmp_path, capsys, no_stray_runs):
    code = main(
        ["frontier", "--shares", "0,2", "--criteria", "observed", "--no-roles", "-o", str(tmp_path), "-q"]
    )
    assert code == 0
    curve = pd.read_csv(tmp_path / "frontier.csv")
    assert list(curve["share"]) == [0, 2] and set(curve["criterion"]) == {"observed"}
    assert 'id="plot-frontier"' in (tmp_path / "frontier.html").read_text()  # the page beside the CSV
    doc = json.loads((tmp_path / "frontier.json").read_text())
    (v,) = doc["verdicts"]  # the same answer as the terminal's, with the demo's own command
    assert v["key"] == "prune" and v["status"] in ("ok", "look", "act")
    assert v["next"] is None or v["next"].startswith("yolobn prune --tolerance 0.005 -o demo-pruned.pt")
    no_stray_runs()  # the validator's save_dir was private, and is gone
    capsys.readouterr()
    assert main(["frontier", "--criteria", "size"]) == 2
    assert "use some of observed, gamma, random" in capsys.readouterr().err


def _frontier(removable: dict[str, list[float]], images: int = 96, failed: int = 0, **meta: str) -> Frontier:
    """A frontier whose curve gives each criterion the deltas at shares 0, 2, 10, 20."""
    rows = [
        {"criterion": c, "scope": "all", "share": s, "delta": d}
        for c, deltas in removable.items()
        for s, d in zip([0, 2, 10, 20], deltas, strict=True)
    ]
    curve = pd.DataFrame(rows)
    layers = pd.DataFrame(
        {"name": ["model.2.cv1.bn"], "role": ["backbone"], "channels": [16], "ablated": [4], "share": [0.25]}
    )
    fr = Frontier(curve, curve, "metrics/mAP50-95(B)", 0.6, 0.005, layers, meta=dict(meta))
    fr.settings = {"images": images, "data": "coco8.yaml", "sources": ["val/"]}
    fr.failed = [("observed all 20%", "RuntimeError: out of memory")] * failed
    return fr


def test_frontier_verdict_names_the_share_and_the_prune_command():
    ok_then_drop = [0, -0.001, -0.004, -0.05]
    (v,) = _frontier(
        {"observed": ok_then_drop, "gamma": [0, -0.01, -0.02, -0.1]}, source="runs/best.pt"
    ).verdicts()
    assert (v.key, v.status) == ("prune", "act")  # 10% >= Levels.removable_act (5%)
    assert (
        v.evidence
        == "observed ranking: 10% of the channels can go within 0.005 mAP50-95 (box) of 0.6000 (gamma 0%)"
    )
    assert (
        v.next
        == "yolobn prune runs/best.pt --data coco8.yaml --images val/ --tolerance 0.005 -o runs/best-pruned.pt"
    )
    assert v.layers == ("model.2.cv1.bn",)
    # the best ranking leads, and its own criterion goes to prune; a share under 5% (Levels.removable_act) is a look
    (v,) = _frontier({"observed": [0, -0.01, -0.02, -0.1], "gamma": [0, -0.001, -0.02, -0.1]}).verdicts()
    assert v.status == "look" and v.evidence.startswith("gamma ranking: 2% of the channels")
    assert v.next is not None and "--criterion gamma" in v.next
    # nothing removable: ok, nothing to run
    (v,) = _frontier({"observed": [0, -0.01, -0.02, -0.1]}).verdicts()
    assert (v.status, v.next) == ("ok", None) and v.evidence.startswith("no share of the channels can go")


def test_frontier_verdict_on_few_images_or_failed_points_is_at_most_look():
    good = {"observed": [0, -0.001, -0.002, -0.003]}
    (v,) = _frontier(good, images=4).verdicts()
    assert v.status == "look" and "observed on only 4 images: use 8 or more" in v.evidence
    (v,) = _frontier(good, failed=1).verdicts()
    assert v.status == "act" and "1 of 3 points failed" in v.evidence  # act stays act: look is the floor
    (v,) = _frontier({"observed": [0, -0.01, -0.02, -0.03]}, failed=1).verdicts()
    assert v.status == "look"  # an ok with failed points is not ok


def test_kept_observation_restores_the_same_tables():
    from yolobn.bn.inspection import inspect
    from yolobn.run.observation import kept, observe, restored

    m = yolobn.load()
    ins = observe(inspect(m), max_images=4)
    state = json.loads(json.dumps(kept(ins)))  # as the rows file stores it
    back = restored(inspect(m), state)
    assert back is not None
    pd.testing.assert_frame_equal(back.layers, ins.layers)
    pd.testing.assert_frame_equal(back.channels, ins.channels)
    assert back.observation == ins.observation
    # another selection of layers, or a damaged record: None (the caller observes again)
    assert restored(inspect(m, select=["model.0.bn"]), state) is None
    assert restored(inspect(m), {**state, "channel_columns": {}}) is None


def test_a_resumed_frontier_reads_the_observation_back(tmp_path, monkeypatch):
    import yolobn.sweeps.frontier as module
    from yolobn.sweeps.fanout import Execution

    calls: list[int] = []
    real = module.observe

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, "observe", counted)
    notes: list[str] = []
    ex = Execution(rows_dir=tmp_path / "rows", notify=notes.append)
    kw = {"shares": (0, 5), "criteria": ("gamma",), "roles": False, "max_images": 8, "execution": ex}
    cold = frontier(None, "shapes", **kw)
    warm = frontier(None, "shapes", **kw)
    assert len(calls) == 1 and warm.resumed == 1  # the 5% point (the baseline has its own cache)
    assert "resuming: the observation of 8 images from an earlier run" in notes
    pd.testing.assert_frame_equal(warm.points, cold.points)
    pd.testing.assert_frame_equal(warm.layers, cold.layers)
    # other image contents: observed again (the key holds each file's sha256)
    import shutil

    from yolobn.io.images import resolve_images

    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in resolve_images(yolobn.load(), None, 8):
        shutil.copy(p, folder / p.name)
    frontier(None, "shapes", [str(folder)], **{**kw, "shares": (0,)})
    assert len(calls) == 2
    frontier(None, "shapes", [str(folder)], **{**kw, "shares": (0,)})
    assert len(calls) == 2
    first = sorted(folder.iterdir())[0]
    first.write_bytes(sorted(folder.iterdir())[1].read_bytes())  # same name, other picture
    frontier(None, "shapes", [str(folder)], **{**kw, "shares": (0,)})
    assert len(calls) == 3
