"""The local runner of yolobn.sweeps.fanout: rows written as they finish, resumed after an interruption,
failures recorded without stopping the sweep, dataloaders reused; --ray without Ray. (Ray itself:
tests/test_ray.py.)"""

from __future__ import annotations

import json
import math
import sys
import textwrap

import pandas as pd
import pytest

from yolobn.cli import main
from yolobn.core.errors import YolobnError
from yolobn.edit.swapping import swap
from yolobn.sweeps.fanout import Execution, run_tasks
from yolobn.sweeps.rows import RowStore
from yolobn.sweeps.variants import Settings, Variant, run_variants, variant_task

CUSTOM = """
import torch
from torch import nn


class Copy(nn.BatchNorm2d):
    @classmethod
    def from_batchnorm(cls, bn):
        m = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum)
        m.load_state_dict(bn.state_dict())
        return m.eval()


class Raising(nn.BatchNorm2d):
    @classmethod
    def from_batchnorm(cls, bn):
        m = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum)
        m.load_state_dict(bn.state_dict())
        return m.eval()

    def forward(self, x):
        if x.shape[0] == 8:  # the demo's 24 val images in batches of 16: the second batch
            raise ValueError("this BN refuses\\n a batch of 8")
        return super().forward(x)


class Asserting(Copy):
    def forward(self, x):
        assert x.shape[0] != 8  # a bare assert: an AssertionError without a message, on the second batch
        return super().forward(x)


class AssertingAtOnce(Copy):
    def forward(self, x):
        assert x.shape[0] < 0  # fails on the probe that checks a custom class before it is used
        return super().forward(x)
"""


@pytest.fixture
def custom(tmp_path):
    f = tmp_path / "mybn.py"
    f.write_text(textwrap.dedent(CUSTOM))
    return f


@pytest.fixture
def rows_dir(tmp_path):
    return tmp_path / "sweeps"


LABEL_FREE = Settings(data=None, imgsz=160)  # output difference on a fixed random batch: fast


def specs(custom):
    return [
        Variant.of("reference"),
        Variant.of("identity", ["head"]),
        Variant.of("reference:eps=1e-5"),
        Variant.of(f"{custom}:Copy"),
    ]


