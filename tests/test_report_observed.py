"""`yolobn report --images`: the observed columns and plots, one source of truth with the CSV, in Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from tests.golden import OBSERVED_DATA, check_or_update
from tests.test_report_html import REPO, REPORT_FILES, assert_table_is_csv, open_page
from yolobn.cli import main

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
    html = (report / "report.html").read_text()
    blob = re.search(r'<script type="application/json" id="channel-data">(.*?)</script>', html, re.S).group(1)
    data = json.loads(blob.replace("<\\/", "</"))
    ch = pd.read_csv(report / "channels.csv", keep_default_na=False)
    for name, grp in ch.groupby("name", sort=False):
        cols = data[name]
        assert len(cols) == 12
        for k, c in ((5, "obs_pre_mean"), (8, "obs_post_std"), (9, "mean_shift"), (10, "log_var_ratio")):
            assert cols[k] == pytest.approx(grp[c].astype(float).tolist(), rel=1e-4, abs=1e-12), (name, c)
        flags = {0: "", 1: "flat", 2: "never positive"}
        assert [flags[f] for f in cols[11]] == grp["obs_reason"].tolist()


@pytest.fixture(scope="module")
def page(report):
    yield from open_page(report)


def test_observed_report_renders_in_chromium(page, report, tmp_path):
    from PIL import Image

    assert page.events["pageerror"] == []
    assert [m for m in page.events["console"] if m[0] in ("error", "warning")] == []
    assert page.events["requests"] == [page.report_url]
    for pid in OBS_PLOTS:
        el = page.locator(f"#{pid}")
        el.scroll_into_view_if_needed()
        assert el.is_visible()
        el.screenshot(path=str(tmp_path / f"{pid}.png"))
        px = np.asarray(Image.open(tmp_path / f"{pid}.png").convert("RGB")).reshape(-1, 3).astype(int)
        assert float((px.sum(1) < 720).mean()) > 0.02 and len(np.unique(px, axis=0)) > 8, pid
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
