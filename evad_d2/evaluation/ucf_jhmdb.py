"""UCF101-24 / JHMDB: frame-mAP and video-mAP of a frame-level detector.

Two protocols; ``protocol="act"`` (:data:`DEFAULT_PROTOCOL`) is the ACT evaluation code that the
published UCF101-24 / JHMDB numbers come from (ACT, MOC, TubeR, YOWO, STMixer, ...; its Python 3
port is ``src/ACT.py`` + ``src/ACT_utils/ACT_utils.py`` of MCG-NJU/MOC-Detector) and equals it on
the same detections; ``protocol="voc"`` is the PASCAL-VOC variant this project used before.

Notation: a box is (x1, y1, x2, y2) in pixels; for a class, N ranked detections, G ground-truth
boxes (frame-mAP) or tubes (video-mAP); ``tp_i`` is 1 if the i-th ranked detection is a true
positive; ``P_i = (tp_1 + ... + tp_i) / i`` and ``R_i = (tp_1 + ... + tp_i) / G``.

ACT protocol (default):

* Box IoU with inclusive pixel coordinates (:func:`box_iou` with ``pixel_inclusive=True``)::

      w = max(0, min(x2, x2') + 1 - max(x1, x1')),  h likewise,  area = (x2 - x1 + 1) (y2 - y1 + 1)
      IoU = w h / (area + area' - w h)

* Frame-AP at IoU ``t`` (default 0.5): detections are the rows (video, frame, box, class score)
  in the order video (of the test list), frame, box, ranked by ``np.argsort(-score)`` on float32
  scores (ACT's row type and numpy's default sort: scores equal in float32 tie, and ties come out
  in ACT's order, which is numpy's and may differ between machines; matching and the curve follow
  that one order). Each detection, in rank order, takes the ground-truth box of its frame and
  class of highest IoU among those not yet taken (first on ties); it is a true positive, and
  takes the box, if that IoU >= ``t``; otherwise it is a false positive and takes nothing (so a
  later detection may still match a box a better-scored one missed).
* AP (:func:`act_average_precision`): trapezoid rule over the raw curve, from (R_0, P_0) = (0, 1)::

      AP = sum_{i=1..N} (R_i - R_{i-1}) (P_i + P_{i-1}) / 2

* Video-AP: the tubes of each video and class first go through tube NMS (:func:`tube_nms`, ACT's
  ``nms3dt``): repeatedly keep the highest-scored remaining tube (the last of
  ``np.argsort(score)``) and drop the others whose tube IoU with it exceeds 0.3
  (:data:`ACT_TUBE_NMS_OVERLAP`). Kept tubes of all test videos (video order, then NMS order) are
  ranked by ``np.argsort(-score)``; each takes the ground-truth tube of its video of highest tube
  IoU among those not yet taken, and is a true positive if that IoU >= ``t``. Same AP. Tube
  scores are float32 in both sorts, as ACT's tubes carry them.
* Tube IoU (:func:`tube_iou`) of tubes spanning frames [s, e] and [s', e']::

      IoU_t = (min(e, e') - max(s, s') + 1) / (max(e, e') - min(s, s') + 1)   (0 if disjoint)
      tube IoU = IoU_t * mean over the frames both tubes have of the box IoU on that frame

  (ACT requires both tubes to have every frame of the overlap; on such tubes the two agree.)
* video-mAP@0.5:0.95 is the mean of the video-mAPs at ``0.5 + 0.05 * i``, i = 0..9, the values
  ACT's loop computes (:data:`VIDEO_MAP_THRESHOLDS`; 0.85 is 0.8500000000000001, not rounded;
  ``np.arange(0.5, 0.95, 0.05)`` gives other values from 0.6 on).

VOC protocol (``protocol="voc"``):

* Box IoU in continuous coordinates, ``area = (x2 - x1) (y2 - y1)`` (as detectron2).
* Frame-AP: detections ranked by descending score, ties in the order above (stable sort); each
  takes the ground-truth box of highest IoU in its frame (first on ties) and is a true positive if
  the IoU >= ``t`` and no better-ranked detection took that box, else a false positive; the curve
  is built in that same order.
* AP: VOC all-point interpolation, ``AP = sum_k (r_k - r_{k-1}) max_{R_i >= r_k} P_i`` over the
  distinct recall values r_k.
* Video-AP: no tube NMS; tubes ranked by descending score (stable), each takes the best not yet
  matched ground-truth tube of its video if its tube IoU (continuous box IoU) >= ``t``.

Both protocols: every annotated frame of the test videos is ground truth (one box per tube
through it); a detection on a frame without ground truth of its class is a false positive; the
mAP is the mean over classes with ground truth (a class without any is NaN and left out; ACT
would count it as 0, or fail on a division by zero if it has detections).

Tubes come from :func:`link_tubes` (greedy linking of the per-frame detections, the frame-level
analogue of ACT's tubelet linking), each scored by the mean of its detection scores.

Ground truth is the ACT pickle (``UCF101v2-GT.pkl`` / ``JHMDB-GT.pkl``, see
:func:`~evad_d2.data.formats.ucf_jhmdb.load_gt_pickle`), read with a restricted unpickler: a crafted
file cannot run code.
"""
import json
import logging
import math
import os
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from iopath.common.file_io import g_pathmgr

