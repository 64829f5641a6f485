"""UCF101-24 / JHMDB: frame-mAP and video-mAP of a frame-level detector.

* Frame-mAP@0.5 (per class): every annotated frame of the test videos is ground truth (one box
  per ground-truth tube through that frame); detections of all processed frames are ranked by
  score; each takes the ground-truth box of highest IoU in its frame (first on ties) and is a
  true positive if the IoU is >= 0.5 and no higher-scored detection took that box; VOC
  all-point AP. A detection on a frame without ground truth of its class is a false positive.
* Video-mAP at IoU 0.2, 0.5 and 0.5:0.95 (mean over 0.5, 0.55, ..., 0.95): per video and class,
  per-frame detections are linked into tubes greedily (:func:`link_tubes`, the ACT-style linking
  used by frame-level detectors), each tube scored by the mean of its detection scores. A tube is
  a true positive if its spatio-temporal IoU (:func:`tube_iou`: temporal IoU of the frame spans
  x mean per-frame IoU over the frames both tubes cover) with a not yet matched ground-truth tube
  of its video and class, the best such, reaches the threshold; tubes are taken in descending
  score order; VOC all-point AP.

IoUs use continuous coordinates (area = (x2 - x1) * (y2 - y1)), as detectron2 does; the ACT
code adds 1 pixel to widths and heights, which changes IoUs of small boxes slightly.

Ground truth is the ACT pickle (``UCF101v2-GT.pkl`` / ``JHMDB-GT.pkl``, see :func:`load_gt_pickle`).
"""
import json
import logging
import math
import os
import pickle
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from iopath.common.file_io import g_pathmgr

from .ava import match_detections, ranked_average_precision, voc_average_precision
from .plots import plot_per_class_ap

__all__ = [
    "load_gt_pickle",
    "test_videos",
    "box_iou",
    "frame_map",
    "Tube",
    "link_tubes",
    "tube_iou",
    "video_map",
    "VIDEO_MAP_THRESHOLDS",
    "UCFJHMDBEvaluator",
]

logger = logging.getLogger(__name__)

# 0.5:0.95 in steps of 0.05, as in the video-mAP tables.
VIDEO_MAP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))

_GT_KEYS = ("labels", "gttubes", "nframes", "test_videos", "resolution")


class GTPickleError(ValueError):
    """A malformed ground-truth pickle; the message names the file and the offending key."""


def load_gt_pickle(path: str) -> Dict:
    """Load and validate an ACT-style ground-truth pickle.

    Layout: ``labels`` (class names), ``gttubes`` ``{video: {label index: [array (n, 5) of
    frame, x1, y1, x2, y2 in pixels]}}``, ``nframes`` ``{video: int}``, ``train_videos`` /
    ``test_videos`` (one video list per split), ``resolution`` ``{video: (height, width)}``.
    Pickles written by Python 2 (the released ones) are read with latin-1 strings.

    Returns:
        The dict with every tube as a float64 (n, 5) array sorted by frame.

    Raises:
        GTPickleError: unreadable file, missing keys, or a tube that is not (n, 5) / has an
            unknown label; the message names the file and the key path.
    """
    try:
        with g_pathmgr.open(path, "rb") as f:
            gt = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, AttributeError, ImportError) as e:
        raise GTPickleError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(gt, dict):
        raise GTPickleError(f"{path}: expected a dict at the top level, got {type(gt).__name__}")
    missing = [k for k in _GT_KEYS if k not in gt]
    if missing:
        raise GTPickleError(f"{path}: missing key(s) {missing}")
    num_labels = len(gt["labels"])
    if not isinstance(gt["gttubes"], dict):
        raise GTPickleError(f"{path}: 'gttubes' must be a dict {{video: {{label: [tubes]}}}}")
    tubes_out = {}
    for video, per_label in gt["gttubes"].items():
        if not isinstance(per_label, dict):
            raise GTPickleError(f"{path}: gttubes[{video!r}] must be a dict {{label: [tubes]}}")
        tubes_out[video] = {}
        for label, tubes in per_label.items():
            if not (isinstance(label, (int, np.integer)) and 0 <= int(label) < num_labels):
                raise GTPickleError(f"{path}: gttubes[{video!r}] has label {label!r} outside 0..{num_labels - 1}")
            checked = []
            for i, tube in enumerate(tubes):
                arr = np.asarray(tube, dtype=np.float64)
                if arr.ndim != 2 or arr.shape[1] != 5 or len(arr) == 0:
                    raise GTPickleError(
                        f"{path}: gttubes[{video!r}][{label}][{i}] must be an (n, 5) array "
                        f"(frame, x1, y1, x2, y2), got shape {arr.shape}"
                    )
                if not np.isfinite(arr).all():
                    raise GTPickleError(f"{path}: gttubes[{video!r}][{label}][{i}] has non-finite values")
                checked.append(arr[np.argsort(arr[:, 0], kind="stable")])
            tubes_out[video][int(label)] = checked
    gt = dict(gt)
    gt["gttubes"] = tubes_out
    for video in tubes_out:
        if video not in gt["resolution"] or video not in gt["nframes"]:
            raise GTPickleError(f"{path}: video {video!r} has tubes but no 'resolution'/'nframes' entry")
    return gt


