"""The demo's validation numbers with the installed Ultralytics, for docs/compat.md's "Same numbers".

Validates the demo, its ``reference`` swap and a ``reference:eps=1e-5`` swap on the shapes val split
(imgsz 160) and prints them as one JSON line. ``--ap84`` first puts 8.4.190's ``compute_ap`` into the
installed release (the one validator change between 8.3.0 and 8.4.190 that moves mAP):

    python scripts/release_numbers.py            # in each release's environment
    python scripts/release_numbers.py --ap84     # with 8.3.0: the same mAP as 8.4.190

The statistics need no script: ``yolobn inspect --csv a.csv --channels-csv b.csv --json c.json``
in both environments gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")


def compute_ap_84(recall: Any, precision: Any) -> tuple[float, Any, Any]:
    """8.4.190's ``ultralytics.utils.metrics.compute_ap``: precision 0 right after the last recall."""
    import numpy as np

    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    trapz = getattr(np, "trapezoid", None) or np.trapz
    return float(trapz(np.interp(x, mrec, mpre), x)), mpre, mrec


def main() -> None:
    import ultralytics

    import yolobn

    if "--ap84" in sys.argv:
        import ultralytics.utils.metrics as um

        um.compute_ap = compute_ap_84
    lm = yolobn.load()
    out: dict[str, Any] = {"ultralytics": ultralytics.__version__, "ap84": "--ap84" in sys.argv}
    for name, m in (
        ("base", lm),
        ("reference", yolobn.swap(lm, "reference")),
        ("reference:eps=1e-5", yolobn.swap(lm, "reference:eps=1e-5")),
    ):
        r = yolobn.validate(m, "shapes", imgsz=160, batch=16)
        out[name] = {k: round(v, 7) for k, v in r.items() if k.startswith("metrics/") or k == "fitness"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
