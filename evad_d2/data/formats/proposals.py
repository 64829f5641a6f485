"""Person proposals (boxes with a score per keyframe) in the forms AVA codebases release them.

* CSV (PySlowFast, AVA's ``ava_{split}_predicted_boxes.csv`` and
  ``person_box_67091280_iou90/ava_detection_{split}_boxes_and_labels*.csv``): the annotation
  columns with the score in the 8th column; the action column is empty, or (``boxes_and_labels``)
  a label of the box, so one box may have several rows: each box is kept once.
* mmaction2's pickle (``ava_dense_proposals_{split}.FAIR.recall_93.9.pkl``): a dict
  ``{"<video_id>,<timestamp %04d>": array (K, 5) of x1, y1, x2, y2, score}`` (or (K, 4) without
  scores), coordinates normalised to [0, 1]. It is read with :mod:`evad_d2.utils.safe_pickle`
  admitting numpy arrays (and the containers and bytes they pickle as) only, so a crafted file
  cannot run code.

A file is read as a pickle when it is named ``.pkl`` / ``.pickle`` or starts with a pickle's
protocol byte; anything else is read as CSV (and a CSV that is not text is an error naming it).
"""
import os
from collections import OrderedDict
from typing import Dict, Tuple

import numpy as np

from ...utils.safe_pickle import restricted_load
from .ava import BOX_SLACK, TEXT_ENCODING, AvaFormatError, iter_ava_rows

__all__ = ["Proposals", "is_pickle_file", "read_proposals"]

# (video_id, timestamp) -> (boxes (K, 4) float32 normalised x1, y1, x2, y2; scores (K,) float32)
Proposals = Dict[Tuple[str, int], Tuple[np.ndarray, np.ndarray]]

_PICKLE_EXTENSIONS = (".pkl", ".pickle")
_PICKLE_PROTOCOL_BYTE = 0x80  # protocols 2-5 start with PROTO (0x80)


def is_pickle_file(path: str) -> bool:
    """Whether ``path`` is read as a pickle: named ``.pkl``/``.pickle`` or starting with 0x80."""
    if os.path.splitext(path)[1].lower() in _PICKLE_EXTENSIONS:
        return True
    with open(path, "rb") as f:
        head = f.read(1)
    return bool(head) and head[0] == _PICKLE_PROTOCOL_BYTE


def read_proposals(path: str) -> Proposals:
    """Read a proposal file (CSV or mmaction2 pickle) into boxes and scores per keyframe.

    Args:
        path: the file.

    Returns:
        ``{(video_id, timestamp): (boxes (K, 4) float32, scores (K,) float32)}`` in file order;
        boxes normalised XYXY (clipped into [0, 1]); a box without a score scores 1.

    Raises:
        AvaFormatError: a malformed row, key or array, or a binary file that is not a pickle
            (naming the file and, for CSVs, the line).
        evad_d2.utils.safe_pickle.UnsafePickleError: a pickle naming anything but numpy arrays.
    """
    if is_pickle_file(path):
        return _read_pickle(path)
    try:
        return _read_csv(path)
    except UnicodeDecodeError:
        raise AvaFormatError(
            path, None, f"not a text CSV (it is not {TEXT_ENCODING} text) and not a pickle; proposal files are "
            "CSVs (video_id,timestamp,x1,y1,x2,y2,,score) or mmaction2's .pkl"
        ) from None


def _read_csv(path: str) -> Proposals:
    boxes: "OrderedDict[tuple, OrderedDict]" = OrderedDict()
    for row in iter_ava_rows(path, policy="proposals"):
        per_box = boxes.setdefault((row.video_id, row.timestamp), OrderedDict())
        # boxes_and_labels files repeat a box once per label: keep its first score.
        per_box.setdefault(row.box, 1.0 if row.score is None else row.score)
    return OrderedDict(
        (key, (np.array(list(b), np.float32).reshape(-1, 4), np.array(list(b.values()), np.float32)))
        for key, b in boxes.items()
    )


def _read_pickle(path: str) -> Proposals:
    data = restricted_load(path, source=path)  # numpy arrays, containers and bytes only
    if not isinstance(data, dict):
        raise AvaFormatError(
            path, None, f"expected a dict {{'<video_id>,<timestamp>': array (K, 5)}} (mmaction2's proposal "
            f"pickle), got {type(data).__name__}"
        )
    out: Proposals = OrderedDict()
    for key, value in data.items():
        out[_parse_key(path, key)] = _proposal_array(path, key, value)
    return out


def _parse_key(path: str, key) -> Tuple[str, int]:
    """``"<video_id>,<timestamp>"`` -> (video_id, int timestamp)."""
    parts = key.rsplit(",", 1) if isinstance(key, str) else []
    if len(parts) != 2 or not parts[1].strip().isdigit():
        raise AvaFormatError(path, None, f"key {key!r} is not '<video_id>,<timestamp>' (e.g. '0f39OWEqJ24,0902')")
    return parts[0], int(parts[1])


def _proposal_array(path: str, key: str, value) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes (K, 4) and scores (K,) of one pickle entry, checked to be normalised XYXY."""
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape[1] not in (4, 5) or not np.issubdtype(arr.dtype, np.number):
        raise AvaFormatError(path, None, f"entry {key!r}: expected a numeric array (K, 5) or (K, 4), got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.float32)
    boxes = arr[:, :4]
    if not np.isfinite(arr).all():
        raise AvaFormatError(path, None, f"entry {key!r}: non-finite values")
    if boxes.size and (boxes.min() < -BOX_SLACK or boxes.max() > 1.0 + BOX_SLACK):
        raise AvaFormatError(
            path, None, f"entry {key!r}: box coordinates up to {boxes.max():g} are not normalised to [0, 1] "
            "(pixel boxes must be divided by the frame width/height)"
        )
    boxes = np.clip(boxes, 0.0, 1.0)
    scores = arr[:, 4] if arr.shape[1] == 5 else np.ones(len(arr), np.float32)
    return np.ascontiguousarray(boxes), np.ascontiguousarray(scores)
