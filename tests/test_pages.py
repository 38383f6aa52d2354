"""The pages beside report.html: swap.html, experiment.html, compare.html (and the audit),
frontier.html and training.html. Built from small planted frames with closed-form answers: every
plotted mark equals its row of data, in the report's shell; the CLI writes each page (or nothing on
bad input); and each page type once in headless Chromium (no error, no request, plots visible, fits
1,400 px, the heat-map tooltip)."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import yolobn
from tests.models import TinyNet, plant
from tests.test_compare import Wider
from tests.test_report_html import chromium, plot_marks
from yolobn.bn.comparison import audit, compare
from yolobn.cli import main
from yolobn.core.errors import YolobnError
from yolobn.integrations.tracking import EPOCH_COLUMNS
from yolobn.report import compare_page, experiment_page, frontier_page, prune_page, run_page, variants_page
from yolobn.report.page import asset
from yolobn.report.svg import VIRIDIS
from yolobn.sweeps.experiment import ExperimentResult
from yolobn.sweeps.frontier import Frontier
from yolobn.sweeps.variants import BASELINE, Settings, VariantsResult

M = "metrics/mAP50-95(B)"
S = "mAP50-95(B)"


# --------------------------------------------------------------------------------------------------
# planted data


def variants_table(images: bool = True) -> pd.DataFrame:
    rows = [  # variant, value, delta, max_abs, max_rel, agreement
        (BASELINE, 0.6, 0.0, 0.0, 0.0, 1.0),
        ("reference", 0.6, 0.0, 3e-6, 1.25e-7, 1.0),
        ("identity", 0.0, -0.6, 45.5, 0.094, 0.0),
        ("reference:eps=1e-5", 0.59, -0.01, 2.5, 0.024, math.nan),  # no box in either model: unknown
        ("fixedpoint:bits=8", 0.605, 0.005, 0.1, 0.0015, 0.96),
    ]
    t = pd.DataFrame(
        [
            {
                "variant": v,
                "impl": "" if v == BASELINE else v,
                "swapped": 0 if v == BASELINE else 81,
                S: m,
                f"{S} delta": d,
                "max_abs_diff": a,
                "max_rel_diff": r,
                "box_agreement": g,
                "ms_per_image": 12.5,
                "cached": False,
            }
            for v, m, d, a, r, g in rows
        ]
    )
    return t if images else t.drop(columns="box_agreement")


def variants_result() -> VariantsResult:
    s = Settings(data="shapes", images=[Path("a.jpg"), Path("b.jpg")], imgsz=160)
    return VariantsResult(variants_table(), (M,), s, {M: 0.6})


SENS = {  # layer -> delta; model order is the natural order of the names (no index column)
    "model.0.bn": -0.007,
    "model.2.cv1.bn": 0.0,
    "model.9.bn": -0.0008,
    "model.10.cv1.bn": -0.002,
    "model.10.m.0.bn": 0.0003,
    "model.23.cv2.0.0.bn": -0.0001,
}


def experiment_result(top: int = 3) -> ExperimentResult:
    s = pd.DataFrame(
        {
            "layer": list(SENS),
            "impl": "reference:eps=1e-5",
            M: [0.6 + d for d in SENS.values()],
            "delta": list(SENS.values()),
        }
    )
    s = s.sort_values(["delta", "layer"], kind="stable").reset_index(drop=True)
    s.insert(0, "rank", range(1, len(s) + 1))
    cfg = {"data": "shapes", "imgsz": 160, "sensitivity": {"impl": "reference:eps=1e-5", "top": top}}
    return ExperimentResult(cfg, {"path": "best.pt"}, M, variants_table(images=False), s)


def planted_pair():
    """TinyNet and a copy with closed-form changes (tests/test_compare.py): b1.bn channel 0 revived,
    6 newly dead, 3 with gamma 1 -> 2; b1.bn 1 and 2 and seq.1 3 dead in both."""
    a = yolobn.load(plant(TinyNet()))
    m = plant(TinyNet())
    with torch.no_grad():
        m.b1.bn.weight[3] = 2.0
        m.b1.bn.weight[0] = 1.0
        m.b1.bn.weight[6] = 0.0
        m.b1.bn.running_mean[7] = 0.0
    return compare(a, yolobn.load(m))


def frontier_result() -> Frontier:
    rows = []
    for c, slope, spread in (("observed", 0.0004, 0.0), ("gamma", 0.002, 0.0), ("random", 0.004, 0.01)):
        for s in (0.0, 1.0, 5.0, 10.0, 20.0):
            d = -slope * s
            rows.append(
                {
                    "criterion": c,
                    "scope": "all",
                    "share": s,
                    M: 0.6 + d,
                    "delta": d,
                    "delta_min": d - spread * (s > 0),
                    "delta_max": d + spread * (s > 0),
                    "channels_ablated": int(7688 * s / 100),
                    "seeds": 3 if c == "random" else 1,
                }
            )
    for r, slope in (("backbone", 0.002), ("head", 0.0002)):
        for s in (0.0, 5.0, 20.0):
            rows.append(
                {
                    "criterion": "observed",
                    "scope": r,
                    "share": s,
                    M: 0.6 - slope * s,
                    "delta": -slope * s,
                    "delta_min": -slope * s,
                    "delta_max": -slope * s,
                    "channels_ablated": int(40 * s),
                    "seeds": 1,
                }
            )
    curve = pd.DataFrame(rows)
    layers = pd.DataFrame(
        {
            "name": ["model.9.cv2.bn", "model.2.cv1.bn", "model.0.bn"],
            "role": "backbone",
            "channels": [64, 32, 16],
            "ablated": [32, 4, 0],
        }
    )
    layers["share"] = layers["ablated"] / layers["channels"]
    return Frontier(
        curve,
        curve,
        M,
        0.6,
        0.005,
        layers,
        {"data": "shapes", "shares": [0, 1, 5, 10, 20], "images": 96, "sources": ["val/"]},
        {"path": "best.pt", "source": "best.pt"},
    )


def epochs_frame() -> pd.DataFrame:
    """3 layers x 4 epochs: model.1.bn loses 5 channels at epoch 3 (dead 0, 0, 5, 5), model.2.bn 1 at
    epoch 4; gamma medians planted per layer and epoch."""
    rows = []
    for e in range(1, 5):
        for i, (name, dead) in enumerate(
            (("model.0.bn", [0] * 4), ("model.1.bn", [0, 0, 5, 5]), ("model.2.bn", [0, 0, 0, 1]))
        ):
            r = dict.fromkeys(EPOCH_COLUMNS, 0)
            g = 1.0 - 0.1 * i * e
            r.update(
                epoch=e,
                index=i,
                name=name,
                layer=i,
                block="Conv",
                role="backbone",
                channels=16,
                eps=1e-3,
                gamma_p05=g - 0.2,
                gamma_p50=g,
                gamma_p95=g + 0.2,
                dead=dead[e - 1],
                constant=dead[e - 1],
                eps_dominated=e == 4,
                findings="",
            )
            rows.append(r)
    return pd.DataFrame(rows)[EPOCH_COLUMNS]


# --------------------------------------------------------------------------------------------------
# marks read from the static HTML


class Marks(HTMLParser):
    """Every <g class="mark"> of a plot: (name, values, class)."""

    def __init__(self, plot_id: str) -> None:
        super().__init__()
        self.plot_id, self.inside, self.marks = plot_id, False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.inside = a.get("id") == self.plot_id
        elif self.inside and tag == "g" and "mark" in (a.get("class") or "").split():
            vals = [float(v) for v in (a.get("data-value") or "").split()]
            self.marks.append((a.get("data-name"), vals, a.get("class")))

    def handle_endtag(self, tag):
        if tag == "svg":
            self.inside = False


def marks(html: str, plot_id: str) -> list[tuple[str | None, list[float], str]]:
    p = Marks(plot_id)
    p.feed(html)
    assert f'id="{plot_id}"' in html, plot_id
    return p.marks


def assert_shell(html: str) -> None:
    """The report's shell: its CSS and JS inlined, the security policy, no reference to the network."""
    assert asset("report.css") in html and asset("report.js") in html
    assert "default-src 'none'" in html and not re.search(r"https?://", html)
    assert len(html.encode()) < 3_000_000


