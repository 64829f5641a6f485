"""The two UCF101-24 / JHMDB evaluation protocols: what frame-mAP and video-mAP compute.

``protocol="act"`` (:data:`DEFAULT_PROTOCOL`) is the ACT evaluation code that the
published UCF101-24 / JHMDB numbers come from (ACT, MOC, TubeR, YOWO, STMixer, ...; its Python 3
port is ``src/ACT.py`` + ``src/ACT_utils/ACT_utils.py`` of MCG-NJU/MOC-Detector) and equals it on
the same detections; ``protocol="voc"`` is the PASCAL-VOC variant this project used before.

Notation: a box is (x1, y1, x2, y2) in pixels; for a class, N ranked detections, G ground-truth
boxes (frame-mAP) or tubes (video-mAP); ``tp_i`` is 1 if the i-th ranked detection is a true
positive; ``P_i = (tp_1 + ... + tp_i) / i`` and ``R_i = (tp_1 + ... + tp_i) / G``.

ACT protocol (default):

* Box IoU with inclusive pixel coordinates (:func:`evad_d2.evaluation.ap.box_iou` with ``pixel_inclusive=True``)::

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
* AP (:func:`evad_d2.evaluation.ap.act_average_precision`): trapezoid rule over the raw curve, from (R_0, P_0) = (0, 1)::

      AP = sum_{i=1..N} (R_i - R_{i-1}) (P_i + P_{i-1}) / 2

* Video-AP: the tubes of each video and class first go through tube NMS (:func:`.tubes.tube_nms`, ACT's
  ``nms3dt``): repeatedly keep the highest-scored remaining tube (the last of
  ``np.argsort(score)``) and drop the others whose tube IoU with it exceeds 0.3
  (:data:`ACT_TUBE_NMS_OVERLAP`). Kept tubes of all test videos (video order, then NMS order) are
  ranked by ``np.argsort(-score)``; each takes the ground-truth tube of its video of highest tube
  IoU among those not yet taken, and is a true positive if that IoU >= ``t``. Same AP. Tube
  scores are float32 in both sorts, as ACT's tubes carry them.
* Tube IoU (:func:`.tubes.tube_iou`) of tubes spanning frames [s, e] and [s', e']::

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

Tubes come from :func:`.tubes.link_tubes` (greedy linking of the per-frame detections, the
frame-level analogue of ACT's tubelet linking), each scored by the mean of its detection scores.

Ground truth is the ACT pickle (``UCF101v2-GT.pkl`` / ``JHMDB-GT.pkl``, see
:func:`evad_d2.data.formats.ucf_jhmdb.load_gt_pickle`).
"""
from typing import Dict

import numpy as np

__all__ = [
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "ACT_TUBE_NMS_OVERLAP",
    "VIDEO_MAP_THRESHOLDS",
    "check_protocol",
    "mean_ap",
]

PROTOCOLS = ("act", "voc")
DEFAULT_PROTOCOL = "act"

# ACT's videoAP: nms3dt(tubes, 0.3) on each video's tubes of a class.
ACT_TUBE_NMS_OVERLAP = 0.3

# 0.5:0.95 as ACT's loop computes them (0.5 + 0.05 * i); kept unrounded so that a tube exactly at
# a threshold counts as it does there.
VIDEO_MAP_THRESHOLDS = tuple(0.5 + 0.05 * i for i in range(10))


def check_protocol(protocol: str) -> str:
    """Return ``protocol`` if it is one of :data:`PROTOCOLS`, else raise ValueError naming them."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return protocol


def mean_ap(aps: Dict[int, float]) -> float:
    """The mAP of per-class APs: the mean over classes with ground truth (NaN APs left out);
    NaN if no class has ground truth."""
    values = np.array(list(aps.values()))
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
