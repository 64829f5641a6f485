"""The demo's per-keyframe records: a streamed JSON file and an AVA detection CSV.

The annotated video itself is written by ``evad_d2.data.video.Mp4Writer``.
"""
import csv
import json
import math
from typing import Dict, List

__all__ = ["AvaCsvWriter", "JsonKeyframeWriter", "ava_timestamp", "json_actor"]


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


class JsonKeyframeWriter:
    """Writes ``{**header, "keyframes": [...], **footer}`` one keyframe at a time (nothing but
    the current keyframe is held, whatever the video's length)."""

    def __init__(self, path: str, header: Dict):
        self.f = open(path, "w")
        self.f.write(json.dumps(header)[:-1] + ', "keyframes": [')
        self._first = True

    def add(self, entry: Dict) -> None:
        """Append one keyframe's record."""
        self.f.write(("\n" if self._first else ",\n") + json.dumps(entry))
        self._first = False

    def close(self, footer: Dict) -> None:
        """Close the keyframe list, add ``footer``'s keys and close the file."""
        self.f.write("\n]" + "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in footer.items()) + "}\n")
        self.f.close()


class AvaCsvWriter:
    """AVA detection CSV, at most one keyframe per whole second (the one nearest to it).

    Rows are ``video_id, timestamp, x1, y1, x2, y2, action_id, score``: the box normalised to
    [0, 1] (4 decimals), one row per actor and class (6 decimals). An actor whose box is empty
    after rounding is skipped (counted in :attr:`num_skipped_boxes`).

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
        self.f = open(path, "w", newline="")
        self.writer = csv.writer(self.f)
        self.video_id, self.width, self.height = video_id, width, height
        self.action_ids = list(action_ids)
        self.time_offset = time_offset
        self._pending = None  # (timestamp, distance to it, actors)
        self.num_rows = 0
        self.num_skipped_boxes = 0

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
        for actor in actors:
            x1, y1, x2, y2 = actor["box"]
            box = [
                min(max(v / s, 0.0), 1.0)
                for v, s in ((x1, self.width), (y1, self.height), (x2, self.width), (y2, self.height))
            ]
            text = [f"{v:.4f}" for v in box]
            if float(text[2]) <= float(text[0]) or float(text[3]) <= float(text[1]):
                self.num_skipped_boxes += 1  # an empty box is not a valid AVA row
                continue
            for aid, score in zip(self.action_ids, actor["action_scores"]):
                self.writer.writerow([self.video_id, ts, *text, aid, f"{score:.6f}"])
                self.num_rows += 1
        self._pending = None

    def close(self) -> None:
        """Write the last keyframe and close the file."""
        self._flush()
        self.f.close()
