"""Label-free comparison: the optimal box matching (a greedy match undercounts in crowded scenes),
and swap's label-free run: a measured time per image and a note that nothing was validated."""

from __future__ import annotations

import json

import numpy as np

from yolobn.cli import main
from yolobn.evaluate.agreement import max_matching


def _greedy(ious: np.ndarray, thr: float) -> int:
    """The old rule: each box of a, in order, takes its best box of b if that one is still free."""
    used, matched = set(), 0
    for i in range(ious.shape[0]):
        j = int(ious[i].argmax())
        if ious[i, j] >= thr and j not in used:
            used.add(j)
            matched += 1
    return matched


def test_optimal_matching_beats_greedy_in_a_crowd():
    # a0 overlaps b0 best, but a1 can only match b0: the optimum pairs a0-b1 and a1-b0
    ious = np.array([[0.9, 0.6], [0.7, 0.1]])
    assert _greedy(ious, 0.5) == 1
    assert max_matching(ious, 0.5) == 2
    assert max_matching(np.zeros((3, 4)), 0.5) == 0
    assert max_matching(np.eye(5), 0.5) == 5
    rng = np.random.default_rng(0)
    for _ in range(50):  # never worse than greedy, never more than min(rows, cols)
        m = rng.random((rng.integers(1, 8), rng.integers(1, 8)))
        got = max_matching(m, 0.6)
        assert _greedy(m, 0.6) <= got <= min(m.shape) and got <= int((m >= 0.6).sum())


def test_label_free_swap_measures_time_and_says_nothing_was_validated(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["swap", "--impl", "reference", "--images", "--max-images", "4", "-o", str(out), "-q"]) == 0
    doc = json.loads((out / "swap.json").read_text())
    assert doc["note"].startswith("label-free: nothing was validated")
    rows = doc["results"]
    assert all(r["ms_per_image"] is not None and r["ms_per_image"] > 0 for r in rows)  # the baseline's too
    assert rows[1]["box_agreement"] is not None and rows[1]["images"] == 4
    capsys.readouterr()
    args = [
        "swap",
        "--impl",
        "reference",
        "--images",
        "--max-images",
        "4",
        "-o",
        str(out),
        "--exist-ok",
        "--wide",
    ]
    assert main(args) == 0
    base = next(line for line in capsys.readouterr().out.splitlines() if "baseline" in line)
    assert not base.rstrip().endswith("-")  # ms/img is the last column: measured, not "-"
