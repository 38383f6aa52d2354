"""``yolobn prune`` and ``yolobn finetune`` on the demo end to end: the checkpoint plain Ultralytics
loads, validates and exports (in a process that never imports yolobn), the report, the fine-tune
that keeps the widths (slow: they share one prune of the demo), the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import yolobn
from tests.corpus import sha256
from tests.run_main import run_main


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """The demo pruned at 5% (observed ranking, 16 images observed, validated on shapes)."""
    d = tmp_path_factory.mktemp("prune")
    demo_sha = sha256(yolobn.demo_model_path())
    from yolobn.cli import main

    code = main(
        [
            "prune",
            "-o",
            str(d / "pruned.pt"),
            "--share",
            "5",
            "--data",
            "shapes",
            "--max-images",
            "16",
            "--report",
            str(d / "report"),
            "-q",
        ]
    )
    assert code == 0
    assert sha256(yolobn.demo_model_path()) == demo_sha  # the input is never changed
    return d


@pytest.mark.slow  # the module's prune of the demo takes about a minute here
def test_checkpoint_and_report(pruned):
    doc = json.loads((pruned / "report" / "prune.json").read_text())
    s = doc["summary"]
    assert s["channels_removed"] == 384 and s["channels_total"] == 7688  # floor(5% of 7688)
    m = s["metrics"]
    assert (
        m["pruned"] > m["baseline"] - 0.02 and abs(m["pruned"] - m["ablated"]) < 0.002
    )  # removal ~ ablation
    assert s["border_residual"]["interior_max"] < 1e-4 < s["border_residual"]["border_max"]
    loaded = yolobn.load(pruned / "pruned.pt")  # yolobn's own safe loader accepts it
    assert loaded.meta.n_params == s["cost"]["params"]["after"] < s["cost"]["params"]["before"]
    import pickletools

    from tests.corpus import pickle_record

    refs = {
        str(a) for op, a, _ in pickletools.genops(pickle_record(pruned / "pruned.pt")) if op.name == "GLOBAL"
    }
    modules = {r.split()[0].split(".")[0] for r in refs}
    assert (
        modules
        and "yolobn" not in modules
        and modules <= {"ultralytics", "torch", "collections", "__builtin__"}
    )
    ck = torch.load(pruned / "pruned.pt", weights_only=False)
    assert ck["yolobn"]["prune"]["channels_removed"] == 384 and "train_metrics" not in ck
    assert ck["model"].model[-1].cv2[0][0].conv.weight.dtype == torch.float16  # stored as the input was
    layers = (pruned / "report" / "layers.csv").read_text().splitlines()
    assert layers[0].startswith("name,role,block,channels,prunable,removed") and len(layers) == 82
    html = (pruned / "report" / "prune.html").read_text()
    assert 'id="plot-layers"' in html and "border residual" in html
    (v,) = doc["verdicts"]  # the answer, with the fine-tune command when the drop exceeds 0.005
    drop = m["baseline"] - m["pruned"]
    assert v["key"] == "pruned" and v["status"] == ("ok" if drop <= 0.005 else "act")
    assert v["status"] == "ok" or v["next"] == f"yolobn finetune {pruned / 'pruned.pt'} data=shapes epochs=30"


@pytest.mark.slow  # the module's prune of the demo takes about a minute here
def test_plain_ultralytics_loads_validates_and_exports(pruned):
    """A fresh interpreter, no yolobn: YOLO(path) loads the pruned file, validates it (Ultralytics
    fuses the BatchNorms, folded running means included) and exports it to ONNX, whose outputs match
    PyTorch's."""
    pytest.importorskip("onnxruntime")
    from yolobn.data.synth import shapes_dataset

    doc = json.loads((pruned / "report" / "prune.json").read_text())
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, onnxruntime as ort, torch
        from ultralytics import YOLO
        m = YOLO({str(pruned / "pruned.pt")!r})
        params = sum(p.numel() for p in m.model.parameters())
        r = m.val(data={str(shapes_dataset())!r}, imgsz=160, batch=16, workers=0, plots=False, verbose=False,
                  project={str(pruned / "runs")!r})
        onnx = YOLO({str(pruned / "pruned.pt")!r}).export(format="onnx", imgsz=160)
        net = YOLO({str(pruned / "pruned.pt")!r}).model.float().eval()
        x = torch.rand(1, 3, 160, 160)
        with torch.no_grad():
            ref = net(x)[0].numpy()
        got = ort.InferenceSession(onnx).run(None, {{"images": x.numpy()}})[0]
        print(json.dumps({{"yolobn": [k for k in sys.modules if k.startswith("yolobn")], "params": params,
                          "map": r.box.map, "onnx_max": float(np.abs(got - ref).max()),
                          "scale": float(np.abs(ref).max()), "shape": list(got.shape)}}))
    """)
    p = subprocess.run(
        [sys.executable, "-c", script],
        cwd=pruned,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["yolobn"] == []
    assert got["params"] == doc["summary"]["cost"]["params"]["after"]
    assert (
        abs(got["map"] - doc["summary"]["metrics"]["pruned"]) < 0.005
    )  # fused, fp16 weights: the same model
    assert (
        got["shape"] == [1, 7, 525] and got["onnx_max"] <= 1e-4 * got["scale"]
    )  # 4 box + 3 classes, 3 levels


@pytest.mark.slow  # the module's prune of the demo takes about a minute here
def test_ultralytics_train_would_rebuild_the_old_widths(pruned):
    """Why finetune exists: the trainer's get_model(cfg=model.yaml, weights=model) builds the yaml's
    widths and copies only what still fits."""
    from ultralytics.nn.tasks import DetectionModel

    net = yolobn.load(pruned / "pruned.pt").model
    rebuilt = DetectionModel(net.yaml, nc=3, verbose=False)
    rebuilt.load(net, verbose=False)
    n = sum(p.numel() for p in rebuilt.parameters())
    assert n == yolobn.load().meta.n_params != sum(p.numel() for p in net.parameters())


@pytest.mark.slow  # the module's prune of the demo takes about a minute here
def test_finetune_keeps_the_pruned_widths(pruned):
    r = yolobn.finetune(
        pruned / "pruned.pt",
        "shapes",
        epochs=1,
        imgsz=160,
        batch=16,
        workers=0,
        plots=False,
        project=str(pruned / "runs"),
        name="ft",
        exist_ok=True,
    )
    before = yolobn.load(pruned / "pruned.pt").model
    for f in (r.last, r.best):
        after = yolobn.load(f)
        assert after.meta.n_params == r.params == sum(p.numel() for p in before.parameters())
    w0 = before.model[0].conv.weight
    w1 = yolobn.load(r.last).model.model[0].conv.weight
    assert w0.shape == w1.shape and not torch.allclose(w0, w1)  # it trained: same widths, new weights


def test_finetune_arguments_are_checked():
    from yolobn.integrations.finetune import parse_train_args

    assert parse_train_args(["epochs=3", "lr0=1e-3", "cos_lr", "name=a b", "device=cpu"]) == {
        "epochs": 3,
        "lr0": 0.001,
        "cos_lr": True,
        "name": "a b",
        "device": "cpu",
    }
    assert parse_train_args(["project=__import__('os').system('x')"])["project"].startswith(
        "__import__"
    )  # text
    for bad, words in (
        (["epochz=3"], "did you mean epochs"),
        (["model=x.pt"], "first argument"),
        (["resume=True"], "resuming"),
        (["epochs"], "needs a value"),
    ):
        with pytest.raises(yolobn.YolobnError, match=words):
            parse_train_args(bad)
    with pytest.raises(yolobn.YolobnError, match="one device at a time"):
        yolobn.finetune("any.pt", "shapes", device="0,1")  # refused before anything is read


@pytest.mark.parametrize(
    "argv,words",
    [
        (["prune", "-o", "{demo}", "--share", "5"], "input"),
        (["prune", "-o", "{exists}", "--share", "5"], "exists"),
        (["prune", "-o", "{out}", "--share", "100"], "at most"),
        (["prune", "{exists}", "-o", "{out}"], "--data is needed"),  # not the demo: no default dataset
        (["prune", "-o", "{report}/prune.json", "--share", "5", "--report", "{report}"], "same file as"),
        (["prune", "-o", "{out}", "--share", "5", "--report", "{exists}"], "not a folder"),
        (
            ["prune", "-o", "{tmp}/img.png", "--force", "--share", "5", "--images", "{tmp}/img.png"],
            "an input image",
        ),
        (["prune", "-o", "{out}", "--share", "5", "--tolerance", "0.01"], "not allowed with"),
        (["finetune", "{model}", "epochs=1"], "data= is required"),
        (
            ["finetune", "{tmp}/run/weights/last.pt", "data=shapes", "project={tmp}", "name=run", "exist_ok"],
            "the input checkpoint",
        ),  # the trainer's last.pt would replace the model being trained
    ],
)
def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys, argv, words):
    (tmp_path / "exists.pt").write_bytes(b"x")
    model = tmp_path / "m.pt"
    model.write_bytes(yolobn.demo_model_path().read_bytes())
    (tmp_path / "run" / "weights").mkdir(parents=True)
    (tmp_path / "run" / "weights" / "last.pt").write_bytes(model.read_bytes())
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    fill = {
        "demo": str(yolobn.demo_model_path()),
        "exists": str(tmp_path / "exists.pt"),
        "out": str(tmp_path / "out.pt"),
        "model": str(model),
        "report": str(tmp_path / "rep"),
        "tmp": str(tmp_path),
    }
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = run_main([a.format(**fill) for a in argv], capsys)
    assert code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
