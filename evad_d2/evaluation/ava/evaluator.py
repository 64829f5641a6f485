"""detectron2 ``DatasetEvaluator`` for AVA-format datasets: frame-mAP@0.5 and person AP@0.5."""
import logging
import math
from collections import OrderedDict
from typing import Optional

import numpy as np
from detectron2.data import MetadataCatalog

from evad_d2.data.formats.ava import read_exclusions
from evad_d2.utils.atomic_io import atomic_write

from ..base import KeyframeEvaluator
from .protocol import DEFAULT_PROTOCOL, PROTOCOLS, evaluate_frame_map, evaluate_person_ap, result_to_json
from .reader import read_ava_csv
from .writer import detection_rows

__all__ = ["AVAEvaluator"]

logger = logging.getLogger(__name__)

_REQUIRED_METADATA = ("action_ids", "eval_action_ids", "groundtruth_file")


class AVAEvaluator(KeyframeEvaluator):
    """Scores model outputs with the official AVA protocol (see :mod:`evad_d2.evaluation.ava`).

    Each model output (``{"instances": Instances((height, width))}`` with ``pred_boxes`` in pixels,
    ``scores`` = person probability and ``pred_action_scores`` (N, C) in the column order of the
    metadata's ``action_ids``) becomes one AVA row per (box, evaluated class) with the box
    normalised by the input's ``width``/``height``. The rows are written keyframe by keyframe,
    box by box in the model's order (the order in which EVAD's own evaluation hands its outputs
    to PySlowFast's code, which matches a frame's detections in that order), to
    ``<output_dir>/ava_detections.csv`` (coordinates with 5 decimals, scores with 6: see
    :func:`~evad_d2.evaluation.ava.writer.detection_rows`); the metrics
    are computed from exactly the values that text reads, so ``python -m evad_d2.evaluation.ava``
    on the file gives the same numbers.
    ``ava_metrics.json`` and ``ava_per_class_ap.png`` are written beside it.

    The metadata must provide ``action_ids``, ``eval_action_ids`` and ``groundtruth_file``, and
    may provide ``exclusions_file`` and ``action_classes`` (names, same order as ``action_ids``).
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        *,
        distributed: bool = True,
        only_processed_keyframes: bool = False,
        protocol: str = DEFAULT_PROTOCOL,
    ):
        """
        Args:
            dataset_name: a registered dataset with AVA metadata.
            output_dir: where the CSV, JSON and PNG go (nothing is written when None).
            distributed: gather predictions of all processes to the main one.
            only_processed_keyframes: score only the ground truth of keyframes that were
                processed (for partial runs); off by default, so missing keyframes cost recall.
            protocol: ``"pyslowfast"`` (default) or ``"activitynet"``.
        """
        meta = MetadataCatalog.get(dataset_name)
        missing = [k for k in _REQUIRED_METADATA if not hasattr(meta, k)]
        if missing:
            raise KeyError(f"dataset '{dataset_name}': metadata lacks {missing} needed by AVAEvaluator")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self._only_processed = only_processed_keyframes
        action_ids = [int(i) for i in meta.action_ids]
        self._eval_ids = [int(i) for i in meta.eval_action_ids]
        unknown = sorted(set(self._eval_ids) - set(action_ids))
        if unknown:
            raise KeyError(f"dataset '{dataset_name}': eval_action_ids {unknown} are not in action_ids")
        self._eval_cols = np.array([action_ids.index(i) for i in self._eval_ids], dtype=np.int64)
        names = list(getattr(meta, "action_classes", [str(i) for i in action_ids]))
        self._names = dict(zip(action_ids, names))
        self._gt_file = meta.groundtruth_file
        self._exclusions_file = getattr(meta, "exclusions_file", None)
        # Records: (video_id, timestamp, boxes (N, 4) normalised, person scores (N,), scores (N, K)).
        super().__init__(dataset_name, output_dir, distributed=distributed, protocol=protocol)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            h, w = float(inp["height"]), float(inp["width"])
            boxes = inst.pred_boxes.tensor.numpy().astype(np.float64) / np.array([w, h, w, h])
            boxes = np.clip(boxes, 0.0, 1.0)
            person = inst.scores.numpy().astype(np.float64)
            actions = inst.pred_action_scores.numpy().astype(np.float64)
            if actions.ndim != 2 or actions.shape[0] != len(boxes):
                raise ValueError(f"pred_action_scores has shape {actions.shape}, expected ({len(boxes)}, C)")
            self._frames.append(
                (str(inp["video_id"]), int(inp["timestamp"]), boxes, person, actions[:, self._eval_cols])
            )

    def evaluate(self):
        frames = self.gathered_frames()
        if not frames:
            return {}

        # The rows hold exactly the values their written text reads, so scoring them equals
        # scoring the file (and the file need not be parsed back).
        if self._output_dir:
            with atomic_write(self.output_path("ava_detections.csv"), "wb") as f:
                detections = self._detection_rows(frames, f)
        else:
            detections = self._detection_rows(frames, None)
        groundtruth = read_ava_csv(self._gt_file, with_scores=False)
        excluded = read_exclusions(self._exclusions_file) if self._exclusions_file else set()
        keyframes = {(f[0], f[1]) for f in frames} if self._only_processed else None
        result = evaluate_frame_map(
            groundtruth, detections, self._eval_ids, excluded=excluded, protocol=self._protocol, keyframes=keyframes
        )
        person_ap = self._person_ap(groundtruth, frames, excluded, keyframes)

        named = OrderedDict()
        named["frame_mAP@0.5"] = 100.0 * result.mean_ap
        named["person_AP@0.5"] = 100.0 * person_ap
        for c, ap in result.per_class_ap.items():
            if not math.isnan(ap):
                named[f"AP-{self._names.get(c, c)}"] = 100.0 * ap
        logger.info(
            "AVA '%s': frame-mAP@0.5 = %.4f, person AP@0.5 = %.4f over %d keyframes",
            self._dataset_name, named["frame_mAP@0.5"], named["person_AP@0.5"], len(frames),
        )
        if self._output_dir:
            metrics = result_to_json(result)
            metrics.update(
                person_AP=None if math.isnan(person_ap) else 100.0 * person_ap,
                class_names={str(c): self._names.get(c, str(c)) for c in self._eval_ids},
                num_keyframes=len(frames),
                protocol=self._protocol,
                only_processed_keyframes=self._only_processed,
            )
            self.write_metrics(
                "ava", metrics, {self._names.get(c, str(c)): 100.0 * ap for c, ap in result.per_class_ap.items()},
                title=f"{self._dataset_name}: frame-mAP@0.5 = {named['frame_mAP@0.5']:.2f}",
            )
        return OrderedDict(ava=named)

    def _detection_rows(self, frames, out):
        """AVA rows ``video,ts,x1,y1,x2,y2,action,score`` box by box within a keyframe, written
        as CSV to the binary file ``out`` unless it is None (see :func:`detection_rows`)."""
        return detection_rows(
            [f[0] for f in frames], [f[1] for f in frames], [len(f[2]) for f in frames],
            np.concatenate([f[2] for f in frames]), np.concatenate([f[4] for f in frames]), self._eval_ids,
            row_order="box", out=out,
        )

    def _person_ap(self, groundtruth, frames, excluded, keyframes) -> float:
        names = groundtruth.video_names
        gt_frames = [(names[v], t) for v, t in zip(groundtruth.video.tolist(), groundtruth.timestamp.tolist())]
        gt_boxes = groundtruth.boxes
        if keyframes is not None:
            keep = np.array([f in keyframes for f in gt_frames], dtype=bool)
            gt_frames = [f for f, k in zip(gt_frames, keep) if k]
            gt_boxes = gt_boxes[keep]
        det_frames, det_boxes, det_scores = [], [], []
        for video, ts, boxes, person, _ in frames:
            det_frames.extend([(video, ts)] * len(boxes))
            det_boxes.append(boxes)
            det_scores.append(person)
        return evaluate_person_ap(
            gt_frames, gt_boxes, det_frames,
            np.concatenate(det_boxes) if det_boxes else np.zeros((0, 4)),
            np.concatenate(det_scores) if det_scores else np.zeros(0),
            excluded=excluded,
        )
