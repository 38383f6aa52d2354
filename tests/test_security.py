"""No code from an input file runs without --trust: model yamls, dataset yamls, experiment files.

Each payload touches a marker file when it runs. Every command and the Python API must refuse the
file with exit 2 and one line, and the marker must not appear. With ``--trust`` the same payload
does run, which shows that the marker check can fail.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

import yolobn
from tests.run_main import run_main
from yolobn.core.errors import YolobnError


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code, _, err = run_main(argv, capsys)
    return code, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("yolobn: error: "), err
    return lines[0]


def evil_model_yaml(d: Path, marker: Path) -> Path:
    p = d / "evil.yaml"
    p.write_text(
        "nc: 3\n"
        f'activation: __import__("pathlib").Path("{marker}").touch() or __import__("torch").nn.SiLU()\n'
        "backbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n"
        "head:\n  - [[-1], 1, Detect, [nc]]\n"
    )
    return p


def evil_layer_yaml(d: Path, marker: Path) -> Path:
    """A module name that is a callable in Ultralytics' namespace but not a layer."""
    p = d / "evil_layer.yaml"
    p.write_text(
        "nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n"
        f"head:\n  - [-1, 1, yaml_save, ['{marker}', {{}}]]\n  - [[-1], 1, Detect, [nc]]\n"
    )
    return p


def evil_data_yaml(d: Path, marker: Path) -> Path:
    p = d / "evil_data.yaml"
    p.write_text(
        f"path: {d / 'not_downloaded'}\ntrain: images/train\nval: images/val\nnames: {{0: a}}\n"
        f'download: |\n  __import__("pathlib").Path("{marker}").touch()\n'
    )
    return p


def evil_bash_data_yaml(d: Path, marker: Path) -> Path:
    p = d / "evil_bash.yaml"
    p.write_text(
        f"path: {d / 'nothing'}\ntrain: images/train\nval: images/val\nnames: [a]\ndownload: bash -c 'touch {marker}'\n"
    )
    return p


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


# --------------------------------------------------------------------------------------------------
# model yamls


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "{yaml}"],
        ["report", "{yaml}", "-o", "{out}"],
        ["activations", "{yaml}", "--images"],
        ["recalibrate", "{yaml}", "-o", "{out}/r.pt"],
        ["swap", "{yaml}", "--impl", "reference", "--images"],
        ["prune", "{yaml}", "-o", "{out}/p.pt", "--share", "5", "--report", "{out}/report"],
        ["finetune", "{yaml}", "data=shapes", "project={out}"],
    ],
    ids=["inspect", "report", "activations", "recalibrate", "swap", "prune", "finetune"],
)
@pytest.mark.parametrize("payload", [evil_model_yaml, evil_layer_yaml], ids=["activation", "layer"])
def test_model_yaml_code_never_runs(argv, payload, tmp_path, marker, capsys):
    y = payload(tmp_path, marker)
    out = tmp_path / "out"
    code, err = run_cli([a.format(yaml=y, out=out) for a in argv], capsys)
    assert code == 2, err
    line = one_line(err)
    assert "refused" in line and "--trust" in line
    assert not marker.exists()
    assert not out.exists()


def test_model_yaml_code_never_runs_from_the_api(tmp_path, marker):
    y = evil_model_yaml(tmp_path, marker)
    for call in (
        lambda: yolobn.load(str(y)),
        lambda: yolobn.inspect(str(y)),
        lambda: yolobn.observe(str(y)),
        lambda: yolobn.recalibrate(str(y)),
    ):
        with pytest.raises(YolobnError, match="refused"):
            call()
    assert not marker.exists()