# --------------------------------------------------------------------------------------------------
# swap and experiment


def test_swap_page_bars_are_the_table():
    t = variants_table()
    html = variants_page.render_html(variants_result(), {"path": "best.pt"}, note="validated")
    assert_shell(html)
    v = t[t["variant"] != BASELINE]
    got = marks(html, "plot-metric")
    assert got[-1][:2] == ("ref-line", [0.0])  # the baseline, at a change of 0
    assert [m[0] for m in got[:-1]] == list(v["variant"])
    assert [m[1] for m in got[:-1]] == [[a, d] for a, d in zip(v[S], v[f"{S} delta"], strict=True)]
    assert [m[1] for m in marks(html, "plot-difference")] == [
        [r, a] for r, a in zip(v["max_rel_diff"], v["max_abs_diff"], strict=True)
    ]
    agree = marks(html, "plot-agreement")
    assert [m[1] for m in agree[:-1]] == [[1.0], [0.0], [], [0.96]]  # unknown agreement: no value, no bar
    assert "unknown (no boxes in either model)" in html and "baseline 0.6000" in html
    # the table: metrics with 4 decimals, changes signed (true minus), a 0 change as 0.0000
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html)
    assert "−0.6000" in cells and "+0.0050" in cells and "0.0000" in cells and "96.0%" in cells


