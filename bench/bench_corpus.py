"""The exit-code contract on the full corpus of bad inputs (issue 9).

Runs every named case of tests/corpus_cases.py and N seeded mutants of the bundled demo checkpoint
(tests/corpus_mutants.py: damage to what the checkpoint holds, to its bytes, planted payloads that
touch a marker file) through the CLI, in-process, in worker processes (one case at a time each,
a deadline per case; a worker that does not answer is killed and its case counted as a hang), and
prints:

    cases           how many command lines were run
    payload runs    planted payloads that ran (must be 0)
    exit-1 crashes  internal errors (must be 0)
    hangs           cases past the deadline (must be 0)
    other breaks    exit 2 with more than one stderr line, or with a file written (must be 0)

and the exit-0 / exit-2 split, the time, and the first broken cases.

    python bench/bench_corpus.py               # 2100 mutants + the named cases, 2 workers
    python bench/bench_corpus.py --n 300 --base tiny --workers 1
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("inspect", "inspect", "activations", "swap")


def _cases(n: int, seed: int, base: str) -> list:
    from tests.corpus_cases import CASES
    from tests.corpus_mutants import mutants

    return [("case", c.name, c.build, c.code) for c in CASES] + [
        ("mutant", m.name, m.build, None) for m in mutants(seed, n, base=base, commands=COMMANDS)
    ]


def _worker(tasks: mp.Queue, results: mp.Queue, n: int, seed: int, base: str, timeout: float) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch

    from tests.corpus import contract_broken, run_cli

    torch.set_num_threads(1)  # tiny inputs; two workers share two cores
    cases = _cases(n, seed, base)
    root = Path(tempfile.mkdtemp(prefix="yolobn-corpus-"))
    while True:
        i = tasks.get()
        if i is None:
            break
        kind, name, build, expected = cases[i]
        results.put(("start", i, os.getpid()))
        d = root / name
        d.mkdir()
        try:
            argv = build(d)
            o = run_cli(argv, d, timeout=timeout)
            why = contract_broken(o)
            if kind == "case" and why is None and o.code != expected:
                why = f"exit {o.code}, expected {expected}: {o.err.strip()}"
            results.put(("done", i, o.code, o.marker, why, " ".join(argv)))
        except Exception as e:  # building the case failed: a bug in the corpus, reported as such
            results.put(("done", i, -1, False, f"corpus error: {type(e).__name__}: {e}", ""))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def run(n: int, seed: int, base: str, workers: int, timeout: float) -> dict:
    ctx = mp.get_context("spawn")  # no fork after torch has started its threads
    total = len(_cases(n, seed, base))
    tasks, results = ctx.Queue(), ctx.Queue()
    for i in range(total):
        tasks.put(i)

    def spawn() -> mp.Process:
        p = ctx.Process(target=_worker, args=(tasks, results, n, seed, base, timeout), daemon=True)
        p.start()
        tasks.put(None)  # one stop sign per worker, after the cases
        return p

    procs = {p.pid: p for p in (spawn() for _ in range(workers))}
    running: dict[int, tuple[int, float]] = {}  # pid -> (case, started)
    out = {"cases": 0, "exit0": 0, "exit2": 0, "payload": 0, "exit1": 0, "hangs": 0, "other": 0, "broken": []}
    done = 0
    while done < total:
        try:
            msg = results.get(timeout=5)
        except queue.Empty:
            msg = None
        if msg and msg[0] == "start":
            running[msg[2]] = (msg[1], time.monotonic())
        elif msg:
            _, i, code, marker, why, argv = msg
            running = {pid: v for pid, v in running.items() if v[0] != i}
            done += 1
            out["cases"] += 1
            out["payload"] += bool(marker)
            out["exit0"] += code == 0
            out["exit2"] += code == 2
            if code is None:
                out["hangs"] += 1
            elif code not in (0, 2):
                out["exit1"] += 1
            elif why:
                out["other"] += 1
            if why:
                out["broken"].append(f"case {i}: {argv}: {why}")
            if done % 100 == 0:
                print(f"  ... {done}/{total}", file=sys.stderr, flush=True)
        for pid, (i, started) in list(running.items()):  # a worker stuck past its own deadline
            if time.monotonic() - started > 2 * timeout + 30:
                procs.pop(pid).kill()
                del running[pid]
                done += 1
                out["cases"] += 1
                out["hangs"] += 1
                out["broken"].append(f"case {i}: worker killed after {2 * timeout + 30:.0f} s")
                p = spawn()
                procs[p.pid] = p
    for p in procs.values():
        p.join(timeout=30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2100, help="seeded mutants (default 2100)")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--base", choices=["demo", "tiny"], default="demo", help="checkpoint to damage")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case before it is a hang")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    r = run(args.n, args.seed, args.base, args.workers, args.timeout)
    wall = time.perf_counter() - t0
    print(f"corpus: named cases + {args.n} mutants of the {args.base} checkpoint (seed {args.seed})")
    print(f"  cases           {r['cases']:6d}   (exit 0: {r['exit0']}, exit 2: {r['exit2']})")
    print(f"  payload runs    {r['payload']:6d}   (must be 0)")
    print(f"  exit-1 crashes  {r['exit1']:6d}   (must be 0)")
    print(f"  hangs           {r['hangs']:6d}   (must be 0; deadline {args.timeout:g} s)")
    print(
        f"  other breaks    {r['other']:6d}   (must be 0: exit 2 with more than one line or a file written)"
    )
    print(
        f"  wall time       {wall:6.0f} s ({wall / max(r['cases'], 1) * args.workers:.2f} s per case per worker)"
    )
    for line in r["broken"][:20]:
        print("  " + line)
    sys.exit(1 if r["payload"] or r["exit1"] or r["hangs"] or r["other"] else 0)


if __name__ == "__main__":
    main()
