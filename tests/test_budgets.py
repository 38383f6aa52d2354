"""Budgets (issue 18, section 3): a small file cannot cost gigabytes or hang.

One test per row of the issue's table (tests/bombs.py builds each input, small), run through the
CLI in-process under an address-space cap (a regression fails here instead of taking the machine's
memory) with its peak resident memory measured, then the pieces: the yaml reader's expanded-node
count, model sizes on the meta device, class names, zip inflation, image headers, the dataset's
``val:`` that is a device, a pipe or a symlink loop, and model yamls nested in a layer row.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bombs import BOMBS, alias_bomb, deflated_png, inflating_checkpoint, paged_tiff, sparse_file
from tests.corpus import contract_broken, run_cli, tiny_png
from yolobn.core import limits
from yolobn.core.errors import CheckpointError, YolobnError

HEADROOM = 3 << 30  # the address-space cap above what the process maps already


def _status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (0 where there is none)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def budget() -> Iterator[dict[str, float]]:
    """Cap the address space at its current size + ``HEADROOM``, reset the peak resident size, and
    report how far the peak rose (``rise``, bytes) and the time taken (``seconds``)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to measure the peak memory")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _status("VmSize") + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start, t0 = _status("VmRSS"), time.perf_counter()
    out: dict[str, float] = {}
    try:
        yield out
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        out["rise"] = _status("VmHWM") - start
        out["seconds"] = time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# every row of the table, through the CLI


@pytest.mark.parametrize("bomb", BOMBS, ids=[b.name for b in BOMBS])
def test_small_inputs_end_in_one_line_within_budget(bomb, tmp_path):
    argv = bomb.build(tmp_path, False)
    with budget() as used:
        o = run_cli(argv, tmp_path, timeout=60)
    assert o.code is not None, f"{bomb.name}: still running after 60 s"
    assert used["seconds"] < 30, f"{bomb.name}: {used['seconds']:.0f} s"
    assert used["rise"] < 768 << 20, f"{bomb.name}: peak memory rose by {used['rise'] / 2**20:.0f} MB"
    if bomb.expect == "error":
        assert contract_broken(o) is None and o.code == 2, (bomb.name, o.code, o.err)
        assert any(w in o.err for w in bomb.words), o.err
    else:
        assert o.code == 0, (bomb.name, o.code, o.err)
        assert ("skipped" in o.err) == (bomb.expect == "skip"), o.err
        assert (tmp_path / "out.json").is_file()


def test_seeds_are_bounded_in_the_library_too():
    from yolobn.sweeps.frontier import frontier

    # under the cap: without the bound, the list of 10^9 runs takes all the machine's memory
    with budget(), pytest.raises(YolobnError, match="seeds 1000000000: must be a whole number from 1 to 100"):
        frontier(seeds=10**9)


# --------------------------------------------------------------------------------------------------
# the yaml reader


def test_aliases_are_counted_as_expanded(tmp_path):
    from yolobn.io.yamlfile import read_yaml

    # root(1) + key a(1) + [x, y](3) + key b(1) + [*a, *a, *a](1 + 3*3) = 16 nodes
    text = "a: &a [x, y]\nb: [*a, *a, *a]\n"
    import yaml

    from yolobn.io.yamlfile import check_events

    assert check_events(yaml.parse(text), "t") == 16
    (tmp_path / "ok.yaml").write_text(text)
    assert read_yaml(tmp_path / "ok.yaml", "ok")["b"] == [["x", "y"]] * 3
    (tmp_path / "bomb.yaml").write_text(alias_bomb(6, 9))  # 9^6 = 531,441 strings
    with pytest.raises(YolobnError, match="bomb: expands to more than 200,000 values"):
        read_yaml(tmp_path / "bomb.yaml", "bomb")
    (tmp_path / "fits.yaml").write_text(alias_bomb(5, 9))  # 9^5 = 59,049: within the budget
    assert len(read_yaml(tmp_path / "fits.yaml", "fits")["x4"]) == 9


