"""Detection tubes on UCF101-24 / JHMDB: linking per-frame detections, tube IoU, tube NMS."""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from ..ap import box_iou, paired_box_iou
from .protocols import ACT_TUBE_NMS_OVERLAP

__all__ = ["LINK_MIN_SCORE", "Tube", "link_tubes", "tube_iou", "tube_nms"]

# link_tubes drops tubes scoring below this (ACT's BuildTubes does the same at 0.005).
LINK_MIN_SCORE = 0.005


@dataclass
class Tube:
    """A detection tube: ``boxes[i]`` is the box on frame ``frames[i]`` (consecutive frames)."""

    frames: np.ndarray  # (L,) int
    boxes: np.ndarray  # (L, 4)
    score: float

    def as_array(self) -> np.ndarray:
        """(L, 5): frame, x1, y1, x2, y2 (the ground-truth tube layout)."""
        return np.concatenate([self.frames[:, None].astype(np.float64), self.boxes], axis=1)


@dataclass
class _LinkedDetections:
    """A tube while it is being linked: the detections it took, one per frame it was extended on
    (frames ascending, possibly with gaps)."""

    frames: List[int] = field(default_factory=list)
    boxes: List[np.ndarray] = field(default_factory=list)  # (4,) each
    scores: List[float] = field(default_factory=list)

    def append(self, frame: int, box: np.ndarray, score: float):
        self.frames.append(frame)
        self.boxes.append(box)
        self.scores.append(score)

    @property
    def last_frame(self) -> int:
        return self.frames[-1]

    @property
    def last_box(self) -> np.ndarray:
        return self.boxes[-1]

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores))

    def to_tube(self) -> Tube:
        """The tube on every frame of its span, boxes of skipped frames linearly interpolated."""
        span = np.arange(self.frames[0], self.frames[-1] + 1)
        boxes = np.array(self.boxes)
        filled = np.stack([np.interp(span, self.frames, boxes[:, k]) for k in range(4)], axis=1)
        return Tube(span, filled, self.mean_score)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep = []
    suppressed = np.zeros(len(scores), dtype=bool)
    ious = box_iou(boxes, boxes)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        if len(keep) == top_k:
            break
        suppressed |= ious[i] > iou_threshold
    return np.array(keep, dtype=np.int64)


def link_tubes(
    frames: Sequence[int],
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    *,
    nms_iou: float = 0.3,
    top_k: int = 10,
    link_iou: float = 0.2,
    max_gap: Optional[int] = None,
    min_length: int = 15,
    min_score: float = LINK_MIN_SCORE,
) -> List[Tube]:
    """Greedy online linking of one class's per-frame detections into tubes (ACT-style).

    Frames are visited in order. On each, the detections are reduced by NMS (``nms_iou``) to the
    ``top_k`` best; then the live tubes, in descending order of mean score, each take the
    highest-scored unclaimed detection whose IoU with the tube's last box is >= ``link_iou``.
    A tube not extended within ``max_gap`` frames ends; unclaimed detections start new tubes.
    A tube scores the mean of its detection scores; tubes scoring below ``min_score`` or
    spanning fewer than ``min_length`` frames are dropped; boxes of skipped frames are
    linearly interpolated.

    Args:
        frames: frame numbers of the processed frames (any order).
        boxes: per frame, (n, 4) boxes.
        scores: per frame, (n,) scores of this class.
        max_gap: frames a tube may skip; None: the smallest step between processed frames
            (1 when every frame is processed).

    Returns:
        Tubes, highest score first.
    """
    order = np.argsort(np.asarray(frames), kind="stable")
    frames = [int(frames[i]) for i in order]
    boxes = [np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4) for i in order]
    scores = [np.asarray(scores[i], dtype=np.float64).reshape(-1) for i in order]
    if max_gap is None:
        steps = np.diff(frames)
        steps = steps[steps > 0]
        max_gap = int(steps.min()) if len(steps) else 1

    live: List[_LinkedDetections] = []
    ended: List[_LinkedDetections] = []
    for frame, frame_boxes, frame_scores in zip(frames, boxes, scores):
        if len(frame_boxes):
            keep = _nms(frame_boxes, frame_scores, nms_iou, top_k)
            frame_boxes, frame_scores = frame_boxes[keep], frame_scores[keep]
        live = _link_frame(live, ended, frame, frame_boxes, frame_scores, link_iou=link_iou, max_gap=max_gap)
    ended.extend(live)

    tubes = [
        t.to_tube() for t in ended if t.mean_score >= min_score and t.last_frame - t.frames[0] + 1 >= min_length
    ]
    tubes.sort(key=lambda tube: -tube.score)
    return tubes