from evad_d2.data.formats.ucf_jhmdb import load_gt_pickle, split_videos
from evad_d2.utils.atomic_io import atomic_write

from .ap import act_average_precision, average_precision_in_order, box_iou, match_detections, paired_box_iou
from .plots import plot_per_class_ap

__all__ = [
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "ACT_TUBE_NMS_OVERLAP",
    "VIDEO_MAP_THRESHOLDS",
    "FrameDetections",
    "frame_map",
    "Tube",
    "link_tubes",
    "tube_iou",
    "tube_nms",
    "video_map",
    "UCFJHMDBEvaluator",
]

logger = logging.getLogger(__name__)

PROTOCOLS = ("act", "voc")
DEFAULT_PROTOCOL = "act"

# ACT's videoAP: nms3dt(tubes, 0.3) on each video's tubes of a class.
ACT_TUBE_NMS_OVERLAP = 0.3

# 0.5:0.95 as ACT's loop computes them (0.5 + 0.05 * i); kept unrounded so that a tube exactly at
# a threshold counts as it does there.
VIDEO_MAP_THRESHOLDS = tuple(0.5 + 0.05 * i for i in range(10))

# link_tubes drops tubes scoring below this (ACT's BuildTubes does the same at 0.005).
LINK_MIN_SCORE = 0.005

def _check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return protocol


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


# ----------------------------------------------------------------------------- frame-mAP


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


