"""AVA's CSV files: one row spec (:class:`AvaRow`), one validator with a named policy, one writer.

Formats, as released with AVA v2.1/v2.2:

* ``ava_{train,val}_v2.x.csv``: ``video_id, timestamp, x1, y1, x2, y2, action_id, person_id``
  with box corners normalised to [0, 1]; one row per (person, action).
* detection CSVs: the same columns with a score in place of ``person_id``.
* ``ava_*_excluded_timestamps_v2.x.csv``: ``video_id, timestamp`` rows.
* label maps (pbtxt): :mod:`evad_d2.data.formats.label_map`.

Every reader accepts a leading UTF-8 byte-order mark (as spreadsheet tools write). Readers
differ only where :data:`ROW_POLICIES` says, each difference with its reason:

=============  ===========  ========  =========  ===================  =====  ===============
policy         8th column   columns   boxes      rejected boxes       2-col  empty action
=============  ===========  ========  =========  ===================  =====  ===============
annotations    person id    7 or 8    clipped    x2 <= x1 (clipped)   no     no
proposals      score        7 or 8    clipped    x2 <= x1 (clipped)   no     yes (id -1)
groundtruth    person id    7 or 8    as read    x2 < x1              frame  no
detections     score        8         as read    none                 frame  no
=============  ===========  ========  =========  ===================  =====  ===============

The evaluation's fast reader (:func:`evad_d2.evaluation.ava.read_ava_csv`) implements the
``groundtruth`` and ``detections`` policies on whole columns.
"""
import csv
import math
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Set, TextIO, Tuple, Union

import numpy as np
from iopath.common.file_io import g_pathmgr

from .errors import FileFormatError

__all__ = [
    "AvaFormatError",
    "AvaRow",
    "RowPolicy",
    "ROW_POLICIES",
    "BOX_SLACK",
    "AvaSource",
    "parse_ava_row",
    "parse_timestamp",
    "iter_ava_rows",
    "iter_ava_rows_or_errors",
    "group_rows_by_keyframe",
    "read_exclusions",
    "BOX_DECIMALS",
    "SCORE_DECIMALS",
    "format_timestamp",
    "decimal_text",
    "round_decimals",
    "DetectionCsvWriter",
    "FrameListRow",
    "iter_frame_list",
    "TEXT_ENCODING",
    "is_blank",
    "parse_number",
    "check_timestamp",
]

# A file written by a spreadsheet tool starts with a UTF-8 byte-order mark; "utf-8-sig" drops it
# (plain "utf-8" would keep it as part of the first field, e.g. "\ufefftrain_000_0000").
TEXT_ENCODING = "utf-8-sig"
# Box coordinates may exceed [0, 1] by this much (rounding in released and written files).
BOX_SLACK = 1e-3


