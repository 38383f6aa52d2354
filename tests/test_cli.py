"""End-to-end: `yolobn inspect` on the bundled demo checkpoint."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from torch import nn

import yolobn
from yolobn.cli import main


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_outputs(tmp_path_factory, demo_path):
    d = tmp_path_factory.mktemp("demo")
    before = (_sha(demo_path), demo_path.stat().st_mtime_ns)
    rc = main(
        [
            "inspect",
            "--csv",
            str(d / "layers.csv"),
            "--channels-csv",
            str(d / "ch.csv"),
            "--json",
            str(d / "s.json"),
            "-q",
        ]
    )
    assert rc == 0
    assert (_sha(demo_path), demo_path.stat().st_mtime_ns) == before  # the bundled file is untouched
    return d


def test_demo_outputs_are_consistent(demo_outputs, demo_path):
    layers = pd.read_csv(demo_outputs / "layers.csv", keep_default_na=False)
    ch = pd.read_csv(demo_outputs / "ch.csv", keep_default_na=False)
    doc = json.loads((demo_outputs / "s.json").read_text())
    lm = yolobn.load(demo_path)
    n_bn = sum(1 for m in lm.model.modules() if isinstance(m, __import__("torch").nn.BatchNorm2d))
    assert len(layers) == n_bn == doc["summary"]["bn_layers"] == lm.meta.n_batchnorm == 81  # YOLO11n
    assert len(ch) == layers["channels"].sum() == doc["summary"]["channels"]
    assert doc["summary"]["dead"] == int(ch["dead"].astype(str).eq("True").sum()) == layers["dead"].sum()
    assert doc["model"]["sha256"] == _sha(demo_path)
    assert doc["model"]["task"] == "detect" and doc["model"]["names"] == ["rectangle", "ellipse", "triangle"]
    assert doc["model"]["train_args"]["imgsz"] == 160
    assert [r["name"] for r in doc["layers"]] == list(layers["name"])
    # the shared SiLU survives unpickling as one instance used by every Conv
    assert layers["act_shared"].astype(str).eq("True").sum() > 60


def test_csv_is_byte_identical_across_runs(demo_outputs, tmp_path):
    rc = main(
        [
            "inspect",
            "--csv",
            str(tmp_path / "l.csv"),
            "--channels-csv",
            str(tmp_path / "c.csv"),
            "--json",
            str(tmp_path / "s.json"),
            "-q",
        ]
    )
    assert rc == 0
    for a, b in (("layers.csv", "l.csv"), ("ch.csv", "c.csv"), ("s.json", "s.json")):
        assert (demo_outputs / a).read_bytes() == (tmp_path / b).read_bytes(), a


def test_table_and_summary_printed(capsys, demo_model_loaded):
    assert main(["inspect", "--sort", "channels", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 of 81 layers, sorted by channels; 78 more" in out
    # the rows: the three widest BNs, ties in model order (counted here from the modules themselves)
    bns = [
        (n, m.num_features)
        for n, m in demo_model_loaded.model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    widest = max(c for _, c in bns)
    want = [n for n, c in bns if c == widest][:3]
    rows = [
        m.groups() for m in re.finditer(r"^\s*\d+\s+(model\.\S+)\s.*?\s(\d+)\s+[-\d.]+±", out, flags=re.M)
    ]
    assert rows == [(n, str(widest)) for n in want]
    assert "dead" in out and "eps-dominated" in out and "rectangle, ellipse, triangle" in out


def test_layer_filter_applies_to_every_output(tmp_path):
    out = tmp_path / "l.csv"
    assert main(["inspect", "--layers", "model.2.*", "--layers", "SPPF", "--csv", str(out), "-q"]) == 0
    names = pd.read_csv(out)["name"]
    assert len(names) > 0
    assert all(n.startswith("model.2.") or n.startswith("model.9.") for n in names)


def test_layer_filter_matching_nothing_is_an_error(tmp_path, capsys):
    out = tmp_path / "l.csv"
    assert main(["inspect", "--layers", "nope*", "--csv", str(out)]) == 2
    assert "matches none" in capsys.readouterr().err
    assert not out.exists()


def test_console_script_runs(demo_path):
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from yolobn.cli import main; sys.exit(main(['inspect', '--top', '2', '--sort', 'index']))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "model.0.bn" in r.stdout and "Traceback" not in r.stderr
