"""The HTML report: static checks, one source of truth with the CSV/JSON, and a real headless Chromium."""

from __future__ import annotations

import json
import math
import re
import shutil
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.golden import EXACT_DATA, Tolerance, check_or_update, mismatch
from yolobn.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = [
    "plot-gamma",
    "plot-beta",
    "plot-mean",
    "plot-var",
    "plot-dead",
    "plot-scatter",
    "plot-heatmap",
    "hist-gamma",
    "hist-beta",
    "hist-var",
    "hist-scale",
]
REPO = Path(__file__).resolve().parents[1]
REPORT_FILES = ("report.html", "layers.csv", "channels.csv", "summary.json")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    assert main(["report", "-o", str(d), "-q"]) == 0
    assert sorted(p.name for p in d.iterdir()) == sorted(REPORT_FILES)
    return d


class _Table(HTMLParser):
    """Collects data-v of every cell of table#layers, and every src/href attribute on the page."""

    def __init__(self) -> None:
        super().__init__()
        self.in_table = False
        self.rows: list[list[str]] = []
        self.headers: list[str] = []
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href", "xlink:href", "action", "srcset"):
            if k in a:
                self.refs.append(a[k])
        if tag == "table" and a.get("id") == "layers":
            self.in_table = True
        elif self.in_table and tag == "th":
            self.headers.append(a["data-k"])
        elif self.in_table and tag == "tr" and "data-name" in a:
            self.rows.append([])
        elif self.in_table and tag == "td" and self.rows:
            self.rows[-1].append(a["data-v"])

    def handle_endtag(self, tag):
        if tag == "table" and self.in_table:
            self.in_table = False


def _parse(report: Path) -> _Table:
    p = _Table()
    p.feed((report / "report.html").read_text())
    return p


def test_self_contained_no_external_references(report):
    html = (report / "report.html").read_text()
    p = _parse(report)
    assert p.refs and all(r.startswith("data:") for r in p.refs), [
        r[:40] for r in p.refs if not r.startswith("data:")
    ]
    assert not re.search(r"https?://", html)
    assert "@import" not in html and "url(" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for pid in PLOTS:
        assert f'id="{pid}"' in html, pid


def test_html_table_is_the_csv(report):
    assert_table_is_csv(report)


def assert_table_is_csv(report: Path) -> None:
    layers = pd.read_csv(report / "layers.csv", keep_default_na=False)
    p = _parse(report)
    assert len(p.rows) == len(layers)
    for j, key in enumerate(p.headers):
        col = [r[j] for r in p.rows]
        if not pd.api.types.is_numeric_dtype(layers[key]):
            assert col == [str(v) for v in layers[key]], key
        else:
            for got, want in zip(col, layers[key], strict=True):
                if isinstance(want, float) and math.isnan(want):
                    assert got == "", key
                else:
                    assert float(got) == float(want), key  # both written at 7 significant digits


