"""--ray ADDRESS (issue 18 §5): a malformed address is one line before any work; an address where
nothing listens, or where something that is not Ray answers, fails within a stated time with one
line that names it."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time

import pytest

from tests.run_main import run_main
from yolobn.core.errors import YolobnError
from yolobn.sweeps.rayconnect import PROBE_S, RayAddress, parse_ray_address

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("auto", RayAddress("auto", "auto")),
        ("", RayAddress("auto", "auto")),
        ("local", RayAddress("local", "local")),
        ("head:6379", RayAddress("head:6379", "gcs", "head", 6379)),
        ("10.0.0.7:6380", RayAddress("10.0.0.7:6380", "gcs", "10.0.0.7", 6380)),
        ("[::1]:6379", RayAddress("[::1]:6379", "gcs", "::1", 6379)),
        ("ray://head", RayAddress("ray://head", "client", "head", 10001)),
        (
            "ray://head.example.org:10002",
            RayAddress("ray://head.example.org:10002", "client", "head.example.org", 10002),
        ),
    ],
)
def test_ray_addresses_are_parsed(text, expected):
    assert parse_ray_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        ":6379",
        "head",
        "head:",
        "head:abc",
        "head:70000",
        "head:0",
        "http://head:8265",
        "ray://",
        "a b:1",
        "ray://ray://x:1",
        "head:6379/x",
        "head\x1b[2J:1",
    ],
)
def test_a_malformed_address_is_one_line(text):
    with pytest.raises(YolobnError) as ei:
        parse_ray_address(text)
    msg = str(ei.value)
    assert "not a Ray address" in msg and "head:6379" in msg and "\n" not in msg and "\x1b" not in msg


def test_cli_malformed_address_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    code, stdout, err = run_main(["swap", "--impl", "reference", "--ray", ":6379", "-o", str(out)], capsys)
    assert code == 2 and stdout == "" and not out.exists()
    assert (
        err
        == "yolobn: error: --ray :6379: not a Ray address; give host:port (head:6379), ray://host:10001, auto or local\n"
    )
    assert time.perf_counter() - t0 < 5  # before the model is read


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_ray
def test_nothing_listening_fails_within_the_stated_time_naming_the_address(tmp_path, capsys):
    addr = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    argv = ["swap", "--impl", "reference", "--images", "--max-images", "1", "--ray", addr, "-o", str(out)]
    t0 = time.perf_counter()
    code, stdout, err = run_main(argv, capsys)
    assert time.perf_counter() - t0 < 35
    assert code == 2 and err.count("\n") == 1 and not out.exists(), err
    assert err.startswith(
        f"yolobn: error: --ray {addr}: cannot reach Ray (connection refused: nothing listens there)"
    )


@needs_ray
def test_a_port_that_answers_but_is_not_ray_fails_within_the_deadline():
    """In a child process: the abandoned connection attempt goes on in a helper thread until exit."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        addr = f"127.0.0.1:{srv.getsockname()[1]}"
        code = (
            "import ray, time\nfrom yolobn.sweeps.rayconnect import connect\nt = time.perf_counter()\n"
            f"try:\n    connect({addr!r}, timeout=3)\nexcept Exception as e:\n"
            "    print(type(e).__name__, e, '|', round(time.perf_counter() - t, 1), ray.is_initialized())\n"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line, took, initialized = r.stdout.strip().rsplit(" ", 2)
    assert (
        line
        == f"YolobnError --ray {addr}: Ray did not connect within 3 s; check that a Ray cluster (ray start --head) of the installed Ray version runs there |"
    )
    assert 3 <= float(took) < 3 + PROBE_S + 2 and initialized == "False"
