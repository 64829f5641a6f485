"""UCF101-24 / JHMDB: frame-mAP and video-mAP of a frame-level detector.

Modules:

* :mod:`.protocols`: the two protocols (``"act"``, the default, equal to the ACT evaluation code
  the published numbers come from; ``"voc"``), their formulas, :data:`PROTOCOLS`,
  :data:`DEFAULT_PROTOCOL`, the video-mAP thresholds.
* :mod:`.frame_map`: :func:`frame_map` of per-frame detections (:class:`FrameDetections`).
* :mod:`.tubes`: :func:`link_tubes` (per-frame detections to :class:`Tube`), :func:`tube_iou`,
  :func:`tube_nms`.
* :mod:`.video_map`: :func:`video_map` of tubes.
* :mod:`.evaluator`: :class:`UCFJHMDBEvaluator`, the detectron2 ``DatasetEvaluator``.

The ground-truth pickle is read by :func:`evad_d2.data.formats.ucf_jhmdb.load_gt_pickle`; the
generic AP, matching and box IoU are :mod:`evad_d2.evaluation.ap`. The evaluator (which needs
detectron2) is imported only when asked for.
"""
from .frame_map import FrameDetections, frame_map
from .protocols import ACT_TUBE_NMS_OVERLAP, DEFAULT_PROTOCOL, PROTOCOLS, VIDEO_MAP_THRESHOLDS
from .tubes import LINK_MIN_SCORE, Tube, link_tubes, tube_iou, tube_nms
from .video_map import video_map

__all__ = [
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "ACT_TUBE_NMS_OVERLAP",
    "VIDEO_MAP_THRESHOLDS",
    "LINK_MIN_SCORE",
    "FrameDetections",
    "frame_map",
    "Tube",
    "link_tubes",
    "tube_iou",
    "tube_nms",
    "video_map",
    "UCFJHMDBEvaluator",
]


def __getattr__(name):
    if name == "UCFJHMDBEvaluator":
        from .evaluator import UCFJHMDBEvaluator

        return UCFJHMDBEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
