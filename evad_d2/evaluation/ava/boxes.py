"""AVA CSV rows as parallel arrays (:class:`AvaBoxes`), shared by the reader, the writer and the metric."""
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

__all__ = ["AvaBoxes", "distinct_frames", "id_table", "in_table", "key_runs", "first_appearance_rank"]


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
            self.frames = distinct_frames(self.video, self.timestamp)
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


def distinct_frames(video: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """(F, 2) distinct ``(video, timestamp)`` pairs, sorted; a frame's rows are nearly always
    consecutive, so only the first row of each run of one frame is sorted."""
    video, timestamp = np.asarray(video, dtype=np.int64), np.asarray(timestamp, dtype=np.int64)
    head = np.ones(len(video), dtype=bool)
    head[1:] = (video[1:] != video[:-1]) | (timestamp[1:] != timestamp[:-1])
    video, timestamp = video[head], timestamp[head]
    if len(video) and video.min() >= 0 and timestamp.min() >= 0:
        # One integer key per pair (sorted like the pairs): much faster than unique rows.
        span = int(timestamp.max()) + 1
        key = np.unique(video * span + timestamp)
        return np.stack([key // span, key % span], axis=1)
    pairs = np.stack([video, timestamp], axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def id_table(ids: Optional[Iterable[int]]) -> Optional[np.ndarray]:
    """Lookup table ``t[i]`` = id i is in ``ids`` (ids are small non-negative integers)."""
    if ids is None:
        return None
    ids = np.array(sorted(set(int(c) for c in ids)), dtype=np.int64)
    table = np.zeros(int(ids.max()) + 1 if len(ids) else 0, dtype=bool)
    table[ids[ids >= 0]] = True
    return table


def in_table(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(N,) bool: ``values[i]`` is an id of the :func:`id_table` ``table``."""
    inside = (values >= 0) & (values < len(table))
    out = np.zeros(len(values), dtype=bool)
    out[inside] = table[values[inside]]
    return out


def key_runs(keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Runs of equal consecutive keys: (the key of each run, the run of each row).

    Rows of a frame are nearly always consecutive, so per-frame work is done once per run.
    """
    head = np.ones(len(keys), dtype=bool)
    head[1:] = keys[1:] != keys[:-1]
    return keys[head], np.cumsum(head) - 1


def first_appearance_rank(keys: np.ndarray) -> np.ndarray:
    """For each row, the rank of its key by first appearance (a dict's insertion order)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    run_keys, run = key_runs(keys)
    uniq, first_run, inverse = np.unique(run_keys, return_index=True, return_inverse=True)
    rank_of_uniq = np.empty(len(uniq), dtype=np.int64)
    rank_of_uniq[np.argsort(first_run, kind="stable")] = np.arange(len(uniq))
    return rank_of_uniq[inverse.ravel()][run]