def test_swap_page_without_labels_has_no_accuracy_chart():
    t = variants_table().drop(columns=[S, f"{S} delta"])
    res = VariantsResult(t, (), Settings(data=None, images=[Path("a.jpg")]))
    html = variants_page.render_html(res, {"path": "best.pt"})
    assert 'id="plot-metric"' not in html and 'id="plot-agreement"' in html and "1 images" in html


def test_experiment_sensitivity_shows_the_top_layers_and_every_layer_in_model_order():
    html = experiment_page.render_html(experiment_result(top=3))
    assert_shell(html)
    ranked = sorted(SENS.items(), key=lambda kv: (kv[1], kv[0]))
    assert [(m[0], m[1]) for m in marks(html, "plot-sensitivity")] == [(k, [d]) for k, d in ranked[:3]]
    depth = marks(html, "plot-sensitivity-depth")
    assert [m[0] for m in depth] == list(SENS)  # model.2 before model.9 before model.10
    assert [m[1] for m in depth] == [[d] for d in SENS.values()]
    assert "The 3 layers most sensitive" in html
    assert html.count("<tr><td") >= len(SENS) + 4  # every variant and every sweep row in the tables


def test_sensitivity_uses_the_index_column_when_the_sweep_has_one():
    res = experiment_result()
    res.sensitivity["index"] = [5, 1, 4, 0, 3, 2]
    order = experiment_page.model_order(res.sensitivity)
    assert list(order["index"]) == [0, 1, 2, 3, 4, 5]


# --------------------------------------------------------------------------------------------------
# compare


def test_compare_page_marks_are_the_comparison():
    cmp = planted_pair()
    html = compare_page.render_html(cmp)
    assert_shell(html)
    ly = cmp.layers
    got = marks(html, "plot-change")
    assert [m[0] for m in got] == list(ly["name"])
    assert np.allclose([m[1] for m in got], ly[["kl_in", "kl_out"]].to_numpy(), rtol=1e-6, atol=0)
    tr = {m[0]: m[1] for m in marks(html, "plot-transitions")}
    assert tr["b1.bn"] == [1, 1, 2] and tr["b2.bn"] == [0, 0, 0] and tr["seq.1"] == [0, 0, 1]
    ch = cmp.channels
    pts = {m[0]: m[1] for m in marks(html, "plot-gamma-ab") if m[0] not in ("diagonal",)}
    assert len(pts) == len(ch) == 16  # few channels: each is a mark
    assert pts["b1.bn:3"] == [1.0, 2.0] and pts["b1.bn:6"][1] == 0.0
    for n, c, a, b in zip(ch["name"], ch["channel"], ch["gamma_a"], ch["gamma_b"], strict=True):
        assert pts[f"{n}:{c}"] == pytest.approx([a, b], rel=1e-6)
    assert "<b>1 / 1</b>" in html  # newly dead / revived card
    assert "None: every BN layer of A has a layer" in html