def test_a_structure_that_contains_itself_is_refused(tmp_path):
    from yolobn.io.yamlfile import read_yaml

    (tmp_path / "loop.yaml").write_text("a: &a [1, *a]\n")
    with pytest.raises(YolobnError, match=r"loop: the alias \*a refers to a list or mapping it is inside"):
        read_yaml(tmp_path / "loop.yaml", "loop")


def test_depth_size_and_file_kind_are_checked_before_building(tmp_path):
    from yolobn.io.yamlfile import read_yaml

    deep = tmp_path / "deep.yaml"
    n = limits.MAX_YAML_DEPTH - 1  # lists inside the top-level mapping
    deep.write_text("a: " + "[" * n + "]" * n + "\n")
    assert read_yaml(deep, "deep")["a"] is not None  # at the limit
    deep.write_text("a: " + "[" * (n + 1) + "]" * (n + 1) + "\n")
    with pytest.raises(YolobnError, match=f"deep: nested more than {limits.MAX_YAML_DEPTH} levels deep"):
        read_yaml(deep, "deep")
    big = sparse_file(tmp_path / "big.yaml", limits.MAX_YAML_BYTES + 1)
    with pytest.raises(YolobnError, match="big: larger than 2 MB"):
        read_yaml(big, "big")
    with pytest.raises(YolobnError, match="zero: not a regular file"):
        read_yaml(Path("/dev/zero"), "zero")
    (tmp_path / "long.yaml").write_text("nc: " + "9" * 5000 + "\n")
    with pytest.raises(YolobnError, match="long: holds a number too long to read"):
        read_yaml(tmp_path / "long.yaml", "long")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(YolobnError, match="list: expected a mapping of keys, got a list"):
        read_yaml(tmp_path / "list.yaml", "list")


def test_model_yamls_are_read_by_yolobn_before_ultralytics(tmp_path, monkeypatch):
    """Ultralytics' own yaml reader never sees a model yaml on disk: yolobn's reader does."""
    import ultralytics.utils
    from ultralytics.nn import tasks

    from tests.bombs import MODEL_YAMLS
    from yolobn.io.yamlmodel import read_model_yaml

    def refuse(*a, **k):
        raise AssertionError("Ultralytics read the yaml")

    monkeypatch.setattr(tasks, "yaml_model_load", refuse)
    monkeypatch.setattr(ultralytics.utils.YAML, "load", refuse)
    (tmp_path / "yolo11n.yaml").write_text(alias_bomb(7) + (MODEL_YAMLS / "11" / "yolo11.yaml").read_text())
    with pytest.raises(CheckpointError, match="expands to more than"):
        read_model_yaml(str(tmp_path / "yolo11n.yaml"))
    cfg = read_model_yaml("yolo11s.yaml")  # shipped: found by name, read by yolobn, scale from the name
    assert cfg["scale"] == "s" and cfg["yaml_file"] == "yolo11s.yaml" and "backbone" in cfg


# --------------------------------------------------------------------------------------------------
# model size


def _tiny_cfg(**extra: object) -> dict:
    return {"nc": 2, "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": [], **extra}


def test_meta_size_counts_parameters_and_buffers_exactly():
    from yolobn.io.modelsize import meta_size

    params, acts = meta_size(_tiny_cfg(), "tiny", contextlib.nullcontext())
    # conv 3->16 3x3 (no bias) + BN: weight, bias, running_mean, running_var (16 each), num_batches_tracked
    assert params == 16 * 3 * 3 * 3 + 4 * 16 + 1
    assert acts == 16 * 128 * 128  # the one layer's output for a 256-pixel image, stride 2


