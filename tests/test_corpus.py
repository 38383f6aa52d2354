"""The exit-code contract on every malformed input (issue 9): exit 2, one line, no traceback,
nothing written, no payload run; or exit 0 where the input is usable (with a warning).

The named cases come from tests/corpus_cases.py; the seeded mutants from tests/corpus_mutants.py
(bench/bench_corpus.py runs the full count on the demo model).
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.corpus import contract_broken, run_cli
from tests.corpus_cases import CASES
from tests.corpus_mutants import mutants

SEED = 9
N_MUTANTS = 300  # a few hundred, in-process on the tiny model: about 20 s on 2 cores


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_named_case(case, tmp_path, offline_network):
    argv = case.build(tmp_path)
    o = run_cli(argv, tmp_path, timeout=120)
    assert o.code == case.code, (argv, o.code, o.err)
    assert not o.marker, "a payload ran"
    if case.code == 2:
        assert contract_broken(o) is None, (contract_broken(o), o.err)
        assert o.out == ""
    assert any(w in o.err for w in case.words), o.err
    assert "Traceback" not in o.out + o.err
    assert ".yolobn.tmp" not in o.err and "/tmp/yolobn-" not in o.err  # never an internal temp name
    if case.once:
        assert o.err.count(case.once) <= 1, o.err


@pytest.fixture
def one_thread():
    """Tiny inputs gain nothing from threads, and on a busy 2-core machine OpenMP's waits cost more
    than the work: the in-process run uses one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_seeded_mutants_keep_the_contract(tmp_path, offline_network, one_thread):
    t0 = time.perf_counter()
    broken, counted = [], {"object": 0, "bytes": 0, "payload": 0}
    for m in mutants(SEED, N_MUTANTS, base="tiny", commands=("inspect", "inspect", "activations")):
        d = tmp_path / m.name
        d.mkdir()
        argv = m.build(d)
        o = run_cli(argv, d, timeout=30)
        why = contract_broken(o)
        if why:
            broken.append(f"{m.name} {' '.join(argv)}: {why}")
        counted[m.name.split("-")[1]] += 1
        shutil.rmtree(d)
    assert not broken, f"{len(broken)} of {N_MUTANTS}:\n" + "\n".join(broken[:25])
    assert min(counted.values()) > 20, counted  # every kind of damage is exercised
    assert time.perf_counter() - t0 < 300  # in-process: a hang or a slow path shows here


def test_report_of_a_model_that_cannot_run_warns_and_keeps_the_note(tmp_path):
    import json

    from tests.corpus import demo_ckpt, save
    from tests.corpus_cases import _cannot_run

    ck = demo_ckpt()
    _cannot_run(ck)
    save(ck, tmp_path / "m.pt")
    o = run_cli(["report", "m.pt", "-o", "out"], tmp_path)
    assert o.code == 0, o.err
    assert o.err.startswith("warning: ") and "model.10.m.0.attn (Attention) fails" in o.err
    notes = json.loads((tmp_path / "out" / "summary.json").read_text())["model"]["notes"]
    assert any("cannot run with the installed Ultralytics" in n and "8.3.63" in n for n in notes)
    assert "cannot run with the installed Ultralytics" in (tmp_path / "out" / "report.html").read_text()


def test_a_damaged_file_is_a_note_in_every_report_and_refused_with_strict(tmp_path, demo_path):
    import json

    from tests.corpus import flip_tensor_bit

    flip_tensor_bit(demo_path, tmp_path / "m.pt")
    o = run_cli(["inspect", "m.pt", "--json", "s.json", "-q"], tmp_path)
    assert o.code == 0, o.err
    notes = json.loads((tmp_path / "s.json").read_text())["model"]["notes"]
    assert any("fail their CRC check" in n for n in notes)
    o = run_cli(["report", "m.pt", "-o", "out", "--strict"], tmp_path)
    assert o.code == 2 and "CRC" in o.err and "--strict" in o.err and not (tmp_path / "out").exists()
