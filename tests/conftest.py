"""Shared fixtures: tiny models with planted BatchNorm values, and the bundled demo checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.models import TinyNet, plant

os.environ.setdefault("YOLO_VERBOSE", "False")
os.environ.setdefault("YOLO_OFFLINE", "1")


# The test files that exercise Ultralytics itself (loading, walking, statistics, validation, swap,
# activations, recalibrate, compare, the training callback, security). They carry the ``ultra``
# marker, and CI runs them a second time with the oldest supported release (``.ci/run``,
# docs/compat.md). The files left out need no Ultralytics behaviour (layout, pages, docs) or compare
# validation numbers with golden files written by the newest release (the AP formula changed).
ULTRA_FILES = {
    "test_ablation.py",
    "test_activations.py",
    "test_agreement.py",
    "test_cli.py",
    "test_cli_activations.py",
    "test_cli_errors.py",
    "test_compare.py",
    "test_compat.py",
    "test_drift.py",
    "test_corpus.py",
    "test_family.py",
    "test_inputs.py",
    "test_legacy.py",
    "test_load.py",
    "test_prune.py",
    "test_prune_demo.py",
    "test_recalibration.py",
    "test_report_html.py",
    "test_report_observed.py",
    "test_security.py",
    "test_stats.py",
    "test_swap.py",
    "test_track.py",
    "test_validate.py",
    "test_walk.py",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in ULTRA_FILES:
            item.add_marker(pytest.mark.ultra)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files (reports/demo_yolo11n_shapes/ and its observed/) from the current "
        "code instead of comparing them",
    )


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --update-golden``: golden tests write their files instead of comparing."""
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    return plant(TinyNet())


@pytest.fixture(scope="session")
def demo_path():
    import yolobn

    p = yolobn.demo_model_path()
    assert p.is_file(), f"bundled demo model missing: {p} (run scripts/train_demo.py)"
    return p


@pytest.fixture(scope="session")
def demo_model_loaded(demo_path):
    """The demo model, loaded once (tests must not change it: yolobn's functions work on copies)."""
    import yolobn

    return yolobn.load()


@pytest.fixture
def offline_network(monkeypatch):
    """Replace every download path with a recorder that fails like an offline machine."""
    import ultralytics.utils.downloads as dl

    calls: list[str] = []
    real = dl.attempt_download_asset

    def offline_asset(file, *args, **kwargs):
        if Path(str(file)).is_file():  # the local-file shortcut of the real function
            return real(file, *args, **kwargs)
        calls.append(str(file))
        raise ConnectionError(f"offline: {file}")

    def offline_download(name):
        calls.append(name)
        raise ConnectionError(f"offline: {name}")

    monkeypatch.setattr(dl, "attempt_download_asset", offline_asset)
    monkeypatch.setattr("yolobn.io.loader._download", offline_download)
    return calls


@pytest.fixture
def no_stray_runs(tmp_path, monkeypatch):
    """Run in tmp_path; the returned check asserts that no validation left a runs/ folder behind:
    neither in the working folder (where Ultralytics' validator puts ``runs/detect/val*``) nor in
    the folder it uses instead under pytest (``<site-packages>/tests/tmp/runs``)."""
    from ultralytics.utils import ROOT

    elsewhere = ROOT.parent / "tests" / "tmp" / "runs"

    def listing() -> set[Path]:
        return set(elsewhere.rglob("*")) if elsewhere.is_dir() else set()

    before = listing()
    monkeypatch.chdir(tmp_path)

    def check() -> None:
        assert not (tmp_path / "runs").exists()
        assert listing() - before == set()

    return check