def _link_frame(
    live: List[_LinkedDetections],
    ended: List[_LinkedDetections],
    frame: int,
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    link_iou: float,
    max_gap: int,
) -> List[_LinkedDetections]:
    """One frame of :func:`link_tubes`: the live tubes (best mean score first) take a detection
    each or wait; those past ``max_gap`` move to ``ended``; unclaimed detections start tubes.

    Args:
        boxes, scores: (n, 4) and (n,), the frame's detections after NMS.
    Returns:
        The tubes live after this frame.
    """
    claimed = np.zeros(len(boxes), dtype=bool)
    still_live = []
    for tube in sorted(live, key=lambda t: -t.mean_score):
        if frame - tube.last_frame > max_gap:
            ended.append(tube)
            continue
        if len(boxes):
            ious = box_iou(boxes, tube.last_box[None])[:, 0]
            ok = (ious >= link_iou) & ~claimed
            if ok.any():
                j = int(np.argmax(np.where(ok, scores, -np.inf)))
                claimed[j] = True
                tube.append(frame, boxes[j], float(scores[j]))
        still_live.append(tube)
    for j in np.flatnonzero(~claimed):
        started = _LinkedDetections()
        started.append(frame, boxes[j], float(scores[j]))
        still_live.append(started)
    return still_live


def tube_iou(a: np.ndarray, b: np.ndarray, *, pixel_inclusive: bool = False) -> float:
    """Spatio-temporal IoU of two (L, 5) tubes (frame, x1, y1, x2, y2; frames ascending).

    Temporal IoU of the frame spans times the mean box IoU (the arithmetic of
    :func:`evad_d2.evaluation.ap.box_iou`, ``pixel_inclusive`` as there) on the frames both tubes
    have; ACT's ``iou3dt`` when both tubes have every frame of their overlap.
    """
    a0, a1, b0, b1 = a[0, 0], a[-1, 0], b[0, 0], b[-1, 0]
    inter = min(a1, b1) - max(a0, b0) + 1
    if inter <= 0:
        return 0.0
    union = max(a1, b1) - min(a0, b0) + 1
    common, ia, ib = np.intersect1d(a[:, 0], b[:, 0], assume_unique=True, return_indices=True)
    if len(common) == 0:
        return 0.0
    ious = paired_box_iou(a[ia, 1:5], b[ib, 1:5], pixel_inclusive)
    return float(inter / union * ious.mean())


def tube_nms(tubes: Sequence[Tube], overlap: float = ACT_TUBE_NMS_OVERLAP) -> np.ndarray:
    """ACT's tube NMS (``nms3dt``) of one video's tubes of one class.

    Repeatedly keeps the highest-scored remaining tube (the last of ``np.argsort(scores)`` on
    float32 scores, so ties as in ACT) and drops the remaining tubes whose ACT tube IoU with it exceeds ``overlap``.

    Returns:
        Indices of the kept tubes, in the order they were kept.
    """
    if not tubes:
        return np.zeros(0, dtype=np.int64)
    arrays = [t.as_array() for t in tubes]
    remaining = np.argsort(np.array([t.score for t in tubes], dtype=np.float32))  # ACT's float32 scores
    keep = []
    while remaining.size:
        i = remaining[-1]
        keep.append(int(i))
        rest = remaining[:-1]
        ious = np.array([tube_iou(arrays[j], arrays[i], pixel_inclusive=True) for j in rest], dtype=np.float64)
        remaining = rest[ious <= overlap]  # NaN compares False: dropped, as in ACT
    return np.array(keep, dtype=np.int64)
