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
import argparse
import codecs
import heapq
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
from iopath.common.file_io import g_pathmgr

from evad_d2.data.ava_format import AvaFormatError, read_exclusions, read_label_map
from evad_d2.utils.atomic_io import atomic_write

from .ap import average_precision_in_order, match_detections, ranked_average_precision

__all__ = [
    "AvaBoxes",
    "FrameMapResult",
    "read_ava_csv",
    "evaluate_frame_map",
    "evaluate_person_ap",
    "evaluate_ava_files",
    "parse_ava_csv_bytes",
    "round_decimals",
    "detection_rows",
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "PROTOCOL_TABLE",
    "main",
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
# Box coordinates may exceed [0, 1] by this much (rounding in written files); they are used as is.
_BOX_SLACK = 1e-3


@dataclass
class AvaBoxes:
    """Rows of an AVA CSV as parallel arrays (one entry per row, in file order).

    Attributes:
        video_names: the distinct video ids; ``video`` indexes into it.
        video: (N,) int64.
        timestamp: (N,) int64 seconds.
        boxes: (N, 4) float64 ``x1, y1, x2, y2`` normalised to [0, 1].
        labels: (N,) int64 class ids.
        scores: (N,) float64: the 8th column (the detection score; for ground truth the person
            id, which the official reader also reads as a score), 1.0 where there is none.
        lines: (N,) int64 source line numbers (0 where not read from a file).
        frames: (F, 2) int64 ``(video, timestamp)`` of every frame the source lists, distinct and
            sorted: the rows' frames, and also those of rows a class whitelist dropped and of
            two-column rows (a frame without actions). ActivityNet's protocol scores detections
            only on these frames. Default: the rows' frames.
    """

    video_names: List[str]
    video: np.ndarray
    timestamp: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    lines: np.ndarray = field(default=None)
    frames: np.ndarray = field(default=None)

    def __post_init__(self):
        n = len(self.video)
        if self.lines is None:
            self.lines = np.zeros(n, dtype=np.int64)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(n, 4)
        for name in ("video", "timestamp", "labels", "lines"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(n))
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(n)
        if self.frames is None:
            self.frames = _distinct_frames(self.video, self.timestamp)
        self.frames = np.asarray(self.frames, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.video)

    @classmethod
    def from_rows(cls, rows: Iterable[Tuple]) -> "AvaBoxes":
        """Build from ``(video_id, timestamp, x1, y1, x2, y2, class_id[, score])`` tuples."""
        rows = list(rows)
        names: Dict[str, int] = {}
        video = [names.setdefault(r[0], len(names)) for r in rows]
        return cls(
            video_names=list(names),
            video=np.array(video, dtype=np.int64),
            timestamp=np.array([int(r[1]) for r in rows], dtype=np.int64),
            boxes=np.array([r[2:6] for r in rows], dtype=np.float64).reshape(-1, 4),
            labels=np.array([int(r[6]) for r in rows], dtype=np.int64),
            scores=np.array([float(r[7]) if len(r) > 7 else 1.0 for r in rows], dtype=np.float64),
        )

    def select(self, keep: np.ndarray) -> "AvaBoxes":
        """The rows ``keep`` selects; the listed ``frames`` stay those of the source."""
        return AvaBoxes(
            self.video_names, self.video[keep], self.timestamp[keep], self.boxes[keep],
            self.labels[keep], self.scores[keep], self.lines[keep], self.frames,
        )


def _distinct_frames(video: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """(F, 2) distinct ``(video, timestamp)`` pairs, sorted; a frame's rows are nearly always
    consecutive, so only the first row of each run of one frame is sorted."""
    video, timestamp = np.asarray(video, dtype=np.int64), np.asarray(timestamp, dtype=np.int64)
    head = np.ones(len(video), dtype=bool)
    head[1:] = (video[1:] != video[:-1]) | (timestamp[1:] != timestamp[:-1])
    pairs = np.stack([video[head], timestamp[head]], axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


@dataclass
class FrameMapResult:
    """Frame-mAP and per-class AP (fractions in [0, 1]; NaN for a class without ground truth),
    and warnings about the inputs (also logged), e.g. that no detected keyframe is in the ground truth."""

    mean_ap: float
    per_class_ap: Dict[int, float]
    num_groundtruth: Dict[int, int]
    num_detections: Dict[int, int]
    warnings: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- CSV reading


def read_ava_csv(
    path: str,
    *,
    with_scores: bool,
    class_whitelist: Optional[Iterable[int]] = None,
    known_class_ids: Optional[Iterable[int]] = None,
) -> AvaBoxes:
    """Read an AVA ground-truth (``with_scores=False``) or detection CSV, vectorised.

    Rows are ``video_id, timestamp, x1, y1, x2, y2, action_id[, person_id | score]`` with boxes
    normalised to [0, 1]. Ground truth may have 7 or 8 columns (the 8th, the person id, is not
    used); detections need the score. Two-column rows (``video_id, timestamp``: a frame without
    actions) are accepted and carry no row, only the frame (see ``AvaBoxes.frames``). Blank
    lines are skipped, and so is a UTF-8 byte-order mark (what spreadsheet tools write).

    Numbers are bit-identical to Python's ``float`` of each field. The text is cut in blocks
    whose separators are found with numpy; fields of up to 8 characters (nearly all in AVA
    files) are parsed 8 bytes at a time, anything else field by field. AVA v2.2 validation
    size (10M detection rows, 500 MiB) reads in about 4 s on one core.

    Args:
        path: the CSV file.
        with_scores: read the 8th column as the detection score.
        class_whitelist: rows of other class ids are dropped, as the official reader does.
        known_class_ids: when given, a class id outside it is an error (catches files written
            with another label map); ids known but not whitelisted are still dropped.

    Raises:
        AvaFormatError: naming the file and line, for a wrong column count, a field that is not
            a number, a timestamp that is not a whole second, a box outside [0, 1] (pixel boxes),
            a ground-truth box with x2 < x1 or y2 < y1, an unknown class id or a non-finite score.
    """
    with g_pathmgr.open(path, "rb") as f:
        data = f.read()
    if b'"' in data:
        # Quoted fields never occur in AVA files; normalise them through the csv module.
        data, line_map = _unquote_csv(data)
    else:
        line_map = None
    return parse_ava_csv_bytes(data, path, with_scores, class_whitelist, known_class_ids, line_map)


def _strip_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte-order mark (else the first video id would carry it)."""
    return data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data


def _unquote_csv(data: bytes) -> Tuple[bytes, np.ndarray]:
    import csv
    import io

    reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))  # a byte-order mark is not data
    out, lines = [], []
    for row in reader:
        out.append(",".join(row))
        lines.append(reader.line_num)
    return ("\n".join(out) + "\n").encode("utf-8"), np.array(lines, dtype=np.int64)


# Text is parsed in blocks of about this many bytes (cut at a line end), so that a block's
# intermediate arrays stay in the CPU cache and temporaries stay small on multi-GiB files.
_BLOCK_BYTES = 1 << 22
# Bytes readable after a block's end, so 8-byte words can be read at any field start.
_PAD = b"\0" * 16


def parse_ava_csv_bytes(data, path, with_scores, class_whitelist=None, known_class_ids=None, line_map=None):
    """:func:`read_ava_csv` on the file's bytes; ``path`` only names the source in errors.

    ``line_map`` gives the source line number of each line of ``data`` (default: 1, 2, ...).
    """
    data = _strip_bom(data)
    if b"\r" in data:
        data = data.replace(b"\r", b"")
    if not data.endswith(b"\n"):
        data += b"\n"
    whitelist = _id_table(class_whitelist)
    known = _id_table(known_class_ids)
    names: Dict[bytes, int] = {}
    rows = _RowBuffer()
    frames = []
    pos = lines_done = 0
    while pos < len(data):
        end = data.rfind(b"\n", pos, pos + _BLOCK_BYTES) + 1
        if end <= pos:  # one line longer than a block
            end = data.index(b"\n", pos + _BLOCK_BYTES) + 1
        # The next block's bytes serve as the padding, except at the end of the data.
        buf, off = (data, pos) if end + len(_PAD) <= len(data) else (data[pos:end] + _PAD, 0)
        nlines, columns, block_frames = _parse_block(
            buf, off, end - pos, path, with_scores, lines_done, line_map, names, whitelist, known
        )
        frames.append(block_frames)
        if not rows.capacity:  # AVA rows are alike: size the columns from the first block
            rows.reserve(int(len(columns[0]) * len(data) / (end - pos) * 1.02) + 1024)
        rows.append(columns)
        pos, lines_done = end, lines_done + nlines
    frames = np.concatenate(frames)
    return AvaBoxes(
        [k.decode("utf-8") for k in names], *rows.columns(), np.unique(frames, axis=0) if len(frames) else frames
    )


class _RowBuffer:
    """Growable :class:`AvaBoxes` columns (video, timestamp, boxes, labels, scores, lines)."""

    _DTYPES = (np.int64, np.int64, np.float64, np.int64, np.float64, np.int64)

    def __init__(self):
        self.capacity, self.size = 0, 0
        self.reserve(0)

    def reserve(self, capacity: int):
        if capacity < self.capacity:
            return
        old = getattr(self, "cols", None)
        self.cols = [np.empty((capacity, 4) if i == 2 else capacity, dtype=t) for i, t in enumerate(self._DTYPES)]
        if old is not None:
            for new, col in zip(self.cols, old):
                new[:self.size] = col[:self.size]
        self.capacity = capacity

    def append(self, columns: List[np.ndarray]):
        n = len(columns[0])
        if self.size + n > self.capacity:
            self.reserve(max(2 * self.capacity, self.size + n))
        for col, part in zip(self.cols, columns):
            col[self.size:self.size + n] = part
        self.size += n

    def columns(self) -> List[np.ndarray]:
        return [c[:self.size] for c in self.cols]


def _id_table(ids: Optional[Iterable[int]]) -> Optional[np.ndarray]:
    """Lookup table ``t[i]`` = id i is in ``ids`` (ids are small non-negative integers)."""
    if ids is None:
        return None
    ids = np.array(sorted(set(int(c) for c in ids)), dtype=np.int64)
    table = np.zeros(int(ids.max()) + 1 if len(ids) else 0, dtype=bool)
    table[ids[ids >= 0]] = True
    return table


def _in_table(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    inside = (values >= 0) & (values < len(table))
    out = np.zeros(len(values), dtype=bool)
    out[inside] = table[values[inside]]
    return out


def _parse_block(buf, off, nbytes, path, with_scores, lines_done, line_map, names, whitelist, known):
    """Parse the whole lines ``buf[off:off + nbytes]`` (at least 16 readable bytes follow them).

    Returns:
        The number of lines, the :class:`AvaBoxes` columns of the block's rows, and the
        distinct ``(video, timestamp)`` of all its rows and two-column lines (:attr:`AvaBoxes.frames`).
    """
    u8 = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=off)
    # words[i]: the 8 bytes starting at byte i, as one little-endian integer (byte i lowest).
    words = np.ndarray((nbytes + 8,), dtype="<u8", buffer=buf, offset=off, strides=(1,))
    seps = np.flatnonzero((u8 == ord(",")) | (u8 == ord("\n")))
    is_end = u8[seps] == ord("\n")
    nlines = int(np.count_nonzero(is_end))
    if line_map is None:
        line_no = np.arange(lines_done + 1, lines_done + nlines + 1, dtype=np.int64)
    else:
        line_no = np.asarray(line_map[lines_done:lines_done + nlines], dtype=np.int64)

    # bounds[:, j]: the byte after field j (its comma or the line end); field j >= 1 starts
    # one byte after bounds[:, j - 1]. Rows without an 8th field have bounds[:, 7] == bounds[:, 6].
    k = len(seps) // max(nlines, 1)
    if k * nlines == len(seps) and (k == 8 or (k == 7 and not with_scores)) and is_end[k - 1::k].all():
        # Every line has k columns (nearly always): the separators are the bounds.
        bounds = seps.reshape(nlines, k)
        if k == 7:
            bounds = np.concatenate([bounds, bounds[:, 6:]], axis=1)
        starts = np.empty(nlines, dtype=np.int64)
        starts[:1] = 0
        starts[1:] = bounds[:-1, 7] + 1
        pairs = None
    else:
        starts, line_no, bounds, pairs = _mixed_bounds(u8, seps, is_end, line_no, path, with_scores)
    n = len(starts)

    def field(j, rows=slice(None)):
        return bounds[rows, j - 1] + 1, bounds[rows, j]

    ts = _parse_numbers(u8, words, *field(1), path, line_no, "timestamp")
    boxes = np.empty((n, 4), dtype=np.float64)
    for j in range(4):
        boxes[:, j] = _parse_numbers(u8, words, *field(2 + j), path, line_no, "box coordinate")
    labels_f = _parse_numbers(u8, words, *field(6), path, line_no, "action id")
    what = "score" if with_scores else "person id"
    # Ground truth's 8th column is the person id; the official reader takes it as the row's
    # score (it orders ground truth within a frame under the ActivityNet protocol). A missing
    # or empty one reads as 1.0.
    rows8 = bounds[:, 7] > bounds[:, 6] + (0 if with_scores else 1)
    if rows8.all():
        scores = _parse_numbers(u8, words, *field(7), path, line_no, what)
    else:
        scores = np.ones(n, dtype=np.float64)
        rows8 = np.flatnonzero(rows8)
        scores[rows8] = _parse_numbers(u8, words, *field(7, rows8), path, line_no[rows8], what)

    bad = ~np.isfinite(scores)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise AvaFormatError(path, int(line_no[i]), f"{what} {scores[i]} is not a finite number")
    bad = (ts != np.floor(ts)) | (ts < 0)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise AvaFormatError(path, int(line_no[i]), f"timestamp {ts[i]!r} must be a non-negative whole second")
    bad = (labels_f != np.floor(labels_f)) | ~np.isfinite(labels_f)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise AvaFormatError(path, int(line_no[i]), f"action id {labels_f[i]!r} is not an integer")
    labels = labels_f.astype(np.int64)
    bad = ~((boxes >= -_BOX_SLACK) & (boxes <= 1.0 + _BOX_SLACK)).all(axis=1)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise AvaFormatError(
            path, int(line_no[i]),
            f"box {boxes[i].tolist()} is outside the frame (coordinates must be normalised to [0, 1]; "
            "pixel boxes must be divided by the frame width/height)",
        )
    # Detections with x2 <= x1 or y2 <= y1 are dropped at scoring time, as the official code does.
    if not with_scores:
        bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise AvaFormatError(path, int(line_no[i]), f"box {boxes[i].tolist()} has x2 < x1 or y2 < y1")
    if known is not None:
        bad = ~_in_table(labels, known)
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise AvaFormatError(path, int(line_no[i]), f"unknown action id {labels[i]} (not in the label map)")

    video = _video_ids(u8, words, starts, bounds[:, 0], names)
    columns = [video, ts.astype(np.int64), boxes, labels, scores, line_no]
    frames = _distinct_frames(video, columns[1])
    if pairs is not None and len(pairs[0]):  # after the rows' ids: video ids keep the rows' order
        frames = np.concatenate([frames, _pair_frames(u8, words, *pairs, path, names)])
    if whitelist is not None:
        keep = _in_table(labels, whitelist)
        if not keep.all():
            columns = [c[keep] for c in columns]
    return nlines, columns, frames


def _pair_frames(u8, words, starts, commas, ends, line_no, path, names) -> np.ndarray:
    """(F, 2) ``(video, timestamp)`` of two-column lines, the timestamp checked as for rows."""
    ts = _parse_numbers(u8, words, commas + 1, ends, path, line_no, "timestamp")
    bad = (ts != np.floor(ts)) | (ts < 0)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise AvaFormatError(path, int(line_no[i]), f"timestamp {ts[i]!r} must be a non-negative whole second")
    return _distinct_frames(_video_ids(u8, words, starts, commas, names), ts.astype(np.int64))


def _mixed_bounds(u8, seps, is_end, line_no, path, with_scores):
    """Field bounds of lines with 7 or 8 columns; blank lines are skipped, and 2-column lines
    are returned apart as ``(starts, commas, ends, line numbers)``."""
    ends, commas = seps[is_end], seps[~is_end]
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    first_comma = np.searchsorted(commas, starts)
    ncols = np.searchsorted(commas, ends) - first_comma + 1
    blank = ncols == 1
    for i in np.flatnonzero(blank):
        if u8[starts[i]:ends[i]].tobytes().strip():
            _raise_columns(path, line_no[i], 1, with_scores)
    allowed = (ncols == 8) | (ncols == 2) | ((ncols == 7) & (not with_scores))
    bad = ~allowed & ~blank
    if bad.any():
        i = np.flatnonzero(bad)[0]
        _raise_columns(path, line_no[i], int(ncols[i]), with_scores)
    two = np.flatnonzero(ncols == 2)
    pairs = (starts[two], commas[first_comma[two]], ends[two], line_no[two])
    rows = np.flatnonzero(ncols >= 7)
    starts, ends, first_comma, ncols = starts[rows], ends[rows], first_comma[rows], ncols[rows]
    bounds = np.empty((len(rows), 8), dtype=np.int64)
    last = max(len(commas) - 1, 0)
    for j in range(8):
        inner = j < ncols - 1
        bounds[:, j] = np.where(inner, commas[np.minimum(first_comma + j, last)] if len(commas) else 0, ends)
    return starts, line_no[rows], bounds, pairs


def _raise_columns(path, line, got, with_scores):
    expected = "8 (video_id, timestamp, x1, y1, x2, y2, action_id, score)" if with_scores else (
        "7 or 8 (video_id, timestamp, x1, y1, x2, y2, action_id[, person_id])"
    )
    raise AvaFormatError(path, int(line), f"expected {expected} columns, got {got}")


_U64 = np.uint64
# _MASKS[i]: the lowest i bytes of a word set (i = 0 to 8).
_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [2**64 - 1], dtype=np.uint64)


def _video_ids(u8, words, starts, stops, names: Dict[bytes, int]) -> np.ndarray:
    """Video id of every row as an index into ``names`` (extended with new ids in order).

    Ids are compared with the previous row's as 8-byte words; names are looked up once per run.
    """
    n = len(starts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lens = stops - starts
    head = np.ones(n, dtype=bool)
    head[1:] = lens[1:] != lens[:-1]
    for j in range(0, max(int(lens.max()), 1), 8):
        # Shorter ids are masked to zero past their end; the index only has to stay in range.
        w = words[np.minimum(starts + j, len(words) - 1)] & _MASKS[np.clip(lens - j, 0, 8)]
        head[1:] |= w[1:] != w[:-1]
    heads = np.flatnonzero(head)
    runs = zip(starts[heads].tolist(), stops[heads].tolist())
    codes = np.array([names.setdefault(u8[s:e].tobytes(), len(names)) for s, e in runs], dtype=np.int64)
    return codes[np.cumsum(head) - 1]


_POW10 = np.array([10.0 ** k for k in range(23)])
_DOTS = _U64(0x2E2E2E2E2E2E2E2E)
_LOW7 = _U64(0x7F7F7F7F7F7F7F7F)
_ZEROS = _U64(0x3030303030303030)
_SIXES = _U64(0x0606060606060606)
_HIGH_NIBBLES = _U64(0xF0F0F0F0F0F0F0F0)
# _ZERO_FILL[i]: '0' characters in the lowest i bytes.
_ZERO_FILL = _MASKS & _ZEROS


def _parse_short_decimals(w: np.ndarray, lens: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Decimals of 1 to 8 characters (digits and at most one '.') held in 8-byte words.

    Eight digits are combined at once (SWAR): pairs, then quads, then the 8-digit integer, each
    step one multiply-add on all lanes. The value is the exact integer mantissa (< 10**8) over
    10**(digits after the point), which float64 division rounds correctly, as ``float()`` does.
    Fields laid out like the first one (same length, '.' at the same place: nearly all fields
    of a column in AVA files) take a shorter path with that layout fixed.

    Args:
        w: (N,) uint64, character i of a field in byte i (bytes past the field are ignored).
        lens: (N,) field lengths.

    Returns:
        values (N,) float64 and ok (N,) bool; rows not ok (other characters, other lengths)
        must be parsed another way.
    """
    if len(w) == 0 or not 1 <= lens[0] <= 8 or not (lens == lens[0]).all():
        return _parse_any_short_decimals(w, lens)
    nchar = int(lens[0])
    dot = int(w[0]).to_bytes(8, "little")[:nchar].find(b".")
    val, ok = _parse_fixed_decimals(w, nchar, dot)
    rest = np.flatnonzero(~ok)
    if len(rest):
        val[rest], ok[rest] = _parse_any_short_decimals(w[rest], lens[rest])
    return val, ok


def _parse_fixed_decimals(w: np.ndarray, nchar: int, dot: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_parse_short_decimals` for fields of ``nchar`` characters with '.' at ``dot`` (-1: none)."""
    x = w & _MASKS[nchar]
    ndig = nchar
    if dot >= 0:
        ok = (x & _U64(0xFF << 8 * dot)) == _U64(0x2E << 8 * dot)
        # Drop the '.': the bytes above it move down one.
        below = _MASKS[dot]
        high = x >> _U64(8)
        high &= ~below
        x &= below
        x |= high
        ndig -= 1
    else:
        ok = np.ones(len(x), dtype=bool)
    if ndig < 8:  # right-align behind leading '0' characters
        x <<= _U64(8 * (8 - ndig))
        x |= _ZERO_FILL[8 - ndig]
    val = _swar_digits(x, ok)
    if dot >= 0:
        val /= _POW10[nchar - 1 - dot]
    return val, ok


def _parse_any_short_decimals(w: np.ndarray, lens: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_parse_short_decimals` with the layout found per field."""
    ok = (lens >= 1) & (lens <= 8)
    nchar = np.clip(lens, 1, 8)
    mask = _MASKS[nchar]
    x = w & mask
    # High bit of every byte equal to '.' (exact zero-byte test of x ^ '.'; no false positives).
    t = x ^ _DOTS
    dots = t & _LOW7
    dots += _LOW7
    dots |= t
    dots |= _LOW7
    np.invert(dots, out=dots)
    dots &= mask
    has_dot = dots != 0
    ndig = nchar - has_dot
    nfrac = np.zeros(len(x), dtype=np.int64)
    if has_dot.any():
        ok &= (dots & (dots - _U64(1))) == 0  # at most one '.'
        # A single dot at byte k is 2**(8k + 7): frexp gives exponent 8k + 8.
        k = (np.frexp(dots.astype(np.float64))[1] >> 3) - 1
        below = _MASKS[np.where(has_dot, k, 8)]
        high = x >> _U64(8)
        high &= ~below
        x &= below
        x |= high
        nfrac = np.where(has_dot, nchar - 1 - k, 0)
    ok &= ndig >= 1
    pad = 8 - np.clip(ndig, 1, 8)
    x <<= (pad * 8).astype(np.uint64)
    x |= _ZERO_FILL[pad]
    val = _swar_digits(x, ok)
    val /= _POW10[nfrac]
    return val, ok


def _swar_digits(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """The 8-digit integers of words of 8 ASCII digits (first digit in the lowest byte), as
    float64; clears ``ok`` where a byte is not a digit. ``x`` is overwritten."""
    t = x & _HIGH_NIBBLES
    ok &= t == _ZEROS
    np.add(x, _SIXES, out=t)
    t &= _HIGH_NIBBLES
    ok &= t == _ZEROS  # high nibble 3 before and after adding 6: '0' to '9'
    x -= _ZEROS
    for shift, mul, lanes in ((8, 10, 0x00FF00FF00FF00FF), (16, 100, 0x0000FFFF0000FFFF), (32, 10000, 0xFFFFFFFF)):
        np.right_shift(x, _U64(shift), out=t)
        x *= _U64(mul)
        x += t
        x &= _U64(lanes)
    return x.astype(np.float64)


def _parse_numbers(u8, words, lo, hi, path, line_no, what) -> np.ndarray:
    """Parse decimal fields ``u8[lo:hi]`` to float64, bit-identical to Python's ``float``.

    Plain decimals of up to 8 characters (nearly all fields of AVA files) are read 8 bytes at a
    time by :func:`_parse_short_decimals`; the rest go through :func:`_parse_long_numbers`.
    """
    out, ok = _parse_short_decimals(words[lo], hi - lo)
    rest = np.flatnonzero(~ok)
    if len(rest):
        out[rest] = _parse_long_numbers(u8, lo[rest], hi[rest], path, line_no[rest], what)
    return out


def _parse_long_numbers(u8, lo, hi, path, line_no, what) -> np.ndarray:
    """Decimals of any length, bit-identical to ``float``.

    A decimal with at most 15 digits is an exact integer mantissa m < 2**53 over 10**k
    (k <= 22), and ``m / 10**k`` in float64 is then correctly rounded, as ``float()`` is. Fields
    of one length that share the first field's layout (sign, '.' position) are read one
    character column at a time with fixed digit weights; other fields are read character by
    character; exponents, spaces, '+' and long mantissas go through ``float()``.
    """
    n = len(lo)
    out = np.empty(n, dtype=np.float64)
    lens = hi - lo
    slow = (lens <= 0) | (lens > 20)
    counts = np.bincount(np.where(slow, 0, lens), minlength=21)
    for length in np.flatnonzero(counts[1:]) + 1:
        sel = np.flatnonzero((lens == length) & ~slow)
        base = lo[sel]
        cols = [u8[base + j] for j in range(int(length))]
        val, fast = _parse_fixed_layout(cols)
        out[sel[fast]] = val[fast]
        rest = sel[~fast]
        if len(rest):
            val, bad = _parse_any_layout([c[~fast] for c in cols])
            out[rest] = val
            slow[rest[bad]] = True
    for i in np.flatnonzero(slow):
        text = bytes(u8[lo[i]:hi[i]]).decode("utf-8", "replace")
        try:
            out[i] = float(text)
        except ValueError:
            raise AvaFormatError(path, int(line_no[i]), f"{what} {text!r} is not a number") from None
    return out


def _parse_fixed_layout(cols: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Fields (one uint8 array per character column) laid out like the first one."""
    m = len(cols[0])
    first = [int(c[0]) for c in cols]
    neg = first[0] == ord("-")
    dot = first.index(ord(".")) if ord(".") in first else -1
    digits = [j for j in range(len(cols)) if j != dot and not (neg and j == 0)]
    if not digits or len(digits) > 15:
        return np.zeros(m), np.zeros(m, dtype=bool)
    fast = np.ones(m, dtype=bool)
    val = np.zeros(m, dtype=np.float64)
    for j, c in enumerate(cols):
        if j == dot:
            fast &= c == ord(".")
        elif neg and j == 0:
            fast &= c == ord("-")
        else:
            d = c - np.uint8(ord("0"))  # wraps below '0', so one comparison checks the digit
            fast &= d < 10
            val = val * 10.0 + d
    if dot >= 0:
        val /= _POW10[len(cols) - dot - 1]
    return (-val if neg else val), fast


def _parse_any_layout(cols: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Fields of any layout of digits, one '.', a leading '-'; returns (values, unparsed)."""
    m = len(cols[0])
    mant = np.zeros(m, dtype=np.int64)
    nfrac = np.zeros(m, dtype=np.int64)
    ndig = np.zeros(m, dtype=np.int64)
    seen_dot = np.zeros(m, dtype=bool)
    bad = np.zeros(m, dtype=bool)
    neg = cols[0] == ord("-")
    for j, c in enumerate(cols):
        d = c.astype(np.int64) - ord("0")
        isdig = (d >= 0) & (d <= 9)
        isdot = c == ord(".")
        mant = np.where(isdig, mant * 10 + d, mant)
        ndig += isdig
        nfrac += isdig & seen_dot
        bad |= isdot & seen_dot
        seen_dot |= isdot
        ok_char = isdig | isdot
        if j == 0:
            ok_char |= neg
        bad |= ~ok_char
    bad |= (ndig == 0) | (ndig > 15)
    val = mant / _POW10[np.minimum(nfrac, 22)]
    return np.where(neg, -val, val), bad


# ----------------------------------------------------------------------------- CSV writing


def round_decimals(x: np.ndarray, digits: int) -> np.ndarray:
    """Integers ``q`` such that ``"%.{digits}f" % x`` reads ``q / 10**digits`` (Python's rounding).

    ``x * 10**digits`` in float64 is within half an ulp of the exact product, so ``rint`` rounds
    it like the exact decimal unless it is that close to a tie; those few go through ``%``.

    Args:
        x: float64 array, finite, ``|x| * 10**digits < 2**52``.

    Returns:
        int64 array of ``x``'s shape.
    """
    x = np.asarray(x, dtype=np.float64)
    y = x * 10.0 ** digits
    if not np.isfinite(y).all() or (np.abs(y) >= 2.0 ** 52).any():
        raise ValueError(f"cannot write values with {digits} decimals: non-finite or too large")
    frac = y - np.floor(y)
    q = np.rint(y).astype(np.int64)
    near = np.abs(frac - 0.5) <= 1e-12 * np.maximum(np.abs(y), 1.0)
    for i in np.flatnonzero(near.ravel()):
        q.flat[i] = int(("%.*f" % (digits, x.flat[i])).replace(".", ""))
    return q


def _decimal_text(q: int, digits: int) -> str:
    """``"%.{digits}f"`` text of ``q / 10**digits``."""
    whole, frac = divmod(abs(q), 10 ** digits)
    return f"{'-' if q < 0 else ''}{whole}.{frac:0{digits}d}"


def detection_rows(
    frame_videos: Sequence[str],
    frame_timestamps: Sequence[int],
    box_counts: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: Sequence[int],
    *,
    box_decimals: int = 5,
    score_decimals: int = 6,
    row_order: str = "score",
    out=None,
) -> AvaBoxes:
    """AVA detection rows, one per (box, class), holding exactly the values their CSV text reads.

    Rows go keyframe by keyframe in the given order; within a keyframe by descending score
    (``row_order="score"``; ties: box order, then class order) or box by box, each box's
    classes in ``class_ids`` order (``"box"``: the order of PySlowFast's ``get_ava_eval_data``,
    with which EVAD scores its model outputs in memory; under the PySlowFast protocol a frame's
    detections are matched in this order). Coordinates are written with ``box_decimals`` and
    scores with ``score_decimals`` decimals; the returned values are those decimals parsed
    (``float(text)``), so scoring them equals scoring the written file. EVAD's own evaluation
    scores unrounded values: with 5 box and 6 score decimals the frame-mAP stays within 3e-4 of
    it (per class 0.02) on 1,200 random keyframes, with AVA's usual 3 box decimals it moved by up
    to 0.12 (per class 2.0), as IoUs near 0.5 cross the threshold.

    Args:
        frame_videos, frame_timestamps: (F,) keyframe of each group of boxes.
        box_counts: (F,) boxes of each keyframe; boxes of keyframe f follow those of f - 1.
        boxes: (B, 4) x1, y1, x2, y2 normalised to [0, 1].
        scores: (B, K) score of each box for each class.
        class_ids: (K,) class id of each score column.
        row_order: ``"score"`` or ``"box"``.
        out: a binary file; when given, the rows' CSV text is written to it.

    Returns:
        The rows; ``lines`` are their line numbers in the text.

    Raises:
        ValueError: naming the keyframe, for a non-finite box coordinate or score.
    """
    box_counts = np.asarray(box_counts, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64).reshape(len(boxes), len(class_ids))
    num_boxes, k = scores.shape
    box_frame = np.repeat(np.arange(len(box_counts)), box_counts)
    bad = ~(np.isfinite(boxes).all(axis=1) & np.isfinite(scores).all(axis=1))
    if bad.any():
        f = int(box_frame[np.flatnonzero(bad)[0]])
        raise ValueError(f"keyframe ({frame_videos[f]}, {frame_timestamps[f]}): non-finite predicted box or score")

    if row_order not in ("score", "box"):
        raise ValueError(f"row_order must be 'score' or 'box', got {row_order!r}")
    flat = scores.reshape(-1)
    order = np.arange(num_boxes * k, dtype=np.int64)  # box by box, as in "box" order
    if row_order == "score":
        # Per keyframe, a stable descending sort of its box x class scores; keyframes with the
        # same number of boxes are sorted together as the rows of one matrix.
        first_row = (np.cumsum(box_counts) - box_counts) * k
        for count in np.unique(box_counts[box_counts > 0]):
            idx = first_row[box_counts == count][:, None] + np.arange(count * k)
            order[idx] = np.take_along_axis(idx, np.argsort(-flat[idx], axis=1, kind="stable"), axis=1)
    row_box = order // k  # a division by a scalar: numpy's fast path
    row_col = order - row_box * k

    names: Dict[str, int] = {}  # in order of first appearance in the text, as the reader numbers them
    frame_video = np.array(
        [names.setdefault(str(v), len(names)) if c else -1 for v, c in zip(frame_videos, box_counts.tolist())],
        dtype=np.int64,
    )
    frame_ts = np.array([int(t) for t in frame_timestamps], dtype=np.int64)
    box_q = round_decimals(boxes, box_decimals)
    score_q = round_decimals(flat[order], score_decimals)
    rows = AvaBoxes(
        list(names), frame_video[box_frame[row_box]], frame_ts[box_frame[row_box]],
        (box_q / 10.0 ** box_decimals)[row_box], class_ids[row_col], score_q / 10.0 ** score_decimals,
        np.arange(1, len(order) + 1, dtype=np.int64),
    )
    if out is None:
        return rows
    frame_text = [f"{v},{t:04d}," for v, t in zip(frame_videos, frame_ts.tolist())]
    if len(box_q) and box_q.min() >= 0 and box_q.max() <= 10 ** box_decimals:  # in [0, 1]: a table
        coord = [_decimal_text(q, box_decimals) + "," for q in range(10 ** box_decimals + 1)]
    else:
        coord = {q: _decimal_text(q, box_decimals) + "," for q in np.unique(box_q).tolist()}
    prefixes = [
        frame_text[f] + coord[a] + coord[b] + coord[c] + coord[d]
        for f, (a, b, c, d) in zip(box_frame.tolist(), box_q.tolist())
    ]
    for text in _join_rows(prefixes, [f"{c}," for c in class_ids.tolist()], row_box, row_col, score_q, score_decimals):
        out.write(text)
    return rows


# Rows are written this many at a time: the buffers stay small enough to be reused.
_WRITE_CHUNK = 1 << 18


def _join_rows(prefixes, classes, row_box, row_col, score_q, digits) -> Iterator[np.ndarray]:
    """The text ``prefixes[row_box] + classes[row_col] + score + "\\n"`` of the rows, in pieces.

    Each piece is copied as a fixed-size record: the output is viewed as records of the
    piece's length starting at every byte, and pieces of one length are stored in one step.

    Yields:
        uint8 arrays, the text of consecutive rows.
    """
    n = len(row_box)
    one = 10 ** digits
    if n and not ((score_q >= 0).all() and (score_q <= 9 * one).all()):  # a score outside [0, 10)
        text = "".join(
            f"{prefixes[b]}{classes[c]}{_decimal_text(q, digits)}\n"
            for b, c, q in zip(row_box.tolist(), row_col.tolist(), score_q.tolist())
        )
        yield np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return
    tail = digits + 3  # "d.ddd\n"
    pre_mat, pre_len = _byte_matrix(prefixes)
    cls_mat, cls_len = _byte_matrix(classes)

    def records(arr, width, offset=0, stride=None):
        """``arr`` seen as records of ``width`` bytes, one every ``stride`` bytes."""
        count = (arr.nbytes - offset - width) // (stride or width) + 1
        return np.ndarray((count,), dtype=f"V{width}", buffer=arr, offset=offset, strides=(stride or width,))

    def store(out, pieces, lengths, idx, at):
        """``out[at[i]:at[i] + lengths[i]] = pieces[idx[i], :lengths[i]]`` for every row i."""
        values = np.flatnonzero(np.bincount(lengths))
        for length in values.tolist():
            sel = np.flatnonzero(lengths == length) if len(values) > 1 else slice(None)
            src = records(pieces, length, stride=pieces.shape[1])
            records(out, length, stride=1)[at[sel]] = src[idx[sel]]

    for lo in range(0, n, _WRITE_CHUNK):
        sl = slice(lo, min(lo + _WRITE_CHUNK, n))
        row_pre_len, row_cls_len = pre_len[row_box[sl]], cls_len[row_col[sl]]
        ends = np.cumsum(row_pre_len + row_cls_len + tail)
        out = np.empty(int(ends[-1]), dtype=np.uint8)
        rest = score_q[sl]
        score_txt = np.empty((len(rest), tail), dtype=np.uint8)
        score_txt[:, 1] = ord(".")
        score_txt[:, -1] = ord("\n")
        for j in range(tail - 2, 1, -1):  # decimals, last first (divisions by a scalar are fast)
            quot = rest // 10
            score_txt[:, j] = rest - 10 * quot + ord("0")
            rest = quot
        score_txt[:, 0] = rest + ord("0")
        start = ends - (row_pre_len + row_cls_len + tail)
        store(out, pre_mat, row_pre_len, row_box[sl], start)
        start += row_pre_len
        store(out, cls_mat, row_cls_len, row_col[sl], start)
        start += row_cls_len
        records(out, tail, stride=1)[start] = records(score_txt, tail)
        yield out


def _byte_matrix(items: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of strings as a zero-padded (len(items), longest) uint8 matrix, and their lengths."""
    encoded = [t.encode("utf-8") for t in items]
    lens = np.array([len(b) for b in encoded], dtype=np.int64)
    width = max(int(lens.max()) if len(lens) else 0, 1)
    return np.frombuffer(b"".join(b.ljust(width, b"\0") for b in encoded), dtype=np.uint8).reshape(-1, width), lens


# ----------------------------------------------------------------------------- metrics


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


def _runs(keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Runs of equal consecutive keys: (the key of each run, the run of each row).

    Rows of a frame are nearly always consecutive, so per-frame work is done once per run.
    """
    head = np.ones(len(keys), dtype=bool)
    head[1:] = keys[1:] != keys[:-1]
    return keys[head], np.cumsum(head) - 1


def _isin(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.isin(keys, values)``, evaluated once per run of equal keys."""
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    run_keys, run = _runs(keys)
    return np.isin(run_keys, values)[run]


def _first_appearance_rank(keys: np.ndarray) -> np.ndarray:
    """For each row, the rank of its key by first appearance (a dict's insertion order)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    run_keys, run = _runs(keys)
    uniq, first_run, inverse = np.unique(run_keys, return_index=True, return_inverse=True)
    rank_of_uniq = np.empty(len(uniq), dtype=np.int64)
    rank_of_uniq[np.argsort(first_run, kind="stable")] = np.arange(len(uniq))
    return rank_of_uniq[inverse.ravel()][run]


def _heap_read(keys, boxes, labels, scores, capacity):
    """ActivityNet's ``read_csv``: per frame a heap of (score, label, y1, x1, y2, x2) tuples of
    at most ``capacity`` entries (0: unbounded), then sorted by descending score.

    Vectorised: a frame keeps its ``capacity`` best rows, by descending score. That is the
    heap's result unless the last kept score ties with the first dropped one, and its order
    differs from the heap's only among rows of equal score, which matters only for rows of one
    class with different boxes (matching and ranking are per class; identical rows are
    interchangeable). Frames with either kind of tie go through :func:`_heap_read_exact`.

    Returns:
        keys, boxes (x1, y1, x2, y2), labels, scores in the reader's output order (frames by
        first appearance).
    """
    n = len(keys)
    if n == 0:
        return keys, boxes, labels, scores
    rank = _first_appearance_rank(keys)
    num_frames = int(rank.max()) + 1
    order = np.lexsort((-scores, rank))  # frame by frame, descending score
    r = rank[order]
    bad = np.zeros(num_frames, dtype=bool)
    if capacity >= 1:
        pos = np.arange(n) - np.searchsorted(r, np.arange(num_frames))[r]
        at_cap = np.flatnonzero(pos == capacity)
        bad[r[at_cap[scores[order[at_cap]] == scores[order[at_cap - 1]]]]] = True
        order, r = order[pos < capacity], r[pos < capacity]
    s = scores[order]
    tie = np.flatnonzero((r[1:] == r[:-1]) & (s[1:] == s[:-1]))
    if len(tie):
        # Rows in runs of one frame and score; a run with two rows of one class and different
        # boxes makes the frame's heap order matter.
        at = np.union1d(tie, tie + 1)
        run = np.cumsum(np.concatenate([[True], ~np.isin(at[1:] - 1, tie)]))
        rows = order[at]
        o = np.lexsort((labels[rows], run))
        rows, run = rows[o], run[o]
        clash = (run[1:] == run[:-1]) & (labels[rows[1:]] == labels[rows[:-1]])
        clash &= (boxes[rows[1:]] != boxes[rows[:-1]]).any(axis=1)
        bad[rank[rows[1:][clash]]] = True
    if not bad.any():
        return keys[order], boxes[order], labels[order], scores[order]

    good = ~bad[r]
    order, r = order[good], r[good]
    exact = np.flatnonzero(bad[rank])
    e_keys, e_boxes, e_labels, e_scores = _heap_read_exact(
        keys[exact], boxes[exact], labels[exact], scores[exact], capacity
    )
    rank_of_key = dict(zip(keys[exact].tolist(), rank[exact].tolist()))
    e_rank = np.array([rank_of_key[k] for k in e_keys.tolist()], dtype=np.int64)
    merge = np.argsort(np.concatenate([r, e_rank]), kind="stable")
    return tuple(
        np.concatenate([a[order], b])[merge]
        for a, b in ((keys, e_keys), (boxes, e_boxes), (labels, e_labels), (scores, e_scores))
    )


def _heap_read_exact(keys, boxes, labels, scores, capacity):
    """:func:`_heap_read` by the official reader's own steps (a Python heap per frame)."""
    entries: Dict[int, list] = {}
    y1, x1, y2, x2 = boxes[:, 1].tolist(), boxes[:, 0].tolist(), boxes[:, 3].tolist(), boxes[:, 2].tolist()
    for k, lab, s, a, b, c, d in zip(keys.tolist(), labels.tolist(), scores.tolist(), y1, x1, y2, x2):
        heap = entries.get(k)
        if heap is None:
            heap = entries[k] = []
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, (s, lab, a, b, c, d))
        elif s > heap[0][0]:
            heapq.heapreplace(heap, (s, lab, a, b, c, d))
    out_keys, out = [], []
    for k, heap in entries.items():
        rows = sorted(heap, key=lambda t: -t[0])
        out.extend(rows)
        out_keys.extend([k] * len(rows))
    arr = np.array(out, dtype=np.float64).reshape(-1, 6)
    return (
        np.array(out_keys, dtype=np.int64),
        arr[:, [3, 2, 5, 4]].copy(),
        arr[:, 1].astype(np.int64),
        arr[:, 0].copy(),
    )


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
    cls_arr = np.array(class_ids, dtype=np.int64)
    gkey, dkey, ekey, listed, vocab, tmax = _frame_keys(groundtruth, detections, excluded)

    classes = _id_table(class_ids)
    gsel = _in_table(groundtruth.labels, classes) & ~_isin(gkey, ekey)
    if keyframes is not None:
        kf = np.array([vocab[v] * tmax + int(t) for v, t in keyframes if v in vocab and int(t) < tmax], dtype=np.int64)
        gsel &= _isin(gkey, kf)
    dwhite = _in_table(detections.labels, classes)
    if dwhite.all():
        dwhite = slice(None)  # no copies

    if protocol == "activitynet":
        g_key, g_boxes, g_labels, _ = _heap_read(
            gkey[gsel], groundtruth.boxes[gsel], groundtruth.labels[gsel], groundtruth.scores[gsel], 0
        )
        d_key, d_boxes, d_labels, d_scores = _heap_read(
            dkey[dwhite], detections.boxes[dwhite], detections.labels[dwhite],
            detections.scores[dwhite], _ACTIVITYNET_CAPACITY,
        )
        d_rank = np.arange(len(d_key), dtype=np.int64)  # already frames by appearance, in order
    else:
        g_key, g_boxes, g_labels = gkey[gsel], groundtruth.boxes[gsel], groundtruth.labels[gsel]
        d_key, d_boxes = dkey[dwhite], detections.boxes[dwhite]
        d_labels, d_scores = detections.labels[dwhite], detections.scores[dwhite]
        frame_rank = _first_appearance_rank(d_key)
        if (frame_rank[1:] >= frame_rank[:-1]).all():  # each frame's rows together (the usual case)
            d_rank = np.arange(len(d_key), dtype=np.int64)
        else:
            order = np.lexsort((np.arange(len(d_key)), frame_rank))
            d_rank = np.empty(len(d_key), dtype=np.int64)
            d_rank[order] = np.arange(len(d_key))

    keep = ~_isin(d_key, ekey)
    if protocol == "activitynet":  # detections on frames the ground truth does not list are ignored
        keep &= _isin(d_key, listed)
    keep &= (d_boxes[:, 1] < d_boxes[:, 3]) & (d_boxes[:, 0] < d_boxes[:, 2])
    if not keep.all():
        d_key, d_boxes, d_labels, d_scores, d_rank = (
            d_key[keep], d_boxes[keep], d_labels[keep], d_scores[keep], d_rank[keep]
        )

    ncls = int(cls_arr[-1]) + 1
    g_group = g_key * ncls + g_labels
    gorder = np.argsort(g_group, kind="stable")  # stable: keeps the per-frame ground-truth order
    tp = match_detections(g_group[gorder], g_boxes[gorder], d_key * ncls + d_labels, d_boxes, d_rank, iou_threshold)

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


# ----------------------------------------------------------------------------- files and CLI


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


def format_table(result: FrameMapResult, names: Dict[int, str]) -> str:
    lines = [f"{'id':>4}  {'AP (%)':>8}  {'#gt':>7}  {'#det':>9}  name"]
    for c, ap in result.per_class_ap.items():
        shown = "     n/a" if math.isnan(ap) else f"{100 * ap:8.2f}"
        lines.append(f"{c:>4}  {shown}  {result.num_groundtruth[c]:>7}  {result.num_detections[c]:>9}  {names.get(c, '')}")
    lines.append(f"frame-mAP@0.5IOU: {100 * result.mean_ap:.4f}")
    lines.extend(f"warning: {w}" for w in result.warnings)
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evad_d2.evaluation.ava",
        description="AVA frame-mAP@0.5 by the official protocol (per-class AP and mAP, in percent).",
        epilog="How the protocols differ (--protocol):\n\n" + PROTOCOL_TABLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-g", "--groundtruth", required=True, help="ground-truth CSV (e.g. ava_val_v2.2.csv)")
    parser.add_argument("-d", "--detections", required=True, help="detection CSV (video,ts,x1,y1,x2,y2,action,score)")
    parser.add_argument(
        "-l", "--labelmap", required=True,
        help="label map pbtxt of the evaluated classes (AVA v2.2: ava_action_list_v2.2_for_activitynet_2019.pbtxt)",
    )
    parser.add_argument("-e", "--exclusions", default=None, help="excluded timestamps CSV")
    parser.add_argument("--json", default=None, help="write {'mAP': x, 'per_class': {...}, 'warnings': [...]} here (percent)")
    parser.add_argument("--plot", default=None, help="write a per-class AP bar chart (PNG) here")
    parser.add_argument(
        "--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
        help="pyslowfast: PySlowFast's ava_eval_helper.py (EVAD's numbers); activitynet: ActivityNet's "
        "get_ava_performance.py (see the table below)",
    )
    parser.add_argument("--strict-classes", action="store_true", help="a detection class id outside the label map is an error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result, names = evaluate_ava_files(
            args.groundtruth, args.detections, args.labelmap, args.exclusions,
            protocol=args.protocol, strict_classes=args.strict_classes,
        )
    except AvaFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result, names))
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(result_to_json(result), f, indent=2)
    if args.plot:
        from .plots import plot_per_class_ap

        plot_per_class_ap(
            {names.get(c, str(c)): 100 * ap for c, ap in result.per_class_ap.items() if not math.isnan(ap)},
            args.plot, title=f"AVA frame-mAP@0.5 = {100 * result.mean_ap:.2f}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
