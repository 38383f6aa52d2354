"""The prune frontier: the ranking and share rules on planted scores, the removable-share rule, and
the demo end to end (each point equal to validating the same ablation directly)."""

from __future__ import annotations

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
    no_stray_runs()  # the validator's save_dir was private, and is gone
    capsys.readouterr()
    assert main(["frontier", "--criteria", "size"]) == 2
    assert "use some of observed, gamma, random" in capsys.readouterr().err
