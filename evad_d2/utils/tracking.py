"""A minimal IoU tracker, so that a person keeps one id across the keyframes of a video.

EVAD detects actors independently at every keyframe; for display and for per-person outputs the
detections of consecutive keyframes are linked by box overlap (optimal one-to-one assignment,
Hungarian algorithm). No appearance model and no motion model: at one keyframe per second people
rarely move far enough for this to fail, and when they do the id changes, nothing else.
"""

from typing import List

import numpy as np
from scipy.optimize import linear_sum_assignment

from evad_d2.evaluation.ap import box_iou

__all__ = ["IoUTracker"]


class IoUTracker:
    """Link detections of consecutive keyframes by box IoU.

    Each :meth:`update` matches the new boxes to the live tracks maximising the total IoU of the
    pairs with IoU >= ``iou_threshold`` (other pairs count as 0 and are not matched). Unmatched
    boxes start new tracks (ids 0, 1, 2, ... never reused); a track unmatched for more than
    ``max_age`` consecutive updates ends. A matched track takes the new box.

    Args:
        iou_threshold: minimum IoU to continue a track.
        max_age: keyframes a track survives without a match (e.g. a missed detection).
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 1):
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        self.iou_threshold = iou_threshold
        self.max_age = max_age
        self._ids: List[int] = []
        self._boxes = np.zeros((0, 4))
        self._ages: List[int] = []
        self._next_id = 0

    def update(self, boxes) -> List[int]:
        """Assign track ids to the (N, 4) XYXY boxes of the next keyframe; returns N ids."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        assigned = [-1] * len(boxes)
        matched_tracks = set()
        if len(boxes) and len(self._ids):
            iou = box_iou(self._boxes, boxes)
            # Pairs below the threshold gain nothing, so they never displace a valid pairing.
            gain = np.where(iou >= self.iou_threshold, iou, 0.0)
            rows, cols = linear_sum_assignment(-gain)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.iou_threshold:
                    assigned[c] = self._ids[r]
                    matched_tracks.add(r)
        ids, new_boxes, ages = [], [], []
        for r, tid in enumerate(self._ids):
            if r in matched_tracks:
                continue
            if self._ages[r] + 1 <= self.max_age:
                ids.append(tid)
                new_boxes.append(self._boxes[r])
                ages.append(self._ages[r] + 1)
        for c, box in enumerate(boxes):
            if assigned[c] < 0:
                assigned[c] = self._next_id
                self._next_id += 1
            ids.append(assigned[c])
            new_boxes.append(box)
            ages.append(0)
        self._ids, self._ages = ids, ages
        self._boxes = np.asarray(new_boxes, dtype=np.float64).reshape(-1, 4)
        return assigned
