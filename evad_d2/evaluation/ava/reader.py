"""Reader of AVA ground-truth and detection CSVs (:func:`read_ava_csv`).

Two paths give the same rows:

* fast: pyarrow's CSV reader over the whole file, then every column validated at once. It is
  taken when every line has the same 7 or 8 columns (the released files and our own);
* exact: the csv module and ``float()``, row by row, which raises the first error naming the
  file and line. It is taken on any pyarrow error (blank or two-column lines, mixed column
  counts, a field pyarrow cannot read), on any row failing validation (so that the error is
  found and named), and for files with quoted fields.

pyarrow's number parsing is correctly rounded, as ``float()`` is; where the two read a field
differently (pyarrow reads ``nan(1)``, ``float()`` reads Unicode digits) the value is
non-finite or pyarrow fails, and the exact path decides.
"""
import codecs
import csv
import io
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from iopath.common.file_io import g_pathmgr

from evad_d2.data.formats.ava import BOX_SLACK, ROW_POLICIES, AvaSource, is_blank, parse_ava_row, parse_timestamp

from .boxes import AvaBoxes, distinct_frames, id_table, in_table

__all__ = ["read_ava_csv"]

# pyarrow reads the text in blocks of this many bytes (its unit of parallel work).
_BLOCK_BYTES = 1 << 22


def read_ava_csv(
    path: str,
    *,
    with_scores: bool,
    class_whitelist: Optional[Iterable[int]] = None,
    known_class_ids: Optional[Iterable[int]] = None,
) -> AvaBoxes:
    """Read an AVA ground-truth (``with_scores=False``) or detection CSV.

    Rows are ``video_id, timestamp, x1, y1, x2, y2, action_id[, person_id | score]`` with boxes
    normalised to [0, 1]. Ground truth may have 7 or 8 columns (the 8th, the person id, is not
    used); detections need the score. Two-column rows (``video_id, timestamp``: a frame without
    actions) are accepted and carry no row, only the frame (see ``AvaBoxes.frames``). Blank
    lines are skipped, and so is a UTF-8 byte-order mark (what spreadsheet tools write).

    Numbers are bit-identical to Python's ``float`` of each field. AVA v2.2 validation size
    (10M detection rows, 500 MiB) reads in a few seconds (pyarrow, see the module docstring).

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
    source = AvaSource(path, ROW_POLICIES["detections" if with_scores else "groundtruth"], known_class_ids)
    whitelist = id_table(class_whitelist)
    if b'"' in data:
        # Quoted fields never occur in AVA files; the csv module reads them.
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))  # a byte-order mark is not data
        return _read_exact(((reader.line_num, row) for row in reader), source, whitelist)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if b"\r" in data:
        data = data.replace(b"\r", b"")
    # One line end at the end (blank lines there would send pyarrow's read to the exact path).
    data = data.rstrip(b"\n") + b"\n"
    rows = _read_fast(data, source, whitelist)
    if rows is None:
        lines = data.decode("utf-8").split("\n")
        rows = _read_exact(((i, line.split(",")) for i, line in enumerate(lines, start=1)), source, whitelist)
    return rows


# ----------------------------------------------------------------------------- fast path


def _read_fast(data: bytes, source: AvaSource, whitelist: Optional[np.ndarray]) -> Optional[AvaBoxes]:
    """The rows of ``data`` (normalised text, one row per line) read by pyarrow; None when
    pyarrow cannot read it or a row fails validation (the exact reader then names the error)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    types = {"f0": pa.string(), **{f"f{j}": pa.float64() for j in range(1, 8)}}
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(autogenerate_column_names=True, block_size=_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(column_types=types, null_values=[], strings_can_be_null=False),
        )
    except pa.ArrowException:
        return None
    ncols = table.num_columns
    if not (ncols == 8 or (ncols == 7 and not source.policy.with_scores)):
        return None
    ts = table.column(1).to_numpy()
    boxes = np.stack([table.column(j).to_numpy() for j in range(2, 6)], axis=1)
    labels = table.column(6).to_numpy()
    # A copy: a single chunk's array is a read-only view of pyarrow's memory.
    scores = table.column(7).to_numpy().copy() if ncols == 8 else np.ones(len(ts), dtype=np.float64)
    if not _columns_valid(ts, boxes, labels, scores, source):
        return None
    video = table.column(0).combine_chunks().dictionary_encode()  # ids in order of first appearance
    video_idx = video.indices.to_numpy().astype(np.int64)
    ts, labels = ts.astype(np.int64), labels.astype(np.int64)
    frames = distinct_frames(video_idx, ts)
    columns = [video_idx, ts, boxes, labels, scores, np.arange(1, len(ts) + 1, dtype=np.int64)]
    if whitelist is not None:
        keep = in_table(labels, whitelist)
        if not keep.all():
            columns = [c[keep] for c in columns]
    return AvaBoxes(video.dictionary.to_pylist(), *columns, frames)


