"""yolobn.sweeps.fanout on a real local Ray instance (started here, 2 CPUs; no mock): the same numbers as
the local run, the model loaded once per worker, a killed worker's task retried, a failing task
recorded. Skipped when Ray is not installed (pip install 'yolobn[ray]')."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time

import pandas as pd
import pytest
import torch

ray = pytest.importorskip("ray")

from yolobn.cli import main  # noqa: E402
from yolobn.sweeps.experiment import run_experiment  # noqa: E402
from yolobn.sweeps.fanout import Execution, run_tasks  # noqa: E402
from yolobn.sweeps.variants import Settings, Variant, variant_task  # noqa: E402

pytestmark = pytest.mark.slow  # a real local Ray instance in every test: CI runs them (pytest -m slow)

CUSTOM = """
import os
import time

from torch import nn

ARMED = {armed!r}
PIDFILE = {pidfile!r}


class Killable(nn.BatchNorm2d):
    '''nn.BatchNorm2d; while ARMED exists, the first process to build one records its pid and waits to be killed.'''

    @classmethod
    def from_batchnorm(cls, bn):
        if os.path.exists(ARMED):
            try:
                fd = os.open(PIDFILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # the retry: run normally
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                time.sleep(120)
        m = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum)
        m.load_state_dict(bn.state_dict())
        return m.eval()


class Broken(nn.Module):
    @classmethod
    def from_batchnorm(cls, bn):
        raise RuntimeError("no kernel for this layer")
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray instance with 2 CPUs; workers inherit this process's environment (the cache)."""
    cache = tmp_path_factory.mktemp("ray-cache")
    old = os.environ.get("YOLOBN_CACHE")
    os.environ["YOLOBN_CACHE"] = str(cache)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield cache
    ray.shutdown()
    if old is None:
        os.environ.pop("YOLOBN_CACHE", None)
    else:
        os.environ["YOLOBN_CACHE"] = old


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    d = tmp_path_factory.mktemp("custom")
    f = d / "killable.py"
    f.write_text(textwrap.dedent(CUSTOM.format(armed=str(d / "armed"), pidfile=str(d / "pid"))))
    return f


CFG = {
    "data": "shapes",
    "variants": [{"impl": "reference"}, {"impl": "identity", "layers": ["head"]}],
    "sensitivity": {"impl": "reference:eps=1e-5", "layers": ["model.0.bn", "model.2.cv1.bn"]},
}
RAY = Execution(ray="auto", resume=False, keep_rows=False)
THREADS = torch.get_num_threads()


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(("mAP", "precision", "recall", "metrics/", "delta"))]


def test_ray_gives_the_local_numbers_bit_for_bit(cluster, custom):
    cfg = {**CFG, "variants": [*CFG["variants"], {"impl": f"{custom}:Broken"}]}
    remote = run_experiment(cfg, execution=RAY)
    local = run_experiment(cfg)
    cols = metric_columns(local.results)
    assert len(cols) == 8  # 4 metrics and their deltas
    pd.testing.assert_frame_equal(remote.results[cols], local.results[cols], check_exact=True)
    pd.testing.assert_frame_equal(remote.sensitivity, local.sensitivity, check_exact=True)
    assert remote.sensitivity["layer"].iloc[0] == "model.0.bn"  # the eps-sensitive layer, as on one machine
    # the failing task: recorded with its reason in both, the others complete
    assert [f[0] for f in remote.failed] == [f"{custom}:Broken"] and remote.failed == local.failed
    assert "no kernel for this layer" in remote.results["error"].iloc[-1]
    # the raw output differences are float rounding for exact implementations: they move in the last
    # bits with torch's thread count (Ray's CPU tasks: 1; a local run: what Ultralytics' validator sets)
    # (reference: 6.1e-05 vs 9.2e-05 on outputs up to ~500; float32 eps 1.2e-07): compared at that scale
    rest = [
        c
        for c in local.results.columns
        if c not in cols and "diff" not in c and c not in ("ms_per_image", "cached")
    ]
    pd.testing.assert_frame_equal(remote.results[rest], local.results[rest], check_exact=True)
    for c, atol in (("max_abs_diff", 1e-3), ("max_rel_diff", 1e-6)):
        pd.testing.assert_series_equal(
            remote.results[c], local.results[c], check_exact=False, rtol=1e-4, atol=atol
        )


