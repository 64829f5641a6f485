"""ActivityNet's reader of detections (``get_ava_performance.py``'s ``read_csv``), vectorised.

Per frame it keeps a heap of at most ``capacity`` (score, label, box) entries and returns them
by descending score; :func:`activitynet_read` gives the same rows in the same order on whole
arrays, and falls back to the reader's own steps (:func:`activitynet_read_exact`) for the frames
where ties make the heap's order matter.
"""
import heapq
from typing import Dict

import numpy as np

from .boxes import first_appearance_rank

__all__ = ["activitynet_read", "activitynet_read_exact"]


def activitynet_read(keys, boxes, labels, scores, capacity):
    """ActivityNet's ``read_csv``: per frame a heap of (score, label, y1, x1, y2, x2) tuples of
    at most ``capacity`` entries (0: unbounded), then sorted by descending score.

    Vectorised: a frame keeps its ``capacity`` best rows, by descending score. That is the
    heap's result unless the last kept score ties with the first dropped one, and its order
    differs from the heap's only among rows of equal score, which matters only for rows of one
    class with different boxes (matching and ranking are per class; identical rows are
    interchangeable). Frames with either kind of tie go through :func:`activitynet_read_exact`.

    Returns:
        keys, boxes (x1, y1, x2, y2), labels, scores in the reader's output order (frames by
        first appearance).
    """
    n = len(keys)
    if n == 0:
        return keys, boxes, labels, scores
    rank = first_appearance_rank(keys)
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
    e_keys, e_boxes, e_labels, e_scores = activitynet_read_exact(
        keys[exact], boxes[exact], labels[exact], scores[exact], capacity
    )
    rank_of_key = dict(zip(keys[exact].tolist(), rank[exact].tolist()))
    e_rank = np.array([rank_of_key[k] for k in e_keys.tolist()], dtype=np.int64)
    merge = np.argsort(np.concatenate([r, e_rank]), kind="stable")
    return tuple(
        np.concatenate([a[order], b])[merge]
        for a, b in ((keys, e_keys), (boxes, e_boxes), (labels, e_labels), (scores, e_scores))
    )


def activitynet_read_exact(keys, boxes, labels, scores, capacity):
    """:func:`activitynet_read` by the official reader's own steps (a Python heap per frame)."""
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
