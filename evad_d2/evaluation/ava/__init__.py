"""AVA frame-mAP by the official protocol, its CSV reader and writer, command line and evaluator.

Modules:

* :mod:`.protocol`: the metric (frame-mAP, person AP, the two official protocols and how they
  differ: :data:`PROTOCOL_TABLE`), :func:`evaluate_ava_files` on files, the JSON form of a result.
* :mod:`.activitynet`: ActivityNet's top-50 heap reader, vectorised.
* :mod:`.boxes`: :class:`AvaBoxes`, the rows of an AVA CSV as parallel arrays.
* :mod:`.reader`: :func:`read_ava_csv` (pyarrow, with an exact fallback that names file and line).
* :mod:`.writer`: :func:`detection_rows`, detection rows from model outputs, as they read back.
* :mod:`.cli`: ``python -m evad_d2.evaluation.ava`` (:func:`main`).
* :mod:`.evaluator`: :class:`AVAEvaluator`, the detectron2 ``DatasetEvaluator``.

The evaluator (which needs detectron2) is imported only when asked for.
"""
from .boxes import AvaBoxes
from .cli import format_table, main
from .protocol import (
    DEFAULT_PROTOCOL,
    PROTOCOL_TABLE,
    PROTOCOLS,
    FrameMapResult,
    evaluate_ava_files,
    evaluate_frame_map,
    evaluate_person_ap,
    result_to_json,
)
from .reader import read_ava_csv
from .writer import detection_rows

__all__ = [
    "AvaBoxes",
    "FrameMapResult",
    "read_ava_csv",
    "detection_rows",
    "evaluate_frame_map",
    "evaluate_person_ap",
    "evaluate_ava_files",
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "PROTOCOL_TABLE",
    "main",
    "result_to_json",
    "format_table",
    "AVAEvaluator",
]


def __getattr__(name):
    if name == "AVAEvaluator":
        from .evaluator import AVAEvaluator

        return AVAEvaluator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