def test_each_worker_loads_the_checkpoint_once(cluster, demo_path, tmp_path):
    import shutil

    from yolobn.io.loader import load

    ckpt = tmp_path / "best.pt"
    shutil.copy(demo_path, ckpt)  # a checkpoint like any other (not the bundled demo): its bytes travel
    loaded = load(str(ckpt))
    tasks = [variant_task(Variant.of("reference:eps=1e-5", [f"model.{i}.bn"])) for i in (0, 1, 3, 5, 7, 17)]
    s = Settings(data=None, imgsz=160)
    outs = run_tasks(loaded, s, tasks, RAY)
    assert all(o.ok for o in outs) and [o.task for o in outs] == tasks
    workers = {o.worker for o in outs}
    assert 1 <= len(workers) <= 2 < len(outs)  # 2 CPUs: at most 2 worker processes, each reused
    assert all(o.loads == 1 for o in outs)  # each process loaded the checkpoint exactly once
    torch.set_num_threads(1)  # as Ray's 1-CPU tasks
    try:
        here = run_tasks(loaded, s, tasks)
    finally:
        torch.set_num_threads(THREADS)
    assert [o.value for o in outs] == [o.value for o in here]  # the same model, loaded from the same bytes


def test_frontier_on_ray_is_the_local_frontier(cluster):
    from yolobn.sweeps.frontier import frontier

    kw = {"shares": (0, 5), "criteria": ("observed", "gamma"), "roles": False, "max_images": 8}
    remote = frontier(None, "shapes", execution=RAY, **kw)
    local = frontier(None, "shapes", **kw)
    pd.testing.assert_frame_equal(remote.points, local.points, check_exact=True)
    assert remote.failed == [] and len(remote.points) == 4


def test_a_killed_worker_loses_nothing(cluster, custom, tmp_path, demo_model_loaded):
    from yolobn.sweeps.variants import run_variants

    variants = [Variant.of("reference"), Variant.of(f"{custom}:Killable"), Variant.of("identity", ["head"])]
    s = Settings(data="shapes", imgsz=160)
    loaded = demo_model_loaded
    whole = run_variants(loaded, variants, s).table  # uninterrupted, local (Killable is not armed yet)
    armed, pidfile = custom.parent / "armed", custom.parent / "pid"
    armed.touch()
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if pidfile.exists() and pidfile.read_text():
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGKILL)  # the Ray worker running the Killable variant, mid-task
                killed.append(pid)
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    try:
        ex = Execution(ray="auto", resume=True, rows_dir=tmp_path / "rows")
        res = run_variants(loaded, variants, s, execution=ex)
    finally:
        t.join()
        armed.unlink()
    assert killed, "the armed task never started"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # that worker is gone
    assert res.failed == [] and len(res.table) == 4
    cols = ["variant", "impl", "swapped", *metric_columns(whole)]
    pd.testing.assert_frame_equal(res.table[cols], whole[cols], check_exact=True)
    rows = list((tmp_path / "rows").glob("*.jsonl"))[0].read_text().splitlines()
    assert len(rows) == 3  # every row written once, the retried one too


def test_cuda_on_a_cluster_without_gpus_is_an_error_not_a_hang(cluster, demo_model_loaded):
    from yolobn.core.errors import YolobnError
    from yolobn.sweeps.variants import run_variants

    with pytest.raises(YolobnError, match="on Ray: the cluster has no GPU"):
        run_variants(
            demo_model_loaded,
            [Variant.of("reference")],
            Settings(data=None, imgsz=160, device="cuda"),
            execution=RAY,
        )


def test_cli_experiment_on_ray(cluster, tmp_path, capsys):
    f = tmp_path / "e.yaml"
    f.write_text(
        "data: shapes\nvariants: [reference]\nsensitivity: {impl: 'reference:eps=1e-5', layers: [model.0.bn]}\n"
    )
    out = tmp_path / "out"
    assert main(["experiment", str(f), "--ray", "-o", str(out), "-q"]) == 0
    sens = pd.read_csv(out / "sensitivity.csv")
    assert sens["layer"].tolist() == ["model.0.bn"] and sens["delta"][0] < -0.005
    assert ray.is_initialized()  # connected to the running instance, and left it running
    capsys.readouterr()
    # run again: the finished rows resume, and the user is told what ran on Ray
    assert main(["experiment", str(f), "--ray", "-o", str(out), "--exist-ok"]) == 0
    err = capsys.readouterr().err
    assert (
        "resuming: 2 of 2 rows" in err and "ran 1 of 3 on Ray (auto)" in err
    )  # the baseline row is not kept
