"""Generic detection metrics: VOC and ACT average precision, greedy matching, box IoU.

One copy of each, used by the AVA frame-mAP (:mod:`evad_d2.evaluation.ava`), the UCF101-24 /
JHMDB frame- and video-mAP (:mod:`evad_d2.evaluation.ucf_jhmdb`) and the demo's tracker
(:mod:`evad_d2.utils.tracking`). Boxes are x1, y1, x2, y2 throughout.

* AP: :func:`voc_average_precision` (VOCdevkit all-point area, from precision/recall),
  :func:`average_precision_in_order` (VOC AP of detections already ranked),
  :func:`ranked_average_precision` (ranked as the official AVA code ranks them),
  :func:`act_average_precision` (ACT's trapezoid rule).
* Matching: :func:`match_detections` (the TF object-detection / AVA rule, per group).
* IoU: :func:`box_iou` (pairwise, (N, M)) and :func:`paired_box_iou` (element-wise), with
  continuous or ACT's pixel-inclusive widths.
"""
import numpy as np

__all__ = [
    "voc_average_precision",
    "average_precision_in_order",
    "ranked_average_precision",
    "act_average_precision",
    "match_detections",
    "box_iou",
    "paired_box_iou",
]


# ----------------------------------------------------------------------------- average precision


def voc_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision/recall curve with precision made monotone (VOCdevkit, all points).

    Args:
        precision, recall: (K,) arrays at each rank, recall non-decreasing.
    """
    if precision.size == 0:
        return 0.0
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[idx] - recall[idx - 1]) * precision[idx]))


def ranked_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC AP of detections ranked as the official code ranks them (``argsort(scores)[::-1]``).

    That order can put tied detections in another order than they were matched in (the
    official frame-mAP does so, and its protocols keep it); APs of our own use
    :func:`average_precision_in_order` with the matching order instead.
    """
    return average_precision_in_order(tp[np.argsort(scores)[::-1]], num_gt)


def average_precision_in_order(tp: np.ndarray, num_gt: int) -> float:
    """VOC AP of detections already in rank order (the order they were matched in).

    Args:
        tp: (N,) bool, true-positive flag of each detection, best ranked first.
        num_gt: number of ground-truth instances.
    """
    tp = np.asarray(tp).astype(np.int64)
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(1 - tp)
    precision = cum_tp.astype(np.float64) / (cum_tp + cum_fp)
    recall = cum_tp.astype(np.float64) / num_gt
    return voc_average_precision(precision, recall)


def act_average_precision(tp: np.ndarray, num_gt: int) -> float:
    """ACT's AP of detections in rank order: trapezoid rule over (R_i, P_i) from (0, 1).

    Args:
        tp: (N,) true-positive flags, best-ranked first.
        num_gt: G, the number of ground-truth boxes or tubes (> 0).
    """
    tp = np.asarray(tp, dtype=bool)
    cum_tp = np.cumsum(tp, dtype=np.float64)
    precision = np.concatenate([[1.0], cum_tp / np.arange(1, len(tp) + 1)])
    recall = np.concatenate([[0.0], cum_tp / num_gt])
    return float(np.sum((recall[1:] - recall[:-1]) * (precision[1:] + precision[:-1]) * 0.5))


# ----------------------------------------------------------------------------- matching


