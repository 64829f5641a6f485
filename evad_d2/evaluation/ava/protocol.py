"""AVA frame-mAP by the official protocol, vectorised.

The official evaluation (ActivityNet ``get_ava_performance.py`` and PySlowFast's
``ava_eval_helper.py``, both on top of the TF object-detection ``PascalDetectionEvaluator``)
computes, for every class of the label map:

* ground truth: every CSV row of that class is one instance (duplicated rows are separate
  instances); no box is ``difficult``; rows of frames listed in the exclusions are dropped;
* detections: rows of excluded frames are dropped; a detection whose box has ``x1 >= x2`` or
  ``y1 >= y2`` is removed; a detection on a frame without ground truth of its class is a false
  positive (but see the ActivityNet protocol for frames the ground truth does not list);
* matching, per frame and class, in the frame's detection order: each detection takes the
  ground-truth box of highest IoU (the first one on ties); it is a true positive if that IoU is
  >= 0.5 and no earlier detection took the same box, else a false positive. Note that a
  detection whose best box is taken is a false positive even if another box would match;
* AP: detections of all frames are concatenated (frames in order of first appearance in the
  detection file) and ranked with ``argsort(scores)[::-1]``; precision/recall are VOC's
  all-point interpolated area; a class without ground truth gets NaN and is left out of the mean.

Two protocols differ in which detections are read and in what order (``protocol=``; the
table is :data:`PROTOCOL_TABLE`, shown by the command line's ``--help``):

* ``"pyslowfast"`` (default; PySlowFast's ``slowfast/utils/ava_eval_helper.py``, which the EVAD
  release uses and which produced EVAD's published numbers): every detection row is kept, in
  file order within its frame; ground truth in file order.
* ``"activitynet"`` (ActivityNet's ``Evaluation/get_ava_performance.py``, the AVA challenge's
  code): at most 50 detection rows per frame are kept (the top scores, selected with a heap
  exactly as the official reader does) and a frame's rows are matched in descending score
  order; ground truth of a frame is ordered by descending 8th column (the person id, which its
  reader takes for a score); detections on frames the ground-truth file does not list at all
  are ignored (it logs "Found detections for image ... which is not part of the the ground
truth. They will be ignored."). A frame is
  listed by any of its rows: of any class, or a two-column ``video_id, timestamp`` row. The
  script takes no exclusions since 2020 (the ground truth simply omits those frames); given
  here, they are dropped from both sides, as its earlier versions did.

Our own evaluator writes a frame's rows box by box in the model's box order (as EVAD's
evaluation passes model outputs to PySlowFast's code), so ``pyslowfast`` on its CSV scores what
EVAD's own evaluation would score on the same outputs, up to the CSV's 5 box and 6 score decimals
(see :func:`detection_rows`).

Both were checked beside the reference code on random hard cases (ties, duplicates, empty
files, frames without ground truth, excluded frames, classes without ground truth, several
boxes per person, more than 50 rows per frame): per-class APs equal to the last bit.

Command line::

    python -m evad_d2.evaluation.ava --groundtruth GT.csv --detections DET.csv \\
        --labelmap MAP.pbtxt [--exclusions EX.csv] --json OUT.json [--plot OUT.png]
"""
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from evad_d2.data.formats.ava import read_exclusions
from evad_d2.data.formats.label_map import read_label_map

from ..ap import average_precision_in_order, match_detections, ranked_average_precision
from .activitynet import activitynet_read
from .boxes import AvaBoxes, first_appearance_rank, id_table, in_table, key_runs
from .reader import read_ava_csv

__all__ = [
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "PROTOCOL_TABLE",
    "FrameMapResult",
    "evaluate_frame_map",
    "evaluate_person_ap",
    "evaluate_ava_files",
    "result_to_json",
]

logger = logging.getLogger(__name__)

