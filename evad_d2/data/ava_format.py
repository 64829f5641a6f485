"""Readers for AVA's standard annotation files, with errors that name the file and line.

Shared by the datasets (training/validation annotations) and the evaluation (ground truth,
detections, exclusions, label map). Formats, as released with AVA v2.1/v2.2:

* ``ava_{train,val}_v2.x.csv``: ``video_id, timestamp, x1, y1, x2, y2, action_id, person_id``
  with box corners normalised to [0, 1]; one row per (person, action).
* detection CSVs: the same columns with a score in place of ``person_id``.
* ``ava_action_list_v2.x.pbtxt``: ``item { name: "..." id: N }`` blocks (``label_id`` is accepted
  for ``id``, as the official evaluation does).
* ``ava_*_excluded_timestamps_v2.x.csv``: ``video_id, timestamp`` rows.
"""
import csv
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

from iopath.common.file_io import g_pathmgr

__all__ = [
    "AvaFormatError",
    "AvaRow",
    "read_label_map",
    "read_exclusions",
    "iter_ava_rows",
    "group_rows_by_keyframe",
    "parse_ava_row",
    "iter_ava_rows_or_errors",
    "FrameListRow",
    "iter_frame_list",
]


class AvaFormatError(ValueError):
    """A malformed AVA file; the message names the file and, where known, the line."""

    def __init__(self, path: str, line: Optional[int], message: str):
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class AvaRow:
    """One CSV row. ``extra`` is the person id (annotations) or the score (detections)."""

    video_id: str
    timestamp: int
    box: Tuple[float, float, float, float]
    action_id: int
    extra: Optional[float]
    line: int


_ITEM_RE = re.compile(r"item\s*\{([^}]*)\}", re.S)
_NAME_RE = re.compile(r'name:\s*"([^"]*)"')
_ID_RE = re.compile(r"\b(?:label_)?id:\s*(-?\d+)")


def read_label_map(path: str) -> Dict[int, str]:
    """Parse a pbtxt label map into ``{class_id: name}`` in file order.

    Raises:
        AvaFormatError: an item without a name or an id, a duplicate id, or no items at all.
    """
    with g_pathmgr.open(path, "r") as f:
        text = f.read()
    labels: Dict[int, str] = {}
    for match in _ITEM_RE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        body = match.group(1)
        name, cid = _NAME_RE.search(body), _ID_RE.search(body)
        if name is None or cid is None:
            raise AvaFormatError(path, line, "label map item needs both 'name' and 'id'")
        class_id = int(cid.group(1))
        if class_id in labels:
            raise AvaFormatError(path, line, f"duplicate class id {class_id}")
        labels[class_id] = name.group(1)
    if not labels:
        raise AvaFormatError(path, None, "no 'item { name: ... id: ... }' entries found")
    return labels


def read_exclusions(path: str) -> Set[Tuple[str, int]]:
    """Read an excluded-timestamps CSV into a set of ``(video_id, timestamp)``."""
    excluded = set()
    with g_pathmgr.open(path, "r") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                raise AvaFormatError(path, line, f"expected 2 columns (video_id, timestamp), got {len(row)}")
            excluded.add((row[0], _parse_timestamp(path, line, row[1])))
    return excluded


def iter_ava_rows(
    path: str,
    *,
    label_map: Optional[Dict[int, str]] = None,
    allow_missing_action: bool = False,
    box_tolerance: float = 1e-3,
) -> Iterator[AvaRow]:
    """Yield validated rows of an AVA annotation or detection CSV.

    Args:
        path: the CSV file.
        label_map: when given, an ``action_id`` outside it is an error.
        allow_missing_action: accept an empty action column (person-box proposal files); yields action_id -1.
        box_tolerance: coordinates may exceed [0, 1] by this much (rounding in released files);
            they are clipped into [0, 1]. Anything further out is an error.

    Raises:
        AvaFormatError: wrong column count, unparsable numbers, boxes outside the frame or with
            x2 <= x1 / y2 <= y1, unknown class ids. The message names the file and line.
    """
    for item in iter_ava_rows_or_errors(
        path, label_map=label_map, allow_missing_action=allow_missing_action, box_tolerance=box_tolerance
    ):
        if isinstance(item, AvaFormatError):
            raise item
        yield item


def _parse_timestamp(path: str, line: int, value: str) -> int:
    try:
        ts = float(value)
    except ValueError:
        raise AvaFormatError(path, line, f"timestamp {value!r} is not a number") from None
    if ts != int(ts) or ts < 0:
        raise AvaFormatError(path, line, f"timestamp {value!r} must be a non-negative whole second")
    return int(ts)


def group_rows_by_keyframe(rows: List[AvaRow]) -> Dict[Tuple[str, int], List[AvaRow]]:
    """Group rows by ``(video_id, timestamp)``, keeping file order inside each group."""
    groups: Dict[Tuple[str, int], List[AvaRow]] = {}
    for r in rows:
        groups.setdefault((r.video_id, r.timestamp), []).append(r)
    return groups


def parse_ava_row(
    path: str,
    line: int,
    row: List[str],
    *,
    label_map: Optional[Dict[int, str]] = None,
    allow_missing_action: bool = False,
    box_tolerance: float = 1e-3,
) -> AvaRow:
    """Validate one already-split CSV row with the rules of ``iter_ava_rows``.

    For callers that must go on after a bad row (the data validator reports every bad line).

    Raises:
        AvaFormatError: naming ``path`` and ``line``.
    """
    if len(row) not in (7, 8):
        raise AvaFormatError(
            path, line, f"expected 7 or 8 columns (video_id, timestamp, x1, y1, x2, y2, action_id[, person_id|score]), got {len(row)}"
        )
    ts = _parse_timestamp(path, line, row[1])
    try:
        coords = [float(v) for v in row[2:6]]
    except ValueError:
        raise AvaFormatError(path, line, f"box coordinates are not numbers: {row[2:6]}") from None
    for v in coords:
        if not (-box_tolerance <= v <= 1.0 + box_tolerance):
            raise AvaFormatError(path, line, f"box {coords} is outside the frame (coordinates must be normalised to [0, 1])")
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in coords)
    if x2 <= x1 or y2 <= y1:
        raise AvaFormatError(path, line, f"empty box {coords} (need x1 < x2 and y1 < y2)")
    if row[6].strip() == "" and allow_missing_action:
        action = -1
    else:
        try:
            action = int(row[6])
        except ValueError:
            raise AvaFormatError(path, line, f"action id {row[6]!r} is not an integer") from None
        if label_map is not None and action not in label_map:
            raise AvaFormatError(path, line, f"unknown action id {action} (not in the label map)")
    extra = None
    if len(row) == 8 and row[7].strip() != "":
        try:
            extra = float(row[7])
        except ValueError:
            raise AvaFormatError(path, line, f"last column {row[7]!r} is not a number") from None
    return AvaRow(row[0], ts, (x1, y1, x2, y2), action, extra, line)


def iter_ava_rows_or_errors(
    path: str,
    *,
    label_map: Optional[Dict[int, str]] = None,
    allow_missing_action: bool = False,
    box_tolerance: float = 1e-3,
) -> Iterator[Union[AvaRow, AvaFormatError]]:
    """Like ``iter_ava_rows``, but a bad row yields its ``AvaFormatError`` and reading goes on."""
    with g_pathmgr.open(path, "r") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            try:
                yield parse_ava_row(
                    path, line, row, label_map=label_map,
                    allow_missing_action=allow_missing_action, box_tolerance=box_tolerance,
                )
            except AvaFormatError as e:
                yield e


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
    with g_pathmgr.open(path, "r") as f:
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