def channel_payload(report: Path) -> dict:
    html = (report / "report.html").read_text()
    blob = re.search(r'<script type="application/json" id="channel-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(blob.replace("<\\/", "</"))


def test_channel_details_are_the_channels_csv(report):
    data = channel_payload(report)
    ch = pd.read_csv(report / "channels.csv", keep_default_na=False)
    assert data["columns"] == ["gamma", "beta", "running_mean", "running_var", "flag"]
    col = {c: i for i, c in enumerate(data["columns"])}
    assert list(data["layers"]) == list(dict.fromkeys(ch["name"]))
    for name, grp in ch.groupby("name", sort=False):
        arrays = data["layers"][name]
        assert len(arrays) == len(data["columns"])
        for c in ("gamma", "beta", "running_mean", "running_var"):
            assert arrays[col[c]] == pytest.approx(grp[c].astype(float).tolist(), rel=1e-4, abs=1e-30), (
                name,
                c,
            )
        flags = [data["codes"]["flag"][f] for f in arrays[col["flag"]]]
        want = [
            r or ("eps-dominated" if e == "True" else "")
            for r, e in zip(grp["dead_reason"], grp["eps_dominated"].astype(str), strict=True)
        ]
        assert flags == want


def test_summary_json_matches_html_header(report):
    doc = json.loads((report / "summary.json").read_text())
    html = (report / "report.html").read_text()
    s = doc["summary"]
    assert f"<b>{s['bn_layers']}</b>" in html
    assert f"<b>{s['channels']:,}</b>" in html
    assert f"{s['dead']:,} ({s['dead_share']:.1%})" in html


def test_reports_folder_is_up_to_date(report, update_golden):
    # text exactly, numbers to the precision written (tests/golden.py); `pytest --update-golden` rewrites
    check_or_update(
        REPO / "reports" / "demo_yolo11n_shapes", report, list(REPORT_FILES), EXACT_DATA, update_golden
    )


def test_golden_comparison_allows_rounding_and_nothing_else():
    tol = EXACT_DATA
    assert mismatch("name,x\nmodel.2.bn,1.329947\n", "name,x\nmodel.2.bn,1.329948\n", tol) is None
    assert "1.329947 in the golden file, 1.32995 now" in mismatch("a,1.329947\n", "a,1.32995\n", tol)
    assert "text differs" in mismatch("model.2.bn,1\n", "model.3.bn,1\n", tol)  # names are text
    assert mismatch("a,185\n", "a,186\n", tol) is not None  # counts exactly
    assert mismatch("a,1,2\n", "a,1,2,3\n", tol) is not None
    # in HTML, a number rounded for display may flip its last digit, and a coordinate by 0.1 px
    assert mismatch('<b x="10.3">0.181</b>', '<b x="10.4">0.182</b>', Tolerance(1e-6, display=True)) is None
    assert mismatch('<b x="10.3">0.181</b>', '<b x="10.5">0.181</b>', Tolerance(1e-6, display=True))
    # PNG images: compared by their pixels, not by the bytes zlib wrote
    import base64
    import io

    from PIL import Image

    def png(value: int, level: int) -> str:
        buf = io.BytesIO()
        Image.fromarray(np.full((4, 4), value, np.uint8), "L").save(buf, format="PNG", compress_level=level)
        return 'href="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '"'

    assert png(7, 1) != png(7, 9) and mismatch(png(7, 1), png(7, 9), tol) is None
    assert "PNG image 0 differs" in mismatch(png(7, 1), png(8, 1), tol)


def test_report_bad_output_folder_writes_nothing(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["report", "-o", str(f)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert f.read_text() == "x"


# ---------------------------------------------------------------- real browser


@pytest.fixture(scope="module")
def page(report):
    yield from open_page(report)


@contextmanager
def chromium():
    """Headless Chromium (Debian's, through playwright), closed on exit."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium; apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    pw = sync_api.sync_playwright().start()
    browser = pw.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ],
    )
    try:
        yield browser
    finally:
        browser.close()
        pw.stop()


def open_page(report: Path):
    """report.html in ``report`` opened in Chromium, with its console, errors and requests recorded."""
    with chromium() as browser:
        pg = browser.new_page(viewport={"width": 1200, "height": 900})
        events = {"console": [], "pageerror": [], "requests": []}
        pg.on("console", lambda m: events["console"].append((m.type, m.text)))
        pg.on("pageerror", lambda e: events["pageerror"].append(str(e)))
        pg.on("request", lambda r: events["requests"].append(r.url))
        url = (report / "report.html").resolve().as_uri()
        pg.goto(url, wait_until="load")
        pg.wait_for_timeout(300)
        pg.events = events
        pg.report_url = url
        yield pg


def test_loads_from_file_url_without_errors_or_network(page):
    ev = page.events
    assert ev["pageerror"] == []
    assert [m for m in ev["console"] if m[0] in ("error", "warning")] == []
    assert ev["requests"] == [page.report_url], ev["requests"]  # the page itself, nothing else
    assert page.title().startswith("yolobn report")


@pytest.mark.parametrize("plot_id", PLOTS)
def test_every_plot_is_rendered_and_visible(page, plot_id):
    el = page.locator(f"#{plot_id}")
    el.scroll_into_view_if_needed()
    assert el.is_visible()
    box = el.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100


def plot_marks(page, plot_id: str) -> list[dict]:
    """The marks of a plot as the browser has them: name, values, and the geometry drawn."""
    return page.eval_on_selector_all(
        f"#{plot_id} g.mark",
        """els => els.map(e => ({name: e.dataset.name || null,
            value: e.dataset.value ? e.dataset.value.split(' ').map(Number) : [],
            rects: Array.from(e.querySelectorAll('rect')).map(r => [+r.getAttribute('y'), +r.getAttribute('height')]),
            lines: Array.from(e.querySelectorAll('line')).map(l => [+l.getAttribute('y1'), +l.getAttribute('y2')])}))""",
    )


def assert_linear(values, pixels, what: str, tol: float = 0.15) -> None:
    """Pixels drawn from values through one linear map (0.1-px rounding allowed)."""
    v, px = np.asarray(values, float), np.asarray(pixels, float)
    a, b = np.polyfit(v, px, 1)
    assert np.abs(a * v + b - px).max() <= tol, what


@pytest.mark.parametrize("q", ["gamma", "beta", "running_mean", "running_var"])
def test_depth_plots_draw_the_csv_quantiles(page, report, q):
    layers = pd.read_csv(report / "layers.csv")
    pid = {
        "gamma": "plot-gamma",
        "beta": "plot-beta",
        "running_mean": "plot-mean",
        "running_var": "plot-var",
    }[q]
    marks = [m for m in plot_marks(page, pid) if m["name"] != "eps"]
    assert [m["name"] for m in marks] == list(layers["name"])
    want = layers[[f"{q}_{s}" for s in ("p05", "p25", "p50", "p75", "p95")]].to_numpy(float)
    assert np.array([m["value"] for m in marks]) == pytest.approx(want, rel=1e-6)
    # the median line sits where the median is: y is one linear map of the value (log10 for var)
    med = want[:, 2] if q != "running_var" else np.log10(want[:, 2])
    assert_linear(med, [m["lines"][1][0] for m in marks], q)


def test_share_heatmap_and_scatter_marks_are_the_csv(page, report):
    layers = pd.read_csv(report / "layers.csv")
    ch = pd.read_csv(report / "channels.csv")
    dead = {m["name"]: m["value"] for m in plot_marks(page, "plot-dead")}
    drawn = layers[(layers["dead"] > 0) | (layers["eps_dominated"] > 0)]
    assert sorted(dead) == sorted(drawn["name"])
    for r in drawn.itertuples():
        assert dead[r.name] == [r.constant, r.off, r.eps_dominated, r.channels]
    if drawn.empty:  # the demo model: nothing to draw, and the plot says so
        assert "no dead channels" in page.locator("#plot-dead").text_content()
    rows = plot_marks(page, "plot-heatmap")
    assert [m["name"] for m in rows] == list(layers["name"])
    assert [m["value"] for m in rows] == [[r.channels, r.dead] for r in layers.itertuples()]
    scatter = {m["name"]: m["value"] for m in plot_marks(page, "plot-scatter") if m["name"]}
    ok = ch["gamma"].notna() & ch["beta"].notna()
    assert scatter.pop("alive") == [int((ok & ~ch["dead"]).sum())]
    assert scatter == {
        r: [int((ch["dead_reason"] == r).sum())]
        for r in ("constant", "off")
        if (ch["dead_reason"] == r).any()
    }


@pytest.mark.parametrize(
    ("pid", "col"),
    [("hist-gamma", "gamma"), ("hist-beta", "beta"), ("hist-var", "running_var"), ("hist-scale", "scale")],
)
def test_histograms_count_the_csv_channels(page, report, pid, col):
    ch = pd.read_csv(report / "channels.csv")
    x = ch[col].to_numpy(float)
    if col in ("running_var", "scale"):
        x = np.log10(np.clip(np.abs(x), 1e-12, None))
    marks = plot_marks(page, pid)
    lo, hi, alive, dead = np.array([m["value"] for m in marks]).T
    assert int(alive.sum() + dead.sum()) == int(np.isfinite(x).sum())
    assert int(dead.sum()) == int(ch["dead"].sum())
    want, _ = np.histogram(x[np.isfinite(x)], np.concatenate([lo, hi[-1:]]))
    got = alive + dead
    assert np.abs(got - want).sum() <= 0.002 * len(x)  # bin edges are written at 7 digits
    # bar heights are proportional to the counts
    heights = [m["rects"][0][1] for m in marks if m["value"][2] > 0]
    assert_linear(alive[alive > 0], heights, pid)


def _column(page, key):
    return page.eval_on_selector_all(
        f"#layers tbody tr:not(.detail):not(.hidden) td:nth-child({_col_index(page, key)})",
        "els => els.map(e => e.dataset.v)",
    )


def _col_index(page, key):
    keys = page.eval_on_selector_all("#layers thead th", "els => els.map(e => e.dataset.k)")
    return keys.index(key) + 1


def test_sorting_a_column_reorders_rows(page, report):
    layers = pd.read_csv(report / "layers.csv")
    page.fill("#filter-name", "")
    page.select_option("#filter-role", "")
    before = page.eval_on_selector_all("#layers tbody tr", "els => els.map(e => e.dataset.name)")
    assert before == list(layers["name"])  # model order first
    th = page.locator('#layers th[data-k="running_var_p50"]')
    th.click()
    asc = [float(v) for v in _column(page, "running_var_p50")]
    assert asc == pytest.approx(sorted(layers["running_var_p50"].astype(float)), rel=1e-8)
    th.click()
    desc = [float(v) for v in _column(page, "running_var_p50")]
    assert desc == pytest.approx(sorted(layers["running_var_p50"].astype(float), reverse=True), rel=1e-8)
    assert asc == sorted(asc) and desc == sorted(desc, reverse=True)
    after = page.eval_on_selector_all("#layers tbody tr", "els => els.map(e => e.dataset.name)")
    assert after != before and sorted(after) == sorted(before)
    page.locator('#layers th[data-k="name"]').click()
    assert page.eval_on_selector_all("#layers tbody tr", "els => els.map(e => e.dataset.name)") == sorted(
        before
    )


def test_filtering_hides_rows(page, report):
    layers = pd.read_csv(report / "layers.csv")
    page.fill("#filter-name", "model.2.")
    visible = page.eval_on_selector_all(
        "#layers tbody tr:not(.hidden)", "els => els.map(e => e.dataset.name)"
    )
    assert sorted(visible) == sorted(n for n in layers["name"] if "model.2." in n)
    assert 0 < len(visible) < len(layers)
    assert page.locator("#shown-count").inner_text() == f"{len(visible)} of {len(layers)} layers"
    page.fill("#filter-name", "")
    page.select_option("#filter-role", "head")
    visible = page.eval_on_selector_all(
        "#layers tbody tr:not(.hidden)", "els => els.map(e => e.dataset.name)"
    )
    assert sorted(visible) == sorted(layers.loc[layers["role"] == "head", "name"])
    page.select_option("#filter-role", "")
    page.select_option("#filter-block", "SPPF")
    visible = page.eval_on_selector_all(
        "#layers tbody tr:not(.hidden)", "els => els.map(e => e.dataset.name)"
    )
    assert sorted(visible) == sorted(layers.loc[layers["block"] == "SPPF", "name"])
    page.select_option("#filter-block", "")
    assert page.locator("#layers tbody tr.hidden").count() == 0


def test_clicking_a_layer_shows_its_channels(page, report):
    layers = pd.read_csv(report / "layers.csv")
    name = layers["name"].iloc[3]
    row = page.locator(f'#layers tbody tr[data-name="{name}"]')
    row.click()
    detail = page.locator("#layers tr.detail")
    assert detail.count() == 1 and name in detail.inner_text()
    n = detail.locator("table.ch tr").count() - 1  # minus the header
    assert n == int(layers["channels"].iloc[3])
    # scale and out std are recomputed in the page from gamma, var and eps: they must match the CSV
    ch = pd.read_csv(report / "channels.csv")
    ch = ch[ch["name"] == name].reset_index(drop=True)
    cells = detail.locator("table.ch tr").nth(2).locator("td").all_inner_texts()  # channel 1
    assert int(cells[0]) == 1
    for k, col in ((1, "gamma"), (4, "running_var"), (5, "scale"), (6, "out_std")):
        assert float(cells[k]) == pytest.approx(ch[col][1], rel=2e-3), col
    assert cells[7] == (ch["dead_reason"][1] if isinstance(ch["dead_reason"][1], str) else "")
    row.click()
    assert page.locator("#layers tr.detail").count() == 0


def test_report_on_bad_model_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    bad = tmp_path / "empty.pt"
    bad.write_bytes(b"")
    assert main(["report", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty" in err and "Traceback" not in err
    assert not out.exists()


def test_report_default_folder_is_reports_model_stem(tmp_path, monkeypatch, demo_path):
    import shutil as sh

    monkeypatch.chdir(tmp_path)
    sh.copy(demo_path, tmp_path / "best.pt")
    assert main(["report", "best.pt", "-q", "--layers", "model.0.*"]) == 0
    assert sorted(p.name for p in (tmp_path / "reports" / "best").iterdir()) == [
        "channels.csv",
        "layers.csv",
        "report.html",
        "summary.json",
    ]


def test_the_columns_that_answer_come_first(report):
    """A phone shows a table's first few columns without scrolling: the answers lead."""
    from yolobn.report.html import OBSERVED_COLUMNS, TABLE_COLUMNS

    headers = _parse(report).headers
    assert headers[:5] == ["index", "name", "findings", "dead", "dead_share"]
    assert headers.index("port_eps") < headers.index("gamma_mean")
    observed = [k for k, _, _ in OBSERVED_COLUMNS]
    assert observed[:2] == ["obs_dead", "drift"] and TABLE_COLUMNS[1][0] == "name"
