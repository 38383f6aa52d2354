"""The family (model yaml) of checkpoints that do not record it: old YOLOv8 files with
``depth_multiple``/``width_multiple`` in their yaml and no ``yaml_file``."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from rich.console import Console

import yolobn
from yolobn.io.family import infer_family, scaled_name

MODELS = Path(__import__("ultralytics").__file__).parent / "cfg" / "models"


def old_yolov8_cfg(name: str, depth: float, width: float) -> dict:
    """The yaml dict of ``name`` as an early YOLOv8 file carries it: multiples, no scales, no yaml_file."""
    from ultralytics.nn.tasks import yaml_model_load

    cfg = copy.deepcopy(yaml_model_load(name))
    for k in ("yaml_file", "scale", "scales"):
        cfg.pop(k, None)
    cfg["depth_multiple"], cfg["width_multiple"] = depth, width
    return cfg


def build(cfg: dict, cls: str = "DetectionModel") -> torch.nn.Module:
    from ultralytics.nn import tasks

    torch.manual_seed(0)
    model = getattr(tasks, cls)(copy.deepcopy(cfg), nc=cfg.get("nc", 80), verbose=False)
    assert "yaml_file" not in model.yaml and model.yaml["width_multiple"] == cfg["width_multiple"]
    return model.eval()


@pytest.fixture(scope="module")
def v8n():
    return build(old_yolov8_cfg("yolov8n.yaml", 0.33, 0.25))


def test_from_structure_and_scale(v8n):
    assert infer_family(v8n, None) == ("yolov8n.yaml", "structure")
    seg = build(old_yolov8_cfg("yolov8s-seg.yaml", 0.33, 0.50), "SegmentationModel")
    assert infer_family(seg, {"epochs": 3}) == ("yolov8s-seg.yaml", "structure")
    cls = build(old_yolov8_cfg("yolov8n-cls.yaml", 0.33, 0.25), "ClassificationModel")
    assert infer_family(cls, None) == ("yolov8n-cls.yaml", "structure")
    # The width tells the scale apart: the same layers at width 0.5 are an s.
    assert (
        infer_family(SimpleNamespace(yaml=old_yolov8_cfg("yolov8n.yaml", 0.33, 0.5)), None)[0]
        == "yolov8s.yaml"
    )


def test_old_large_yamls_wrote_their_capped_channels():
    # Early yolov8l.yaml wrote 512 where the shipped yolov8.yaml writes 1024 capped by max_channels 512.
    cfg = old_yolov8_cfg("yolov8l.yaml", 1.0, 1.0)
    for layer in cfg["backbone"] + cfg["head"]:
        if layer[3] and layer[3][0] == 1024:
            layer[3][0] = 512
    assert infer_family(SimpleNamespace(yaml=cfg), None) == ("yolov8l.yaml", "structure")


@pytest.mark.parametrize(
    "model_arg",
    ["yolov8n.pt", "yolov8n.yaml", "/home/me/weights/yolov8n.pt", "C:\\Users\\me\\yolov8n.pt"],
)
def test_from_train_args(v8n, model_arg):
    assert infer_family(v8n, {"model": model_arg}) == ("yolov8n.yaml", "train_args.model")
    # the namespace some old releases saved as train_args
    assert infer_family(v8n, SimpleNamespace(model=model_arg)) == ("yolov8n.yaml", "train_args.model")


def test_train_args_that_name_nothing_or_contradict_the_structure(v8n):
    assert infer_family(v8n, {"model": "runs/detect/train/weights/best.pt"}) == ("yolov8n.yaml", "structure")
    family, how = infer_family(v8n, {"model": "yolov8s.pt"})  # the layers are an n's
    assert family == "yolov8n.yaml" and how == "structure (train_args.model says yolov8s.yaml)"


def test_unknown_says_why():
    legacy = yolobn.load(Path(__file__).parent / "fixtures" / "legacy" / "ultralytics-8.3.0-tiny.pt").model
    cfg = copy.deepcopy(legacy.yaml)
    cfg.pop("yaml_file")
    family, how = infer_family(SimpleNamespace(yaml=cfg), {"model": "best.pt"})  # Detect on P3 only: custom
    assert family is None
    assert how == (
        "no yaml_file in the checkpoint, train_args.model is best.pt, and the structure matches no yaml "
        "Ultralytics ships"
    )
    # a custom yaml named in train_args is the yaml it was built from
    assert infer_family(SimpleNamespace(yaml=cfg), {"model": "cfg/my-v8.yaml"}) == (
        "my-v8.yaml",
        "train_args.model",
    )
    assert infer_family(torch.nn.Conv2d(1, 1, 1), None) == (None, "the model carries no yaml")
    # YOLO11-cls and YOLO26-cls (8.4 on) have the same yaml: the structure alone cannot tell them apart
    from ultralytics.nn.tasks import yaml_model_load

    cls = copy.deepcopy(yaml_model_load("yolo11n-cls.yaml"))
    cls.pop("yaml_file")
    if (MODELS / "26" / "yolo26-cls.yaml").is_file():
        assert infer_family(SimpleNamespace(yaml=cls), None) == (
            None,
            "the structure matches 2 shipped yamls: yolo11n-cls.yaml, yolo26n-cls.yaml",
        )
    else:  # 8.3: the only match
        assert infer_family(SimpleNamespace(yaml=cls), None) == ("yolo11n-cls.yaml", "structure")
    assert infer_family(SimpleNamespace(yaml=cls), {"model": "yolo11n-cls.pt"}) == (
        "yolo11n-cls.yaml",
        "train_args.model",
    )


def test_recorded_yaml_file_wins():
    cfg = old_yolov8_cfg("yolov8n.yaml", 0.33, 0.25)
    cfg["yaml_file"] = "somewhere/yolov8n-custom.yaml"
    assert infer_family(SimpleNamespace(yaml=cfg), {"model": "yolov8s.pt"}) == (
        "yolov8n-custom.yaml",
        "yaml_file",
    )


def test_scaled_names_are_the_ones_ultralytics_resolves():
    # Every shipped yaml at every scale: the name we give resolves back to that yaml at that scale.
    from ultralytics.nn.tasks import guess_model_scale, yaml_model_load

    checked = 0
    for path in sorted(MODELS.rglob("*.yaml")):
        d = yaml.safe_load(path.read_text())
        scales = d.get("scales") or {}
        if len(scales) < 2:
            continue
        for s in scales:
            name = scaled_name(path.name, s)
            assert re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name) == path.name, name
            assert guess_model_scale(name) == s, name
            assert yaml_model_load(name)["backbone"] == d["backbone"], name
            checked += 1
    assert checked > 100  # 125 in 8.3.0, more than 150 in 8.4


def test_loader_fills_the_family_of_an_old_checkpoint(v8n, tmp_path, capsys):
    from yolobn.report.console import summary_panel

    path = tmp_path / "old.pt"
    torch.save({"model": copy.deepcopy(v8n).half(), "ema": None, "train_args": {"model": "yolov8n.pt"}}, path)
    meta = yolobn.load(path).meta
    assert (meta.family, meta.family_source) == ("yolov8n.yaml", "train_args.model")
    torch.save({"model": copy.deepcopy(v8n).half(), "ema": None, "train_args": {"epochs": 1}}, path)
    result = yolobn.inspect(path)
    assert (result.meta.family, result.meta.family_source) == ("yolov8n.yaml", "structure")
    assert json.loads(result.to_json())["model"]["family_source"] == "structure"
    console = Console(width=200, record=True)
    console.print(summary_panel(result.meta.to_dict(), result.summary(), result.thresholds.to_dict()))
    assert "family        yolov8n.yaml (inferred from structure)" in console.export_text()
    # a recent checkpoint names its yaml: shown as is
    assert yolobn.load().meta.family_source == "yaml_file"
