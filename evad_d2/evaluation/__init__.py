"""Evaluation: AVA frame-mAP by the official protocol, UCF101-24 / JHMDB frame- and video-mAP.

Names are resolved on first use, so importing this package costs nothing and cannot fail
(the evaluators need detectron2, the plots matplotlib).
"""
import importlib

_EXPORTS = {
    "AVAEvaluator": "ava",
    "UCFJHMDBEvaluator": "ucf_jhmdb",
    "AvaBoxes": "ava",
    "FrameMapResult": "ava",
    "read_ava_csv": "ava",
    "evaluate_frame_map": "ava",
    "evaluate_person_ap": "ava",
    "evaluate_ava_files": "ava",
    "voc_average_precision": "ap",
    "average_precision_in_order": "ap",
    "act_average_precision": "ap",
    "match_detections": "ap",
    "box_iou": "ap",
    "frame_map": "ucf_jhmdb",
    "video_map": "ucf_jhmdb",
    "link_tubes": "ucf_jhmdb",
    "tube_iou": "ucf_jhmdb",
    "Tube": "ucf_jhmdb",
    "plot_per_class_ap": "plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