def test_compare_page_lists_unmatched_layers():
    b = yolobn.load(Wider())
    b.model.b2.bn = torch.nn.BatchNorm2d(5)
    html = compare_page.render_html(compare(yolobn.load(plant(TinyNet())), yolobn.load(b.model)))
    assert re.search(r'id="unmatched-a"><li>seq\.1 \(4 ch\)</li></ul>', html)
    assert "extra.1 (6 ch)" in html and "b2.bn (A 4 ch, B 5 ch)" in html
    assert "<b>3</b>" in html  # unmatched layers card


def test_compare_scatter_is_binned_for_many_channels(demo_model_loaded):
    m = yolobn.load(demo_model_loaded.model)
    with torch.no_grad():
        m.model.model[0].bn.weight[:2] = 0.0  # 2 newly dead channels
    cmp = compare(demo_model_loaded, m)
    html = compare_page.render_html(cmp)
    got = marks(html, "plot-gamma-ab")
    binned = [v for n, v, _ in got if n == "binned"]
    dots = [n for n, _, _ in got if n not in ("binned", "diagonal")]
    assert binned == [[len(cmp.channels) - 2]] and dots == ["model.0.bn:0", "model.0.bn:1"]
    assert len(html.encode()) < 1_000_000


def test_audit_page_is_the_audit_table():
    ins = [yolobn.inspect(yolobn.load(plant(TinyNet()))), yolobn.inspect(yolobn.load(TinyNet().eval()))]
    t = audit(ins).table
    html = compare_page.render_audit_html(t, ins, {"const_std": 1e-3})
    assert_shell(html)
    got = marks(html, "plot-audit-dead")
    assert [m[1] for m in got] == [[s] for s in t["dead_share"]]
    assert html.count("<tr><td") == len(t)


# --------------------------------------------------------------------------------------------------
# frontier


def test_frontier_page_marks_are_the_curve():
    fr = frontier_result()
    html = frontier_page.render_html(fr)
    assert_shell(html)
    got = marks(html, "plot-frontier")
    band = [v for n, v, _ in got if n == "band"]
    assert band == [[0.6 - 0.005, 0.6]]  # the tolerance band, below the baseline
    c = fr.curve[fr.curve["scope"] == "all"]
    for crit in ("observed", "gamma"):
        want = c[c["criterion"] == crit]
        assert [v for n, v, _ in got if n == crit] == [
            pytest.approx([s, y]) for s, y in zip(want["share"], want[M], strict=True)
        ]
    rnd = c[c["criterion"] == "random"]
    lo, hi = 0.6 + rnd["delta_min"], 0.6 + rnd["delta_max"]
    assert [v for n, v, _ in got if n == "random"] == [
        pytest.approx(list(x)) for x in zip(rnd["share"], rnd[M], lo, hi, strict=True)
    ]
    rem = {n: v for n, v, _ in marks(html, "plot-removable")}
    s = fr.summary()
    assert rem == {
        "observed (whole model)": [10.0],
        "gamma (whole model)": [1.0],
        "random (whole model)": [1.0],
        "observed, backbone only": [0.0],
        "observed, head only": [20.0],
    }
    assert s["removable"] == {"observed": 10.0, "gamma": 1.0, "random": 1.0}
    assert [(n, v) for n, v, _ in marks(html, "plot-layers")] == [
        ("model.9.cv2.bn", [32, 64, 0.5]),
        ("model.2.cv1.bn", [4, 32, 0.125]),
    ]
    assert [m[0] for m in marks(html, "plot-frontier-roles")].count("backbone") == 3
    # the answer leads the page: observed 10% (>= 5%: act), with the prune command for these paths
    answers = html.split('<section class="answers">', 1)[1].split("</section>", 1)[0]
    assert html.index('<section class="answers">') < html.index("<table")
    assert 'data-key="prune" data-status="act"' in answers
    assert "observed ranking: 10% of the channels can go within 0.005" in answers
    assert "yolobn prune best.pt --data shapes --images val/ --tolerance 0.005 -o best-pruned.pt" in answers


