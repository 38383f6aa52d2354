"""Answers: for each question a user brings, a status, one line of evidence and the next command.

Every command leads with the questions it can answer (``yolobn.bn.answers`` and the comparison,
frontier and prune results build them); the terminal, the JSON (``verdicts``), every HTML page and
the notebook show the same records. A status is ``ok`` (nothing to do), ``look`` (worth a look, or
more data needed to tell) or ``act`` (something to do, named by ``next``).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["STATUSES", "Verdict", "command", "worst"]

STATUSES = ("ok", "look", "act")
_REPEATED = {"impl", "layers"}  # options given once per value


@dataclass(frozen=True)
class Verdict:
    """One answer.

    Attributes:
        key: which question (``training``, ``dead``, ``port``, ``drift``, ``change``, ``prune``).
        question: the question in words.
        status: ``ok``, ``look`` or ``act``.
        evidence: one line with the numbers behind the status.
        next: the command to run next, with the user's own paths (``None``: nothing to run).
        layers: the layers the answer is about, worst first (for tables and pages).
    """

    key: str
    question: str
    status: str
    evidence: str
    next: str | None = None
    layers: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


def worst(statuses: list[str]) -> str:
    """The most urgent of ``statuses`` (``ok`` for none)."""
    return max(statuses, key=STATUSES.index, default="ok")


def command(name: str, *positional: str | None, **options: Any) -> str:
    """``yolobn NAME POSITIONAL... --option VALUE ...``, quoted for a POSIX shell.

    ``None`` positionals and options are left out (the demo model is the default ``MODEL``);
    ``True`` is a bare flag; a list gives several values (``--images a b``), except for the options
    given once per value (``--impl a --impl b``). Option names are written with dashes
    (``exist_ok`` -> ``--exist-ok``).
    """
    words = ["yolobn", name, *(p for p in positional if p is not None)]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "-o" if key == "o" else f"--{key.replace('_', '-')}"
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)) and key in _REPEATED:
            for v in value:
                words += [flag, str(v)]
        elif isinstance(value, (list, tuple)):
            words += [flag, *(str(v) for v in value)]
        else:
            words += [flag, str(value)]
    return " ".join(w if w.startswith("-") or w == "yolobn" else shlex.quote(w) for w in words)