class AvaFormatError(FileFormatError):
    """A malformed AVA file; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class AvaRow:
    """One CSV row: ``person_id`` (annotations, ground truth) or ``score`` (proposals,
    detections) from the 8th column, None where the row has none. The person id is kept as read
    (AVA's are integers; the official evaluation reads the column as a score)."""

    video_id: str
    timestamp: int
    box: Tuple[float, float, float, float]
    action_id: int
    person_id: Optional[float]
    score: Optional[float]
    line: int


# ----------------------------------------------------------------------------- the row rules


@dataclass(frozen=True)
class RowPolicy:
    """What a reader accepts in a row (one line of :data:`ROW_POLICIES`).

    Attributes:
        name: the key in :data:`ROW_POLICIES`.
        with_scores: the 8th column is a score (else the person id).
        score_required: rows need the 8th column (8 columns; else 7 or 8).
        clip_boxes: coordinates (within :data:`BOX_SLACK` of [0, 1]) are clipped into [0, 1].
        box_rule: ``"positive"``: x1 < x2 and y1 < y2 (after clipping); ``"ordered"``: x1 <= x2
            and y1 <= y2; ``"any"``: no check.
        frame_rows: two-column ``video_id, timestamp`` rows list a frame (else they are errors).
        missing_action: an empty action column reads as -1.
        finite_last: the 8th column must be finite.
        reason: why the policy is what it is.
    """

    name: str
    with_scores: bool
    score_required: bool
    clip_boxes: bool
    box_rule: str
    frame_rows: bool
    missing_action: bool
    finite_last: bool
    reason: str


ROW_POLICIES: Dict[str, RowPolicy] = {p.name: p for p in (
    RowPolicy(
        "annotations", with_scores=False, score_required=False, clip_boxes=True, box_rule="positive",
        frame_rows=False, missing_action=False, finite_last=True,
        reason="training/validation boxes are crops and regression targets: rounding outside [0, 1] is "
        "clipped and a box without area is an error",
    ),
    RowPolicy(
        "proposals", with_scores=True, score_required=False, clip_boxes=True, box_rule="positive",
        frame_rows=False, missing_action=True, finite_last=False,
        reason="person-detector boxes for training/validation: targets as above; the files carry no actions",
    ),
    RowPolicy(
        "groundtruth", with_scores=False, score_required=False, clip_boxes=False, box_rule="ordered",
        frame_rows=True, missing_action=False, finite_last=True,
        reason="the official evaluation scores boxes as written (no clipping) and reads a frame-only row",
    ),
    RowPolicy(
        "detections", with_scores=True, score_required=True, clip_boxes=False, box_rule="any",
        frame_rows=True, missing_action=False, finite_last=True,
        reason="the official evaluation drops detections with x2 <= x1 when scoring: a reader keeps them",
    ),
)}


@dataclass(frozen=True)
class AvaSource:
    """The file being read, as errors name it, and the rules it is read by.

    Attributes:
        path: the file.
        policy: a :class:`RowPolicy` (or its name in :data:`ROW_POLICIES`).
        known_ids: when given, an action id outside it is an error.
    """

    path: str
    policy: RowPolicy
    known_ids: Optional[frozenset] = None

    def __post_init__(self):
        if isinstance(self.policy, str):
            object.__setattr__(self, "policy", ROW_POLICIES[self.policy])
        if self.known_ids is not None:
            object.__setattr__(self, "known_ids", frozenset(int(i) for i in self.known_ids))

    @property
    def last_column(self) -> str:
        """The 8th column, as errors name it."""
        return "score" if self.policy.with_scores else "person id"

    def error(self, line: Optional[int], message: str) -> AvaFormatError:
        """An :class:`AvaFormatError` naming this file and ``line``."""
        return AvaFormatError(self.path, None if line is None else int(line), message)

    def columns_error(self, line: int, got: int) -> AvaFormatError:
        """The error for a row of ``got`` columns, naming the columns the policy expects."""
        last = "score" if self.policy.with_scores else "person_id"
        if self.policy.score_required:
            return self.error(line, f"expected 8 columns (video_id, timestamp, x1, y1, x2, y2, action_id, {last}), got {got}")
        return self.error(line, f"expected 7 or 8 columns (video_id, timestamp, x1, y1, x2, y2, action_id[, {last}]), got {got}")


def is_blank(fields: List[str]) -> bool:
    """A blank line (skipped by every reader)."""
    return not fields or (len(fields) == 1 and not fields[0].strip())


def parse_number(source: AvaSource, line: int, text: str, what: str) -> float:
    """``float(text)``, or an error naming ``what`` (``"timestamp"``, ``"box coordinate"``...)."""
    try:
        return float(text)
    except ValueError:
        raise source.error(line, f"{what} {text!r} is not a number") from None


def check_timestamp(source: AvaSource, line: int, ts: float) -> int:
    """``ts`` as an int, if it is a whole non-negative number of seconds."""
    if not (math.isfinite(ts) and ts == math.floor(ts) and ts >= 0):
        raise source.error(line, f"timestamp {ts!r} must be a non-negative whole second")
    return int(ts)


def parse_timestamp(source: AvaSource, line: int, text: str) -> int:
    """A timestamp field: whole non-negative seconds."""
    return check_timestamp(source, line, parse_number(source, line, text, "timestamp"))


def parse_ava_row(source: AvaSource, line: int, fields: List[str]) -> AvaRow:
    """Validate one split CSV row (not blank, not a two-column frame row) by ``source.policy``.

    The checks, in this order: the column count; numbers (``float()``); a finite 8th column
    (where the policy asks); a whole non-negative timestamp; an integer action id (or an
    empty one, where allowed); box coordinates within [0, 1] up to :data:`BOX_SLACK`; the
    policy's box rule; a known action id.

    Raises:
        AvaFormatError: naming the file and line.
    """
    policy = source.policy
    n = len(fields)
    if not (n == 8 or (n == 7 and not policy.score_required)):
        raise source.columns_error(line, n)
    ts = parse_number(source, line, fields[1], "timestamp")
    box = [parse_number(source, line, v, "box coordinate") for v in fields[2:6]]
    missing_action = policy.missing_action and fields[6].strip() == ""
    action = -1.0 if missing_action else parse_number(source, line, fields[6], "action id")
    has_last = n == 8 and (policy.score_required or fields[7].strip() != "")
    last = parse_number(source, line, fields[7], source.last_column) if has_last else None
    if last is not None and policy.finite_last and not math.isfinite(last):
        raise source.error(line, f"{source.last_column} {last} is not a finite number")
    ts = check_timestamp(source, line, ts)
    if not (math.isfinite(action) and action == math.floor(action)):
        raise source.error(line, f"action id {action!r} is not an integer")
    box = _check_box(source, line, box)
    action = int(action)
    if source.known_ids is not None and not missing_action and (action < 0 or action not in source.known_ids):
        raise source.error(line, f"unknown action id {action} (not in the label map)")
    if policy.with_scores:
        return AvaRow(fields[0], ts, box, action, None, last, line)
    return AvaRow(fields[0], ts, box, action, last, None, line)


def _check_box(source: AvaSource, line: int, box: List[float]) -> Tuple[float, float, float, float]:
    """The box by the policy: within [0, 1] up to :data:`BOX_SLACK`, clipped or not, its
    corners checked by ``policy.box_rule``."""
    if not all(-BOX_SLACK <= v <= 1.0 + BOX_SLACK for v in box):
        raise source.error(
            line,
            f"box {box} is outside the frame (coordinates must be normalised to [0, 1]; "
            "pixel boxes must be divided by the frame width/height)",
        )
    policy = source.policy
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in box) if policy.clip_boxes else box
    if policy.box_rule == "positive" and (x2 <= x1 or y2 <= y1):
        raise source.error(line, f"empty box {box} (need x1 < x2 and y1 < y2)")
    if policy.box_rule == "ordered" and (x2 < x1 or y2 < y1):
        raise source.error(line, f"box {box} has x2 < x1 or y2 < y1")
    return x1, y1, x2, y2