def prune_result():
    from yolobn.edit.prune import Selection
    from yolobn.sweeps.pruning import PruneResult

    layers = pd.DataFrame(
        {
            "name": ["model.9.cv2.bn", "model.2.cv1.bn", "model.0.bn"],
            "role": "backbone",
            "block": ["SPPF", "C3k2", "Conv"],
            "channels": [64, 32, 16],
            "prunable": [64, 32, 16],
            "removed": [32, 4, 0],
            "kept": [32, 28, 16],
            "share_removed": [0.5, 0.125, 0.0],
            "fixed_reason": ["", "", ""],
        }
    )
    search = pd.DataFrame(
        {
            "share": [1.0, 2.0, 5.0, 3.5],
            "channels": [1, 2, 5, 3],
            "share_actual": [0.9, 1.8, 4.5, 2.7],
            M: [0.599, 0.597, 0.59, 0.596],
            "delta": [-0.001, -0.003, -0.01, -0.004],
            "within": [True, True, False, True],
        }
    )
    residual = pd.DataFrame(
        {
            "layer": ["model.1.conv"],
            "kind": ["conv"],
            "kernel": ["3x3/2"],
            "removed_inputs": [3],
            "interior_max": [1e-6],
            "border_max": [0.2],
            "border_mean": [0.01],
            "border_pixels": [0.1],
        }
    )
    return PruneResult(
        None,
        Selection({"model.9.cv2.bn": list(range(32)), "model.2.cv1.bn": [0, 1, 2, 3]}, 36, 112, 100),
        layers,
        "observed",
        {"metric": M, "baseline": 0.6, "pruned": 0.596, "ablated": 0.5962},
        {
            "params": (1000.0, 800.0),
            "gflops": (1.0, 0.9),
            "latency_ms": (10.0, 9.0),
            "model_bytes": (2e6, 1.6e6),
        },
        search,
        residual,
        {
            "layers": 1.0,
            "interior_max": 1e-6,
            "border_max": 0.2,
            "border_mean": 0.01,
            "output_max": 0.001,
            "output_mean": 1e-4,
        },
        {"split by C2PSA (model.10) into fixed halves, one of which feeds its attention": 12},
        settings={"data": "shapes", "imgsz": 160, "images": 16, "share_requested": None, "tolerance": 0.005},
        meta={"path": "best.pt"},
    )


def test_prune_page_marks_are_the_result():
    r = prune_result()
    html = prune_page.render_html(r, "pruned.pt")
    assert_shell(html)
    got = marks(html, "plot-search")
    assert [v for n, v, _ in got if n == "band"] == [[0.6 - 0.005, 0.6]]
    want = [[0.0, 0.6]] + [[a, m] for a, m in sorted(zip(r.search["share_actual"], r.search[M], strict=True))]
    assert sorted(v for n, v, _ in got if n == "pruned") == [pytest.approx(w) for w in want]
    assert [(n, v) for n, v, _ in marks(html, "plot-layers")] == [
        ("model.9.cv2.bn", [32, 64]),
        ("model.2.cv1.bn", [4, 32]),
    ]
    for text in ("0.800×", "0.900×", "pruned.pt", "12 channels: split by C2PSA", "model.1.conv", "−0.0040"):
        assert text in html, text
    # the answer leads: 0.6 -> 0.596 is within 0.005
    assert html.index('<section class="answers">') < html.index("<table")
    assert 'data-key="pruned" data-status="ok"' in html


def test_prune_verdict_says_whether_accuracy_held_and_names_finetune():
    import dataclasses

    r = prune_result()
    (v,) = r.verdicts("runs/best-pruned.pt", "coco8.yaml")
    assert (v.key, v.status, v.next) == ("pruned", "ok", None)
    assert (
        v.evidence
        == "36 channels removed (32.1%), parameters ×0.800; mAP50-95 (box) 0.6000 → 0.5960 (-0.0040, allowed 0.005)"
    )
    worse = dataclasses.replace(r, metrics={**r.metrics, "pruned": 0.59})
    (v,) = worse.verdicts("runs/best pruned.pt", "coco8.yaml")
    assert v.status == "act" and v.evidence.endswith(
        "(-0.0100, allowed 0.005); fine-tune it to win the accuracy back"
    )
    assert v.next == "yolobn finetune 'runs/best pruned.pt' data=coco8.yaml epochs=30"
    (v,) = dataclasses.replace(r, metrics={**r.metrics, "pruned": float("nan")}).verdicts()
    assert v.status == "look" and "accuracy not measured" in v.evidence
    from yolobn.edit.prune import Selection

    (v,) = dataclasses.replace(r, selection=Selection({}, 0, 112, 100)).verdicts()
    assert v.status == "look" and v.evidence.startswith("nothing could be removed")