@pytest.mark.parametrize(
    "change, words",
    [
        ({"nc": 10**8}, "'nc: 100000000' is not a class count"),
        ({"depth_multiple": 1e9}, "depth_multiple 1000000000.0 is not a multiplier"),
        ({"width_multiple": float("nan")}, "width_multiple nan is not a multiplier"),
        ({"activation": "nn.Linear(36000, 36000)"}, "1,296M parameters"),
        ({"backbone": [[-1, 100, "Conv", [16, 3, 2]]]}, "repeat its block 100 times"),
        (
            {"backbone": [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "nn.Upsample", [None, 2000, "nearest"]]]},
            "layer outputs",
        ),
        ({"channels": 10**6}, "'channels: 1000000' is not an input channel count"),
    ],
)
def test_model_size_is_checked_before_building(change, words):
    from yolobn.io.modelsize import check_model_size

    with pytest.raises(CheckpointError, match=words):
        check_model_size(_tiny_cfg(**change), "m.yaml", contextlib.nullcontext())


def test_a_failed_build_leaves_ultralytics_default_activation_alone(tmp_path):
    import yaml
    from ultralytics.nn.modules import Conv

    from yolobn.io.yamlmodel import build_from_yaml

    before = Conv.default_act
    bad = _tiny_cfg(activation="nn.ReLU()", head=[[-1, 1, "Conv", ["not a number"]]])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(CheckpointError, match="could not be built"):
        build_from_yaml(str(tmp_path / "bad.yaml"))
    assert Conv.default_act is before


def test_a_nested_model_is_checked_like_the_outer_one(tmp_path):
    """A row ``[-1, 1, DetectionModel, [{...}]]`` builds a whole model from the dict: its activation
    is checked by yolobn itself (Ultralytics' restricted build is a second lock, not the only one)."""
    from yolobn.io.yamlmodel import check_model_yaml

    payload = "__import__('os').system('touch pwned')"
    inner = {"nc": 2, "activation": payload, "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": []}
    cfg = _tiny_cfg(head=[[-1, 1, "DetectionModel", [inner]]])
    with pytest.raises(CheckpointError, match=r"head row 0 \(a nested model\): refused: 'activation"):
        check_model_yaml(cfg, "m.yaml")
    inner["activation"] = "nn.SiLU()"
    inner["backbone"] = [[-1, 1, "os.system", ["x"]]]
    with pytest.raises(CheckpointError, match="names os.system, which is not a model layer"):
        check_model_yaml(cfg, "m.yaml")
    cfg["head"] = [[-1, 1, "DetectionModel", ["other.yaml"]]]
    with pytest.raises(CheckpointError, match="builds a nested DetectionModel from a file name"):
        check_model_yaml(cfg, "m.yaml")


# --------------------------------------------------------------------------------------------------
# checkpoints


def test_class_names_are_bounded_before_they_are_copied():
    from yolobn.io.checks import class_names

    assert class_names(["a", 1, "c"], "w") == ["a", "1", "c"]
    with pytest.raises(CheckpointError, match="lists 100,001 class names, more than 100,000"):
        class_names(["x"] * (limits.MAX_CLASSES + 1), "w")
    with pytest.raises(CheckpointError, match="more than 10,000,000 characters"):
        class_names(["x" * 10**6] * 11, "w")
    nested: object = "x"
    for _ in range(60):
        nested = [nested, nested]
    with budget(), pytest.raises(CheckpointError, match="class name 0 is a list, not a text"):
        class_names({0: nested}, "w")  # under the cap: str() of it would not end


def test_a_zip_record_that_inflates_is_refused_from_the_directory(tmp_path, demo_path):
    from yolobn.io.sniff import sniff

    bomb = inflating_checkpoint(tmp_path / "bomb.pt", 64 << 20)
    assert bomb.stat().st_size < demo_path.stat().st_size + (1 << 20)
    with pytest.raises(CheckpointError, match=r"would inflate to 69 MB from a 5 MB file \(compressed: "):
        sniff(bomb)
    with zipfile.ZipFile(bomb) as z:  # within the ratio (a re-zipped checkpoint): allowed
        small = tmp_path / "small.pt"
        with zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as out:
            for info in z.infolist():
                out.writestr(info.filename, z.read(info)[: 1 << 20])
    assert sniff(small) == "zip"
    assert sniff(demo_path) == "zip"


# --------------------------------------------------------------------------------------------------
# images


