"""Readers for AVA's standard annotation files, with errors that name the file and line.

Shared by the datasets (training/validation annotations) and the evaluation (ground truth,
detections, exclusions, label map). Formats, as released with AVA v2.1/v2.2:

* ``ava_{train,val}_v2.x.csv``: ``video_id, timestamp, x1, y1, x2, y2, action_id, person_id``
  with box corners normalised to [0, 1]; one row per (person, action).
* detection CSVs: the same columns with a score in place of ``person_id``.
* label maps (pbtxt), in both released forms: AVA's action lists ``ava_action_list_v2.x.pbtxt``
  (80 classes) as ``label { name: "..." label_id: N label_type: ... }`` blocks, the ActivityNet
  lists ``..._for_activitynet_2018/2019.pbtxt`` (60 classes) as ``item { name: "..." id: N }``.
* ``ava_*_excluded_timestamps_v2.x.csv``: ``video_id, timestamp`` rows.

Every reader accepts a leading UTF-8 byte-order mark (as spreadsheet tools write).
"""
import csv
import re
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

from iopath.common.file_io import g_pathmgr

__all__ = [
    "AvaFormatError",
    "AvaRow",
    "LabelMapEntry",
    "read_label_map",
    "read_label_map_entries",
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


# A file written by a spreadsheet tool starts with a UTF-8 byte-order mark; "utf-8-sig" drops it
# (plain "utf-8" would keep it as part of the first field, e.g. "\ufefftrain_000_0000").
_ENCODING = "utf-8-sig"


@dataclass(frozen=True)
class LabelMapEntry:
    """One class of a label map: ``name``, its ``display_name`` (or None), ``label_type`` (AVA's
    ``PERSON_MOVEMENT`` / ``OBJECT_MANIPULATION`` / ``PERSON_INTERACTION``, or None), the block's
    kind (``"label"`` or ``"item"``) and the line the block starts on."""

    class_id: int
    name: str
    display_name: Optional[str]
    label_type: Optional[str]
    block: str
    line: int


# Tokens of the protobuf text format used by label maps: comments, strings, words, numbers, braces, colons.
_TOKEN_RE = re.compile(
    r'(?P<comment>#[^\n]*)|(?P<string>"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\')|(?P<open>\{)|(?P<close>\})'
    r'|(?P<colon>:)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<number>[-+]?\d+)|(?P<space>\s+)|(?P<bad>.)'
)
_ESCAPE_RE = re.compile(r"\\(.)")
_BLOCKS = ("label", "item")
# Field -> kind of value. "id" (ActivityNet lists, TF label maps) and "label_id" (AVA's own lists) are the same field.
_FIELDS = {"name": "string", "display_name": "string", "id": "number", "label_id": "number", "label_type": "word"}


def _label_map_tokens(path: str, text: str) -> List[Tuple[str, str, int]]:
    tokens, line = [], 1
    for m in _TOKEN_RE.finditer(text):
        kind, value = m.lastgroup, m.group()
        if kind == "bad":
            hint = " (a string not closed on its line?)" if value in "\"'" else ""
            raise AvaFormatError(path, line, f"unexpected character {value!r}{hint}")
        if kind not in ("comment", "space"):
            tokens.append((kind, value, line))
        line += value.count("\n")
    return tokens


def read_label_map_entries(path: str) -> List[LabelMapEntry]:
    """Parse a pbtxt label map in either released form, in file order.

    * AVA's action lists (``ava_action_list_v2.1.pbtxt``, ``ava_action_list_v2.2.pbtxt``, 80
      classes): ``label { name: "..." label_id: N label_type: PERSON_MOVEMENT }``.
    * the ActivityNet evaluation lists (``..._for_activitynet_2018/2019.pbtxt``, 60 classes) and
      TF-style maps: ``item { name: "..." id: N [display_name: "..."] }``.

    ``#`` comments and any layout (one block per line or one field per line) are allowed.

    Raises:
        AvaFormatError: naming the file and line, for a block that is not closed, a field outside
            a block, an unknown block or field, a block with two ids (or two names), a block
            without a name or an id, an id that is not an integer, a duplicate id, or no blocks.
    """
    with g_pathmgr.open(path, "r", encoding=_ENCODING) as f:
        text = f.read()
    tokens = _label_map_tokens(path, text)
    entries: List[LabelMapEntry] = []
    first_line: Dict[int, int] = {}
    i = 0
    while i < len(tokens):
        kind, value, line = tokens[i]
        if kind != "word" or value not in _BLOCKS:
            if kind == "word" and value in _FIELDS:
                raise AvaFormatError(path, line, f"field '{value}' outside a 'label {{ ... }}' or 'item {{ ... }}' block")
            raise AvaFormatError(path, line, f"expected a 'label {{' or 'item {{' block, found {value!r}")
        block, block_line = value, line
        i += 1
        if i < len(tokens) and tokens[i][0] == "colon":  # "item: { ... }" is valid text format too
            i += 1
        if i >= len(tokens) or tokens[i][0] != "open":
            raise AvaFormatError(path, line, f"'{block}' must be followed by '{{'")
        i += 1
        fields: Dict[str, Tuple[str, int]] = {}
        while True:
            if i >= len(tokens):
                raise AvaFormatError(path, block_line, f"'{block} {{' opened here is not closed (end of file reached)")
            kind, value, line = tokens[i]
            if kind == "close":
                i += 1
                break
            if kind == "word" and value in _BLOCKS and i + 1 < len(tokens) and tokens[i + 1][0] in ("open", "colon"):
                raise AvaFormatError(
                    path, block_line, f"'{block} {{' opened here is not closed before the '{value} {{' of line {line}"
                )
            if kind != "word":
                raise AvaFormatError(path, line, f"expected a field name inside '{block} {{ ... }}', found {value!r}")
            if value not in _FIELDS:
                raise AvaFormatError(
                    path, line, f"unknown field '{value}' in '{block} {{ ... }}' (known: {', '.join(_FIELDS)})"
                )
            field = value
            if i + 2 >= len(tokens) or tokens[i + 1][0] != "colon":
                raise AvaFormatError(path, line, f"field '{field}' needs ': value'")
            vkind, raw, vline = tokens[i + 2]
            if vkind != _FIELDS[field]:
                what = {"string": "a quoted string", "number": "an integer", "word": "a bare word"}[_FIELDS[field]]
                raise AvaFormatError(path, vline, f"field '{field}' must be {what}, got {raw!r}")
            key = "id" if field in ("id", "label_id") else field
            if key in fields:
                raise AvaFormatError(
                    path, line, f"'{block}' block of line {block_line} has a second {'id' if key == 'id' else repr(field)} "
                    f"(first on line {fields[key][1]})"
                )
            fields[key] = (_ESCAPE_RE.sub(r"\1", raw[1:-1]) if vkind == "string" else raw, line)
            i += 3
        if "name" not in fields:
            raise AvaFormatError(path, block_line, f"'{block}' block has no 'name'")
        if "id" not in fields:
            id_field = "label_id" if block == "label" else "id"
            raise AvaFormatError(path, block_line, f"'{block}' block {fields['name'][0]!r} has no '{id_field}'")
        class_id = int(fields["id"][0])
        if class_id in first_line:
            raise AvaFormatError(path, fields["id"][1], f"duplicate class id {class_id} (also on line {first_line[class_id]})")
        first_line[class_id] = fields["id"][1]
        entries.append(LabelMapEntry(
            class_id, fields["name"][0], fields.get("display_name", (None,))[0], fields.get("label_type", (None,))[0],
            block, block_line,
        ))
    if not entries:
        raise AvaFormatError(path, None, "no 'label { name: ... label_id: ... }' or 'item { name: ... id: ... }' blocks found")
    return entries


def read_label_map(path: str) -> Dict[int, str]:
    """``{class_id: name}`` of a label map in file order (either released form; see
    ``read_label_map_entries``). A block's ``display_name``, where present, is its name.

    Raises:
        AvaFormatError: a malformed label map, naming the file and line.
    """
    return {e.class_id: e.display_name or e.name for e in read_label_map_entries(path)}


def read_exclusions(path: str) -> Set[Tuple[str, int]]:
    """Read an excluded-timestamps CSV into a set of ``(video_id, timestamp)``."""
    excluded = set()
    with g_pathmgr.open(path, "r", encoding=_ENCODING, newline="") as f:
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
    with g_pathmgr.open(path, "r", encoding=_ENCODING, newline="") as f:
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
    with g_pathmgr.open(path, "r", encoding=_ENCODING) as f:
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