# --------------------------------------------------------------------------------------------------
# training


def _png(html: str, plot_id: str) -> np.ndarray:
    from PIL import Image

    svg = re.search(rf'<svg [^>]*id="{plot_id}".*?</svg>', html, re.S).group(0)
    data = re.search(r'<image [^>]*href="data:image/png;base64,([^"]+)"[^>]*class="grid-image"', svg).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def test_training_page_marks_planted_deaths_and_gamma():
    df = epochs_frame()
    html = run_page.render_html(df, "runs/detect/train")
    assert_shell(html)
    first = [(n, v) for n, v, c in marks(html, "plot-gamma-epochs") if "first-dead" in c]
    assert first == [("model.1.bn", [3.0]), ("model.2.bn", [4.0])]  # dead 0, 0, 5, 5 and 0, 0, 0, 1
    rows = [(n, v) for n, v, c in marks(html, "plot-gamma-epochs") if c == "mark"]
    assert [n for n, _ in rows] == ["model.0.bn", "model.1.bn", "model.2.bn"]
    for i, (_, v) in enumerate(rows):
        assert v == pytest.approx([1.0 - 0.1 * i * e for e in range(1, 5)])
    dead = [v for n, v, _ in marks(html, "plot-dead-epochs") if n == "dead"]
    assert dead == [[1, 0], [2, 0], [3, 5], [4, 6]]
    eps = [v for n, v, _ in marks(html, "plot-dead-epochs") if n == "eps-dominated"]
    assert eps == [[1, 0], [2, 0], [3, 0], [4, 3]]
    # the heat map's colours: viridis of the median gamma over the 1st-99th percentile of all cells
    g = df.pivot(index="name", columns="epoch", values="gamma_p50").to_numpy()
    lo, hi = np.quantile(g, 0.01), np.quantile(g, 0.99)
    img = _png(html, "plot-gamma-epochs")
    rh, cw = img.shape[0] // 3, img.shape[1] // 4
    for r in range(3):
        for c in range(4):
            t = (np.clip(g[r, c], lo, hi) - lo) / (hi - lo)
            assert tuple(img[r * rh, c * cw]) == tuple(VIRIDIS[int(round(t * 255))])
    assert "<b>epoch 3</b>" in html and "<b>6 (12.5%)</b>" in html  # first death; dead at the last epoch


@pytest.mark.parametrize(
    "change,msg",
    [
        (lambda d: d.assign(epoch=d["epoch"].astype(str).replace("2", "two")), "column epoch holds values"),
        (lambda d: d.assign(epoch=d["epoch"].replace(2, 2.5)), "whole epoch number"),
        (lambda d: d.assign(dead=d["dead"].astype(str).replace("5", "x")), "column dead holds values"),
        (lambda d: pd.concat([d, d.iloc[:1]]), "appears twice in epoch 1"),
        (lambda d: d.iloc[:0], "no rows"),
    ],
)
def test_training_page_refuses_a_malformed_epochs_csv(change, msg):
    with pytest.raises(YolobnError) as ei:
        run_page.render_html(change(epochs_frame()), "run")
    assert msg in str(ei.value) and "\n" not in str(ei.value)


def _run_dir(root: Path, name: str = "train") -> Path:
    d = root / name / "yolobn"
    d.mkdir(parents=True)
    epochs_frame().to_csv(d / "epochs.csv", index=False)
    return root / name


