"""AVA detection CSV rows written from model outputs (:func:`detection_rows`), exactly as read back."""
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from evad_d2.data.formats.ava import BOX_DECIMALS, SCORE_DECIMALS, decimal_text, format_timestamp, round_decimals

from .boxes import AvaBoxes

__all__ = ["detection_rows"]


def detection_rows(
    frame_videos: Sequence[str],
    frame_timestamps: Sequence[int],
    box_counts: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: Sequence[int],
    *,
    box_decimals: int = BOX_DECIMALS,
    score_decimals: int = SCORE_DECIMALS,
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
    order = _row_order(flat, box_counts, k) if row_order == "score" else np.arange(num_boxes * k, dtype=np.int64)
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
    box_text = _box_prefixes(frame_videos, frame_ts, box_frame, box_q, box_decimals)
    for text in _join_rows(box_text, [f"{c}," for c in class_ids.tolist()], row_box, row_col, score_q, score_decimals):
        out.write(text)
    return rows


def _row_order(flat: np.ndarray, box_counts: np.ndarray, k: int) -> np.ndarray:
    """Index into ``flat`` (the (B * K,) box x class scores) of each row in ``"score"`` order:
    per keyframe a stable descending sort; keyframes with the same number of boxes are sorted
    together as the rows of one matrix."""
    order = np.arange(len(flat), dtype=np.int64)
    first_row = (np.cumsum(box_counts) - box_counts) * k
    for count in np.unique(box_counts[box_counts > 0]):
        idx = first_row[box_counts == count][:, None] + np.arange(count * k)
        order[idx] = np.take_along_axis(idx, np.argsort(-flat[idx], axis=1, kind="stable"), axis=1)
    return order


def _box_prefixes(frame_videos, frame_ts: np.ndarray, box_frame: np.ndarray, box_q: np.ndarray, digits: int) -> List[str]:
    """``"video_id,timestamp,x1,y1,x2,y2,"`` text of every box (``box_q``: coordinates times
    ``10**digits``, as integers)."""
    frame_text = [f"{v},{format_timestamp(t)}," for v, t in zip(frame_videos, frame_ts.tolist())]
    if len(box_q) and box_q.min() >= 0 and box_q.max() <= 10 ** digits:  # in [0, 1]: a table
        coord = [decimal_text(q, digits) + "," for q in range(10 ** digits + 1)]
    else:
        coord = {q: decimal_text(q, digits) + "," for q in np.unique(box_q).tolist()}
    return [
        frame_text[f] + coord[a] + coord[b] + coord[c] + coord[d]
        for f, (a, b, c, d) in zip(box_frame.tolist(), box_q.tolist())
    ]


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
            f"{prefixes[b]}{classes[c]}{decimal_text(q, digits)}\n"
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
