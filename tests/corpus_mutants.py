"""Seeded mutants of a checkpoint: damage to what it holds, to its bytes, and planted payloads
(see tests/corpus.py for the contract each must keep)."""

from __future__ import annotations

import copy
import io
import math
import random
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tests.corpus import (
    MARKER_NAME,
    OUT,
    ExecPayload,
    TouchPayload,
    batchnorms,
    data_offset,
    demo_bytes,
    raw_pickles,
    save,
    tiny_bytes,
    tiny_png,
    torch_zip,
)
from tests.corpus_cases import set_bn, set_path

# --------------------------------------------------------------------------------------------------
# seeded mutants


@dataclass(frozen=True)
class Mutant:
    """``build(folder)`` writes the damaged file (and an image) and returns the argv to run."""

    name: str
    build: Callable[[Path], list[str]]
    payload: bool = False


def _weird(rng: random.Random, n: int) -> Any:
    """A value of the wrong type, shape or range for a BN slot of ``n`` channels."""
    choices = [
        None,
        "abc",
        "",
        5,
        -1,
        0,
        1.5,
        -0.5,
        math.nan,
        math.inf,
        True,
        [],
        [1, 2],
        {},
        {"a": 1},
        (1,),
        10**30,
        b"raw",
        torch.zeros(0),
        torch.zeros(max(n - 1, 0)),
        torch.zeros(n + 1),
        torch.zeros(n, 1),
        torch.zeros(2, n),
        torch.tensor(1.0),
        torch.arange(n),
        torch.ones(n, dtype=torch.bool),
        torch.full((n,), math.nan),
        torch.full((n,), -math.inf),
        torch.zeros(n, dtype=torch.float64),
        nn.Parameter(torch.ones(n + 2)),
        nn.Identity(),
    ]
    return rng.choice(choices)


_BN_ATTRS = (
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "eps",
    "momentum",
    "num_features",
    "affine",
    "track_running_stats",
)
_CONV_ATTRS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "weight",
)
_MODEL_ATTRS = ("names", "stride", "yaml", "task", "args", "model", "save", "inplace", "end2end")
_CKPT_KEYS = (
    "model",
    "ema",
    "train_args",
    "train_metrics",
    "version",
    "date",
    "yolobn",
    "epoch",
    "optimizer",
)


def _mutate_object(rng: random.Random, ck: dict) -> str:
    """One edit of what the checkpoint holds; returns its description."""
    model = ck["model"]
    op = rng.choice(["bn", "bn", "bn", "bn_del", "conv", "model", "model_del", "ckpt", "imgsz", "slot"])
    if op in ("bn", "bn_del"):
        name, bn = rng.choice(batchnorms(model))
        attr = rng.choice(_BN_ATTRS)
        if op == "bn_del":
            for store in (bn._parameters, bn._buffers, bn.__dict__):
                store.pop(attr, None)
            return f"del {name}.{attr}"
        value = _weird(rng, bn.num_features)
        set_bn(name, attr, value)(ck)
        return f"{name}.{attr} = {_describe(value)}"
    if op == "conv":
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        name, conv = rng.choice(convs)
        attr = rng.choice(_CONV_ATTRS)
        value = _weird(rng, conv.out_channels)
        if attr == "weight":
            conv._parameters["weight"] = value
        else:
            conv.__dict__[attr] = value
        return f"{name}.{attr} = {_describe(value)}"
    if op in ("model", "model_del"):
        attr = rng.choice(_MODEL_ATTRS)
        if op == "model_del":
            model._modules.pop(attr, None)
            model.__dict__.pop(attr, None)
            return f"del model.{attr}"
        value = rng.choice(
            [
                _weird(rng, 3),
                {0: "a", "1": "b"},
                {0: "a", "x": "b"},
                {1: "a"},
                ["a", 2],
                nn.Sequential(),
                nn.ModuleList(),
                {"backbone": 5},
                {"yaml_file": 5},
                "detect",
                "nonsense",
            ]
        )
        set_path(f"model.{attr}", value)(ck)
        return f"model.{attr} = {_describe(value)}"
    if op == "ckpt":
        key = rng.choice(_CKPT_KEYS)
        value = rng.choice(
            [
                _weird(rng, 3),
                copy.deepcopy(model),
                {"imgsz": 160},
                {"recalibration": [1]},
                {"recalibration": {"images": {"a": [1, {}]}}},
                "x" * 10000,
            ]
        )
        ck[key] = value
        return f"ckpt[{key!r}] = {_describe(value)}"
    if op == "imgsz":
        value = rng.choice(
            [
                40000,
                10**12,
                "big",
                [640, "x"],
                [],
                -1,
                0,
                31,
                4097,
                None,
                "640",
                3.5,
                True,
                math.nan,
                math.inf,
                {},
                10**30,
                [10**12],
                ["640"],
            ]
        )
        if not isinstance(ck.get("train_args"), dict):
            ck["train_args"] = {}
        ck["train_args"]["imgsz"] = value
        return f"train_args.imgsz = {_describe(value)}"
    # a module slot that holds something else (or a BN replaced by another layer)
    name, _ = rng.choice(batchnorms(model))
    parent, _, attr = name.rpartition(".")
    value = rng.choice(
        [torch.zeros(3), "bn", 5, nn.Identity(), nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1)]
    )
    dict(model.named_modules())[parent]._modules[attr] = value
    return f"{name} = {_describe(value)}"


