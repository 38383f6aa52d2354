"""The report's plots and page sections on models with planted answers: eps per model and per layer,
classifiers (no neck, one very wide head layer), dead channels drawn where they are, empty plots."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from torch import nn

import yolobn
from tests.test_report_html import open_page
from yolobn.report import plots
from yolobn.report.html import observed_cards, render_html


class _Marks(HTMLParser):
    """The marks of one plot: data-name, data-value, and the attributes of what each draws."""

    def __init__(self, plot_id: str) -> None:
        super().__init__()
        self.plot_id, self.depth, self.marks = plot_id, 0, []
        self.texts: list[tuple[dict, str]] = []
        self._in, self._text = False, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and a.get("id") == self.plot_id:
            self._in = True
        if not self._in:
            return
        if tag == "g" and a.get("class") == "mark":
            self.marks.append(
                {
                    "name": a.get("data-name"),
                    "value": [float(v) for v in (a.get("data-value") or "").split()],
                    "shapes": [],
                }
            )
        elif self.marks and tag in ("rect", "line", "circle", "image"):
            self.marks[-1]["shapes"].append((tag, a))
        if tag == "text":
            self._text = (a, "")

    def handle_data(self, data):
        if self._text is not None:
            self._text = (self._text[0], self._text[1] + data)

    def handle_endtag(self, tag):
        if tag == "text" and self._text is not None:
            self.texts.append(self._text)
            self._text = None
        if tag == "svg":
            self._in = False


def svg_marks(html: str, plot_id: str) -> _Marks:
    p = _Marks(plot_id)
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def cls_html():
    return render_html(yolobn.inspect("yolo11n-cls.yaml"))


def _log_ticks(p: _Marks) -> tuple[float, float]:
    """(a, b) with pixel y = a * log10(value) + b, from the plot's 1eK tick labels."""
    ticks = [
        (int(t[2:]), float(a["y"]) - 3.5)
        for a, t in p.texts
        if a.get("class") == "tick" and re.fullmatch(r"1e-?\d+", t)
    ]
    assert len(ticks) >= 2
    a, b = np.polyfit([k for k, _ in ticks], [y for _, y in ticks], 1)
    return a, b


def test_classifier_eps_is_shown_and_drawn_where_it_is(cls_html):
    # YOLO classifiers use eps 1e-5, not Ultralytics' detection 1e-3
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", cls_html, re.S)
    assert captions and not any("1e-3" in c or "Ultralytics" in c for c in captions)
    assert "Dashed blue: eps (1e-5 in this model)" in cls_html and "eps of this model: 1e-5" in cls_html
    assert "<th>BN eps</th><td>1e-5</td>" in cls_html
    p = svg_marks(cls_html, "plot-var")
    eps = [m for m in p.marks if m["name"] == "eps"]
    assert len(eps) == 1 and eps[0]["value"] == [1e-5]
    line = next(a for tag, a in eps[0]["shapes"] if tag == "line")
    a, b = _log_ticks(p)
    assert float(line["y1"]) == pytest.approx(a * -5 + b, abs=0.2)  # at 1e-5 on the plot's own axis
    hist = svg_marks(cls_html, "hist-var")
    assert any(t == "eps 1e-5" for _, t in hist.texts)


def test_classifier_captions_and_bands_name_only_its_roles(cls_html):
    assert "neck" not in cls_html  # a classifier has a backbone and a head only
    assert "Background: backbone, head." in cls_html


def test_classifier_head_row_does_not_squeeze_the_heatmap(cls_html):
    layers, _ = yolobn.bn_stats(yolobn.load("yolo11n-cls.yaml"))
    p = svg_marks(cls_html, "plot-heatmap")
    rows = {m["name"]: m for m in p.marks}
    assert list(rows) == list(layers["name"])
    geo = {n: next(a for t, a in m["shapes"] if t == "rect") for n, m in rows.items()}
    widths = {n: float(a["width"]) for n, a in geo.items()}
    heights = {n: float(a["height"]) for n, a in geo.items()}
    head = layers.loc[layers["channels"].idxmax(), "name"]
    assert layers["channels"].max() == 1280
    full = max(widths.values())
    # the ordinary rows set the scale: the widest of them fills the plot, the head wraps onto lines
    assert max(w for n, w in widths.items() if n != head) == pytest.approx(full)
    assert heights[head] == pytest.approx(5 * min(heights.values()))  # 1280 = 5 lines of 256
    assert min(heights.values()) >= 4  # rows stay readable


def test_mixed_eps_is_drawn_per_layer(tiny):
    html = render_html(yolobn.inspect(tiny))  # b1.bn and b2.bn: eps 1e-3; seq.1: 1e-5
    assert "<th>BN eps</th><td>1e-5 (1 layer), 1e-3 (2 layers)</td>" in html
    eps = {m["name"]: m["value"] for m in svg_marks(html, "plot-var").marks if m["name"].startswith("eps")}
    assert eps == {"eps b1.bn": [1e-3], "eps b2.bn": [1e-3], "eps seq.1": [1e-5]}
    assert {t for _, t in svg_marks(html, "hist-var").texts if t.startswith("eps")} == {
        "eps 1e-3",
        "eps 1e-5",
    }


