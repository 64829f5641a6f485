"""detectron2 ``DatasetEvaluator`` for UCF101-24 / JHMDB: frame-mAP and video-mAP."""
import json
import logging
import math
import os
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from iopath.common.file_io import g_pathmgr

from evad_d2.data.formats.ucf_jhmdb import load_gt_pickle, split_videos
from evad_d2.utils.atomic_io import atomic_write

from ..plots import plot_per_class_ap
from .frame_map import FrameDetections, frame_map
from .protocols import DEFAULT_PROTOCOL, VIDEO_MAP_THRESHOLDS, check_protocol
from .tubes import LINK_MIN_SCORE, Tube, link_tubes
from .video_map import video_map

__all__ = ["UCFJHMDBEvaluator"]

logger = logging.getLogger(__name__)


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
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._video_map = compute_video_map
        self._only_processed = only_processed_frames
        self._link_kwargs = dict(link_kwargs or {})
        self._protocol = check_protocol(protocol)
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
