"""Frame-mAP of per-frame detections on UCF101-24 / JHMDB (formulas in :mod:`.protocols`)."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..ap import act_average_precision, average_precision_in_order, match_detections, paired_box_iou
from .protocols import DEFAULT_PROTOCOL, check_protocol, mean_ap

__all__ = ["FrameDetections", "frame_map"]


@dataclass
class FrameDetections:
    """Per-frame detections with one score per class.

    Attributes:
        video: list of video names, one per frame entry.
        frame: (F,) 1-based frame numbers.
        boxes: list of (n_i, 4) pixel boxes per frame entry.
        scores: list of (n_i, C) class scores per frame entry.
    """

    video: List[str]
    frame: np.ndarray
    boxes: List[np.ndarray]
    scores: List[np.ndarray]


@dataclass
class _FrameKeys:
    """One int64 key per (video of the test list, frame): ``video position * stride + frame``, so
    that sorting keys sorts by video (in list order), then frame."""

    position: Dict[str, int]
    stride: int

    def key(self, video: str, frame):
        return self.position[video] * self.stride + frame


def frame_map(
    gt: Dict,
    detections: FrameDetections,
    videos: Sequence[str],
    *,
    iou_threshold: float = 0.5,
    only_processed_frames: bool = False,
    protocol: str = DEFAULT_PROTOCOL,
) -> Tuple[float, Dict[int, float]]:
    """Frame-mAP over the annotated frames of ``videos`` (formulas in :mod:`.protocols`).

    Args:
        gt: from :func:`~evad_d2.data.formats.ucf_jhmdb.load_gt_pickle`.
        detections: per-frame detections (frames of videos outside ``videos`` are ignored);
            every box is a detection of every class, with that class's score.
        videos: the test videos, in the order of the test list (ACT's detection order).
        only_processed_frames: score only ground truth of frames present in ``detections``.
        protocol: "act" or "voc".

    Returns:
        (mAP, {label index: AP}) as fractions; classes without ground truth are NaN and left
        out of the mean.
    """
    check_protocol(protocol)
    num_classes = len(gt["labels"])
    last_gt = [int(t[-1, 0]) for v in videos for ts in gt["gttubes"].get(v, {}).values() for t in ts]
    keys = _FrameKeys({v: i for i, v in enumerate(videos)}, 1 + max(last_gt + [int(f) for f in detections.frame] + [0]))
    det_key, det_boxes, det_scores = _detection_rows(detections, keys, num_classes)
    processed = None
    if only_processed_frames:
        processed = {keys.key(v, int(f)) for v, f in zip(detections.video, detections.frame) if v in keys.position}

    aps = {}
    for label in range(num_classes):
        gt_key, gt_boxes = _class_ground_truth(gt, videos, label, keys, processed)
        if len(gt_key) == 0:
            aps[label] = float("nan")
            continue
        aps[label] = _class_frame_ap(
            gt_key, gt_boxes, det_key, det_boxes, det_scores[:, label], iou_threshold, protocol
        )
    return mean_ap(aps), aps


def _detection_rows(
    detections: FrameDetections, keys: _FrameKeys, num_classes: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All boxes of the test videos as rows in ACT's order (video of the list, frame, box), so
    that results do not depend on the input order.

    Returns:
        (N,) frame keys, (N, 4) boxes, (N, C) class scores.
    """
    det_key, det_boxes, det_scores = [], [], []
    for v, f, b, s in zip(detections.video, detections.frame, detections.boxes, detections.scores):
        if v not in keys.position or len(b) == 0:
            continue
        det_key.append(np.full(len(b), keys.key(v, int(f)), dtype=np.int64))
        det_boxes.append(np.asarray(b, dtype=np.float64).reshape(-1, 4))
        det_scores.append(np.asarray(s, dtype=np.float64).reshape(len(b), num_classes))
    det_key = np.concatenate(det_key) if det_key else np.zeros(0, dtype=np.int64)
    det_boxes = np.concatenate(det_boxes) if det_boxes else np.zeros((0, 4))
    det_scores = np.concatenate(det_scores) if det_scores else np.zeros((0, num_classes))
    by_frame = np.argsort(det_key, kind="stable")
    return det_key[by_frame], det_boxes[by_frame], det_scores[by_frame]


def _class_ground_truth(
    gt: Dict, videos: Sequence[str], label: int, keys: _FrameKeys, processed: Optional[set]
) -> Tuple[np.ndarray, np.ndarray]:
    """Ground-truth boxes of one class on the test videos, sorted by frame key (stable): (M,)
    keys and (M, 4) boxes; only frames in ``processed`` unless it is None."""
    gt_key, gt_boxes = [], []
    for v in videos:
        for tube in gt["gttubes"].get(v, {}).get(label, []):
            gt_key.append(keys.key(v, tube[:, 0].astype(np.int64)))
            gt_boxes.append(tube[:, 1:5])
    gt_key = np.concatenate(gt_key) if gt_key else np.zeros(0, dtype=np.int64)
    gt_boxes = np.concatenate(gt_boxes) if gt_boxes else np.zeros((0, 4))
    if processed is not None:
        keep = np.isin(gt_key, np.fromiter(processed, dtype=np.int64, count=len(processed)))
        gt_key, gt_boxes = gt_key[keep], gt_boxes[keep]
    by_group = np.argsort(gt_key, kind="stable")
    return gt_key[by_group], gt_boxes[by_group]


def _class_frame_ap(gt_key, gt_boxes, det_key, det_boxes, scores, iou_threshold: float, protocol: str) -> float:
    """Frame-AP of one class: ``scores`` (N,) of the detection rows, ground truth non-empty."""
    if protocol == "act":
        # ACT's frameAP: float32 rows (load_frame_detections), numpy's default sort; its ties.
        order = np.argsort(-scores.astype(np.float32))
        tp = _match_greedy_unmatched(gt_key, gt_boxes, det_key, det_boxes, order, iou_threshold)
        return act_average_precision(tp[order], len(gt_key))
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(len(scores))
    tp = match_detections(gt_key, gt_boxes, det_key, det_boxes, rank, iou_threshold)
    return average_precision_in_order(tp[order], len(gt_key))


def _match_greedy_unmatched(gt_key, gt_boxes, det_key, det_boxes, order, iou_threshold) -> np.ndarray:
    """ACT's frame matching: detections in ``order`` take the best not yet taken box of their group.

    A detection with a NaN IoU among the free boxes of its group takes nothing (``np.argmax``
    returns the NaN, which fails the threshold), as in ACT. Groups are independent, so the k-th
    detection of every group is matched at once (k = 0, 1, ...).

    Args:
        gt_key: (M,) group of each ground-truth box, sorted (stable within a group).
        gt_boxes: (M, 4).
        det_key: (N,) group of each detection; det_boxes: (N, 4).
        order: (N,) detection indices in rank order.
    Returns:
        (N,) bool true-positive flags.
    """
    tp = np.zeros(len(det_key), dtype=bool)
    if len(det_key) == 0 or len(gt_key) == 0:
        return tp
    lo = np.searchsorted(gt_key, det_key, "left")
    hi = np.searchsorted(gt_key, det_key, "right")
    ranked = order[hi[order] > lo[order]]
    if len(ranked) == 0:
        return tp
    grouped = ranked[np.argsort(det_key[ranked], kind="stable")]  # by group, rank order within
    keys = det_key[grouped]
    new_group = np.concatenate([[True], keys[1:] != keys[:-1]])
    group_start = np.flatnonzero(new_group)
    position = np.arange(len(grouped)) - group_start[np.cumsum(new_group) - 1]
    taken = np.zeros(len(gt_key), dtype=bool)
    for k in range(int(position.max()) + 1):
        dets = grouped[position == k]
        counts = hi[dets] - lo[dets]
        seg_start = np.cumsum(counts) - counts
        local = np.repeat(np.arange(len(dets)), counts)
        pair_gt = lo[dets][local] + (np.arange(len(local)) - seg_start[local])
        iou = paired_box_iou(gt_boxes[pair_gt], det_boxes[dets][local], True)
        free = ~taken[pair_gt]
        nan = np.isnan(iou) & free
        value = np.where(free & ~nan, iou, -np.inf)
        best = np.maximum.reduceat(value, seg_start)
        hit = (best >= iou_threshold) & ~np.logical_or.reduceat(nan, seg_start)
        cand = np.flatnonzero((value == best[local]) & hit[local])
        if len(cand) == 0:
            continue
        first = cand[np.concatenate([[True], local[cand[1:]] != local[cand[:-1]]])]
        taken[pair_gt[first]] = True
        tp[dets[local[first]]] = True
    return tp