def frame_map(
    gt: Dict,
    detections: FrameDetections,
    videos: Sequence[str],
    *,
    iou_threshold: float = 0.5,
    only_processed_frames: bool = False,
    protocol: str = DEFAULT_PROTOCOL,
) -> Tuple[float, Dict[int, float]]:
    """Frame-mAP over the annotated frames of ``videos`` (formulas in the module docstring).

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
    _check_protocol(protocol)
    vindex = {v: i for i, v in enumerate(videos)}
    last_gt = [int(t[-1, 0]) for v in videos for ts in gt["gttubes"].get(v, {}).values() for t in ts]
    stride = 1 + max(last_gt + [int(f) for f in detections.frame] + [0])
    num_classes = len(gt["labels"])

    det_key, det_boxes, det_scores = [], [], []
    for v, f, b, s in zip(detections.video, detections.frame, detections.boxes, detections.scores):
        if v not in vindex or len(b) == 0:
            continue
        det_key.append(np.full(len(b), vindex[v] * stride + int(f), dtype=np.int64))
        det_boxes.append(np.asarray(b, dtype=np.float64).reshape(-1, 4))
        det_scores.append(np.asarray(s, dtype=np.float64).reshape(len(b), num_classes))
    det_key = np.concatenate(det_key) if det_key else np.zeros(0, dtype=np.int64)
    det_boxes = np.concatenate(det_boxes) if det_boxes else np.zeros((0, 4))
    det_scores = np.concatenate(det_scores) if det_scores else np.zeros((0, num_classes))
    # ACT's row order (video of the list, frame, box): results do not depend on the input order.
    by_frame = np.argsort(det_key, kind="stable")
    det_key, det_boxes, det_scores = det_key[by_frame], det_boxes[by_frame], det_scores[by_frame]
    processed = {vindex[v] * stride + int(f) for v, f in zip(detections.video, detections.frame) if v in vindex}

    aps = {}
    for label in range(num_classes):
        g_key, g_boxes = [], []
        for v in videos:
            for tube in gt["gttubes"].get(v, {}).get(label, []):
                g_key.append(vindex[v] * stride + tube[:, 0].astype(np.int64))
                g_boxes.append(tube[:, 1:5])
        g_key = np.concatenate(g_key) if g_key else np.zeros(0, dtype=np.int64)
        g_boxes = np.concatenate(g_boxes) if g_boxes else np.zeros((0, 4))
        if only_processed_frames:
            keep = np.isin(g_key, np.fromiter(processed, dtype=np.int64, count=len(processed)))
            g_key, g_boxes = g_key[keep], g_boxes[keep]
        if len(g_key) == 0:
            aps[label] = float("nan")
            continue
        by_group = np.argsort(g_key, kind="stable")
        g_key, g_boxes = g_key[by_group], g_boxes[by_group]
        scores = det_scores[:, label]
        if protocol == "act":
            # ACT's frameAP: float32 rows (load_frame_detections), numpy's default sort; its ties.
            order = np.argsort(-scores.astype(np.float32))
            tp = _match_greedy_unmatched(g_key, g_boxes, det_key, det_boxes, order, iou_threshold)
            aps[label] = act_average_precision(tp[order], len(g_key))
        else:
            order = np.argsort(-scores, kind="stable")
            rank = np.empty(len(scores), dtype=np.int64)
            rank[order] = np.arange(len(scores))
            tp = match_detections(g_key, g_boxes, det_key, det_boxes, rank, iou_threshold)
            aps[label] = average_precision_in_order(tp[order], len(g_key))
    values = np.array(list(aps.values()))
    mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return mean, aps


# ----------------------------------------------------------------------------- tubes


@dataclass
class Tube:
    """A detection tube: ``boxes[i]`` is the box on frame ``frames[i]`` (consecutive frames)."""

    frames: np.ndarray  # (L,) int
    boxes: np.ndarray  # (L, 4)
    score: float

    def as_array(self) -> np.ndarray:
        """(L, 5): frame, x1, y1, x2, y2 (the ground-truth tube layout)."""
        return np.concatenate([self.frames[:, None].astype(np.float64), self.boxes], axis=1)


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

    live: List[list] = []  # [frames, boxes, scores] lists per tube
    done: List[list] = []
    for t, b, s in zip(frames, boxes, scores):
        if len(b):
            keep = _nms(b, s, nms_iou, top_k)
            b, s = b[keep], s[keep]
        claimed = np.zeros(len(b), dtype=bool)
        live.sort(key=lambda tube: -float(np.mean(tube[2])))
        still = []
        for tube in live:
            if t - tube[0][-1] > max_gap:
                done.append(tube)
                continue
            if len(b):
                ious = box_iou(b, tube[1][-1][None])[:, 0]
                ok = (ious >= link_iou) & ~claimed
                if ok.any():
                    j = int(np.argmax(np.where(ok, s, -np.inf)))
                    claimed[j] = True
                    tube[0].append(t)
                    tube[1].append(b[j])
                    tube[2].append(float(s[j]))
            still.append(tube)
        live = still + [[[t], [b[j]], [float(s[j])]] for j in np.flatnonzero(~claimed)]
    done.extend(live)

    out = []
    for tf, tb, ts in done:
        score = float(np.mean(ts))
        span = np.arange(tf[0], tf[-1] + 1)
        if score < min_score or len(span) < min_length:
            continue
        tb = np.array(tb)
        filled = np.stack([np.interp(span, tf, tb[:, k]) for k in range(4)], axis=1)
        out.append(Tube(span, filled, score))
    out.sort(key=lambda tube: -tube.score)
    return out



def tube_iou(a: np.ndarray, b: np.ndarray, *, pixel_inclusive: bool = False) -> float:
    """Spatio-temporal IoU of two (L, 5) tubes (frame, x1, y1, x2, y2; frames ascending).

    Temporal IoU of the frame spans times the mean box IoU (:func:`box_iou` arithmetic,
    ``pixel_inclusive`` as there) on the frames both tubes have; ACT's ``iou3dt`` when both tubes
    have every frame of their overlap.
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