PROTOCOLS = ("pyslowfast", "activitynet")
DEFAULT_PROTOCOL = "pyslowfast"
PROTOCOL_TABLE = """\
                        pyslowfast (default)              activitynet
reference code          PySlowFast slowfast/utils/        ActivityNet Evaluation/
                        ava_eval_helper.py                get_ava_performance.py
used for                EVAD's (and PySlowFast's)         the AVA challenge
                        published numbers
detections per frame    all rows                          the 50 highest-scored rows
matching order          file order within a frame         descending score (heap order)
ground-truth order      file order                        descending 8th column (person id)
detections on a frame   false positives                   ignored (a frame is listed by any
the ground truth does                                     row: any class, or a 2-column
not list                                                  "video_id,timestamp" row)
exclusions (-e)         dropped from both sides           not in the script since 2020;
                                                          dropped from both sides if given
2-column rows           accepted, carry nothing           list the frame (no actions)
                        (the reference rejects them)
ranking ties            numpy argsort(scores)[::-1] over all frames (both)
AP                      VOC all-point area; classes without ground truth left out (both)
label map (-l)          ava_action_list_v2.2_for_activitynet_2019.pbtxt: the 60 evaluated
                        classes (the 80-class ava_action_list_v2.2.pbtxt would also score
                        the 20 classes that the official evaluation leaves out)
"""
# Detections kept per frame by ActivityNet's reader (its ``read_csv(..., capacity=50)``).
_ACTIVITYNET_CAPACITY = 50


@dataclass
class FrameMapResult:
    """Frame-mAP and per-class AP (fractions in [0, 1]; NaN for a class without ground truth),
    and warnings about the inputs (also logged), e.g. that no detected keyframe is in the ground truth."""

    mean_ap: float
    per_class_ap: Dict[int, float]
    num_groundtruth: Dict[int, int]
    num_detections: Dict[int, int]
    warnings: List[str] = field(default_factory=list)


def _frame_keys(gt: AvaBoxes, det: AvaBoxes, excluded: Iterable[Tuple[str, int]]):
    """Integer frame keys ``video * tmax + timestamp`` over a shared video vocabulary: of both
    row sets, of the exclusions and of the frames the ground truth lists (``gt.frames``)."""
    vocab: Dict[str, int] = {}
    gmap = np.array([vocab.setdefault(v, len(vocab)) for v in gt.video_names] or [0], dtype=np.int64)
    dmap = np.array([vocab.setdefault(v, len(vocab)) for v in det.video_names] or [0], dtype=np.int64)
    excluded = [(vocab[v], int(t)) for v, t in excluded if v in vocab]
    tmax = 1 + max(
        [int(gt.timestamp.max()) if len(gt) else 0, int(det.timestamp.max()) if len(det) else 0]
        + [int(gt.frames[:, 1].max()) if len(gt.frames) else 0]
        + [t for _, t in excluded]
    )
    gkey = gmap[gt.video] * tmax + gt.timestamp if len(gt) else np.zeros(0, dtype=np.int64)
    dkey = dmap[det.video] * tmax + det.timestamp if len(det) else np.zeros(0, dtype=np.int64)
    ekey = np.array([v * tmax + t for v, t in excluded], dtype=np.int64)
    listed = gmap[gt.frames[:, 0]] * tmax + gt.frames[:, 1] if len(gt.frames) else np.zeros(0, dtype=np.int64)
    return gkey, dkey, ekey, listed, vocab, tmax


