"""detectron2 ``DatasetEvaluator`` for UCF101-24 / JHMDB: frame-mAP and video-mAP."""
import logging
import math
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
from detectron2.data import MetadataCatalog

from evad_d2.data.formats.ucf_jhmdb import GTPickleError, load_gt_pickle, split_videos

from ..base import KeyframeEvaluator
from .frame_map import FrameDetections, frame_map
from .protocols import DEFAULT_PROTOCOL, VIDEO_MAP_THRESHOLDS, check_protocol
from .tubes import LINK_MIN_SCORE, Tube, link_tubes
from .video_map import video_map

__all__ = ["UCFJHMDBEvaluator"]

logger = logging.getLogger(__name__)


class UCFJHMDBEvaluator(KeyframeEvaluator):
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
            dataset_name, output_dir, distributed: as in :class:`~evad_d2.evaluation.base.KeyframeEvaluator`.
            compute_video_map: also link tubes and compute video-mAP.
            only_processed_frames: score only ground truth of processed frames (frame-mAP) and
                of videos with at least one processed frame (video-mAP), for partial runs.
            link_kwargs: overrides of :func:`link_tubes`'s parameters.
            protocol: "act" (the ACT evaluation code the published numbers come from) or "voc"
                (PASCAL-VOC matching and AP, continuous IoU, no tube NMS); see :mod:`.protocols`.
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
        self._video_map = compute_video_map
        self._only_processed = only_processed_frames
        self._link_kwargs = dict(link_kwargs or {})
        self._gt_file = meta.gt_file
        self._split = split
        self._split_index = split_index
        self._names = list(getattr(meta, "action_classes", []))
        super().__init__(dataset_name, output_dir, distributed=distributed, protocol=check_protocol(protocol))

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
        frames = self.gathered_frames()
        if not frames:
            return {}
        gt, videos, names = self._ground_truth()
        num_classes = len(gt["labels"])
        dets = self._to_detections(frames, gt, num_classes)
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
            v_maps = video_map(gt, self._link(dets, num_classes), videos, protocol=self._protocol)
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
        self.write_metrics(
            "ucf_jhmdb", metrics, {names[c]: 100.0 * a for c, a in f_aps.items()},
            title=f"{self._dataset_name}: frame-mAP@0.5 = {results['frame_mAP@0.5']:.2f} ({self._protocol})",
        )
        return OrderedDict(ucf_jhmdb=results)

    def _ground_truth(self) -> Tuple[Dict, List[str], List[str]]:
        """The pickle, the videos of this dataset's split and the class names."""
        gt = load_gt_pickle(self._gt_file)
        labels = list(gt["labels"])
        if self._names and len(self._names) != len(labels):
            raise ValueError(
                f"dataset '{self._dataset_name}': {len(self._names)} action_classes but {self._gt_file} has {len(labels)} labels"
            )
        try:
            videos = split_videos(gt, self._split, self._split_index, source=self._gt_file)
        except GTPickleError as e:
            raise KeyError(f"dataset '{self._dataset_name}': {e}") from None
        return gt, videos, self._names or labels

    @staticmethod
    def _to_detections(frames, gt, num_classes) -> FrameDetections:
        out = FrameDetections([], np.zeros(0, dtype=np.int64), [], [])
        fr = []
        for video, t, h, w, boxes, scores in frames:
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
