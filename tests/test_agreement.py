"""Label-free comparison: the optimal box matching (a greedy match undercounts in crowded scenes),
and swap's label-free run: a measured time per image and a note that nothing was validated."""

from __future__ import annotations

import json

import numpy as np
import pytest

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


def test_detection_rows_are_compared_whatever_their_order():
    import torch

    from yolobn.evaluate.agreement import row_difference

    rows = torch.tensor(
        [[0.5, 0.5, 0.2, 0.2, 0.9, 3], [0.1, 0.2, 0.1, 0.1, 0.9, 3], [0.7, 0.3, 0.4, 0.1, 0.4, 1]]
    ).unsqueeze(0)
    swapped = rows[:, [1, 0, 2]]  # two tied scores the other way round
    assert (rows - swapped).abs().max() > 0.3 and row_difference(rows, swapped) == 0.0
    nudged = swapped.clone()
    nudged[0, 0, 1] += 1e-3
    assert abs(row_difference(rows, nudged) - 1e-3) < 1e-6
    other = rows.clone()
    other[0, 2, 5] = 2  # a detection of another class: nothing to pair it with
    assert abs(row_difference(rows, other) - 0.7) < 1e-6  # its largest value (float32)


@pytest.mark.slow
def test_rtdetr_reference_and_folded_agree_to_float_rounding():
    """RT-DETR lists its 300 queries by score: a rounding that swaps two near-equal scores swaps two
    rows. Compared as rows in the output's order the difference looked like 0.9 (here 0.17 to 0.55);
    compared as sets of detections it is float rounding."""
    import torch

    import yolobn
    from yolobn.bn.walk import unwrap
    from yolobn.edit.swapping import swap
    from yolobn.evaluate.agreement import agreement, first_tensor
    from yolobn.io.images import iter_batches, sample_images

    torch.manual_seed(1)  # random weights whose near-tied scores swap rows in both scenes
    m = yolobn.load("rtdetr-l.yaml")
    images = sample_images()
    folded = swap(m, "folded")
    worst = 0.0  # bus.jpg and zidane.jpg letterbox to different shapes: one image per batch
    for x, _ in iter_batches(images, 160, stride=32, batch=2):
        with torch.no_grad():
            ya, yb = first_tensor(unwrap(m).eval()(x)), first_tensor(unwrap(folded).eval()(x))
        assert ya.shape == (1, 300, 6)
        worst = max(worst, (ya - yb).abs().max().item())
    assert worst > 1e-3  # rows swapped in these scenes: an elementwise comparison fails
    for impl, b in (("folded", folded), ("reference", swap(m, "reference"))):
        got = agreement(m, b, images, 160, batch=2, conf=0.01)  # untrained: every score is about 0.035
        assert got["max_rel_diff"] < 1e-5, (impl, got)
        assert got["boxes_a"] == got["boxes_b"] == 600 and got["box_agreement"] == 1.0, (impl, got)