def _columns_valid(ts, boxes, labels, last, source: AvaSource) -> bool:
    """Whether every row passes :func:`~evad_d2.data.formats.ava.parse_ava_row` (its checks on
    whole columns, for the ``groundtruth`` and ``detections`` policies)."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(last).all()
        ok = ok and (np.isfinite(ts) & (ts == np.floor(ts)) & (ts >= 0)).all()
        ok = ok and (np.isfinite(labels) & (labels == np.floor(labels))).all()
        ok = ok and ((boxes >= -BOX_SLACK) & (boxes <= 1.0 + BOX_SLACK)).all()
    if ok and source.policy.box_rule == "ordered":
        ok = ((boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])).all()
    if ok and source.known_ids is not None:
        ok = in_table(labels.astype(np.int64), id_table(source.known_ids)).all()
    return bool(ok)


# ----------------------------------------------------------------------------- exact path


def _read_exact(rows: Iterator[Tuple[int, List[str]]], source: AvaSource, whitelist: Optional[np.ndarray]) -> AvaBoxes:
    """Rows of ``(line number, fields)`` checked one by one by
    :func:`~evad_d2.data.formats.ava.parse_ava_row`, numbers read with ``float()``.

    Raises:
        AvaFormatError: at the first bad row.
    """
    names: Dict[str, int] = {}
    video, ts, boxes, labels, scores, lines = [], [], [], [], [], []
    pairs: List[Tuple[str, int]] = []  # two-column rows
    for line, fields in rows:
        if is_blank(fields):
            continue
        if len(fields) == 2:
            pairs.append((fields[0], parse_timestamp(source, line, fields[1])))
            continue
        row = parse_ava_row(source, line, fields)
        video.append(names.setdefault(row.video_id, len(names)))
        ts.append(row.timestamp)
        boxes.append(row.box)
        labels.append(row.action_id)
        # The 8th column as the official reader takes it: a score (the person id for ground truth).
        last = row.score if source.policy.with_scores else row.person_id
        scores.append(1.0 if last is None else float(last))
        lines.append(line)
    # Two-column rows' video ids after the rows' ids: the ids keep the rows' order.
    pair_video = [names.setdefault(v, len(names)) for v, _ in pairs]
    video, ts, labels = (np.array(c, dtype=np.int64) for c in (video, ts, labels))
    frames = np.concatenate([
        distinct_frames(video, ts), np.array([pair_video, [t for _, t in pairs]], dtype=np.int64).T.reshape(-1, 2),
    ])
    out = AvaBoxes(
        list(names), video, ts, np.array(boxes, dtype=np.float64).reshape(-1, 4), labels,
        np.array(scores, dtype=np.float64), np.array(lines, dtype=np.int64),
        np.unique(frames, axis=0) if len(frames) else frames,
    )
    if whitelist is not None:
        keep = in_table(labels, whitelist)
        if not keep.all():
            out = out.select(keep)
    return out
