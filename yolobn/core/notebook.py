"""The pieces of compact HTML that result objects show in notebooks (``_repr_html_``): a titled
list of headline numbers and a short table. Each result object chooses its own numbers and columns;
these helpers only escape and format (pandas frames are read duck-typed, nothing is imported)."""

from __future__ import annotations

import math
from html import escape
from typing import Any

__all__ = ["ROWS", "answers", "fmt", "kv", "table"]

ROWS = 10


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:#.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return escape(str(v))


def table(df: Any, cols: list[str], rows: int = ROWS) -> str:
    """The first ``rows`` rows of ``cols`` (those that exist) of a DataFrame or ``yolobn.core.table.Table``."""
    cols = [c for c in cols if c in df.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    values = [list(df[c])[:rows] for c in cols]
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in zip(*values, strict=True)
    )
    more = f"<p style='color:#666'>{len(df) - rows} more rows</p>" if len(df) > rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def kv(title: str, items: list[tuple[str, Any]]) -> str:
    lis = "".join(f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in items if v not in (None, ""))
    return f"<h4 style='margin:4px 0'>{escape(title)}</h4><ul style='margin:0'>{lis}</ul>"


_COLORS = {"ok": "#1a7f37", "look": "#b07d00", "act": "#b2182b"}


def answers(verdicts: list[Any]) -> str:
    """The answers (``yolobn.core.verdict.Verdict``): status, question, evidence, next command."""
    items = "".join(
        f"<li><b style='color:{_COLORS.get(v.status, '#333')}'>{escape(v.status)}</b> "
        f"<b>{escape(v.question)}</b>: {escape(v.evidence)}"
        + (f"<br><code>{escape(v.next)}</code>" if v.next else "")
        + "</li>"
        for v in verdicts
    )
    return f"<ul style='margin:4px 0'>{items}</ul>"