def _png(href: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB"))


def test_dead_channels_are_drawn_where_they_are(tiny):
    ins = yolobn.inspect(tiny)
    html = render_html(ins)
    dead = {m["name"]: m["value"] for m in svg_marks(html, "plot-dead").marks}
    assert dead["b1.bn"] == [2, 1, 2, 8]  # planted: 2 constant, 1 off, 2 eps-dominated of 8
    assert dead["seq.1"] == [0, 1, 0, 4]
    assert "no dead channels" not in html
    scatter = {m["name"]: m for m in svg_marks(html, "plot-scatter").marks if m["name"]}
    assert scatter["constant"]["value"] == [2] and scatter["off"]["value"] == [
        2
    ]  # b1 channel 2, seq.1 channel 3
    # heatmap: red exactly at the dead channels of each row, grey beyond the layer's channels
    href = re.search(r'<svg id="plot-heatmap".*?href="(data:image/png;base64,[^"]+)"', html, re.S).group(1)
    img = _png(href)
    row_h = img.shape[0] // 3
    for r, name in enumerate(ins.layers["name"]):
        line = img[r * row_h]
        c = ins.channels[ins.channels["name"] == name]
        red = (line == (220, 20, 30)).all(1)
        assert red[: len(c)].tolist() == c["dead"].tolist(), name
        assert (line[len(c) :] == 235).all(), name


def _layers_with(**cols) -> pd.DataFrame:
    n = 3
    base = {
        "name": [f"l{i}" for i in range(n)],
        "layer": range(n),
        "role": ["backbone"] * n,
        "channels": [8] * n,
    }
    return pd.DataFrame({**base, **{k: [v] * n for k, v in cols.items()}})


def test_empty_plots_say_why():
    ly = _layers_with(
        dead_both=0,
        dead_predicted_only=0,
        dead_observed_only=0,
        constant=0,
        off=0,
        eps_dominated=0,
        drift=math.nan,
        drift_max=math.nan,
        mean_shift_abs=math.nan,
        log_var_ratio_abs=math.nan,
    )
    assert "no dead channels, neither on the images nor by the data-free criteria" in plots.confusion_plot(ly)
    assert "no dead channels and no eps-dominated channels" in plots.dead_share_plot(ly)
    assert "no BN layer was reached by the images" in plots.drift_plot(ly)
    empty = plots.histogram_plot(np.array([math.nan]), np.zeros(1, bool), title="t", xlabel="x", plot_id="h")
    assert "no finite values" in empty
    for svg in (plots.confusion_plot(ly), plots.dead_share_plot(ly), plots.drift_plot(ly)):
        assert 'class="mark"' not in svg  # nothing drawn
    some = _layers_with(dead_both=1, dead_predicted_only=0, dead_observed_only=2)
    svg = plots.confusion_plot(some)
    assert "no dead channels" not in svg and svg.count('class="mark"') == 3


def test_prediction_card_shows_precision_and_recall_when_the_summary_has_them():
    os_ = {
        "images": 96,
        "observed_dead": 185,
        "observed_dead_share": 0.024,
        "drift_mean": 0.04,
        "confusion": {"both": 0, "predicted_only": 0, "observed_only": 185, "neither": 7503},
    }
    labels = [k for k, _, _ in observed_cards(os_)]
    assert not any("prediction" in k or "agreement" in k for k in labels)  # not in the summary: no card
    cards = dict(
        (k, v) for k, v, _ in observed_cards({**os_, "prediction": {"precision": math.nan, "recall": 0.0}})
    )
    assert cards["data-free prediction: precision / recall"] == "n/a / 0.0%"
    cards = dict(
        (k, v) for k, v, _ in observed_cards({**os_, "prediction": {"precision": 0.75, "recall": 0.5}})
    )
    assert cards["data-free prediction: precision / recall"] == "75.0% / 50.0%"


def test_viridis_is_matplotlibs_table():
    cm = pytest.importorskip("matplotlib").colormaps["viridis"]
    want = np.round(np.array(cm.colors) * 255).astype(np.uint8)
    from yolobn.report.svg import VIRIDIS, viridis

    assert VIRIDIS.shape == (256, 3) and (want == VIRIDIS).all()
    assert (viridis(np.array([0.0, 1.0])) == want[[0, -1]]).all()


def test_a_layer_name_cannot_inject_markup(tmp_path):
    # module names come from the checkpoint: untrusted text, shown escaped in the page and the details
    evil = "<img src=x onerror=alert(1)>"
    m = nn.Sequential(nn.Conv2d(3, 4, 1))
    m.add_module("evil", nn.ModuleDict({evil: nn.BatchNorm2d(4)}))
    (tmp_path / "report.html").write_text(render_html(yolobn.inspect(m)))
    dialogs: list[str] = []
    for pg in open_page(tmp_path):
        pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        row = pg.locator("#layers tbody tr").first
        assert row.get_attribute("data-name") == f"evil.{evil}"
        row.click()
        assert f"evil.{evil}" in pg.locator("#layers tr.detail").inner_text()
        pg.wait_for_timeout(200)
        assert dialogs == [] and pg.locator("img").count() == 0
        assert pg.events["pageerror"] == []