def test_the_header_is_read_without_decoding(tmp_path):
    from yolobn.io.images import header_size, over_budget

    assert header_size(tiny_png(tmp_path / "a.png", 64)) == (64, 64)
    assert over_budget(tmp_path / "a.png") == ""
    huge = deflated_png(tmp_path / "huge.png", 12000)
    assert header_size(huge) == (12000, 12000)
    assert over_budget(huge) == "12000x12000 pixels, more than 100 MP"
    assert (
        over_budget(sparse_file(tmp_path / "s.jpg", limits.MAX_IMAGE_BYTES + 1))
        == "256 MB on disk, more than 256 MB"
    )
    (tmp_path / "x.heic").write_bytes(b"\x00" * 64)  # unknown to PIL: the size on disk is the only bound
    assert header_size(tmp_path / "x.heic") is None and over_budget(tmp_path / "x.heic") == ""


def test_only_the_first_page_of_a_tiff_is_decoded(tmp_path):
    from yolobn.io.images import iter_batches

    tif = paged_tiff(tmp_path / "pages.tif", 60, 1000)  # 60 pages: 180 MB decoded, 4 MB on disk
    with budget() as used:
        batches = list(iter_batches([tif], 64, batch=1))
    assert [names for _, names in batches] == [[tif]]
    assert batches[0][0].shape == (1, 3, 64, 64)
    assert used["rise"] < 100 << 20, f"peak rose by {used['rise'] / 2**20:.0f} MB"


def test_a_sparse_file_named_jpg_is_never_read(tmp_path):
    from yolobn.io.images import iter_batches

    sparse = sparse_file(tmp_path / "s.jpg", 4 << 30)
    ok = tiny_png(tmp_path / "ok.png", 64)
    skipped: list[Path] = []
    with budget() as used:
        batches = list(iter_batches([sparse, ok], 64, batch=2, skipped=skipped))
    assert skipped == [sparse] and [n for _, n in batches] == [[ok]]
    assert used["rise"] < 100 << 20 and used["seconds"] < 5


# --------------------------------------------------------------------------------------------------
# a dataset's val: that is not images


@pytest.mark.parametrize("kind", ["device", "fifo", "loop", "huge list"])
def test_a_val_that_is_not_images_says_what_it_is(kind, tmp_path):
    from yolobn.io.datasets import resolve_data

    val = tmp_path / "val"
    if kind == "device":
        val.symlink_to("/dev/zero")
        words = r"'val: val' is a device \("
    elif kind == "fifo":
        os.mkfifo(val)
        words = r"'val: val' is a pipe \(FIFO\)"
    elif kind == "loop":
        val.symlink_to(tmp_path / "val2")
        (tmp_path / "val2").symlink_to(val)
        words = r"'val: val' is a symlink loop"
    else:
        sparse_file(val, limits.MAX_LIST_BYTES + 1)
        words = "a list of image paths is at most 64 MB"
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\ntrain: val\nval: val\nnames: [a]\n")
    with budget() as used, pytest.raises(YolobnError, match=words):
        resolve_data(tmp_path / "data.yaml")
    assert used["seconds"] < 10


def test_trust_does_not_lift_the_budgets(tmp_path):
    """--trust lets a dataset yaml's download script run; it does not let a bomb reach Ultralytics."""
    from yolobn.io.datasets import resolve_data

    (tmp_path / "data.yaml").write_text("validation: images\nnc: 2000000000\n")
    with pytest.raises(YolobnError, match="'nc: 2000000000' is more than 100,000 classes"):
        resolve_data(tmp_path / "data.yaml", trust=True)
    (tmp_path / "data.yaml").write_text(alias_bomb(7) + "validation: images\nnames: *x6\n")
    with pytest.raises(YolobnError, match="expands to more than"):
        resolve_data(tmp_path / "data.yaml", trust=True)
    (tmp_path / "data.yaml").write_text("validation: images\nnames: [a]\n")  # Ultralytics' own key
    assert resolve_data(tmp_path / "data.yaml", trust=True) == str(tmp_path / "data.yaml")