def _describe(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}:{str(v.dtype).replace('torch.', '')}"
    if isinstance(v, nn.Module):
        return type(v).__name__
    text = repr(v)
    return text if len(text) <= 30 else text[:27] + "..."


def _mutate_bytes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Damage to the file itself: bit flips, truncation, zeroed or junk ranges, a damaged pickle."""
    b = bytearray(data)
    op = rng.choice(["flip", "flip", "flips", "truncate", "zero", "junk", "pickle", "pickle", "append"])
    if op in ("flip", "flips"):
        for _ in range(1 if op == "flip" else rng.randint(2, 16)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return op, bytes(b)
    if op == "truncate":
        return op, bytes(b[: rng.randrange(len(b))])
    if op in ("zero", "junk"):
        i, n = rng.randrange(len(b)), rng.randint(1, 4096)
        b[i : i + n] = bytes(n) if op == "zero" else rng.randbytes(len(b[i : i + n]))
        return op, bytes(b)
    if op == "append":
        return op, bytes(b) + rng.randbytes(rng.randint(1, 1024))
    # inside data.pkl: one opcode byte changed, removed or repeated (the unpickler's own errors)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
    start = data_offset(b, info)
    i = start + rng.randrange(info.file_size)
    how = rng.choice(["set", "dup"])
    if how == "set":
        b[i] = rng.choice(b"0aehqrstuR.()NX]}\x85\x86\x87\x94\x93\x95\x8c")
    else:
        b[i + 1 : i + 1] = bytes([b[i]])
        b = b[: start + info.file_size] + b[start + info.file_size + 1 :]  # keep the record's size
    return f"pickle-{how}", bytes(b)


def _mutate_payload(rng: random.Random, ck: dict, marker: Path) -> tuple[str, Any]:
    """A payload planted somewhere in the checkpoint (or a hand-written pickle): must never run."""
    payload = rng.choice([TouchPayload, ExecPayload])(marker)
    where = rng.choice(["top", "train_args", "names", "bn.eps", "yaml", "slot", "raw", "protocol"])
    if where == "raw":
        kind = rng.choice(["inst", "obj", "getattr_chain"])
        return f"raw {kind}", raw_pickles(marker)[kind]
    if where == "protocol":
        return "protocol", (ck, rng.choice([0, 1, 4, 5]), payload)
    if where == "top":
        ck[rng.choice(["payload", "model", "ema", "date"])] = payload
    elif where == "train_args":
        ck["train_args"]["imgsz"] = payload
    elif where == "names":
        ck["model"].names = {0: payload}
    elif where == "bn.eps":
        batchnorms(ck["model"])[0][1].__dict__["eps"] = payload
    elif where == "yaml":
        ck["model"].yaml["activation"] = payload
    else:
        ck["model"].model._modules["0"] = payload
    return f"payload in {where}", ck


def mutants(
    seed: int, n: int, base: str = "tiny", commands: tuple[str, ...] = ("inspect", "activations")
) -> Iterator[Mutant]:
    """``n`` seeded mutants of the ``base`` checkpoint (``tiny`` or ``demo``), each with a command
    (``inspect``, ``activations`` or ``swap``, picked at random among ``commands``)."""
    rng = random.Random(seed)
    clean = tiny_bytes() if base == "tiny" else demo_bytes()
    for i in range(n):
        kind = rng.choices(["object", "bytes", "payload"], weights=[60, 25, 15])[0]
        cmd = rng.choice(commands)
        strict = rng.random() < 0.2
        sub = random.Random(rng.getrandbits(64))
        yield Mutant(
            f"{i:04d}-{kind}", _mutant_builder(kind, sub, clean, base, cmd, strict), kind == "payload"
        )


def _mutant_builder(kind: str, rng: random.Random, clean: bytes, base: str, cmd: str, strict: bool):
    def build(d: Path) -> list[str]:
        path = d / "m.pt"
        if kind == "bytes":
            _, data = _mutate_bytes(rng, clean)
            path.write_bytes(data)
        else:
            ck = torch.load(io.BytesIO(clean), map_location="cpu", weights_only=False)
            if kind == "object":
                _mutate_object(rng, ck)
                save(ck, path)
            else:
                _, made = _mutate_payload(rng, ck, d / MARKER_NAME)
                if isinstance(made, bytes):
                    torch_zip(path, made)
                elif isinstance(made, tuple):
                    made[0]["payload"] = made[2]
                    save(made[0], path, pickle_protocol=made[1])
                else:
                    save(made, path)
        argv = [cmd, "m.pt", "-q", *OUT, *(["--strict"] if strict else [])]
        if cmd in ("activations", "swap"):
            tiny_png(d / "img.png", 64)
            argv += ["--images", "img.png", "--imgsz", "64"]
        if cmd == "swap":
            argv = [a for a in argv if a not in OUT] + ["--impl", "reference", "-o", "out"]
        return argv

    return build
