"""Inputs other than the checkpoint (issue 9): images, the checkpoint's training imgsz on every
path that uses it, custom impl files, experiment files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.corpus import huge_png, tiny_png
from yolobn.core.errors import YolobnError
from yolobn.io.loader import LoadedModel


def test_every_ultralytics_image_format_is_collected(tmp_path):
    from ultralytics.data.utils import IMG_FORMATS

    from yolobn.io.images import collect_images

    for i, suffix in enumerate(sorted(IMG_FORMATS)):
        (tmp_path / f"a{i}.{suffix}").write_bytes(b"x")
        (tmp_path / f"B{i}.{suffix.upper()}").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    found = collect_images([str(tmp_path)])
    assert len(found) == 2 * len(IMG_FORMATS)
    assert {p.suffix.lower().lstrip(".") for p in found} == set(IMG_FORMATS)
    one = next(p for p in found if p.suffix.lower() == (".heic" if "heic" in IMG_FORMATS else ".webp"))
    assert collect_images([str(one)]) == [one]  # also named one by one (heic: 8.4 only)


def test_an_image_too_large_to_decode_is_skipped(tmp_path):
    from yolobn.io.images import iter_batches

    huge = huge_png(tmp_path / "huge.png")
    ok = tiny_png(tmp_path / "ok.png", 64)
    skipped: list[Path] = []
    batches = list(iter_batches([huge, ok], 64, batch=4, skipped=skipped))
    assert skipped == [huge]
    assert [names for _, names in batches] == [[ok]]
    with pytest.raises(YolobnError, match="cannot be decoded"):
        list(iter_batches([huge], 64))


@pytest.fixture
def bad_imgsz(demo_model_loaded):
    """The demo model as if its checkpoint said train_args.imgsz = 40000 (a copy of the metadata)."""
    meta = dataclasses.replace(demo_model_loaded.meta, train_args={"imgsz": 40000})
    return LoadedModel(demo_model_loaded.model, meta)


@pytest.mark.parametrize("path", ["observe", "recalibrate", "validate", "baseline", "variants"])
def test_the_checkpoint_imgsz_is_checked_on_every_path(path, bad_imgsz, tmp_path):
    img = tiny_png(tmp_path / "a.png", 64)
    if path == "observe":
        from yolobn.run.observation import observe

        run = lambda: observe(bad_imgsz, [str(img)])  # noqa: E731
    elif path == "recalibrate":
        from yolobn.run.recalibration import recalibrate

        run = lambda: recalibrate(bad_imgsz, [str(img), str(img)], batch=2)  # noqa: E731
    elif path == "validate":
        from yolobn.evaluate.validation import validate

        run = lambda: validate(bad_imgsz, "shapes")  # noqa: E731
    elif path == "baseline":
        from yolobn.evaluate.validation import baseline

        run = lambda: baseline(bad_imgsz, "shapes", imgsz=None, batch=16, device="cpu")  # noqa: E731
    else:
        from yolobn.io.images import model_imgsz

        run = lambda: model_imgsz(bad_imgsz)  # noqa: E731  (what swap and experiment call first)
    with pytest.raises(YolobnError, match="imgsz 40000.*between 32 and 4096"):
        run()


@pytest.mark.parametrize(
    "value",
    [40000, 10**12, "big", ["x"], [10**12], [640, "x"], [320, 10**9], 3.5, True, float("nan"), {"a": 1}],
)
def test_bad_checkpoint_imgsz_values(value, demo_model_loaded):
    from yolobn.io.images import model_imgsz

    meta = dataclasses.replace(demo_model_loaded.meta, train_args={"imgsz": value})
    with pytest.raises(YolobnError, match="imgsz"):
        model_imgsz(LoadedModel(demo_model_loaded.model, meta))
    assert model_imgsz(LoadedModel(demo_model_loaded.model, meta), 320) == 320  # --imgsz wins


def test_a_list_imgsz_from_the_checkpoint_is_kept(tmp_path):
    from tests.corpus import demo_ckpt, save
    from yolobn.io.images import model_imgsz
    from yolobn.io.loader import load

    ck = demo_ckpt()
    ck["train_args"]["imgsz"] = [320, 256]  # Ultralytics accepts [h, w]
    lm = load(save(ck, tmp_path / "m.pt"))
    assert lm.meta.train_args["imgsz"] == [320, 256] and model_imgsz(lm) == 320


@pytest.mark.parametrize("spec", ["recalibrated:imgsz=100000", "recalibrated:imgsz=31", "ablate:imgsz=4097"])
def test_an_impl_imgsz_is_bounded_like_imgsz(spec):
    from yolobn.core.registry import parse_impl

    with pytest.raises(YolobnError, match="imgsz.*between 32 and 4096"):
        parse_impl(spec)


def test_a_custom_impl_that_exits_at_import_is_an_import_error(tmp_path):
    from yolobn.edit.impls import parse as parse_impl

    f = tmp_path / "exits.py"
    f.write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(YolobnError, match=r"cannot import .*exits.py \(SystemExit: 0\)"):
        parse_impl(f"{f}:Norm")


def test_ctrl_c_during_a_custom_impl_import_still_interrupts(tmp_path):
    from yolobn.edit.impls import parse as parse_impl

    f = tmp_path / "interrupted.py"
    f.write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        parse_impl(f"{f}:Norm")


@pytest.mark.parametrize(
    "text, words",
    [
        ("variants: [{impl: reference, layers: 5}]", "variant 1: layers: expected a list"),
        ("imgsz: abc\nvariants: [reference]", "imgsz: expected a whole number, got 'abc'"),
        ("imgsz: 10\nvariants: [reference]", "imgsz: 10 must be from 32 to 4096"),
        ("batch: 0\nvariants: [reference]", "batch: 0 must be from 1 to 1024"),
        ("device: [0]\nvariants: [reference]", "device [0]"),
        ("device: banana\nvariants: [reference]", "device banana: unknown device"),
        ("model: 5\ndata: shapes\nvariants: [reference]", "model: expected a non-empty string, got 5"),
        ("data: {a: 1}\nvariants: [reference]", "data: expected a non-empty string"),
        ("variants: [{impl: reference, name: [a]}]", "variant 1: name"),
        ("variants: [reference]\nsensitivity: {impl: reference, top: -1}", "top: -1 must be at least 1"),
        ("variants: [reference]\nsensitivity: {impl: reference, layers: {}}", "sensitivity: layers"),
        ("variants: [{impl: reference, name: x}, {impl: identity, name: x}]", "'x' is also variant 1"),
        ("variants: [identity, {impl: identity}]", "variant 2: 'identity' is also variant 1"),
    ],
)
def test_experiment_file_values_are_checked(text, words, tmp_path):
    from yolobn.sweeps.experiment import read_config

    f = tmp_path / "e.yaml"
    f.write_text(text + "\n")
    with pytest.raises(YolobnError) as ei:
        read_config(f)
    assert words in str(ei.value) and str(f) in str(ei.value)


def test_a_good_experiment_file_reads_as_before(tmp_path):
    from yolobn.sweeps.experiment import read_config

    f = tmp_path / "e.yaml"
    f.write_text(
        "data: shapes\nimgsz: 160\nbatch: 8\ndevice: cpu\nvariants:\n  - reference\n"
        "  - {impl: identity, layers: head, name: no-head}\nsensitivity: {impl: reference, top: 3}\n"
    )
    cfg = read_config(f)
    assert cfg["imgsz"] == 160 and cfg["batch"] == 8 and cfg["device"] == "cpu"
    assert cfg["variants"] == [
        {"impl": "reference"},
        {"impl": "identity", "layers": ["head"], "name": "no-head"},
    ]
    assert cfg["sensitivity"] == {"impl": "reference", "top": 3}
