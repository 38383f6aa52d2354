"""The precision written to disk, and the JSON text yolobn writes.

The data are float32 (or float16) tensors: about 7 significant digits. The float64 digits beyond
that differ between CPUs and thread counts (observed statistics, sums), so every file carries 7
significant digits and the written bytes are the same on every machine.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["FLOAT_FORMAT", "SIGNIFICANT", "json_safe", "json_text"]

SIGNIFICANT = 7  # digits of a float in JSON
FLOAT_FORMAT = "%.7g"  # the same for CSV (pandas' float_format)


def json_safe(obj: Any) -> Any:
    """JSON-safe values: numpy scalars to Python, NaN/inf to None (strict JSON has no NaN), floats
    rounded to ``SIGNIFICANT`` digits, mapping keys as text."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float):
        return float(f"{obj:.{SIGNIFICANT}g}") if math.isfinite(obj) else None
    return obj


def json_text(doc: Any) -> str:
    """``doc`` as the JSON text yolobn writes: strict (no NaN), indented, 7 significant digits."""
    return json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n"
