"""The experiment page: the report's shell and look, readable metric names, consistent digits, and a
width that fits the window. Rendered from the committed results of examples/eps.yaml (no validation run)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from tests.golden import EXACT_DATA, check_or_update
from tests.test_report_html import REPO, open_page, plot_marks
from yolobn.report.experiment_page import metric_label, render_html
from yolobn.report.page import asset
from yolobn.sweeps.experiment import ExperimentResult

EPS = REPO / "reports" / "demo_yolo11n_shapes" / "experiments" / "eps"


def committed_result() -> ExperimentResult:
    doc = json.loads((EPS / "results.json").read_text())
    sens = pd.DataFrame(doc["sensitivity"]) if doc["sensitivity"] else None
    return ExperimentResult(doc["config"], doc["model"], doc["metric"], pd.DataFrame(doc["results"]), sens)


@pytest.fixture(scope="module")
def html() -> str:
    return render_html(committed_result())


def test_metric_names_are_readable():
    assert metric_label("metrics/mAP50-95(B)") == "mAP50-95 (box)"
    assert metric_label("mAP50(M)") == "mAP50 (mask)"
    assert metric_label("metrics/mAP50-95(P)") == "mAP50-95 (pose)"
    assert metric_label("metrics/accuracy_top1") == "top-1 accuracy"
    assert metric_label("metrics/precision(B)") == "precision (box)"


def test_experiment_page_uses_the_report_shell_and_readable_numbers(html):
    assert asset("report.css") in html and asset("report.js") in html  # one look, self-contained
    assert "default-src 'none'" in html and not re.search(r"https?://", html)
    shown = re.sub(r"<(svg|script|style).*?</\1>", "", html, flags=re.S)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", shown)
    text = re.sub(r"<[^>]+>", " ", shown)
    assert "metrics/" not in text and "(B)" not in text
    assert "mAP50-95 (box)" in text and "-2.595e-08" not in text
    # metrics with 4 decimals; deltas signed with 4 decimals, below 0.00005 shown as 0.0000
    assert "0.6294" in cells and "0.0000" in cells and "−0.6294" in cells


@pytest.fixture(scope="module")
def page(html, tmp_path_factory):
    d = tmp_path_factory.mktemp("experiment")
    (d / "report.html").write_text(html)
    yield from open_page(d)


def test_experiment_page_fits_the_window_and_sorts(page):
    assert page.events["pageerror"] == [] and page.events["requests"] == [page.report_url]
    page.set_viewport_size({"width": 1400, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    page.locator('#results th[data-k="mAP50-95(B)"]').click()
    got = page.eval_on_selector_all("#results tbody td:nth-child(4)", "els => els.map(e => +e.dataset.v)")
    assert got == sorted(got) and len(got) == 9
    keys = page.eval_on_selector_all("#results thead th", "els => els.map(e => e.dataset.k)")
    rows = page.eval_on_selector_all(
        "#results tbody tr", "els => els.map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    for j, k in enumerate(keys):
        if k.endswith(")") or k.endswith(") delta"):  # metrics and their deltas: 4 decimals, never 1e-08
            assert all(re.fullmatch(r"[+−]?\d\.\d{4}", r[j]) for r in rows), (k, [r[j] for r in rows])


def test_sensitivity_bars_are_the_csv(page):
    sens = pd.read_csv(EPS / "sensitivity.csv")  # ranked: the largest drop first
    marks = plot_marks(page, "plot-sensitivity")  # the experiment's sensitivity.top (10) layers
    assert [m["name"] for m in marks] == list(sens["layer"][:10])
    assert [m["value"][0] for m in marks] == pytest.approx(sens["delta"][:10].tolist(), rel=1e-5, abs=1e-9)
    depth = {m["name"]: m["value"][0] for m in plot_marks(page, "plot-sensitivity-depth")}  # every layer
    assert depth == pytest.approx(dict(zip(sens["layer"], sens["delta"], strict=True)), rel=1e-5, abs=1e-9)


def test_committed_experiment_page_is_up_to_date(tmp_path, update_golden):
    # the page `yolobn experiment examples/eps.yaml` wrote, re-rendered from its results.json by the current code
    (tmp_path / "experiment.html").write_text(render_html(committed_result()))
    check_or_update(EPS, tmp_path, ["experiment.html"], EXACT_DATA, update_golden)
