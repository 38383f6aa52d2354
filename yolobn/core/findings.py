"""Health findings as data: one record per (layer, kind of problem), turned into words only for output.

A finding is a ``code`` (what kind), the ``name`` of the BN layer it is about and, for some codes,
the ``value`` that triggered it. Reports count findings by code (``findings_by_kind``) and write
their words with ``describe``; nothing ever parses the words back.

Codes (and their ``value``):

``non_finite``       NaN/inf in some BN tensor (value: the tensors, e.g. ``("running_var",)``)
``negative_var``     a negative running variance
``untrained_stats``  running statistics still at their init (mean 0, var 1) in a trained model
``init_affine``      every gamma/beta within ``Thresholds.init_tol`` of the init (1, 0) in a trained
                     model (value: the largest deviation)
``near_init``        every gamma/beta within ``Thresholds.near_init_tol`` of (1, 0), but not at init
                     (value: the largest deviation)
``eps_dominated``    at least ``Thresholds.eps_share`` of the channels eps-dominated (value: the share)
``extreme_scale``    some ``|gamma / sqrt(var + eps)|`` above ``Thresholds.extreme_scale`` (value: the max)
``all_dead``         every channel dead (data-free)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CODES", "Finding", "by_kind", "describe", "join"]

# In the order a layer's findings are listed (most basic first).
CODES = (
    "init_affine",
    "near_init",
    "untrained_stats",
    "non_finite",
    "negative_var",
    "eps_dominated",
    "extreme_scale",
    "all_dead",
)


@dataclass(frozen=True)
class Finding:
    """One health finding about one BN layer.

    Attributes:
        code: the kind of finding, one of ``CODES``.
        name: the dotted module name of the BN layer (``model.23.cv2.2.0.bn``).
        value: what triggered it, for the codes that have one (see the module docstring), else None.
    """

    code: str
    name: str
    value: Any = None

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown finding code {self.code!r}; known: {', '.join(CODES)}")


def describe(finding: Finding) -> str:
    """The finding in words, as written to the table, the CSV ``findings`` column and the JSON."""
    c, v = finding.code, finding.value
    if c == "non_finite":
        return f"non-finite values in {', '.join(v)}"
    if c == "negative_var":
        return "negative running_var"
    if c == "untrained_stats":
        return "untrained running statistics (mean 0, var 1)"
    if c == "init_affine":
        # Ultralytics applies no weight decay to BN: gamma/beta that never moved got no gradient.
        return f"gamma and beta still at init (1, 0) (max deviation {v:.2g}): (almost) no gradient reached this layer"
    if c == "near_init":
        return f"gamma and beta near init (1, 0) (max deviation {v:.2g}): the layer barely trained"
    if c == "eps_dominated":
        return f"{v:.0%} of channels eps-dominated"
    if c == "extreme_scale":
        return f"extreme scale |gamma/sqrt(var+eps)| = {v:.3g}"
    return "all channels dead"  # all_dead


def join(findings: list[Finding]) -> str:
    """One layer's findings as the text of the ``findings`` column ("; "-separated words)."""
    return "; ".join(describe(f) for f in findings)


def by_kind(findings: list[Finding]) -> dict[str, int]:
    """How many findings of each code, codes sorted by name (``summary()["findings_by_kind"]``)."""
    kinds: dict[str, int] = {}
    for f in findings:
        kinds[f.code] = kinds.get(f.code, 0) + 1
    return dict(sorted(kinds.items()))
