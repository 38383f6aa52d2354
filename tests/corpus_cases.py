"""The named bad inputs of issue 9 as command lines (see tests/corpus.py for the contract)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tests.corpus import (
    BUS_JPG,
    MARKER_NAME,
    OUT,
    ExecPayload,
    TouchPayload,
    bn_named,
    demo_ckpt,
    demo_path,
    edit_ckpt,
    huge_png,
    pickle_record,
    raw_pickles,
    replace_record,
    save,
    tiny_png,
    torch_zip,
)

# --------------------------------------------------------------------------------------------------
# named cases: one command line each


@dataclass(frozen=True)
class Case:
    """``build(folder)`` writes the inputs into ``folder`` and returns the argv to run there."""

    name: str
    build: Callable[[Path], list[str]]
    words: tuple[str, ...]
    code: int = 2
    once: str = ""  # text the error line holds at most once (a path printed twice is noise)


def _model_case(
    name: str, make: Callable[[Path], object], words: tuple[str, ...], cmd: str = "inspect"
) -> Case:
    def build(d: Path) -> list[str]:
        make(d / f"{name}.pt")
        if cmd == "inspect":
            return ["inspect", f"{name}.pt", *OUT]
        tiny_png(d / "img.png", 64)
        return [cmd, f"{name}.pt", "--images", "img.png", *OUT]

    return Case(name, build, words)


def set_bn(name: str, attr: str, value: Any) -> Callable[[dict], None]:
    def edit(ck: dict) -> None:
        bn = bn_named(ck, name)
        for store in ("_parameters", "_buffers"):
            if attr in getattr(bn, store):
                getattr(bn, store)[attr] = value
                return
        bn.__dict__[attr] = value

    return edit


def _del_bn(name: str, attr: str) -> Callable[[dict], None]:
    def edit(ck: dict) -> None:
        bn = bn_named(ck, name)
        for store in (bn._parameters, bn._buffers, bn.__dict__):
            store.pop(attr, None)

    return edit


def set_path(path: str, value: Any) -> Callable[[dict], None]:
    """Set ``ck[a][b]...`` (dict keys) or module attributes along a dotted path: 'model.names'."""

    def edit(ck: dict) -> None:
        *head, last = path.split(".")
        obj: Any = ck
        for part in head:
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
        if isinstance(obj, dict):
            obj[last] = value
        elif isinstance(obj, nn.Module) and last in obj._modules:
            obj._modules[last] = value
        else:
            obj.__dict__[last] = value

    return edit


def _imgsz(value: Any) -> Callable[[dict], None]:
    def edit(ck: dict) -> None:
        ck["train_args"]["imgsz"] = value

    return edit


def _shadow(ck: dict) -> None:
    bn_named(ck, _DEMO).__dict__["num_batches_tracked"] = "many"  # hides the registered buffer


def _cannot_run(ck: dict) -> None:
    """As a YOLOv12 saved by ultralytics 8.3.63 runs under 8.4: an attention block whose fused qkv
    conv is stored under another name (its forward then fails on self.qkv)."""
    attn = ck["model"].model[10].m[0].attn
    attn._modules["qk"] = attn._modules.pop("qkv")
    ck["version"] = "8.3.63"


def _bare_model(path: Path) -> None:
    torch.save(demo_ckpt()["model"], path)


def _pickle_bug(kind: str) -> Callable[[Path], Path]:
    """The demo checkpoint with its data.pkl damaged so that the unpickler itself fails."""

    def build(path: Path) -> Path:
        pkl = pickle_record(demo_path())
        bad = {
            "indexerror": pkl[:2] + b"a" + pkl[2:],  # APPEND to an empty stack
            "keyerror": pkl[:2] + b"h\xfe" + pkl[2:],  # BINGET of a memo slot never set
        }[kind]
        return replace_record(demo_path(), path, "data.pkl", bad)

    return build


def _payload_protocol(protocol: int) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        return save({"model": TouchPayload(path.parent / MARKER_NAME)}, path, pickle_protocol=protocol)

    return build


def _raw_payload(kind: str) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        return torch_zip(path, raw_pickles(path.parent / MARKER_NAME)[kind])

    return build


def _on_model(make: Callable[[Path], object], *argv: str) -> Callable[[Path], list[str]]:
    """A builder: ``make(folder / 'm.pt')``, then ``argv`` (which names m.pt)."""

    def build(d: Path) -> list[str]:
        make(d / "m.pt")
        return list(argv)

    return build


def _fifo(d: Path) -> list[str]:
    os.mkfifo(d / "pipe.pt")
    return ["inspect", "pipe.pt", *OUT]


def _experiment(text: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        (d / "exp.yaml").write_text(text)
        return ["experiment", "exp.yaml", "-o", "out"]

    return build


def _data_yaml(text: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        (d / "data.yaml").write_text(text)
        return ["swap", "--impl", "reference", "--data", "data.yaml", "-o", "out"]

    return build


def _argv(*argv: str, files: Callable[[Path], object] | None = None) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        if files is not None:
            files(d)
        return list(argv)

    return build


def _impl_exits(d: Path) -> list[str]:
    (d / "exits.py").write_text("import sys\nsys.exit(0)\n")
    return ["swap", "--impl", "exits.py:Norm", "-o", "out"]


def _image_as_output(d: Path) -> list[str]:
    tiny_png(d / "a.png", 64)
    return ["inspect", "--images", "a.png", "--csv", "a.png"]


def _experiment_as_output(d: Path) -> list[str]:
    (d / "results.csv").write_text("variants: [reference]\n")
    return ["experiment", "results.csv", "-o", "."]


def _folder_as_output(d: Path) -> list[str]:
    (d / "out" / "report.html").mkdir(parents=True)
    return ["report", "-o", "out"]


def _file_as_parent(d: Path) -> list[str]:
    (d / "a_file").write_text("x")
    return ["recalibrate", "-o", "a_file/x.pt", "--max-images", "4"]


_DEMO = "model.0.bn"
CASES: list[Case] = [
    # checkpoints that load but hold the wrong things
    _model_case("bn_wrong_length", edit_ckpt(set_bn(_DEMO, "running_var", torch.ones(3))), ("shape",)),
    _model_case(
        "bn_2d_weight", edit_ckpt(set_bn(_DEMO, "weight", nn.Parameter(torch.ones(16, 1)))), ("shape",)
    ),
    _model_case("bn_eps_string", edit_ckpt(set_bn("model.1.bn", "eps", "abc")), ("eps",)),
    _model_case("bn_eps_missing", edit_ckpt(_del_bn("model.2.cv1.bn", "eps")), ("'eps'",)),
    _model_case("bn_momentum_list", edit_ckpt(set_bn(_DEMO, "momentum", [0.03])), ("momentum",)),
    _model_case("bn_momentum_missing", edit_ckpt(_del_bn(_DEMO, "momentum")), ("'momentum'",)),
    _model_case(
        "bn_nbt_vector",
        edit_ckpt(set_bn(_DEMO, "num_batches_tracked", torch.arange(3))),
        ("num_batches_tracked",),
    ),
    _model_case("bn_no_weight", edit_ckpt(_del_bn(_DEMO, "weight")), ("'weight'",)),
    _model_case("bn_features_str", edit_ckpt(set_bn(_DEMO, "num_features", "16")), ("num_features",)),
    _model_case(
        "names_mixed_keys",
        edit_ckpt(set_path("model.names", {0: "rectangle", "one": "ellipse", 2: "x"})),
        ("names",),
    ),
    _model_case("names_int", edit_ckpt(set_path("model.names", 5)), ("names",)),
    _model_case("empty_layers", edit_ckpt(set_path("model.model", nn.Sequential())), ("no layers",)),
    _model_case("ema_tensor", edit_ckpt(set_path("ema", torch.zeros(3))), ("'ema'",)),
    _model_case("ema_string", edit_ckpt(set_path("ema", "ema")), ("'ema'",)),
    _model_case("stride_nan", edit_ckpt(set_path("model.stride", torch.tensor([float("nan")]))), ("stride",)),
    _model_case(
        "conv_kernel_str", edit_ckpt(set_path("model.model.0.conv.kernel_size", "3")), ("kernel_size",)
    ),
    _model_case(
        "module_slot_tensor",
        edit_ckpt(set_path("model.model.0.bn", torch.zeros(3))),
        ("not a module", "Tensor"),
    ),
    _model_case("bn_eps_huge_int", edit_ckpt(set_bn(_DEMO, "eps", 10**30)), ("eps",), cmd="activations"),
    _model_case("yaml_backbone_int", edit_ckpt(set_path("model.yaml.backbone", 5)), ("backbone",)),
    _model_case("attr_shadows_buffer", edit_ckpt(_shadow), ("stored twice",)),
    Case(
        "bn_nbt_missing_swap",
        _on_model(
            edit_ckpt(_del_bn(_DEMO, "num_batches_tracked")),
            "swap",
            "m.pt",
            "--images",
            str(BUS_JPG),
            "--impl",
            "reference",
            "-o",
            "out",
        ),
        ("num_batches_tracked",),
    ),
    # a damaged pickle stream inside a valid zip
    _model_case("pickle_indexerror", _pickle_bug("indexerror"), ("corrupt",)),
    _model_case("pickle_keyerror", _pickle_bug("keyerror"), ("corrupt",)),
    # code in disguise: refused, never run, and called what it is
    _model_case("payload_protocol0", _payload_protocol(0), ("run code outside the allow-list",)),
    _model_case("payload_protocol4", _payload_protocol(4), ("run code outside the allow-list",)),
    _model_case("payload_protocol5", _payload_protocol(5), ("run code outside the allow-list",)),
    _model_case(
        "payload_exec",
        lambda p: save({"model": ExecPayload(p.parent / MARKER_NAME)}, p),
        ("run code outside",),
    ),
    _model_case("payload_inst", _raw_payload("inst"), ("run code outside the allow-list",)),
    _model_case("payload_obj", _raw_payload("obj"), ("run code outside the allow-list",)),
    _model_case("payload_getattr_chain", _raw_payload("getattr_chain"), ("run code outside the allow-list",)),
    _model_case("bare_model", _bare_model, ("bare DetectionModel",)),
    Case("fifo", _fifo, ("not a regular file",)),
    # the checkpoint's training imgsz, used unchecked before
    _model_case("imgsz_40000", edit_ckpt(_imgsz(40000)), ("imgsz",), cmd="activations"),
    _model_case("imgsz_1e12", edit_ckpt(_imgsz(10**12)), ("imgsz",), cmd="activations"),
    _model_case("imgsz_word", edit_ckpt(_imgsz("big")), ("imgsz",), cmd="activations"),
    _model_case("imgsz_list", edit_ckpt(_imgsz(["x", {}])), ("imgsz",), cmd="activations"),
    Case(
        "imgsz_swap",
        _on_model(
            edit_ckpt(_imgsz("big")),
            "swap",
            "m.pt",
            "--images",
            str(BUS_JPG),
            "--impl",
            "reference",
            "-o",
            "out",
        ),
        ("imgsz",),
    ),
    # a model that loads but cannot run with the installed Ultralytics
    _model_case(
        "cannot_run_activations", edit_ckpt(_cannot_run), ("model.10.m.0.attn", "8.3.63"), cmd="activations"
    ),
    Case(
        "cannot_run_swap",
        _on_model(
            edit_ckpt(_cannot_run),
            "swap",
            "m.pt",
            "--images",
            str(BUS_JPG),
            "--impl",
            "reference",
            "-o",
            "out",
        ),
        ("model.10.m.0.attn",),
    ),
    Case(
        "cannot_run_recalibrate",
        _on_model(
            edit_ckpt(_cannot_run),
            "recalibrate",
            "m.pt",
            "--images",
            str(BUS_JPG),
            str(BUS_JPG.with_name("zidane.jpg")),
            "--batch",
            "2",
            "-o",
            "out.pt",
        ),
        ("model.10.m.0.attn",),
    ),
    Case(
        "cannot_run_inspect_warns",
        _on_model(edit_ckpt(_cannot_run), "inspect", "m.pt", "--top", "0"),
        ("cannot run here",),
        code=0,
    ),
    # images
    Case(
        "huge_png_only",
        _argv("activations", "--images", "huge.png", *OUT, files=lambda d: huge_png(d / "huge.png")),
        ("could be decoded",),
    ),
    Case(
        "huge_png_skipped",
        _argv(
            "activations",
            "--images",
            "huge.png",
            "ok.png",
            "--top",
            "0",
            files=lambda d: (huge_png(d / "huge.png"), tiny_png(d / "ok.png", 64)),
        ),
        ("could not be decoded and were skipped",),
        code=0,
    ),
    # swap's own option checks
    Case(
        "swap_device_word",
        _argv("swap", "--impl", "reference", "--device", "banana", "-o", "out"),
        ("device banana",),
    ),
    Case(
        "swap_device_gpu", _argv("swap", "--impl", "reference", "--device", "7", "-o", "out"), ("device 7",)
    ),
    Case("swap_batch_0", _argv("swap", "--impl", "reference", "--batch", "0", "-o", "out"), ("--batch",)),
    Case("swap_imgsz_10", _argv("swap", "--impl", "reference", "--imgsz", "10", "-o", "out"), ("--imgsz",)),
    Case("swap_max_images_0", _argv("swap", "--impl", "reference", "--max-images", "0"), ("--max-images",)),
    Case(
        "swap_impl_twice",
        _argv("swap", "--impl", "reference", "--impl", "reference", "-o", "out"),
        ("twice",),
    ),
    Case(
        "swap_impl_option_twice",
        _argv("swap", "--impl", "reference:eps=1e-5,eps=1e-4", "-o", "out"),
        ("twice",),
    ),
    Case("impl_sys_exit", _impl_exits, ("--impl", "SystemExit")),
    # experiment files with wrong types
    Case("exp_layers_int", _experiment("variants: [{impl: reference, layers: 5}]\n"), ("layers",)),
    Case("exp_imgsz_word", _experiment("imgsz: abc\nvariants: [reference]\n"), ("imgsz",)),
    Case("exp_imgsz_huge", _experiment("imgsz: 40000\nvariants: [reference]\n"), ("imgsz",)),
    Case("exp_batch_word", _experiment("batch: x\nvariants: [reference]\n"), ("batch",)),
    Case("exp_device_word", _experiment("device: banana\nvariants: [reference]\n"), ("device",)),
    Case("exp_device_list", _experiment("device: [0]\nvariants: [reference]\n"), ("device",)),
    Case("exp_name_int", _experiment("variants: [{impl: reference, name: 5}]\n"), ("name",)),
    Case("exp_impl_int", _experiment("variants: [{impl: 5}]\n"), ("impl",)),
    Case("exp_model_int", _experiment("model: 5\ndata: shapes\nvariants: [reference]\n"), ("model",)),
    Case("exp_data_list", _experiment("data: [a]\nvariants: [reference]\n"), ("data",)),
    Case(
        "exp_top_negative",
        _experiment("variants: [reference]\nsensitivity: {impl: reference, top: -1}\n"),
        ("top",),
    ),
    Case(
        "exp_same_name",
        _experiment("variants: [{impl: reference, name: a}, {impl: identity, name: a}]\n"),
        ("'a'",),
    ),
    Case("exp_same_variant", _experiment("variants: [reference, reference]\n"), ("also variant",)),
    Case(
        "exp_not_utf8",
        _argv(
            "experiment",
            "exp.yaml",
            "-o",
            "out",
            files=lambda d: (d / "exp.yaml").write_bytes(b"\xff\xfe\x00variants"),
        ),
        ("UTF-8",),
    ),
    # dataset yamls
    Case("data_malformed", _data_yaml("val: [images\n"), ("YAML",)),
    Case("data_no_val", _data_yaml("path: .\nnames: [a]\n"), ("val",)),
    Case("data_names_int", _data_yaml("path: .\nval: images\nnames: 5\n"), ("names",)),
    # outputs that cannot be written, or that would replace an input
    Case("recal_out_proc", _argv("recalibrate", "-o", "/proc/x.pt", "--max-images", "4"), ("-o",)),
    Case("recal_out_under_file", _file_as_parent, ("-o",)),
    Case(
        "recal_out_folder",
        _argv("recalibrate", "-o", "sub", files=lambda d: (d / "sub").mkdir()),
        ("folder",),
        once="sub",
    ),
    Case("inspect_csv_proc", _argv("inspect", "--csv", "/proc/x.csv"), ("--csv",)),
    Case("output_is_input_image", _image_as_output, ("input image",), once="a.png"),
    Case("output_is_experiment_file", _experiment_as_output, ("experiment file",), once="results.csv"),
    Case(
        "output_is_data_yaml",
        _argv(
            "recalibrate",
            "-o",
            "data.yaml",
            "--force",
            "--data",
            "data.yaml",
            files=lambda d: (d / "data.yaml").write_text("val: images\nnames: [a]\n"),
        ),
        ("dataset yaml",),
    ),
    Case("report_html_is_folder", _folder_as_output, ("report.html",), once="report.html"),
]
CASES_BY_NAME = {c.name: c for c in CASES}