def match_detections(gt_group, gt_boxes, det_group, det_boxes, det_rank, iou_threshold) -> np.ndarray:
    """True-positive flags of detections, matched within groups (frame x class).

    Each detection takes its group's ground-truth box of highest IoU (first on ties, in the
    given ground-truth order); it is a true positive if the IoU reaches the threshold and no
    detection of lower ``det_rank`` took the same box.

    Args:
        gt_group: (M,) int64 group of each ground-truth box, ground truth sorted by group.
        gt_boxes: (M, 4) x1, y1, x2, y2.
        det_group: (N,) int64.
        det_boxes: (N, 4).
        det_rank: (N,) int64 matching order (lower first), unique.
    Returns:
        (N,) bool.
    """
    n = len(det_group)
    tp = np.zeros(n, dtype=bool)
    if n == 0 or len(gt_group) == 0:
        return tp
    lo = np.searchsorted(gt_group, det_group, "left")
    hi = np.searchsorted(gt_group, det_group, "right")
    counts = hi - lo
    has = counts > 0
    dets = np.flatnonzero(has)
    if len(dets) == 0:
        return tp
    c = counts[dets]
    pair_det = np.repeat(dets, c)
    seg_start = np.cumsum(c) - c
    pair_gt = lo[pair_det] + (np.arange(len(pair_det)) - np.repeat(seg_start, c))
    d, g = det_boxes[pair_det], gt_boxes[pair_gt]
    # Same arithmetic, in the same order, as the official np_box_ops.iou on [y1, x1, y2, x2].
    ih = np.maximum(0.0, np.minimum(d[:, 3], g[:, 3]) - np.maximum(d[:, 1], g[:, 1]))
    iw = np.maximum(0.0, np.minimum(d[:, 2], g[:, 2]) - np.maximum(d[:, 0], g[:, 0]))
    inter = ih * iw
    area_d = (d[:, 3] - d[:, 1]) * (d[:, 2] - d[:, 0])
    area_g = (g[:, 3] - g[:, 1]) * (g[:, 2] - g[:, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area_d + area_g - inter)
    iou = np.where(np.isnan(iou), np.inf, iou)  # np.argmax picks a NaN first; keep that.
    seg_max = np.maximum.reduceat(iou, seg_start)
    is_max = iou == np.repeat(seg_max, c)
    cand = np.flatnonzero(is_max)
    first = np.ones(len(cand), dtype=bool)
    first[1:] = pair_det[cand[1:]] != pair_det[cand[:-1]]
    best = cand[first]  # one pair per detection with candidates, in detection order
    best_det, best_gt, best_iou = pair_det[best], pair_gt[best], iou[best]
    ok = (best_iou >= iou_threshold) & np.isfinite(best_iou)
    best_det, best_gt = best_det[ok], best_gt[ok]
    if len(best_det) == 0:
        return tp
    order = np.lexsort((det_rank[best_det], best_gt))
    sg = best_gt[order]
    winner = np.ones(len(sg), dtype=bool)
    winner[1:] = sg[1:] != sg[:-1]
    tp[best_det[order][winner]] = True
    return tp


# ----------------------------------------------------------------------------- box IoU


def box_iou(a: np.ndarray, b: np.ndarray, *, pixel_inclusive: bool = False) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1, y1, x2, y2 boxes -> (N, M).

    Args:
        pixel_inclusive: ACT's IoU, widths and heights ``x2 - x1 + 1`` (same arithmetic as its
            ``iou2d``; a zero union gives NaN there and here). Else continuous coordinates
            (``x2 - x1``; a zero union gives 0).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return paired_box_iou(a[:, None], b[None], pixel_inclusive)


def paired_box_iou(a: np.ndarray, b: np.ndarray, pixel_inclusive: bool) -> np.ndarray:
    """IoU of boxes ``a[..., :]`` with ``b[..., :]`` (``(..., 4)`` float64, broadcast) -> ``(...)``,
    element by element (not pairwise: :func:`box_iou` is this broadcast to (N, M)); the rules of
    :func:`box_iou`."""
    one = 1.0 if pixel_inclusive else 0.0
    iw = np.maximum(0.0, np.minimum(a[..., 2] + one, b[..., 2] + one) - np.maximum(a[..., 0], b[..., 0]))
    ih = np.maximum(0.0, np.minimum(a[..., 3] + one, b[..., 3] + one) - np.maximum(a[..., 1], b[..., 1]))
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + one) * (a[..., 3] - a[..., 1] + one)
    area_b = (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return iou if pixel_inclusive else np.where(union > 0, iou, 0.0)
