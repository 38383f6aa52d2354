"""`yolobn report --images`: the observed columns and plots, one source of truth with the CSV, in Chromium."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.golden import OBSERVED_DATA, check_or_update
from tests.test_report_html import (
    REPO,
    REPORT_FILES,
    assert_linear,
    assert_table_is_csv,
    channel_payload,
    open_page,
    plot_marks,
)
from yolobn.cli import main
from yolobn.report.html import OBSERVED_DETAIL_COLUMNS

OBS_PLOTS = ["plot-confusion", "plot-drift"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report-observed")
    assert main(["report", "--images", "--max-images", "8", "-o", str(d), "-q"]) == 0
    return d


def test_observed_reports_folder_is_up_to_date(tmp_path, update_golden, monkeypatch):
    # what the README's `yolobn report --images -o reports/demo_yolo11n_shapes/observed` writes (96 images)
    if update_golden:  # the image paths in summary.json: the default cache, not this test run's
        monkeypatch.delenv("YOLOBN_CACHE", raising=False)
    assert main(["report", "--images", "-o", str(tmp_path), "-q"]) == 0
    golden = REPO / "reports" / "demo_yolo11n_shapes" / "observed"
    check_or_update(golden, tmp_path, list(REPORT_FILES), OBSERVED_DATA, update_golden)


def test_observed_columns_and_plots_are_in_the_page_and_match_the_csv(report):
    html = (report / "report.html").read_text()
    for pid in OBS_PLOTS:
        assert f'id="{pid}"' in html
    for key in ("obs_dead", "dead_predicted_only", "dead_observed_only", "drift"):
        assert f'data-k="{key}"' in html
    assert_table_is_csv(report)  # every column of the page's table, observed ones included
    doc = json.loads((report / "summary.json").read_text())
    assert doc["observed"]["images"]["count"] == 8
    assert f"{doc['observed']['summary']['observed_dead']:,}" in html


def test_channel_payload_carries_the_observed_values(report):
    data = channel_payload(report)
    col = {c: i for i, c in enumerate(data["columns"])}
    assert data["columns"][-7:] == [*OBSERVED_DETAIL_COLUMNS, "obs_flag"]
    ch = pd.read_csv(report / "channels.csv", keep_default_na=False)
    for name, grp in ch.groupby("name", sort=False):
        arrays = data["layers"][name]
        assert len(arrays) == len(data["columns"])
        for c in OBSERVED_DETAIL_COLUMNS:
            want = pd.to_numeric(grp[c]).astype(float).tolist()
            assert arrays[col[c]] == pytest.approx(want, rel=1e-4, abs=1e-12, nan_ok=True), (name, c)
        assert [data["codes"]["obs_flag"][f] for f in arrays[col["obs_flag"]]] == grp["obs_reason"].tolist()


def test_small_samples_are_flagged_and_agreement_is_not_shown(report):
    html = (report / "report.html").read_text()
    assert (
        html.count('class="warn">Only 8 images: observed dead channels and drift are noisy') == 2
    )  # cards, section
    assert "agreement" not in html.lower()
    full = (REPO / "reports" / "demo_yolo11n_shapes" / "observed" / "report.html").read_text()
    assert 'class="warn"' not in full  # 96 images: no warning


@pytest.fixture(scope="module")
def page(report):
    yield from open_page(report)


def test_observed_report_renders_in_chromium(page, report):
    assert page.events["pageerror"] == []
    assert [m for m in page.events["console"] if m[0] in ("error", "warning")] == []
    assert page.events["requests"] == [page.report_url]
    for pid in OBS_PLOTS:
        el = page.locator(f"#{pid}")
        el.scroll_into_view_if_needed()
        assert el.is_visible()
    # a layer with observed-dead channels: its detail rows say which, as channels.csv does
    layers = pd.read_csv(report / "layers.csv")
    name = layers.loc[layers["obs_dead"] > 0, "name"].iloc[0]
    page.locator(f'#layers tbody tr[data-name="{name}"]').click()
    detail = page.locator("#layers tr.detail")
    assert "observed" in detail.locator("table.ch tr").first.inner_text()
    shown = [
        r[-1]
        for r in (row.locator("td").all_inner_texts() for row in detail.locator("table.ch tr").all()[1:])
    ]
    ch = pd.read_csv(report / "channels.csv", keep_default_na=False)
    assert shown == ch.loc[ch["name"] == name, "obs_reason"].tolist()
    page.locator(f'#layers tbody tr[data-name="{name}"]').click()


def test_confusion_and_drift_plots_draw_the_csv(page, report):
    layers = pd.read_csv(report / "layers.csv")
    conf = {m["name"]: m for m in plot_marks(page, "plot-confusion")}
    drawn = layers[layers[["dead_both", "dead_predicted_only", "dead_observed_only"]].sum(axis=1) > 0]
    assert sorted(conf) == sorted(drawn["name"]) and len(drawn) > 0
    for r in drawn.itertuples():
        assert conf[r.name]["value"] == [r.dead_both, r.dead_predicted_only, r.dead_observed_only, r.channels]
    # stacked bar heights are proportional to the counts' shares of the layer's channels
    share = [sum(m["value"][:3]) / m["value"][3] for m in conf.values()]
    assert_linear(share, [sum(h for _, h in m["rects"]) for m in conf.values()], "confusion", tol=0.5)
    drift = plot_marks(page, "plot-drift")
    reached = layers[layers["obs_count"] > 0]
    assert [m["name"] for m in drift] == list(reached["name"])
    assert np.array([m["value"] for m in drift]) == pytest.approx(
        reached[["drift", "drift_max"]].to_numpy(float), rel=1e-6
    )


def test_dead_filter_counts_observed_dead_channels(page, report):
    layers = pd.read_csv(report / "layers.csv")
    page.fill("#filter-name", "")
    page.check("#filter-dead")
    visible = page.eval_on_selector_all(
        "#layers tbody tr:not(.hidden)", "els => els.map(e => e.dataset.name)"
    )
    want = layers.loc[(layers["dead"] > 0) | (layers["obs_dead"] > 0), "name"]
    assert sorted(visible) == sorted(want) and len(want) > 0  # the demo: none data-free, some observed
    assert page.locator("#shown-count").inner_text() == f"{len(want)} of {len(layers)} layers"
    cells = page.eval_on_selector_all("#layers td.obsdead", "els => els.length")
    assert cells == int((layers["obs_dead"] > 0).sum())
    page.uncheck("#filter-dead")


def test_an_observed_report_leads_with_what_was_observed(report):
    """The headline and the sections put the images' figures first; the data-free count is labelled
    as the prediction (on the demo it predicts 0 while the images show hundreds dead)."""
    import re

    html = (report / "report.html").read_text()
    labels = re.findall(r'<div class="card[^"]*"><span>([^<]*)</span>', html)
    assert labels and labels[0].startswith("observed dead (8 images)"), labels[:3]
    assert "predicted dead (data-free)" in labels and "dead channels" not in labels
    assert "observed on 8 images; the data-free figures are the prediction" in html
    assert html.index("<h2>On the images</h2>") < html.index("<h2>Dead channels predicted from the weights")
