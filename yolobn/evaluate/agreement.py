"""Label-free comparison of two models: how far apart are their outputs on the same input?

``output_difference`` uses a fixed random batch; ``agreement`` streams real images through the
one image pipeline (``yolobn.io.images``) and compares the raw head outputs and, after NMS, the
boxes (an optimal one-to-one matching by class and IoU) or the top-1 classes.

Heads that output final detections, one row per query (RT-DETR's decoder: ``[cx, cy, w, h, score,
class]``, normalised; YOLO end-to-end heads: ``[x1, y1, x2, y2, score, class]``), list their rows
by score after a top-k selection: two scores that a float rounding puts the other way round swap
two rows, and an elementwise difference then compares unrelated detections (0.9 on RT-DETR for a
swap that changes the outputs by 1e-7). Their rows are compared as sets instead: each row paired
with one row of the other output (same class, nearest first), and their boxes matched as boxes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolobn.bn.walk import unwrap
from yolobn.io import ultra
from yolobn.io.images import check_decoded, iter_batches, model_stride

__all__ = ["agreement", "first_tensor", "max_matching", "output_difference"]


def output_difference(a: nn.Module, b: nn.Module, imgsz: int, seed: int = 0) -> dict[str, float]:
    """Largest absolute and relative difference of the raw head outputs on a fixed random batch."""
    x = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ya, yb = first_tensor(a.eval()(x)), first_tensor(b.eval()(x))
    d = (ya - yb).abs().max().item()
    return {"max_abs_diff": d, "max_rel_diff": d / max(ya.abs().max().item(), 1e-12)}


def agreement(
    a: Any,
    b: Any,
    images: list[Path],
    imgsz: int,
    *,
    batch: int = 16,
    conf: float = 0.25,
    iou: float = 0.5,
) -> dict[str, float]:
    """Compare two models on real images without labels.

    Args:
        a, b: the reference and the changed model (LoadedModel, nn.Module or ultralytics.YOLO).
        images: image files, preprocessed as Ultralytics' predict does (``yolobn.io.images``).
        imgsz, batch: inference size and images per forward pass.
        conf, iou: the confidence threshold of the boxes compared, and the IoU a match needs.

    Returns:
        ``max_abs_diff`` / ``max_rel_diff`` of the raw head outputs, ``images``, ``ms_per_image``
        and ``ms_per_image_ref`` (the forward time per image of ``b`` and of ``a``), and for detection-style heads ``boxes_a``, ``boxes_b`` and
        ``box_agreement``: the most pairs of boxes that can be matched one to one (same class,
        IoU >= ``iou``), divided by the larger of the two box counts, over all images (NaN when
        neither model finds a box); for classifiers, ``top1_agreement``.
    """

    ma, mb = unwrap(a).eval(), unwrap(b).eval()
    rows = detection_rows(ma)
    task = getattr(getattr(a, "meta", None), "task", None) or getattr(ma, "task", None)
    nc = len(getattr(ma, "names", {}) or {})
    skipped: list[Path] = []
    d_max, ref_max, seen, elapsed, elapsed_ref = 0.0, 0.0, 0, 0.0, 0.0
    top1_same, matched, total, boxes_a, boxes_b = 0, 0, 0, 0, 0
    classify = task == "classify"
    batches = iter_batches(images, imgsz, stride=model_stride(ma), batch=batch, task=task, skipped=skipped)
    with torch.no_grad():
        for x, names in batches:
            t0 = time.perf_counter()
            ya = ma(x)
            t1 = time.perf_counter()
            yb = mb(x)
            elapsed += time.perf_counter() - t1
            elapsed_ref += t1 - t0
            ta, tb = first_tensor(ya), first_tensor(yb)
            seen += len(names)
            if rows and ta.dim() == 3 and ta.shape[-1] == 6:
                d_max = max(d_max, row_difference(ta, tb))
                ref_max = max(ref_max, ta[..., :5].abs().max().item())
                m, t, na, nb = _row_matches(ta, tb, rows, conf, iou)
                matched, total, boxes_a, boxes_b = matched + m, total + t, boxes_a + na, boxes_b + nb
                continue
            d_max = max(d_max, (ta - tb).abs().max().item())
            ref_max = max(ref_max, ta.abs().max().item())
            if classify or ta.dim() == 2:
                classify = True
                top1_same += int((ta.argmax(1) == tb.argmax(1)).sum())
                continue
            m, t, na, nb = _box_matches(ta, tb, nc, conf, iou)
            matched, total, boxes_a, boxes_b = matched + m, total + t, boxes_a + na, boxes_b + nb
    check_decoded(seen, skipped)
    out = {
        "max_abs_diff": d_max,
        "max_rel_diff": d_max / max(ref_max, 1e-12),
        "images": float(seen),
        "ms_per_image": 1000 * elapsed / seen,
        "ms_per_image_ref": 1000 * elapsed_ref / seen,
    }
    if classify:
        out["top1_agreement"] = top1_same / seen
        return out
    out["boxes_a"] = float(boxes_a)
    out["boxes_b"] = float(boxes_b)
    # No box on either side says nothing about agreement: NaN, not a perfect score.
    out["box_agreement"] = matched / total if total else float("nan")
    return out


def _box_matches(
    ta: torch.Tensor, tb: torch.Tensor, nc: int, conf: float, iou: float
) -> tuple[int, int, int, int]:
    """(matched pairs, max(count a, count b) summed over images, boxes of a, boxes of b) after NMS."""
    from ultralytics.utils.metrics import box_iou

    non_max_suppression = ultra.non_max_suppression()
    pa = non_max_suppression(ta, conf, 0.7, nc=nc)
    pb = non_max_suppression(tb, conf, 0.7, nc=nc)
    matched = total = 0
    for da, db in zip(pa, pb, strict=True):
        total += max(len(da), len(db))
        if len(da) and len(db):
            ious = box_iou(da[:, :4], db[:, :4])
            ious[da[:, 5][:, None] != db[:, 5][None, :]] = 0
            matched += max_matching(ious.numpy(), iou)
    return matched, total, sum(len(p) for p in pa), sum(len(p) for p in pb)


def detection_rows(model: nn.Module) -> str | None:
    """The box format of a head that outputs one row per detection: ``xywh`` (RT-DETR's decoder,
    normalised centre and size), ``xyxy`` (an end-to-end YOLO head), or None (rows before NMS)."""
    inner = getattr(model, "model", None)
    head = inner[-1] if isinstance(inner, nn.Sequential) and len(inner) else None
    if head is None:
        return None
    if type(head).__name__ == "RTDETRDecoder":
        return "xywh"
    return "xyxy" if getattr(head, "end2end", False) else None


def row_difference(ta: torch.Tensor, tb: torch.Tensor) -> float:
    """The largest difference of box and score between paired rows of two ``(batch, rows, 6)``
    detection outputs, whatever their order: per image, the rows are paired one to one, nearest
    pairs of the same class first (greedy; the largest |difference| of the box and score columns).
    A row left to pair with another class is compared with nothing (its own largest value)."""
    import numpy as np

    worst = 0.0
    for ra, rb in zip(ta.double().numpy(), tb.double().numpy(), strict=True):
        d = np.abs(ra[:, None, :5] - rb[None, :, :5]).max(-1)
        d[ra[:, 5][:, None] != rb[:, 5][None, :]] = np.inf
        free_a, free_b = [True] * len(ra), [True] * len(rb)
        left = min(len(ra), len(rb))
        for k in np.argsort(d, axis=None, kind="stable").tolist():
            i, j = divmod(k, d.shape[1])
            if not left or not np.isfinite(d[i, j]):
                break
            if free_a[i] and free_b[j]:
                free_a[i] = free_b[j] = False
                worst, left = max(worst, float(d[i, j])), left - 1
        for r, free in ((ra, free_a), (rb, free_b)):  # no row of the same class left to pair with
            rest = r[np.asarray(free, dtype=bool), :5]
            worst = max(worst, float(np.abs(rest).max()) if len(rest) else 0.0)
    return worst


def _row_matches(
    ta: torch.Tensor, tb: torch.Tensor, fmt: str, conf: float, iou: float
) -> tuple[int, int, int, int]:
    """``_box_matches`` for outputs that are already detections (no NMS): rows above ``conf``."""
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywh2xyxy

    matched = total = boxes_a = boxes_b = 0
    for ra, rb in zip(ta, tb, strict=True):
        da, db = ra[ra[:, 4] > conf], rb[rb[:, 4] > conf]
        boxes_a, boxes_b, total = boxes_a + len(da), boxes_b + len(db), total + max(len(da), len(db))
        if len(da) and len(db):
            xa, xb = (xywh2xyxy(da[:, :4]), xywh2xyxy(db[:, :4])) if fmt == "xywh" else (da[:, :4], db[:, :4])
            ious = box_iou(xa, xb)
            ious[da[:, 5][:, None] != db[:, 5][None, :]] = 0
            matched += max_matching(ious.numpy(), iou)
    return matched, total, boxes_a, boxes_b


def max_matching(ious: Any, thr: float) -> int:
    """The largest number of one-to-one pairs with IoU >= ``thr`` (maximum bipartite matching).

    A greedy match (each box of ``a`` in confidence order takes its best box of ``b``) can take the
    box another one needed and undercount in crowded scenes; augmenting paths (Kuhn's algorithm)
    give the optimal count. Detections per image are capped by NMS (300), so this stays small.
    """
    import numpy as np

    ok = np.asarray(ious) >= thr
    adj = [np.flatnonzero(row).tolist() for row in ok]
    owner = [-1] * ok.shape[1]  # box of b -> the box of a it is matched to

    def augment(i: int, seen: list[bool]) -> bool:
        for j in adj[i]:
            if not seen[j]:
                seen[j] = True
                if owner[j] < 0 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, [False] * ok.shape[1]) for i in range(ok.shape[0]) if adj[i])


def first_tensor(t: Any) -> Any:
    """The first tensor of a model output (nested tuples, lists and dicts of the heads)."""
    while isinstance(t, (list, tuple)):
        t = t[0]
    if isinstance(t, dict):
        t = next(iter(t.values()))
    return t