def test_rows_are_written_and_a_rerun_resumes_them(demo_model_loaded, custom, rows_dir):
    ex = Execution(rows_dir=rows_dir)
    first = run_variants(demo_model_loaded, specs(custom), LABEL_FREE, execution=ex)
    (path,) = rows_dir.glob("*.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 4 and all(x["ok"] for x in lines)  # the baseline is not a row: it has its own cache
    assert [x["label"] for x in lines] == [v.label for v in specs(custom)]
    notes = []
    again = run_variants(
        demo_model_loaded,
        specs(custom),
        LABEL_FREE,
        execution=Execution(rows_dir=rows_dir, notify=notes.append),
    )
    assert again.resumed == 4 and first.resumed == 0
    assert notes and notes[0].startswith("resuming: 4 of 4 rows")
    pd.testing.assert_frame_equal(again.table, first.table)  # bit for bit: JSON keeps every float exactly
    fresh = run_variants(
        demo_model_loaded, specs(custom), LABEL_FREE, execution=Execution(rows_dir=rows_dir, resume=False)
    )
    assert fresh.resumed == 0
    pd.testing.assert_frame_equal(fresh.table, first.table)


def test_an_interrupted_sweep_continues_where_it_stopped(demo_model_loaded, custom, rows_dir):
    def stop_after_two(label, done, total):
        if done == 3:  # the baseline and two variants: Ctrl-C
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_variants(
            demo_model_loaded,
            specs(custom),
            LABEL_FREE,
            progress=stop_after_two,
            execution=Execution(rows_dir=rows_dir),
        )
    (path,) = rows_dir.glob("*.jsonl")
    assert len(path.read_text().splitlines()) == 2  # each row on disk the moment it finished
    resumed = run_variants(
        demo_model_loaded, specs(custom), LABEL_FREE, execution=Execution(rows_dir=rows_dir)
    )
    assert resumed.resumed == 2
    whole = run_variants(demo_model_loaded, specs(custom), LABEL_FREE)  # uninterrupted, nothing kept
    pd.testing.assert_frame_equal(resumed.table, whole.table)


def test_the_key_covers_settings_and_custom_code(demo_model_loaded, custom, rows_dir):
    ex = Execution(rows_dir=rows_dir)
    run_variants(demo_model_loaded, specs(custom), LABEL_FREE, execution=ex)
    other = Settings(data=None, imgsz=192)
    assert run_variants(demo_model_loaded, specs(custom), other, execution=ex).resumed == 0
    custom.write_text(custom.read_text() + "\n# edited\n")  # the class's source changed: measured again
    again = run_variants(demo_model_loaded, specs(custom), LABEL_FREE, execution=ex)
    assert again.resumed == 3


@pytest.mark.slow
def test_a_failing_task_is_recorded_and_the_rest_completes(demo_model_loaded, custom, rows_dir):
    variants = [Variant.of("reference"), Variant.of(f"{custom}:Raising"), Variant.of("identity", ["head"])]
    s = Settings(data="shapes", imgsz=160)
    res = run_variants(demo_model_loaded, variants, s, execution=Execution(rows_dir=rows_dir))
    t = res.table.set_index("variant")
    why = t.loc[f"{custom}:Raising", "error"]
    assert "ValueError: this BN refuses a batch of 8" in why and "\n" not in why
    assert math.isnan(t.loc[f"{custom}:Raising", "mAP50-95(B)"])
    assert t.loc["reference", "error"] == "" and abs(t.loc["reference", "mAP50-95(B) delta"]) < 1e-3
    assert t.loc["identity @ head", "mAP50-95(B) delta"] < -0.1  # the task after the failure ran
    assert res.failed == [(f"{custom}:Raising", why)]
    # written as failed, and tried again on a rerun (never resumed)
    store = RowStore(next(rows_dir.glob("*.jsonl")))
    assert len(store.finished()) == 2
    assert run_variants(demo_model_loaded, variants, s, execution=Execution(rows_dir=rows_dir)).resumed == 2


def test_a_failed_row_says_what_failed_when_the_exception_has_no_message(demo_model_loaded, custom):
    with pytest.raises(
        YolobnError, match=r"AssertingAtOnce fails on a \(1, 16, 3, 3\) input \(AssertionError at "
    ):
        swap(demo_model_loaded, f"{custom}:AssertingAtOnce")
    s = Settings(data="shapes", imgsz=160)
    res = run_variants(demo_model_loaded, [Variant.of(f"{custom}:Asserting")], s)
    why = res.table.set_index("variant").loc[f"{custom}:Asserting", "error"]
    assert why.startswith("AssertionError at ") and "mybn.py:" in why and why.endswith(" in forward"), why
    assert res.failed == [(f"{custom}:Asserting", why)]


def test_a_line_cut_short_by_a_crash_is_skipped(demo_model_loaded, custom, rows_dir):
    run_variants(demo_model_loaded, specs(custom)[:2], LABEL_FREE, execution=Execution(rows_dir=rows_dir))
    path = next(rows_dir.glob("*.jsonl"))
    text = path.read_text().splitlines()
    path.write_text(text[0] + "\n" + text[1][: len(text[1]) // 2])  # the second line torn mid-write
    res = run_variants(
        demo_model_loaded, specs(custom)[:2], LABEL_FREE, execution=Execution(rows_dir=rows_dir)
    )
    assert res.resumed == 1


@pytest.mark.slow
def test_validation_reuses_the_dataloader_and_a_failed_one_is_dropped(demo_model_loaded, custom):
    from yolobn.edit.swapping import swap
    from yolobn.evaluate.validation import validate

    fresh = validate(demo_model_loaded, "shapes", imgsz=160)
    loaders: dict = {}
    a = validate(demo_model_loaded, "shapes", imgsz=160, loaders=loaders)
    (dl,) = loaders.values()
    b = validate(demo_model_loaded, "shapes", imgsz=160, loaders=loaders)
    assert list(loaders.values()) == [dl]  # built once, used twice
    broken = swap(demo_model_loaded, f"{custom}:Raising", layers=["model.0.bn"])
    with pytest.raises(ValueError, match="refuses"):
        validate(broken, "shapes", imgsz=160, loaders=loaders)
    assert loaders == {}  # a loader left mid-epoch is never reused
    c = validate(demo_model_loaded, "shapes", imgsz=160, loaders=loaders)
    for k in fresh:
        if k.startswith("metrics/"):
            assert fresh[k] == a[k] == b[k] == c[k]


def test_tasks_come_back_in_order_with_where_they_ran(demo_model_loaded, custom):
    tasks = [variant_task(v) for v in specs(custom)]
    outs = run_tasks(demo_model_loaded, LABEL_FREE, tasks)
    assert [o.task for o in outs] == tasks and all(o.ok and o.worker and o.seconds > 0 for o in outs)


def test_ray_option_without_ray_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: import fails
    out = tmp_path / "out"
    assert main(["swap", "--impl", "reference", "--ray", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "yolobn: error: --ray needs Ray, which is not installed: pip install 'yolobn[ray]'"
    assert not out.exists()
    f = tmp_path / "e.yaml"
    f.write_text("variants: [reference]\n")
    assert main(["experiment", str(f), "--ray", "auto", "-o", str(out)]) == 2
    assert "pip install 'yolobn[ray]'" in capsys.readouterr().err and not out.exists()


def test_ray_before_the_model_is_caught(tmp_path, capsys, demo_path):
    assert main(["frontier", "--ray", str(demo_path), "-o", str(tmp_path / "o")]) == 2
    assert "is a file, not a Ray address" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_resumes_with_a_message_and_warns_of_failures(tmp_path, custom, capsys, monkeypatch):
    monkeypatch.setenv("YOLOBN_CACHE", str(tmp_path / "cache"))
    argv = [
        "swap",
        "--impl",
        "reference",
        "--impl",
        f"{custom}:Raising",
        "--images",
        "--max-images",
        "8",
        "-q",
    ]
    assert main([*argv, "-o", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert f"yolobn: warning: {custom}:Raising: failed: ValueError: this BN refuses a batch of 8" in err
    assert "1 of 2 measurements failed" in err
    rows = pd.read_csv(tmp_path / "a" / "swap.csv")
    assert rows["error"].fillna("").tolist()[:2] == ["", ""] and "refuses" in rows["error"][2]
    assert main([*argv[:-1], "-o", str(tmp_path / "b")]) == 0
    assert "resuming: 1 of 2 rows finished in an earlier run" in capsys.readouterr().err
    assert main([*argv[:-1], "--no-resume", "-o", str(tmp_path / "c")]) == 0
    assert "resuming" not in capsys.readouterr().err


def test_gpu_tasks_see_their_one_gpu_as_cuda_0():
    from yolobn.sweeps.fanout import uses_gpu, worker_settings

    for dev in ("cuda", "cuda:1", "0", "3"):
        assert uses_gpu(dev) and worker_settings(Settings(device=dev)).device == "cuda:0"
    assert not uses_gpu("cpu") and worker_settings(Settings(device="cpu")).device == "cpu"


def test_an_edited_custom_class_is_the_one_measured(demo_model_loaded, custom):
    first = run_variants(demo_model_loaded, [Variant.of(f"{custom}:Copy")], LABEL_FREE).table
    text = custom.read_text().replace("return m.eval()", "m.weight.data *= 2\n        return m.eval()", 1)
    custom.write_text(text)  # Copy now doubles gamma
    second = run_variants(demo_model_loaded, [Variant.of(f"{custom}:Copy")], LABEL_FREE).table
    assert first["max_abs_diff"][1] == 0.0 and second["max_abs_diff"][1] > 1.0