def iter_ava_rows(
    path: str, *, policy: str = "annotations", label_map: Optional[Iterable[int]] = None
) -> Iterator[AvaRow]:
    """Yield validated rows of an AVA CSV read by a policy of :data:`ROW_POLICIES`.

    Args:
        path: the CSV file.
        policy: ``"annotations"`` (training/validation ground truth), ``"proposals"`` (person
            boxes with a score and no action), ``"groundtruth"`` or ``"detections"``.
        label_map: when given (its keys: class ids), an action id outside it is an error.

    Raises:
        AvaFormatError: at the first bad row, naming the file and line.
    """
    for item in iter_ava_rows_or_errors(path, policy=policy, label_map=label_map):
        if isinstance(item, AvaFormatError):
            raise item
        yield item


def iter_ava_rows_or_errors(
    path: str, *, policy: str = "annotations", label_map: Optional[Iterable[int]] = None
) -> Iterator[Union[AvaRow, AvaFormatError]]:
    """Like :func:`iter_ava_rows`, but a bad row yields its ``AvaFormatError`` and reading goes on.

    Two-column frame rows (where the policy reads them) carry no row and are skipped here.
    """
    source = AvaSource(path, ROW_POLICIES[policy], None if label_map is None else frozenset(label_map))
    with g_pathmgr.open(path, "r", encoding=TEXT_ENCODING, newline="") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if is_blank(fields) or (len(fields) == 2 and source.policy.frame_rows):
                continue
            try:
                yield parse_ava_row(source, line, fields)
            except AvaFormatError as e:
                yield e


def group_rows_by_keyframe(rows: List[AvaRow]) -> Dict[Tuple[str, int], List[AvaRow]]:
    """Group rows by ``(video_id, timestamp)``, keeping file order inside each group."""
    groups: Dict[Tuple[str, int], List[AvaRow]] = {}
    for r in rows:
        groups.setdefault((r.video_id, r.timestamp), []).append(r)
    return groups


