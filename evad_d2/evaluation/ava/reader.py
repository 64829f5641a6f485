"""Vectorised reader of AVA ground-truth and detection CSVs (:func:`read_ava_csv`)."""
import codecs
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from iopath.common.file_io import g_pathmgr

from evad_d2.data.ava_format import AvaFormatError

from .boxes import AvaBoxes, distinct_frames, id_table, in_table

__all__ = ["read_ava_csv"]

# Box coordinates may exceed [0, 1] by this much (rounding in written files); they are used as is.
_BOX_SLACK = 1e-3


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
    whitelist = id_table(class_whitelist)
    known = id_table(known_class_ids)
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
        bad = ~in_table(labels, known)
        if bad.any():
            i = np.flatnonzero(bad)[0]
            raise AvaFormatError(path, int(line_no[i]), f"unknown action id {labels[i]} (not in the label map)")

    video = _video_ids(u8, words, starts, bounds[:, 0], names)
    columns = [video, ts.astype(np.int64), boxes, labels, scores, line_no]
    frames = distinct_frames(video, columns[1])
    if pairs is not None and len(pairs[0]):  # after the rows' ids: video ids keep the rows' order
        frames = np.concatenate([frames, _pair_frames(u8, words, *pairs, path, names)])
    if whitelist is not None:
        keep = in_table(labels, whitelist)
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
    return distinct_frames(_video_ids(u8, words, starts, commas, names), ts.astype(np.int64))


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
