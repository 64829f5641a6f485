"""The demo's per-keyframe records: a streamed JSON file, JSON lines another program can follow
while a stream runs, and an AVA detection CSV.

The annotated video itself is written by ``evad_d2.data.video.VideoWriter``.
"""
import json
import math
import os
import time
from typing import Dict, List

import numpy as np

from ..data.formats.ava import BOX_DECIMALS, DetectionCsvWriter, round_decimals
from ..utils.atomic_io import atomic_write

__all__ = ["AvaCsvWriter", "JsonKeyframeWriter", "JsonLinesWriter", "ava_timestamp", "json_actor"]


def ava_timestamp(time: float, offset: float = 0.0) -> int:
    """Whole-second AVA timestamp of a keyframe: ``time + offset`` rounded, halves up."""
    return int(math.floor(time + offset + 0.5))


def json_actor(actor: Dict) -> Dict:
    """One actor of ``EVADPredictor`` (with its ``track_id``) as the demo's JSON stores it:
    box rounded to 0.01 px, scores to 1e-5, the top-k actions as ``{"id", "name", "score"}``."""
    return {
        "box": [round(v, 2) for v in actor["box"]],
        "person_score": round(actor["person_score"], 5),
        "actions": [
            {"id": aid, "name": name, "score": round(score, 5)}
            for aid, (name, score) in zip(actor["action_ids"], actor["actions"])
        ],
        "track_id": actor.get("track_id"),
    }


class _AtomicTextFile:
    """A text file written under a hidden temporary name (:func:`~evad_d2.utils.atomic_io.atomic_write`)
    and renamed over ``path`` by :meth:`close`: a reader never sees half a file."""

    def __init__(self, path: str, newline=None):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{path}: cannot create the output: folder {folder} does not exist")
        self._context = atomic_write(path, "w", newline=newline)
        self.file = self._context.__enter__()

    def close(self) -> None:
        self._context.__exit__(None, None, None)


class JsonKeyframeWriter:
    """Writes ``{**header, "keyframes": [...], **footer}`` one keyframe at a time (nothing but
    the current keyframe is held, whatever the video's length); the file appears, complete, at
    :meth:`close`."""

    def __init__(self, path: str, header: Dict):
        self._out = _AtomicTextFile(path)
        self.f = self._out.file
        self.f.write(json.dumps(header)[:-1] + ', "keyframes": [')
        self._first = True

    def add(self, entry: Dict) -> None:
        """Append one keyframe's record."""
        self.f.write(("\n" if self._first else ",\n") + json.dumps(entry))
        self._first = False

    def close(self, footer: Dict) -> None:
        """Close the keyframe list, add ``footer``'s keys and close the file."""
        self.f.write("\n]" + "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in footer.items()) + "}\n")
        self._out.close()


class JsonLinesWriter:
    """One JSON object per line, each flushed to the OS as soon as it is written, so that another
    program can ``tail -f`` the file while a stream runs (hence not written atomically: a reader
    sees whole lines only, the last one once its newline is there).

    Each object is the record given to :meth:`add` plus ``"written_at"``: the wall-clock time
    (``time.time()``, seconds since the epoch) it was written.
    """

    def __init__(self, path: str):
        self.f = open(path, "w", encoding="utf-8")
        self.num_records = 0

    def add(self, record: Dict) -> None:
        """Write and flush one record."""
        self.f.write(json.dumps({**record, "written_at": round(time.time(), 6)}) + "\n")
        self.f.flush()
        self.num_records += 1

    def close(self) -> None:
        self.f.close()


class AvaCsvWriter:
    """AVA detection CSV, at most one keyframe per whole second (the one nearest to it).

    Rows are ``video_id, timestamp, x1, y1, x2, y2, action_id, score``, one per actor and class,
    the box normalised to [0, 1]: the one AVA detection text of ``evad_d2.data.formats.ava``
    (:class:`~evad_d2.data.formats.ava.DetectionCsvWriter`: ``%04d`` timestamps, ``BOX_DECIMALS``
    box and ``SCORE_DECIMALS`` score decimals), as the evaluator writes it. An actor whose box is
    empty at that precision is skipped (counted in :attr:`num_skipped_boxes`). The file appears,
    complete, at :meth:`close`.

    Args:
        path: output CSV.
        video_id: first column.
        width, height: frame size in pixels (boxes are divided by it).
        action_ids: label-map id of each column of an actor's ``action_scores``.
        time_offset: seconds added to keyframe times (900 for AVA's cut clips); >= 0.
    """

    def __init__(
        self, path: str, video_id: str, width: int, height: int, action_ids: List[int], time_offset: float = 0.0
    ):
        if time_offset < 0:
            raise ValueError(f"--time-offset must be >= 0 (AVA timestamps are non-negative), got {time_offset}")
        self._out = _AtomicTextFile(path, newline="")
        self.f = self._out.file
        self.rows = DetectionCsvWriter(self.f, action_ids)
        self.video_id, self.width, self.height = video_id, width, height
        self.action_ids = list(action_ids)
        self.time_offset = time_offset
        self._pending = None  # (timestamp, distance to it, actors)
        self.num_skipped_boxes = 0

    @property
    def num_rows(self) -> int:
        """Rows written so far."""
        return self.rows.num_rows

    def add(self, time: float, actors: List[Dict]) -> None:
        """The actors of the keyframe at ``time`` seconds (kept if nearest to its whole second)."""
        ts = ava_timestamp(time, self.time_offset)
        dist = abs(time + self.time_offset - ts)
        if self._pending is not None and self._pending[0] == ts:
            if dist < self._pending[1]:
                self._pending = (ts, dist, actors)
            return
        self._flush()
        self._pending = (ts, dist, actors)

    def _flush(self) -> None:
        if self._pending is None:
            return
        ts, _, actors = self._pending
        self._pending = None
        if not actors:
            return
        scale = np.array([self.width, self.height, self.width, self.height], dtype=np.float64)
        boxes = np.clip(np.array([a["box"] for a in actors], dtype=np.float64) / scale, 0.0, 1.0)
        q = round_decimals(boxes, BOX_DECIMALS)
        keep = (q[:, 2] > q[:, 0]) & (q[:, 3] > q[:, 1])  # an empty box is not a valid AVA row
        self.num_skipped_boxes += int((~keep).sum())
        scores = np.array([a["action_scores"] for a in actors], dtype=np.float64)
        self.rows.write(self.video_id, ts, boxes[keep], scores[keep])

    def close(self) -> None:
        """Write the last keyframe and close the file."""
        self._flush()
        self._out.close()
