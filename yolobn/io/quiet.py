"""Ultralytics as yolobn calls it: it prints nothing and installs nothing.

Ultralytics logs to stdout, and its ``check_requirements`` pip-installs a missing package when the
machine is online and ``YOLO_AUTOINSTALL`` is on (its default): an image it cannot decode (a
``.heic``) is enough to make it install ``pi-heif``. yolobn never installs anything, so every call
into Ultralytics that can reach that code (loading, building, validating, checking datasets,
decoding images) runs inside ``quiet_ultralytics``, which turns both off for its duration and
restores them after: a program that uses Ultralytics itself around yolobn keeps its own settings.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_ultralytics() -> Iterator[None]:
    """Ultralytics' logger at ERROR and its auto-install off while the block runs (nesting is fine)."""
    # Import first: Ultralytics configures (and resets the level of) its logger at import time.
    import ultralytics.utils as utils
    import ultralytics.utils.checks as checks  # holds its own copy of AUTOINSTALL

    logger = logging.getLogger("ultralytics")
    level = logger.level
    # ``checks`` imports its own copy of the flag; each module's is switched where it has one.
    holders = [m for m in (utils, checks) if hasattr(m, "AUTOINSTALL")]
    installs = [m.AUTOINSTALL for m in holders]
    logger.setLevel(logging.ERROR)
    for m in holders:
        setattr(m, "AUTOINSTALL", False)  # noqa: B010 (ultralytics.utils.checks re-exports it untyped)
    try:
        yield
    finally:
        logger.setLevel(level)
        for m, was in zip(holders, installs, strict=True):
            setattr(m, "AUTOINSTALL", was)  # noqa: B010


__all__ = ["quiet_ultralytics"]