def test_videos(gt: Dict, split: int = 1) -> List[str]:
    """Test videos of a 1-based split (``test_videos[split - 1]``, as ACT indexes them)."""
    lists = gt["test_videos"]
    try:
        return list(lists[split - 1])
    except (IndexError, KeyError):
        raise KeyError(f"ground truth has no test split {split} (test_videos has {len(lists)} entries)") from None


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1, y1, x2, y2 boxes -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.maximum(0.0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    ih = np.maximum(0.0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


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
) -> Tuple[float, Dict[int, float]]:
    """Frame-mAP over the annotated frames of ``videos``.

    Args:
        gt: from :func:`load_gt_pickle`.
        detections: per-frame detections (frames of videos outside ``videos`` are ignored).
        videos: the test videos.
        only_processed_frames: score only ground truth of frames present in ``detections``.

    Returns:
        (mAP, {label index: AP}) as fractions; classes without ground truth are NaN and left
        out of the mean.
    """
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
        order = np.argsort(g_key, kind="stable")
        scores = det_scores[:, label]
        rank = np.empty(len(scores), dtype=np.int64)
        rank[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
        tp = match_detections(g_key[order], g_boxes[order], det_key, det_boxes, rank, iou_threshold)
        aps[label] = ranked_average_precision(scores, tp, len(g_key))
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
    min_score: float = 0.005,
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


def tube_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Spatio-temporal IoU of two (L, 5) tubes (frame, x1, y1, x2, y2; frames ascending).

    Temporal IoU of the frame spans times the mean IoU of the boxes on the frames both tubes
    have inside the temporal overlap.
    """
    a0, a1, b0, b1 = a[0, 0], a[-1, 0], b[0, 0], b[-1, 0]
    inter = min(a1, b1) - max(a0, b0) + 1
    if inter <= 0:
        return 0.0
    union = max(a1, b1) - min(a0, b0) + 1
    common, ia, ib = np.intersect1d(a[:, 0], b[:, 0], assume_unique=True, return_indices=True)
    if len(common) == 0:
        return 0.0
    ious = box_iou(a[ia, 1:5], b[ib, 1:5]).diagonal()
    return float(inter / union * ious.mean())


def video_map(
    gt: Dict,
    tubes: Dict[Tuple[str, int], List[Tube]],
    videos: Sequence[str],
    thresholds: Iterable[float] = (0.2, 0.5) + VIDEO_MAP_THRESHOLDS,
) -> Dict[float, Tuple[float, Dict[int, float]]]:
    """Video-mAP of detection tubes at each IoU threshold.

    Args:
        gt: from :func:`load_gt_pickle`.
        tubes: ``{(video, label): [Tube]}``.
        videos: the videos whose ground-truth tubes count.

    Returns:
        ``{threshold: (mAP, {label: AP})}`` as fractions (NaN for classes without ground truth).
    """
    videos = list(videos)
    out = {}
    for thr in sorted(set(float(t) for t in thresholds)):
        aps = {}
        for label in range(len(gt["labels"])):
            gts = {v: [t for t in gt["gttubes"].get(v, {}).get(label, [])] for v in videos}
            num_gt = sum(len(g) for g in gts.values())
            if num_gt == 0:
                aps[label] = float("nan")
                continue
            dets = [(t.score, v, t) for v in videos for t in tubes.get((v, label), [])]
            dets.sort(key=lambda d: -d[0])
            tp = np.zeros(len(dets), dtype=bool)
            for i, (_, v, tube) in enumerate(dets):
                remaining = gts[v]
                if not remaining:
                    continue
                ious = [tube_iou(tube.as_array(), g) for g in remaining]
                j = int(np.argmax(ious))
                if ious[j] >= thr:
                    tp[i] = True
                    del remaining[j]
            cum_tp = np.cumsum(tp)
            precision = cum_tp / np.arange(1, len(dets) + 1, dtype=np.float64)
            aps[label] = voc_average_precision(precision, cum_tp / float(num_gt))
        values = np.array(list(aps.values()))
        out[thr] = (float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"), aps)
    return out


# ----------------------------------------------------------------------------- evaluator


class UCFJHMDBEvaluator(DatasetEvaluator):
    """Frame-mAP@0.5 and video-mAP@{0.2, 0.5, 0.5:0.95} on UCF101-24 / JHMDB.

    Inputs carry ``video_id`` (the pickle's video name), ``timestamp`` (1-based frame number),
    ``height``/``width``; outputs ``instances`` with ``pred_boxes`` (pixels of that size) and
    ``pred_action_scores`` (N, C) in the pickle's label order; the class score of a box is its
    action score. Boxes are rescaled to the pickle's ``resolution`` if the input size differs.

    Metadata: ``gt_file`` (the pickle), ``split`` (1-based, default 1), ``action_classes``.
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
    ):
        """
        Args:
            compute_video_map: also link tubes and compute video-mAP.
            only_processed_frames: score only ground truth of processed frames (frame-mAP) and
                of videos with at least one processed frame (video-mAP), for partial runs.
            link_kwargs: overrides of :func:`link_tubes`'s parameters.
        """
        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "gt_file"):
            raise KeyError(f"dataset '{dataset_name}': metadata lacks 'gt_file' needed by UCFJHMDBEvaluator")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._video_map = compute_video_map
        self._only_processed = only_processed_frames
        self._link_kwargs = dict(link_kwargs or {})
        self._gt_file = meta.gt_file
        self._split = int(getattr(meta, "split", 1))
        self._names = list(getattr(meta, "action_classes", []))
        self.reset()

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
        videos = test_videos(gt, self._split)
        dets = self._to_detections(frames, gt, len(labels))
        if self._only_processed:
            seen = set(dets.video)
            videos = [v for v in videos if v in seen]
        f_map, f_aps = frame_map(gt, dets, videos, only_processed_frames=self._only_processed)
        results = OrderedDict()
        results["frame_mAP@0.5"] = 100.0 * f_map
        metrics = {"frame_mAP@0.5": _pct(f_map), "frame_AP@0.5": {names[c]: _pct(a) for c, a in f_aps.items()}}
        if self._video_map:
            tubes = self._link(dets, len(labels))
            v_maps = video_map(gt, tubes, videos)
            results["video_mAP@0.2"] = 100.0 * v_maps[0.2][0]
            results["video_mAP@0.5"] = 100.0 * v_maps[0.5][0]
            results["video_mAP@0.5:0.95"] = 100.0 * float(np.mean([v_maps[t][0] for t in VIDEO_MAP_THRESHOLDS]))
            metrics["video_mAP"] = {str(t): _pct(m) for t, (m, _) in v_maps.items()}
            metrics["video_mAP@0.5:0.95"] = results["video_mAP@0.5:0.95"]
        for c, ap in f_aps.items():
            if not math.isnan(ap):
                results[f"AP-{names[c]}"] = 100.0 * ap
        logger.info("'%s': %s", self._dataset_name, ", ".join(f"{k} = {v:.2f}" for k, v in results.items() if "AP-" not in k))
        if self._output_dir:
            g_pathmgr.mkdirs(self._output_dir)
            with g_pathmgr.open(os.path.join(self._output_dir, "ucf_jhmdb_metrics.json"), "w") as f:
                json.dump(metrics, f, indent=2)
            plot_per_class_ap(
                {names[c]: 100.0 * a for c, a in f_aps.items()},
                os.path.join(self._output_dir, "ucf_jhmdb_per_class_ap.png"),
                title=f"{self._dataset_name}: frame-mAP@0.5 = {results['frame_mAP@0.5']:.2f}",
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
        min_score = self._link_kwargs.get("min_score", 0.005)
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