def test_report_run_cli(tmp_path, monkeypatch, capsys):
    run = _run_dir(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--run", str(run), "-q"]) == 0
    assert main(["report", "--run", str(run), "-q"]) == 0  # a second report: a new folder, like runs/
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["train", "train2"]
    assert [p.name for p in (tmp_path / "reports" / "train").iterdir()] == ["training.html"]
    capsys.readouterr()
    for argv, msg in [
        (["report", "--run", str(tmp_path / "nope"), "-o", "x"], "no yolobn/epochs.csv"),
        (["report", "best.pt", "--run", str(run), "-o", "x"], "not both"),
        (["report", "--run", str(run), "--images", "-o", "x"], "does not apply"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------------
# the commands write the pages


def test_swap_cli_writes_swap_html(tmp_path):
    img = Path(yolobn.shapes_dataset()).parent / "images" / "val"
    assert (
        main(
            [
                "swap",
                "--impl",
                "reference",
                "--images",
                str(img),
                "--max-images",
                "2",
                "-o",
                str(tmp_path / "o"),
                "-q",
            ]
        )
        == 0
    )
    html = (tmp_path / "o" / "swap.html").read_text()
    t = pd.read_csv(tmp_path / "o" / "swap.csv")
    got = marks(html, "plot-difference")
    assert [m[0] for m in got] == ["reference"] and got[0][1][0] == pytest.approx(
        t["max_rel_diff"][1], rel=1e-5
    )
    assert 'id="plot-agreement"' in html and 'id="plot-metric"' not in html  # label-free


@pytest.mark.slow
def test_compare_cli_html_pair_audit_and_errors(tmp_path, capsys, demo_path):
    b = tmp_path / "b.pt"
    m = yolobn.load()
    with torch.no_grad():
        m.model.model[0].bn.weight.mul_(3)
    yolobn.save_checkpoint(m, b)
    out = tmp_path / "c.html"
    assert (
        main(
            ["compare", str(demo_path), str(b), "--html", str(out), "--json", str(tmp_path / "c.json"), "-q"]
        )
        == 0
    )
    changed = [n for n, v, _ in marks(out.read_text(), "plot-change") if v[1] > 0]
    assert changed == ["model.0.bn"]
    assert main(["compare", str(demo_path), str(b), str(b), "--html", str(tmp_path / "a.html"), "-q"]) == 0
    assert "audit of 3 checkpoints" in (tmp_path / "a.html").read_text()
    capsys.readouterr()
    for extra, msg in [
        (["--html", "-"], "give a file name"),
        (["--html", str(tmp_path / "j"), "--json", str(tmp_path / "j")], "same file"),
    ]:
        assert main(["compare", str(demo_path), str(b), *extra]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "j").exists()


# --------------------------------------------------------------------------------------------------
# each page type once in headless Chromium


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


PAGES = {
    "swap": (
        lambda: variants_page.render_html(variants_result(), {"path": "best.pt"}),
        ["plot-metric", "plot-difference", "plot-agreement"],
    ),
    "experiment": (
        lambda: experiment_page.render_html(experiment_result()),
        ["plot-metric", "plot-difference", "plot-sensitivity", "plot-sensitivity-depth"],
    ),
    "compare": (
        lambda: compare_page.render_html(planted_pair()),
        ["plot-change", "plot-transitions", "plot-gamma-ab", "plot-beta-ab"],
    ),
    "frontier": (
        lambda: frontier_page.render_html(frontier_result()),
        ["plot-frontier", "plot-frontier-roles", "plot-removable", "plot-layers"],
    ),
    "prune": (lambda: prune_page.render_html(prune_result(), "pruned.pt"), ["plot-search", "plot-layers"]),
    "training": (
        lambda: run_page.render_html(epochs_frame(), "runs/detect/train"),
        ["plot-dead-epochs", "plot-gamma-epochs"],
    ),
}


@pytest.mark.parametrize("kind", list(PAGES))
def test_page_in_chromium(browser, tmp_path, kind):
    render, plots = PAGES[kind]
    path = tmp_path / f"{kind}.html"
    html = render()
    path.write_text(html)
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    events = {"error": [], "requests": []}
    pg.on("console", lambda m: events["error"].append(m.text) if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: events["error"].append(str(e)))
    pg.on("request", lambda r: events["requests"].append(r.url))
    pg.goto(path.resolve().as_uri(), wait_until="load")
    assert events["error"] == [] and events["requests"] == [path.resolve().as_uri()]
    assert pg.evaluate("document.documentElement.scrollWidth") <= 1400  # readable at 1,400 px
    for pid in plots:
        el = pg.locator(f"#{pid}")
        el.scroll_into_view_if_needed()
        box = el.bounding_box()
        assert el.is_visible() and box["width"] > 200 and box["height"] > 80, pid
        # the browser's marks are the ones written (names and values)
        assert [(m["name"], m["value"]) for m in plot_marks(pg, pid)] == [
            (n, v) for n, v, _ in marks(html, pid)
        ]
    table = pg.locator("table.sortable").first
    table.locator("th").nth(0).click()
    assert "asc" in (table.locator("th").nth(0).get_attribute("class") or "")
    if kind == "training":
        _hover_cell(pg)
    pg.close()


def _hover_cell(pg) -> None:
    """Hover the heat-map cell of model.1.bn at epoch 3: the tooltip gives its percentiles and dead count."""
    box = pg.locator("#plot-gamma-epochs image.grid-image").bounding_box()
    pg.mouse.move(box["x"] + box["width"] * (2.5 / 4), box["y"] + box["height"] * (1.5 / 3))
    tip = pg.locator("#gridtip")
    assert tip.is_visible()
    assert tip.text_content() == "model.1.bn · epoch 3: γ p05 0.5 · γ median 0.7 · γ p95 0.9 · dead 5"


# every rendered chart text, in CSS pixels on the screen: its font size times the SVG's scale
TEXT_PX = """() => Array.from(document.querySelectorAll('svg text')).filter(t => t.getClientRects().length)
  .map(t => { const m = t.getScreenCTM(); return parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b); })"""


@pytest.mark.parametrize("kind", [*PAGES, "report"])
def test_chart_text_is_readable_on_a_phone(browser, tmp_path, kind):
    """A 390-px screen (an iPhone's width): no chart text under 8 px; a wide chart scrolls sideways
    inside its figure instead of shrinking, and the page itself does not."""
    from yolobn.report.html import render_html

    html = render_html(yolobn.inspect(yolobn.load())) if kind == "report" else PAGES[kind][0]()
    path = tmp_path / f"{kind}.html"
    path.write_text(html)
    pg = browser.new_page(viewport={"width": 390, "height": 844})
    pg.goto(path.resolve().as_uri(), wait_until="load")
    sizes = pg.evaluate(TEXT_PX)
    assert len(sizes) > 20 and min(sizes) >= 8, (kind, sorted(sizes)[:5])
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    pg.close()


def test_swap_and_experiment_answers_rank_the_variants_against_the_tolerance():
    from yolobn.sweeps.variants import accuracy_verdicts

    (v,) = variants_result().verdicts("best.pt")
    # identity -0.6 and eps 1e-5 -0.01 are beyond 0.005; fixedpoint +0.005 and reference 0 are not
    assert (v.key, v.status) == ("variants", "act")
    assert v.evidence.startswith(
        "2 beyond the tolerance: mAP50-95 (box) change: identity -0.6000, reference:eps=1e-5 -0.0100, "
        "reference +0.0000 and 1 more (allowed 0.005)"
    )
    assert v.next == "yolobn inspect best.pt"  # an eps variant: the port answer names the layers
    t = variants_table()
    kept = t[t["variant"].isin([BASELINE, "reference", "fixedpoint:bits=8"])]
    (v,) = accuracy_verdicts(kept, M, 0)
    assert (v.status, v.next) == ("ok", None)
    assert accuracy_verdicts(kept, M, 1)[0].status == "look"  # a failed variant: not ok
    # label-free: accuracy not measured, the lowest box agreement named
    (v,) = accuracy_verdicts(t, None, 0)
    assert v.status == "look" and "the lowest box agreement with the original 0.000 (identity)" in v.evidence
    # the experiment adds which layers carry the loss: model.0.bn alone -0.007
    variants, sens = experiment_result().verdicts()
    assert variants.status == "act" and (sens.key, sens.status) == ("sensitivity", "act")
    assert sens.evidence == (
        "1 layer alone beyond the tolerance: one layer swapped at a time, mAP50-95 (box): model.0.bn -0.0070, "
        "model.10.cv1.bn -0.0020, model.9.bn -0.0008 (allowed 0.005)"
    )
    assert sens.layers == ("model.0.bn",)
    html = experiment_page.render_html(experiment_result())
    assert html.index('<section class="answers">') < html.index("<table")
    assert 'data-key="sensitivity" data-status="act"' in html
    html = variants_page.render_html(variants_result(), {"path": "best.pt"})
    assert 'data-key="variants" data-status="act"' in html
