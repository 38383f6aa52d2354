"""yolobn never installs anything (issue 18 §5): an image Ultralytics cannot decode (a .heic) makes
Ultralytics' ``check_requirements`` pip-install ``pi-heif`` on an online machine; not under yolobn.

The machine is made to look online with auto-install on (Ultralytics' defaults), and every installer
is made unavailable: fake ``uv``/``pip``/``pip3`` first on PATH that only leave a marker, and
``subprocess.check_output`` refusing any ``install`` command."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.run_main import run_main


@pytest.fixture
def online_without_installers(tmp_path, monkeypatch):
    """(marker file, recorded install commands); Ultralytics believes it is online, auto-install on."""
    import ultralytics.utils as utils
    import ultralytics.utils.checks as checks

    marker, calls = tmp_path / "installer-ran", []
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("uv", "pip", "pip3"):
        exe = bin_dir / name
        exe.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\necho "{name} 0.0.1"\n')
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    real = subprocess.check_output

    def check_output(cmd, *args, **kwargs):
        if "install" in [str(c) for c in (cmd if isinstance(cmd, (list, tuple)) else str(cmd).split())]:
            calls.append(cmd)
            raise subprocess.CalledProcessError(1, cmd, output="pip is not available here")
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "check_output", check_output)
    for mod in (utils, checks):
        monkeypatch.setattr(mod, "ONLINE", True)
        monkeypatch.setattr(mod, "AUTOINSTALL", True)
    return marker, calls


@pytest.fixture
def heic(tmp_path) -> Path:
    p = tmp_path / "photo.heic"
    p.write_bytes(bytes(range(256)) * 16)  # any bytes: neither OpenCV nor PIL can identify them
    return p


def assert_nothing_installed(marker: Path, calls: list) -> None:
    import ultralytics.utils.checks as checks

    assert calls == [] and not marker.exists(), (calls, marker.read_text() if marker.exists() else "")
    assert checks.AUTOINSTALL is True  # the process's own setting is back after yolobn's call


def test_an_undecodable_image_installs_nothing(online_without_installers, heic, capsys):
    import ultralytics

    bus = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    code, out, err = run_main(
        ["activations", "--images", str(heic), str(bus), "--max-images", "2", "-q"], capsys
    )
    assert code == 0 and out == ""
    assert err.strip() == f"warning: 1 image(s) could not be decoded and were skipped (first: {heic})"
    assert_nothing_installed(*online_without_installers)


def test_validating_a_dataset_with_an_undecodable_image_installs_nothing(
    online_without_installers, heic, tmp_path, capsys, monkeypatch
):
    import shutil

    import ultralytics

    monkeypatch.setenv("YOLOBN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ds"
    for sub in ("images/val", "labels/val"):
        (root / sub).mkdir(parents=True)
    shutil.copy(Path(ultralytics.__file__).parent / "assets" / "bus.jpg", root / "images/val/bus.jpg")
    shutil.copy(heic, root / "images/val/photo.heic")
    for stem in ("bus", "photo"):
        (root / "labels/val" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = tmp_path / "ds.yaml"
    data.write_text(
        f"path: {root}\ntrain: images/val\nval: images/val\nnames: {{0: rectangle, 1: ellipse, 2: triangle}}\n"
    )
    code, out, err = run_main(
        ["swap", "--impl", "reference", "--data", str(data), "-o", str(tmp_path / "o"), "-q"], capsys
    )
    assert code == 0, err
    assert_nothing_installed(*online_without_installers)