def video_map(
    gt: Dict,
    tubes: Dict[Tuple[str, int], List[Tube]],
    videos: Sequence[str],
    thresholds: Iterable[float] = (0.2, 0.5) + VIDEO_MAP_THRESHOLDS,
    *,
    protocol: str = DEFAULT_PROTOCOL,
) -> Dict[float, Tuple[float, Dict[int, float]]]:
    """Video-mAP of detection tubes at each IoU threshold (formulas in the module docstring).

    Args:
        gt: from :func:`~evad_d2.data.formats.ucf_jhmdb.load_gt_pickle`.
        tubes: ``{(video, label): [Tube]}``; ``protocol="act"`` applies :func:`tube_nms` to each.
        videos: the videos whose ground-truth tubes count, in the order of the test list.
        protocol: "act" or "voc".

    Returns:
        ``{threshold: (mAP, {label: AP})}`` as fractions (NaN for classes without ground truth).
    """
    act = _check_protocol(protocol) == "act"
    videos = list(videos)
    thresholds = sorted(set(float(t) for t in thresholds))
    aps = {thr: {} for thr in thresholds}
    for label in range(len(gt["labels"])):
        gts = {v: gt["gttubes"].get(v, {}).get(label, []) for v in videos}
        num_gt = sum(len(g) for g in gts.values())
        if num_gt == 0:
            for thr in thresholds:
                aps[thr][label] = float("nan")
            continue
        dets = []
        for v in videos:
            video_tubes = tubes.get((v, label), [])
            if act:
                video_tubes = [video_tubes[i] for i in tube_nms(video_tubes)]
            dets.extend((v, t) for t in video_tubes)
        scores = np.array([t.score for _, t in dets], dtype=np.float64)
        # ACT ranks float32 scores (as its BuildTubes makes them) with numpy's default sort, so its
        # ties; the VOC variant ranks stably.
        order = np.argsort(-scores.astype(np.float32)) if act else np.argsort(-scores, kind="stable")
        # Tube IoUs with the video's ground truth do not depend on the threshold: once.
        ious = [
            np.array([tube_iou(g, t.as_array(), pixel_inclusive=act) for g in gts[v]], dtype=np.float64)
            for v, t in dets
        ]
        for thr in thresholds:
            taken = {v: np.zeros(len(g), dtype=bool) for v, g in gts.items()}
            tp = np.zeros(len(dets), dtype=bool)
            for rank, i in enumerate(order):
                v = dets[i][0]
                free = np.flatnonzero(~taken[v])
                if len(free) == 0:
                    continue
                j = int(np.argmax(ious[i][free]))  # first best; a NaN first, failing the threshold
                if ious[i][free[j]] >= thr:
                    taken[v][free[j]] = True
                    tp[rank] = True
            aps[thr][label] = act_average_precision(tp, num_gt) if act else average_precision_in_order(tp, num_gt)
    out = {}
    for thr in thresholds:
        values = np.array(list(aps[thr].values()))
        out[thr] = (float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"), aps[thr])
    return out


# ----------------------------------------------------------------------------- evaluator


class UCFJHMDBEvaluator(DatasetEvaluator):
    """Frame-mAP@0.5 and video-mAP@{0.2, 0.5, 0.5:0.95} on UCF101-24 / JHMDB.

    Inputs carry ``video_id`` (the pickle's video name), ``timestamp`` (1-based frame number),
    ``height``/``width``; outputs ``instances`` with ``pred_boxes`` (pixels of that size) and
    ``pred_action_scores`` (N, C) in the pickle's label order; the class score of a box is its
    action score. Boxes are rescaled to the pickle's ``resolution`` if the input size differs.

    Metadata (set by :func:`evad_d2.data.register_ucf_jhmdb`): ``gt_file`` (the pickle),
    ``split`` ("train" or "test"), ``split_index`` (0-based), ``action_classes``.
    Writes ``ucf_jhmdb_metrics.json`` and ``ucf_jhmdb_per_class_ap.png`` to ``output_dir``.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        *,
        distributed: bool = True,
        compute_video_map: bool = True,
        only_processed_frames: bool = False,
        link_kwargs: Optional[Dict] = None,
        protocol: str = DEFAULT_PROTOCOL,
    ):
        """
        Args:
            compute_video_map: also link tubes and compute video-mAP.
            only_processed_frames: score only ground truth of processed frames (frame-mAP) and
                of videos with at least one processed frame (video-mAP), for partial runs.
            link_kwargs: overrides of :func:`link_tubes`'s parameters.
            protocol: "act" (the ACT evaluation code the published numbers come from) or "voc"
                (PASCAL-VOC matching and AP, continuous IoU, no tube NMS); see the module docstring.
        """
        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "gt_file"):
            raise KeyError(f"dataset '{dataset_name}': metadata lacks 'gt_file' needed by UCFJHMDBEvaluator")
        split, split_index = meta.get("split", None), meta.get("split_index", None)
        if split not in ("train", "test") or not isinstance(split_index, int):
            raise ValueError(
                f"dataset '{dataset_name}': metadata 'split' must be 'train' or 'test' and 'split_index' a "
                f"0-based int (as register_ucf_jhmdb sets them), got split={split!r}, split_index={split_index!r}"
            )
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._video_map = compute_video_map
        self._only_processed = only_processed_frames
        self._link_kwargs = dict(link_kwargs or {})
        self._protocol = _check_protocol(protocol)
        self._gt_file = meta.gt_file
        self._split = split
        self._split_index = split_index
        self._names = list(getattr(meta, "action_classes", []))
        self.reset()

    @property
    def protocol(self) -> str:
        """The metric protocol this evaluator follows (see the ``protocol`` argument)."""
        return self._protocol

    def reset(self):
        self._frames = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            self._frames.append(
                (
                    str(inp["video_id"]), int(inp["timestamp"]), float(inp["height"]), float(inp["width"]),
                    inst.pred_boxes.tensor.numpy().astype(np.float32),
                    inst.pred_action_scores.numpy().astype(np.float32),
                )
            )

    def evaluate(self):
        frames = self._frames
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._frames, dst=0)
            if not comm.is_main_process():
                return {}
            frames = [f for part in gathered for f in part]
        if not frames:
            logger.warning("UCFJHMDBEvaluator on '%s' received no predictions.", self._dataset_name)
            return {}
        gt = load_gt_pickle(self._gt_file)
        labels = list(gt["labels"])
        if self._names and len(self._names) != len(labels):
            raise ValueError(
                f"dataset '{self._dataset_name}': {len(self._names)} action_classes but {self._gt_file} has {len(labels)} labels"
            )
        names = self._names or labels
        try:
            videos = split_videos(gt, self._split, self._split_index)
        except KeyError as e:
            raise KeyError(f"dataset '{self._dataset_name}': {self._gt_file}: {e.args[0]}") from None
        dets = self._to_detections(frames, gt, len(labels))
        if self._only_processed:
            seen = set(dets.video)
            videos = [v for v in videos if v in seen]
        f_map, f_aps = frame_map(gt, dets, videos, only_processed_frames=self._only_processed, protocol=self._protocol)
        results = OrderedDict()
        results["frame_mAP@0.5"] = 100.0 * f_map
        metrics = {
            "protocol": self._protocol,
            "frame_mAP@0.5": _pct(f_map),
            "frame_AP@0.5": {names[c]: _pct(a) for c, a in f_aps.items()},
        }
        if self._video_map:
            tubes = self._link(dets, len(labels))
            v_maps = video_map(gt, tubes, videos, protocol=self._protocol)
            results["video_mAP@0.2"] = 100.0 * v_maps[0.2][0]
            results["video_mAP@0.5"] = 100.0 * v_maps[0.5][0]
            results["video_mAP@0.5:0.95"] = 100.0 * float(np.mean([v_maps[t][0] for t in VIDEO_MAP_THRESHOLDS]))
            metrics["video_mAP"] = {f"{t:.2f}": _pct(m) for t, (m, _) in v_maps.items()}
            metrics["video_mAP@0.5:0.95"] = results["video_mAP@0.5:0.95"]
        for c, ap in f_aps.items():
            if not math.isnan(ap):
                results[f"AP-{names[c]}"] = 100.0 * ap
        logger.info(
            "'%s' (%s protocol): %s", self._dataset_name, self._protocol,
            ", ".join(f"{k} = {v:.2f}" for k, v in results.items() if "AP-" not in k),
        )
        if self._output_dir:
            g_pathmgr.mkdirs(self._output_dir)
            with atomic_write(os.path.join(self._output_dir, "ucf_jhmdb_metrics.json"), "w") as f:
                json.dump(metrics, f, indent=2)
            plot_per_class_ap(
                {names[c]: 100.0 * a for c, a in f_aps.items()},
                os.path.join(self._output_dir, "ucf_jhmdb_per_class_ap.png"),
                title=f"{self._dataset_name}: frame-mAP@0.5 = {results['frame_mAP@0.5']:.2f} ({self._protocol})",
            )
        return OrderedDict(ucf_jhmdb=results)

    @staticmethod
    def _to_detections(frames, gt, num_classes) -> FrameDetections:
        out = FrameDetections([], np.zeros(0, dtype=np.int64), [], [])
        seen = set()
        fr = []
        for video, t, h, w, boxes, scores in frames:
            if (video, t) in seen:
                continue
            seen.add((video, t))
            if scores.ndim != 2 or scores.shape[1] != num_classes:
                raise ValueError(f"pred_action_scores has shape {scores.shape}, expected (N, {num_classes})")
            res = gt["resolution"].get(video)
            boxes = boxes.astype(np.float64)
            if res is not None and (int(res[0]), int(res[1])) != (int(h), int(w)):
                boxes = boxes * np.array([res[1] / w, res[0] / h, res[1] / w, res[0] / h])
            out.video.append(video)
            fr.append(t)
            out.boxes.append(boxes)
            out.scores.append(scores.astype(np.float64))
        out.frame = np.array(fr, dtype=np.int64)
        return out

    def _link(self, dets: FrameDetections, num_classes: int) -> Dict[Tuple[str, int], List[Tube]]:
        per_video = defaultdict(list)
        for i, v in enumerate(dets.video):
            per_video[v].append(i)
        min_score = self._link_kwargs.get("min_score", LINK_MIN_SCORE)
        tubes = {}
        for v, idx in per_video.items():
            frames = [int(dets.frame[i]) for i in idx]
            boxes = [dets.boxes[i] for i in idx]
            for label in range(num_classes):
                scores = [dets.scores[i][:, label] for i in idx]
                # A tube's score is a mean of its detections: none can reach min_score otherwise.
                if max((float(s.max()) for s in scores if len(s)), default=0.0) < min_score:
                    continue
                tubes[(v, label)] = link_tubes(frames, boxes, scores, **self._link_kwargs)
        return tubes


def _pct(v: float) -> Optional[float]:
    return None if math.isnan(v) else 100.0 * v