def read_exclusions(path: str) -> Set[Tuple[str, int]]:
    """Read an excluded-timestamps CSV into a set of ``(video_id, timestamp)``."""
    source = AvaSource(path, ROW_POLICIES["groundtruth"])
    excluded = set()
    with g_pathmgr.open(path, "r", encoding=TEXT_ENCODING, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if is_blank(row):
                continue
            if len(row) != 2:
                raise source.error(line, f"expected 2 columns (video_id, timestamp), got {len(row)}")
            excluded.add((row[0], parse_timestamp(source, line, row[1])))
    return excluded


# ----------------------------------------------------------------------------- writing

# Decimals of written detection rows. With 5 box and 6 score decimals, scoring the file equals
# scoring the unrounded outputs within 3e-4 frame-mAP (see evaluation.ava.writer.detection_rows).
BOX_DECIMALS = 5
SCORE_DECIMALS = 6


def format_timestamp(ts: int) -> str:
    """AVA's 4-digit timestamp text (``0902``), as the released files write it."""
    return f"{int(ts):04d}"


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


def decimal_text(q: int, digits: int) -> str:
    """``"%.{digits}f"`` text of ``q / 10**digits`` (``q`` an integer)."""
    whole, frac = divmod(abs(q), 10 ** digits)
    return f"{'-' if q < 0 else ''}{whole}.{frac:0{digits}d}"


class DetectionCsvWriter:
    """Streams AVA detection rows, keyframe by keyframe: ``video_id, timestamp (%04d), x1, y1,
    x2, y2 (BOX_DECIMALS), action_id, score (SCORE_DECIMALS)``, box by box, each box's classes
    in ``class_ids`` order: the text :func:`evad_d2.evaluation.ava.detection_rows` writes with
    ``row_order="box"``.

    Args:
        f: a text file open for writing.
        class_ids: (K,) class id of each score column.
    """

    def __init__(self, f: TextIO, class_ids: Iterable[int], *, box_decimals: int = BOX_DECIMALS,
                 score_decimals: int = SCORE_DECIMALS):
        self.f = f
        self.class_ids = [int(c) for c in class_ids]
        self.box_decimals, self.score_decimals = box_decimals, score_decimals
        self.num_rows = 0

    def write(self, video_id: str, timestamp: int, boxes: np.ndarray, scores: np.ndarray) -> int:
        """Rows of one keyframe: boxes (N, 4) normalised x1, y1, x2, y2 and scores (N, K).

        Returns:
            The number of rows written.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(len(boxes), len(self.class_ids))
        prefix = f"{video_id},{format_timestamp(timestamp)},"
        box_q, score_q = round_decimals(boxes, self.box_decimals), round_decimals(scores, self.score_decimals)
        lines = []
        for box, row in zip(box_q.tolist(), score_q.tolist()):
            coords = ",".join(decimal_text(q, self.box_decimals) for q in box)
            lines.extend(
                f"{prefix}{coords},{c},{decimal_text(q, self.score_decimals)}\n" for c, q in zip(self.class_ids, row)
            )
        self.f.write("".join(lines))
        self.num_rows += len(lines)
        return len(lines)


# ----------------------------------------------------------------------------- frame lists


@dataclass(frozen=True)
class FrameListRow:
    """One row of a PySlowFast frame list (``original_vido_id video_idx frame_id path labels``)."""

    video_id: str
    video_idx: int
    frame_id: int
    path: str
    line: int


def iter_frame_list(path: str) -> Iterator[Union[FrameListRow, AvaFormatError]]:
    """Rows of a space-separated frame list after its header; a bad row yields its error."""
    with g_pathmgr.open(path, "r", encoding=TEXT_ENCODING) as f:
        for line, text in enumerate(f, start=1):
            parts = text.split()
            if not parts or (line == 1 and parts[0] == "original_vido_id"):
                continue
            if len(parts) not in (4, 5):
                yield AvaFormatError(path, line, f"expected 5 space-separated columns (original_vido_id video_idx frame_id path labels), got {len(parts)}")
                continue
            try:
                video_idx, frame_id = int(parts[1]), int(parts[2])
            except ValueError:
                yield AvaFormatError(path, line, f"video_idx and frame_id must be integers, got {parts[1]!r}, {parts[2]!r}")
                continue
            if frame_id < 0:
                yield AvaFormatError(path, line, f"negative frame_id {frame_id}")
                continue
            yield FrameListRow(parts[0], video_idx, frame_id, parts[3], line)
