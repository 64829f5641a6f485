"""Video-mAP of detection tubes on UCF101-24 / JHMDB (formulas in :mod:`.protocols`)."""
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from ..ap import act_average_precision, average_precision_in_order
from .protocols import DEFAULT_PROTOCOL, VIDEO_MAP_THRESHOLDS, check_protocol, mean_ap
from .tubes import Tube, tube_iou, tube_nms

__all__ = ["video_map"]


def video_map(
    gt: Dict,
    tubes: Dict[Tuple[str, int], List[Tube]],
    videos: Sequence[str],
    thresholds: Iterable[float] = (0.2, 0.5) + VIDEO_MAP_THRESHOLDS,
    *,
    protocol: str = DEFAULT_PROTOCOL,
) -> Dict[float, Tuple[float, Dict[int, float]]]:
    """Video-mAP of detection tubes at each IoU threshold (formulas in :mod:`.protocols`).

    Args:
        gt: from :func:`~evad_d2.data.formats.ucf_jhmdb.load_gt_pickle`.
        tubes: ``{(video, label): [Tube]}``; ``protocol="act"`` applies :func:`.tubes.tube_nms`
            to each.
        videos: the videos whose ground-truth tubes count, in the order of the test list.
        protocol: "act" or "voc".

    Returns:
        ``{threshold: (mAP, {label: AP})}`` as fractions (NaN for classes without ground truth).
    """
    act = check_protocol(protocol) == "act"
    videos = list(videos)
    thresholds = sorted(set(float(t) for t in thresholds))
    aps = {thr: {} for thr in thresholds}
    for label in range(len(gt["labels"])):
        gt_tubes = {v: gt["gttubes"].get(v, {}).get(label, []) for v in videos}
        if sum(len(g) for g in gt_tubes.values()) == 0:
            class_aps = [float("nan")] * len(thresholds)
        else:
            class_aps = _class_video_aps(gt_tubes, _class_detections(tubes, videos, label, act), thresholds, act)
        for thr, ap in zip(thresholds, class_aps):
            aps[thr][label] = ap
    return {thr: (mean_ap(aps[thr]), aps[thr]) for thr in thresholds}


def _class_detections(
    tubes: Dict[Tuple[str, int], List[Tube]], videos: Sequence[str], label: int, act: bool
) -> List[Tuple[str, Tube]]:
    """(video, tube) of one class over the test videos, video order, then (ACT) tube-NMS order."""
    dets = []
    for v in videos:
        video_tubes = tubes.get((v, label), [])
        if act:
            video_tubes = [video_tubes[i] for i in tube_nms(video_tubes)]
        dets.extend((v, t) for t in video_tubes)
    return dets


def _class_video_aps(
    gt_tubes: Dict[str, List[np.ndarray]], dets: List[Tuple[str, Tube]], thresholds: List[float], act: bool
) -> List[float]:
    """Video-AP of one class at each threshold.

    Args:
        gt_tubes: ``{video: [(L, 5) ground-truth tube]}`` of the class, not all empty.
        dets: from :func:`_class_detections`.
    """
    num_gt = sum(len(g) for g in gt_tubes.values())
    scores = np.array([t.score for _, t in dets], dtype=np.float64)
    # ACT ranks float32 scores (as its BuildTubes makes them) with numpy's default sort, so its
    # ties; the VOC variant ranks stably.
    order = np.argsort(-scores.astype(np.float32)) if act else np.argsort(-scores, kind="stable")
    # Tube IoUs with the video's ground truth do not depend on the threshold: once.
    ious = [
        np.array([tube_iou(g, t.as_array(), pixel_inclusive=act) for g in gt_tubes[v]], dtype=np.float64)
        for v, t in dets
    ]
    aps = []
    for thr in thresholds:
        taken = {v: np.zeros(len(g), dtype=bool) for v, g in gt_tubes.items()}
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
        aps.append(act_average_precision(tp, num_gt) if act else average_precision_in_order(tp, num_gt))
    return aps
