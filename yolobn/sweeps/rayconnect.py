"""Connecting to Ray within a stated time, or one line that says which address failed and why.

``ray.init(address=...)`` against an address where nothing listens does not fail: Ray 2.60 retries
its GCS connection (a 5 s connect, a 30 s cluster-id wait, 20 tries) for many minutes, logging from
C++ on stderr. So the address is parsed here first (a malformed one is one line, before any work),
then its TCP port is probed (``PROBE_S``: refused at once, or unanswered), and only then does
``ray.init`` run, in a helper thread the caller waits for at most ``CONNECT_S`` (a port that
answers but is no Ray head). A connection finished after the caller gave up is shut down again by
that thread. Starting a new local Ray stays in the calling thread: Ray's processes are tied to the
thread that starts them (``PR_SET_PDEATHSIG``) and would die with a helper thread.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolobn.core.errors import YolobnError
from yolobn.core.text import one_line, visible

PROBE_S = 5.0  # the TCP connect to the address; a refused port fails at once
CONNECT_S = 30.0  # ray.init after the probe answered
RAY_CLIENT_PORT = 10001  # Ray Client's default (ray://head)
FORMS = "host:port (head:6379), ray://host:10001, auto or local"


@dataclass(frozen=True)
class RayAddress:
    """A parsed ``--ray`` value. ``kind``: ``auto`` (a running cluster this machine knows, else a new
    local one), ``local`` (always a new one), ``gcs`` (host:port of a head node), ``client`` (ray://)."""

    text: str
    kind: str
    host: str = ""
    port: int = 0

    def init_address(self) -> str | None:
        """The ``address`` for ``ray.init``."""
        if self.kind == "auto":
            return None
        if self.kind == "local":
            return "local"
        return self.text


def parse_ray_address(text: str | None) -> RayAddress:
    """``--ray`` as given, checked: a malformed address (or a model file taken for one) is a one-line
    YolobnError."""
    s = (text or "").strip()
    if Path(s).suffix.lower() in (".pt", ".yaml", ".yml", ".pth") or Path(s).is_file():
        raise YolobnError(
            f"--ray {visible(s)}: is a file, not a Ray address; put --ray after it, or write --ray auto"
        )
    if s in ("", "auto"):
        return RayAddress("auto", "auto")
    if s == "local":
        return RayAddress(s, "local")
    client = s.startswith("ray://")
    rest = s[len("ray://") :] if client else s
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?", rest)
    port = int(m.group(2)) if m and m.group(2) else (RAY_CLIENT_PORT if client else 0)
    if m is None or "://" in rest or not 0 < port < 65536:
        raise YolobnError(f"--ray {visible(s)}: not a Ray address; give {FORMS}")
    return RayAddress(s, "client" if client else "gcs", m.group(1).strip("[]"), port)


def probe(addr: RayAddress, timeout: float = PROBE_S) -> None:
    """One TCP connect to the address's port: a YolobnError naming it when nothing answers."""
    where = f"--ray {visible(addr.text)}"
    try:
        with socket.create_connection((addr.host, addr.port), timeout=timeout):
            return
    except socket.gaierror:
        raise YolobnError(
            f"{where}: cannot resolve the host {visible(addr.host)}; check the address"
        ) from None
    except TimeoutError:
        why = f"no answer within {timeout:g} s"
    except OSError as e:  # refused, unreachable
        why = (
            "connection refused: nothing listens there"
            if isinstance(e, ConnectionRefusedError)
            else one_line(e)
        )
    raise YolobnError(f"{where}: cannot reach Ray ({why}); start it (ray start --head) or check the address")


def connect(address: str | None, num_cpus: int | None = None, timeout: float = CONNECT_S) -> bool:
    """Connect to (or start) Ray; True when this call started it. Fails within ``PROBE_S`` +
    ``timeout`` seconds with one line naming the address."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    addr = parse_ray_address(address)
    target = addr
    if addr.kind == "auto" and os.environ.get("RAY_ADDRESS", "").strip():  # ray.init(None) goes there
        target = parse_ray_address(os.environ["RAY_ADDRESS"])
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if target.kind in ("gcs", "client"):  # a running cluster: nothing is started here
        probe(target)
        return _init_within(ray, addr, kw, timeout)
    try:
        ray.init(address=addr.init_address(), num_cpus=num_cpus, **kw)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise YolobnError(f"--ray {visible(addr.text)}: cannot start or reach Ray ({one_line(e)})") from None
    return True


def _init_within(ray: Any, addr: RayAddress, kw: dict[str, Any], timeout: float) -> bool:
    """``ray.init`` of a running cluster in a helper thread, waited for at most ``timeout`` seconds."""
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def init() -> None:
        try:
            ray.init(address=addr.init_address(), **kw)
        except BaseException as e:  # handed to the caller
            state["error"] = e
        with lock:
            state["done"] = True
            late = state.get("abandoned") and "error" not in state
        if late:  # connected after the caller gave up: nobody will use it
            ray.shutdown()

    t = threading.Thread(target=init, name="yolobn-ray-init", daemon=True)
    t.start()
    t.join(timeout)
    with lock:
        if not state.get("done"):
            state["abandoned"] = True
            raise YolobnError(
                f"--ray {visible(addr.text)}: Ray did not connect within {timeout:g} s; check that a Ray "
                "cluster (ray start --head) of the installed Ray version runs there"
            )
    e = state.get("error")
    if isinstance(e, (ConnectionError, ValueError, RuntimeError)):
        raise YolobnError(f"--ray {visible(addr.text)}: cannot reach Ray ({one_line(e)})") from None
    if e is not None:
        raise e
    return True


__all__ = ["CONNECT_S", "PROBE_S", "RayAddress", "connect", "parse_ray_address", "probe"]