def _isin(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.isin(keys, values)``, evaluated once per run of equal keys."""
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    run_keys, run = key_runs(keys)
    return np.isin(run_keys, values)[run]


def evaluate_frame_map(
    groundtruth: AvaBoxes,
    detections: AvaBoxes,
    class_ids: Sequence[int],
    *,
    excluded: Iterable[Tuple[str, int]] = (),
    protocol: str = DEFAULT_PROTOCOL,
    iou_threshold: float = 0.5,
    keyframes: Optional[Iterable[Tuple[str, int]]] = None,
) -> FrameMapResult:
    """Frame-mAP of detections against ground truth, as the official AVA evaluation computes it.

    Args:
        groundtruth: ground-truth rows (their scores, the person ids, only order a frame's boxes
            under the ActivityNet protocol, as in the official reader).
        detections: detection rows in file order.
        class_ids: the evaluated classes (the label map's ids); other rows are ignored.
        excluded: ``(video_id, timestamp)`` frames dropped from both sides.
        protocol: ``"pyslowfast"`` or ``"activitynet"`` (see the module docstring).
        iou_threshold: IoU a true positive needs.
        keyframes: when given, only ground truth of these ``(video_id, timestamp)`` frames is
            scored (for partial runs); detections elsewhere still count as false positives.

    Returns:
        FrameMapResult; the mean is over classes with ground truth.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    class_ids = sorted(set(int(c) for c in class_ids))
    if not class_ids or class_ids[0] < 1:
        raise ValueError(f"class ids must be >= 1 (as the official evaluation requires), got {class_ids[:5]}")
    gkey, dkey, ekey, listed, vocab, tmax = _frame_keys(groundtruth, detections, excluded)

    classes = id_table(class_ids)
    gsel = in_table(groundtruth.labels, classes) & ~_isin(gkey, ekey)
    if keyframes is not None:
        kf = np.array([vocab[v] * tmax + int(t) for v, t in keyframes if v in vocab and int(t) < tmax], dtype=np.int64)
        gsel &= _isin(gkey, kf)
    dwhite = in_table(detections.labels, classes)
    if dwhite.all():
        dwhite = slice(None)  # no copies
    gt = (gkey[gsel], groundtruth.boxes[gsel], groundtruth.labels[gsel], groundtruth.scores[gsel])
    det = (dkey[dwhite], detections.boxes[dwhite], detections.labels[dwhite], detections.scores[dwhite])
    (g_key, g_boxes, g_labels), (d_key, d_boxes, d_labels, d_scores, d_rank) = _protocol_order(protocol, gt, det)

    keep = ~_isin(d_key, ekey)
    if protocol == "activitynet":  # detections on frames the ground truth does not list are ignored
        keep &= _isin(d_key, listed)
    keep &= (d_boxes[:, 1] < d_boxes[:, 3]) & (d_boxes[:, 0] < d_boxes[:, 2])
    if not keep.all():
        d_key, d_boxes, d_labels, d_scores, d_rank = (
            d_key[keep], d_boxes[keep], d_labels[keep], d_scores[keep], d_rank[keep]
        )

    ncls = class_ids[-1] + 1
    g_group = g_key * ncls + g_labels
    gorder = np.argsort(g_group, kind="stable")  # stable: keeps the per-frame ground-truth order
    tp = match_detections(g_group[gorder], g_boxes[gorder], d_key * ncls + d_labels, d_boxes, d_rank, iou_threshold)
    mean_ap, per_class, n_gt, n_det = _per_class_ap(class_ids, g_labels, d_labels, d_scores, d_rank, tp)
    warnings = [_unmatched_keyframes(dkey, listed, ekey, vocab, tmax)]
    if not any(n_gt.values()):
        warnings.append(
            f"the ground truth has no rows of the {len(class_ids)} evaluated classes "
            f"(ids {', '.join(map(str, class_ids[:5]))}{', ...' if len(class_ids) > 5 else ''}) "
            "outside excluded keyframes, so the frame-mAP is undefined (nan); check the ground-truth file and "
            "that the label map is the one it was written with"
        )
    warnings = [w for w in warnings if w]
    for w in warnings:
        logger.warning(w)
    return FrameMapResult(mean_ap, per_class, n_gt, n_det, warnings)


def _protocol_order(protocol: str, gt: Tuple, det: Tuple) -> Tuple[Tuple, Tuple]:
    """The rows each protocol's reader keeps, in its matching order.

    Args:
        gt: (keys, boxes, labels, scores) of the evaluated ground-truth rows, file order.
        det: (keys, boxes, labels, scores) of the evaluated detection rows, file order.
    Returns:
        ``(keys, boxes, labels)`` of the ground truth and ``(keys, boxes, labels, scores,
        rank)`` of the detections, ``rank`` the matching order (lower first).
    """
    if protocol == "activitynet":
        g_key, g_boxes, g_labels, _ = activitynet_read(*gt, 0)
        d_key, d_boxes, d_labels, d_scores = activitynet_read(*det, _ACTIVITYNET_CAPACITY)
        d_rank = np.arange(len(d_key), dtype=np.int64)  # already frames by appearance, in order
        return (g_key, g_boxes, g_labels), (d_key, d_boxes, d_labels, d_scores, d_rank)
    d_key = det[0]
    frame_rank = first_appearance_rank(d_key)
    if (frame_rank[1:] >= frame_rank[:-1]).all():  # each frame's rows together (the usual case)
        d_rank = np.arange(len(d_key), dtype=np.int64)
    else:
        order = np.lexsort((np.arange(len(d_key)), frame_rank))
        d_rank = np.empty(len(d_key), dtype=np.int64)
        d_rank[order] = np.arange(len(d_key))
    return gt[:3], (*det, d_rank)


def _per_class_ap(class_ids: List[int], g_labels, d_labels, d_scores, d_rank, tp):
    """Per-class VOC AP of the matched detections, ranked as the official code ranks them.

    Returns:
        mean AP (over classes with ground truth; NaN if none), ``{class: AP}`` (NaN without
        ground truth), ``{class: #ground truth}``, ``{class: #detections}``.
    """
    ncls = class_ids[-1] + 1
    num_gt = np.bincount(g_labels, minlength=ncls)
    if (d_rank[1:] > d_rank[:-1]).all():
        # Already in rank order: a stable sort by class (radix sort on small integers).
        by_class = np.argsort(d_labels.astype(np.uint8 if ncls <= 256 else np.int64), kind="stable")
    else:
        by_class = np.lexsort((d_rank, d_labels))
    sl = np.searchsorted(d_labels[by_class], np.arange(ncls + 1))
    # Index = class id - 1, NaN for classes without ground truth: the official nanmean.
    aps = np.full(ncls - 1, np.nan)
    per_class, n_gt, n_det = {}, {}, {}
    for c in class_ids:
        idx = by_class[sl[c]:sl[c + 1]]
        n_gt[c], n_det[c] = int(num_gt[c]), len(idx)
        if num_gt[c] == 0:
            per_class[c] = float("nan")
            continue
        aps[c - 1] = ranked_average_precision(d_scores[idx], tp[idx], int(num_gt[c]))
        per_class[c] = float(aps[c - 1])
    mean_ap = float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")
    return mean_ap, per_class, n_gt, n_det


# Examples of keyframes named in the warning about detections on no ground-truth keyframe.
_NUM_EXAMPLES = 3
# AVA timestamps are seconds from the video's start; its annotated clip starts at 900 s.
_AVA_CLIP_START = 900


def _unmatched_keyframes(dkey, listed, ekey, vocab, tmax) -> Optional[str]:
    """A warning when detections exist, ground truth lists keyframes, and no detected keyframe is
    one of them (excluded ones left out); it names examples of both and a likely cause."""
    det = np.unique(dkey)
    det, gt = det[~np.isin(det, ekey)], listed[~np.isin(listed, ekey)]
    if len(det) == 0 or len(gt) == 0 or np.isin(det, gt).any():
        return None
    names = list(vocab)

    def text(keys):
        return ", ".join(f"{names[k // tmax]},{k % tmax:04d}" for k in keys[:_NUM_EXAMPLES].tolist())

    msg = (
        f"none of the {len(det)} keyframes with detections is a ground-truth keyframe ({len(gt)} listed), "
        f"so the frame-mAP is 0. Ground truth: {text(gt)}, ...; detections: {text(det)}, ... "
    )
    gt_pairs = set(zip((gt // tmax).tolist(), (gt % tmax).tolist()))
    det_video, det_ts = (det // tmax).tolist(), (det % tmax).tolist()
    for offset in (_AVA_CLIP_START, -_AVA_CLIP_START):
        if any((v, t + offset) in gt_pairs for v, t in zip(det_video, det_ts)):
            return msg + (
                f"The detections' timestamps are {abs(offset)} s {'less' if offset > 0 else 'more'} than the "
                "ground truth's: AVA timestamps are seconds from the start of the video (keyframes 0902 to "
                f"1798); write both files the same way ({'add' if offset > 0 else 'subtract'} {abs(offset)})."
            )
    return msg + "Check that both files name videos and timestamps (whole seconds) the same way."


def evaluate_person_ap(
    gt_frames: Sequence[Tuple[str, int]],
    gt_boxes: np.ndarray,
    det_frames: Sequence[Tuple[str, int]],
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    *,
    excluded: Iterable[Tuple[str, int]] = (),
    iou_threshold: float = 0.5,
) -> float:
    """Person-detection AP (VOC, all points) of actor boxes, regardless of actions.

    Ground truth is one box per distinct (frame, box) (AVA repeats a person's box on every
    action row); detections are matched in descending score order (ties: the given order) and
    the precision/recall curve follows that same order, so of two tied copies of a detection
    the one that took the box is ranked first; a detection on a frame without ground truth is
    a false positive; excluded frames are dropped from both sides.

    Args:
        gt_frames / det_frames: ``(video_id, timestamp)`` of each box.
        gt_boxes / det_boxes: (M, 4) / (N, 4) x1, y1, x2, y2 (any common scale).
        det_scores: (N,) person scores.

    Returns:
        AP in [0, 1]; NaN without ground truth.
    """
    vocab: Dict[Tuple[str, int], int] = {}
    gk = np.array([vocab.setdefault((v, int(t)), len(vocab)) for v, t in gt_frames], dtype=np.int64)
    dk = np.array([vocab.setdefault((v, int(t)), len(vocab)) for v, t in det_frames], dtype=np.int64)
    ex = np.array([vocab[(v, int(t))] for v, t in excluded if (v, int(t)) in vocab], dtype=np.int64)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    det_scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    gsel = ~np.isin(gk, ex)
    rows = np.unique(np.concatenate([gk[gsel, None].astype(np.float64), gt_boxes[gsel]], axis=1), axis=0)
    g_key, g_boxes = rows[:, 0].astype(np.int64), rows[:, 1:]
    if len(g_key) == 0:
        return float("nan")
    dsel = ~np.isin(dk, ex)
    dk, det_boxes, det_scores = dk[dsel], det_boxes[dsel], det_scores[dsel]
    order = np.argsort(-det_scores, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    tp = match_detections(g_key, g_boxes, dk, det_boxes, rank, iou_threshold)
    return average_precision_in_order(tp[order], len(g_key))


def evaluate_ava_files(
    groundtruth: str,
    detections: str,
    labelmap: str,
    exclusions: Optional[str] = None,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    strict_classes: bool = False,
    keyframes: Optional[Iterable[Tuple[str, int]]] = None,
) -> Tuple[FrameMapResult, Dict[int, str]]:
    """Read the files and compute frame-mAP@0.5 over the label map's classes.

    Args:
        strict_classes: make a detection class id outside the label map an error (by default
            such rows are ignored, as the official reader does).

    Returns:
        The result and the label map ``{id: name}``.
    """
    labels = read_label_map(labelmap)
    excluded: Set[Tuple[str, int]] = read_exclusions(exclusions) if exclusions else set()
    t0 = time.perf_counter()
    gt = read_ava_csv(groundtruth, with_scores=False, class_whitelist=labels)
    det = read_ava_csv(
        detections, with_scores=True, class_whitelist=labels, known_class_ids=labels if strict_classes else None
    )
    t1 = time.perf_counter()
    result = evaluate_frame_map(gt, det, list(labels), excluded=excluded, protocol=protocol, keyframes=keyframes)
    logger.info(
        "AVA evaluation: %d ground-truth and %d detection rows read in %.1fs, scored in %.1fs",
        len(gt), len(det), t1 - t0, time.perf_counter() - t1,
    )
    return result, labels


def result_to_json(result: FrameMapResult) -> Dict:
    """``{"mAP": x, "per_class": {"<id>": ap}, "warnings": [...]}`` in percent; a class without
    ground truth is null."""
    def pct(v):
        return None if v is None or math.isnan(v) else 100.0 * v

    return {
        "mAP": pct(result.mean_ap),
        "per_class": {str(c): pct(ap) for c, ap in result.per_class_ap.items()},
        "warnings": list(result.warnings),
    }
