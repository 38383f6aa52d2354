"""Terminal output fits 80 and 120 columns: no line longer than the width, every listed layer name
whole, no cell cut with an ellipsis; minor columns are dropped in the stated order."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console

import yolobn
from yolobn.report.console import LAYER_COLS, layer_table, observed_table
from yolobn.report.tables import variants_table


def render(renderable, width: int) -> str:
    c = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    c.print(renderable)
    return c.file.getvalue()


def check_fits(text: str, width: int, names: list[str]) -> None:
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text
    for n in names:
        assert any(n in line.split() for line in lines), f"{n} is not shown whole"


@pytest.fixture(scope="module")
def demo():
    return yolobn.inspect()


@pytest.fixture(scope="module")
def long_names(demo):
    """Demo rows renamed to long dotted names (as deep RT-DETR / YOLOE modules have)."""
    ly = demo.layers.head(6).copy()
    ly["name"] = [f"model.{i}.very.deep.block.with.a.long.name.cv{i}.bn" for i in range(len(ly))]
    ly.loc[0, "findings"] = "gamma and beta still at init (1, 0): no gradient reached this layer"
    return ly


@pytest.mark.parametrize("width", [80, 120])
def test_layer_table_fits(demo, long_names, width):
    for ly in (demo.layers.head(15), long_names):
        text = render(layer_table(ly, width=width), width)
        check_fits(text, width, list(ly["name"]))


def test_columns_are_dropped_in_the_stated_order(demo):
    wide = render(layer_table(demo.layers.head(5), width=300), 300)
    narrow = render(layer_table(demo.layers.head(5), width=80), 80)
    header = next(line for line in narrow.splitlines() if " name " in line)
    assert "conv k/s in→out" in wide and "hidden to fit" not in wide
    assert "conv k/s" not in header and "hidden to fit 80 columns" in narrow
    hidden = narrow.split("hidden to fit 80 columns:")[1].replace("\n", " ")
    order = sorted((c for c in LAYER_COLS if c.drop), key=lambda c: -c.drop)
    dropped = [c.header for c in order if c.header in hidden]
    assert dropped and dropped == [c.header for c in order[: len(dropped)]]  # a prefix of the stated order
    for essential in ("name", "dead", "eps-dom", "findings"):
        assert essential in narrow


@pytest.mark.parametrize("width", [80, 120])
def test_observed_table_fits(demo, width, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 48), (120, 30, 200)).save(tmp_path / "a.png")
    obs = yolobn.observe(demo, [str(tmp_path)], imgsz=64)
    ly = obs.layers.head(15)
    check_fits(render(observed_table(ly, width=width), width), width, list(ly["name"]))


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("wide", [False, True])
def test_variants_table_fits(width, wide):
    rows = []
    for name, d in (
        ("baseline (nn.BatchNorm2d)", 0.0),
        ("reference:eps=1e-5 @ backbone,neck", -2.595e-08),
        ("examples/custom_bn.py:PerTensorInt8BatchNorm", -0.0127),
    ):
        rows.append(
            {
                "variant": name,
                "impl": "",
                "swapped": 81,
                "mAP50-95(B)": 0.6294 + d,
                "mAP50-95(B) delta": d,
                "mAP50(B)": 0.9,
                "mAP50(B) delta": d,
                "max_abs_diff": 1.2e-5,
                "max_rel_diff": 3e-8,
                "ms_per_image": 12.25,
                "cached": False,
            }
        )
    t = variants_table(
        pd.DataFrame(rows),
        ("metrics/mAP50-95(B)", "metrics/mAP50(B)"),
        "swap",
        images=False,
        width=width,
        wide=wide,
    )
    text = render(t, width)
    check_fits(text, width, [])
    for r in rows:
        assert r["variant"] in text  # the variant in full
    # one number style per column: a change of -2.6e-08 in mAP shows as 0.0000, never in exponent form
    row = next(line for line in text.splitlines() if "reference:eps=1e-5" in line)
    assert "0.6294    0.0000" in row and "2.595e" not in text and "-0.0000" not in text
    assert "-0.0127" in text


def test_headline_panels_keep_a_hanging_indent_when_they_wrap():
    """Every panel is a key/value grid: a wrapped value continues under its value, never under the key."""
    import io

    from rich.console import Console

    from yolobn.report.tables import compare_panel

    s = {
        "a": "runs/" + "a" * 70 + ".pt",
        "b": "b.pt",
        "matched_layers": 3,
        "matched_channels": 48,
        "identical": False,
        "changed_layers": 3,
        "change_mean": 0.25,
        "transitions": {"newly_dead": 0, "revived": 0, "dead_both": 0},
        "eps_transitions": {"newly_eps_dominated": 0, "no_longer_eps_dominated": 0},
        "most_changed": [],
        "only_a": [],
        "only_b": [],
        "mismatched": [],
    }
    buf = io.StringIO()
    Console(file=buf, width=60, color_system=None).print(compare_panel(s))
    rows = [ln for ln in buf.getvalue().splitlines() if ln.startswith("│")]
    start = rows[0].index("runs/")  # where the values begin
    wrapped = [r for r in rows[1:] if r[2:start].strip() == "" and r[start:].strip("│ ")]
    assert len(wrapped) >= 2  # A's long path and the change line both wrapped under their values