def test_model_yaml_code_in_an_experiment_file(tmp_path, marker, capsys):
    y = evil_model_yaml(tmp_path, marker)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"model: {y}\ndata: shapes\nvariants: [reference]\n")
    code, err = run_cli(["experiment", str(exp), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "refused" in one_line(err)
    assert not marker.exists()


def test_trusted_model_yaml_does_run(tmp_path, marker, capsys):
    """The control: with --trust, Ultralytics evaluates the activation (so the checks above can fail)."""
    y = evil_model_yaml(tmp_path, marker)
    code, _ = run_cli(["inspect", str(y), "--trust", "-q"], capsys)
    assert code == 0
    assert marker.exists()


def test_plain_activations_and_shipped_yamls_still_build():
    lm = yolobn.load("yolov6n.yaml")  # the one shipped yaml with an activation (torch.nn.ReLU())
    assert {type(m).__name__ for m in lm.model.modules()} >= {"ReLU"}
    assert yolobn.load("yolo11n.yaml").meta.n_batchnorm > 0


@pytest.mark.parametrize(
    "act, ok",
    [
        ("nn.SiLU()", True),
        ("torch.nn.LeakyReLU(0.1)", True),
        ("nn.LeakyReLU(negative_slope=0.2, inplace=True)", True),
        ("nn.Module()", True),
        ("nn.SiLU", False),
        ("os.system('x')", False),
        ("nn.functional.silu(1)", False),
        ("nn.LeakyReLU(__import__('os'))", False),
        ("nn.LeakyReLU(**{'a': 1})", False),
        ("torch.load('x.pt')", False),
        ("nn.ReLU() or exec('1')", False),
        (5, False),
    ],
)
def test_activation_rule(act, ok):
    from yolobn.io.yamlmodel import literal_nn_call

    assert literal_nn_call(act) is ok


# --------------------------------------------------------------------------------------------------
# dataset yamls


@pytest.mark.parametrize("payload", [evil_data_yaml, evil_bash_data_yaml], ids=["python", "bash"])
@pytest.mark.parametrize(
    "argv",
    [
        ["swap", "--impl", "reference", "--data", "{data}", "-o", "{out}"],
        ["recalibrate", "-o", "{out}/r.pt", "--data", "{data}"],
        ["prune", "-o", "{out}/p.pt", "--data", "{data}", "--report", "{out}/report"],
        ["finetune", "{demo}", "data={data}", "project={out}"],
    ],
    ids=["swap", "recalibrate", "prune", "finetune"],
)
def test_dataset_download_script_never_runs(argv, payload, tmp_path, marker, capsys):
    data = payload(tmp_path, marker)
    out = tmp_path / "out"
    code, err = run_cli([a.format(data=data, out=out, demo=yolobn.demo_model_path()) for a in argv], capsys)
    assert code == 2, err
    line = one_line(err)
    assert "not on disk" in line and "script" in line and "--trust" in line
    assert not marker.exists()
    assert not out.exists()


def test_dataset_script_in_an_experiment_file(tmp_path, marker, capsys):
    data = evil_data_yaml(tmp_path, marker)
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"data: {data}\nvariants: [reference]\n")
    code, err = run_cli(["experiment", str(exp), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "script" in one_line(err)
    assert not marker.exists()


def test_dataset_script_never_runs_from_the_api(tmp_path, marker, demo_model_loaded):
    data = evil_data_yaml(tmp_path, marker)
    with pytest.raises(YolobnError, match="never runs"):
        yolobn.validate(demo_model_loaded, str(data))
    from yolobn.evaluate.validation import baseline

    with pytest.raises(YolobnError, match="never runs"):
        baseline(demo_model_loaded, str(data), imgsz=160, batch=16, device="cpu")
    assert not marker.exists()


def test_trusted_dataset_script_does_run(tmp_path, marker):
    """The control: with trust=True Ultralytics runs the script (then finds no images)."""
    from yolobn.io.datasets import resolve_data

    data = evil_data_yaml(tmp_path, marker)
    path = resolve_data(str(data), trust=True)
    from ultralytics.data.utils import check_det_dataset

    with contextlib.suppress(Exception):  # only whether the script ran matters here
        check_det_dataset(path)
    assert marker.exists()


def test_validator_gets_a_copy_without_the_script(tmp_path, demo_model_loaded):
    """A dataset whose images are present: the validator is given a copy without 'download:'."""
    import yaml

    from yolobn.io.datasets import resolve_data

    shapes = Path(resolve_data("shapes"))
    doc = yaml.safe_load(shapes.read_text())
    doc["path"] = str(shapes.parent)
    doc["download"] = "import os; os.system('false')"
    p = tmp_path / "data.yaml"
    p.write_text(yaml.safe_dump(doc))
    safe = Path(resolve_data(str(p)))
    assert safe != p
    got = yaml.safe_load(safe.read_text())
    assert "download" not in got
    assert got["path"] == str(shapes.parent.resolve()) and got["val"] == doc["val"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("val: [\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("train: a\nnames: [x]\n", "no 'val'"),
        ("train: a\nval: 5\nnames: [x]\n", "'val' must be"),
        ("train: a\nval: b\nnames: 5\n", "'names' must be"),
        ("train: a\nval: b\nnames: {0: a, x: b}\n", "class indices"),
        ("train: a\nval: b\n", "needs 'names'"),
        ("path: [1]\ntrain: a\nval: b\nnames: [x]\n", "'path' must be"),
    ],
)
def test_malformed_dataset_yaml_is_one_line(text, message, tmp_path, capsys):
    p = tmp_path / "d.yaml"
    p.write_text(text)
    code, err = run_cli(["swap", "--impl", "reference", "--data", str(p), "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    assert message in one_line(err)


# --------------------------------------------------------------------------------------------------
# experiment files


def test_experiment_file_cannot_grant_trust(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("trust: true\nvariants: [reference]\n")
    code, err = run_cli(["experiment", str(exp)], capsys)
    assert code == 2 and "--trust" in one_line(err)


def test_experiment_custom_impl_needs_trust(tmp_path, marker, capsys):
    impl = tmp_path / "bn.py"
    impl.write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nimport torch\nMyBN = torch.nn.Identity\n"
    )
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"variants: ['{impl}:MyBN']\n")
    code, err = run_cli(["experiment", str(exp), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "--trust" in one_line(err)
    assert not marker.exists()
