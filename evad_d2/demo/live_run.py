"""Live mode with its outputs and a keep rate for a latency budget (``tools/demo.py --live``).

:func:`run_live_demo` runs a :class:`~evad_d2.demo.live.LiveDemo` and writes every shown frame,
drawn with the latest actors, to a video file or re-stream URL, and one record per keyframe to a
records writer (JSON lines); :func:`run_live` first plays a file at its frame rate
(:class:`~evad_d2.demo.live.PacedSource`) and, with a budget, chooses the keep rate on the
stream's own frame size (:func:`~evad_d2.demo.keep_rate.keep_rate_controller`).
"""
from typing import Callable, Dict, List, Optional

import numpy as np

from .keep_rate import DEFAULT_MIN_KEEP_RATE, keep_rate_controller
from .live import DEFAULT_KEYFRAME_INTERVAL, LiveDemo, PacedSource

__all__ = ["PeekedSource", "run_live", "run_live_demo"]


class PeekedSource:
    """A frame source whose first frame is read now (:attr:`first`: ``(image, pts, captured)``,
    None for an empty source) and handed out again first when iterated; ``name``,
    ``frame_rate``, ``live``, ``end_reason`` and ``close()`` are the source's."""

    def __init__(self, source):
        self.source = source
        self.name = getattr(source, "name", "video")
        self.frame_rate = getattr(source, "frame_rate", None)
        self.live = getattr(source, "live", True)
        self._frames = iter(source)
        self.first = next(self._frames, None)

    def __iter__(self):
        if self.first is not None:
            yield self.first
        yield from self._frames

    @property
    def end_reason(self) -> Optional[str]:
        return getattr(self.source, "end_reason", None)

    def close(self) -> None:
        self.source.close()


def run_live_demo(
    demo: LiveDemo, source, output_path: Optional[str] = None, *, records=None,
    actor_filter: Optional[Callable[[List[Dict]], List[Dict]]] = None, track: bool = False,
    video_id: Optional[str] = None, time_offset: float = 0.0, line_width: Optional[int] = None, crf: int = 20,
) -> Dict:
    """:meth:`LiveDemo.run` with outputs: every shown frame drawn with the latest actors into
    ``output_path`` (a file or a re-stream URL, ``evad_d2.data.video.VideoWriter``, opened at the
    first frame, at the source's nominal rate, frames at their pts), and one record per keyframe
    handed to ``records.add`` (e.g. a ``JsonLinesWriter``): ``video_id``, the :meth:`LiveDemo.run`
    record, ``timestamp`` (AVA whole second of ``time + time_offset``) and ``"actors"`` as
    ``json_actor`` gives them.

    Args:
        actor_filter: applied to each keyframe's actors before they are drawn and recorded
            (e.g. a score threshold or a class subset).
        track: link the actors of processed keyframes by IoU (``track_id``; stable colours).
        video_id: the records' video id (default: ``source.name``).

    Returns:
        the summary of :meth:`LiveDemo.run`, plus ``frames_written``.
    """
    from ..data.video import VideoWriter
    from ..utils.tracking import IoUTracker
    from ..utils.video_visualizer import draw_actors
    from .writers import ava_timestamp, json_actor

    state = {"writer": None, "actors": None, "shown": []}
    tracker = IoUTracker() if track else None
    video_id = video_id or getattr(source, "name", "video")

    def on_keyframe(record: Dict, actors: List[Dict]) -> None:
        ids = tracker.update([a["box"] for a in actors]) if tracker else [None] * len(actors)
        for a, tid in zip(actors, ids):
            a["track_id"] = tid
        shown = actor_filter(actors) if actor_filter is not None else actors
        state["actors"], state["shown"] = actors, shown
        if records is not None:
            stamp = ava_timestamp(record["time"], time_offset)
            records.add({"video_id": video_id, **record, "timestamp": stamp, "actors": [json_actor(a) for a in shown]})

    def on_frame(image: np.ndarray, pts: float, actors: List[Dict]) -> None:
        if output_path is None:
            return
        if state["writer"] is None:
            h, w = image.shape[:2]
            state["writer"] = VideoWriter(output_path, w, h, getattr(source, "frame_rate", None), crf)
        shown = state["shown"] if actors is state["actors"] else actors
        state["writer"].write(draw_actors(image, shown, line_width=line_width), pts)

    try:
        summary = demo.run(source, on_frame, on_keyframe)
    finally:
        if state["writer"] is not None:
            state["writer"].close()
    summary["frames_written"] = state["writer"].num_frames if state["writer"] is not None else 0
    return summary


def run_live(
    predictor, source, output_path: Optional[str] = None, *, keyframe_interval: float = DEFAULT_KEYFRAME_INTERVAL,
    budget_s: Optional[float] = None, min_keep_rate: float = DEFAULT_MIN_KEEP_RATE,
    keep_rate_table: Optional[str] = None, **outputs,
) -> Dict:
    """Live mode end to end (``tools/demo.py --live``): a source that is not live (a file, a frame
    folder: ``source.live`` False) is played at its frame rate (:class:`PacedSource`); with a
    budget, the keep rate is chosen and kept for it
    (:func:`~evad_d2.demo.keep_rate.keep_rate_controller`: the table ``keep_rate_table`` or one
    measured now on the first frame's size, never below ``min_keep_rate``); then
    :func:`run_live_demo`.

    Args:
        budget_s: seconds the model may take per keyframe (``latency_budget(--latency-ms,
            --target-fps)``), or None to keep the config's keep rates.
        outputs: the keyword arguments of :func:`run_live_demo` (records, actor_filter, track,
            video_id, time_offset, line_width, crf).

    Returns:
        the summary of :func:`run_live_demo`, plus ``keep_rate_table`` (the table the keep rate
        was chosen from, as its JSON file holds it; None without a budget).
    """
    controller = None
    if budget_s is not None:
        source = PeekedSource(source)  # time the model on the stream's frame size
        size = source.first[0].shape[:2] if source.first is not None else None
        controller = keep_rate_controller(
            predictor, budget_s, floor=min_keep_rate, table_path=keep_rate_table, frame_size=size
        )
    if not getattr(source, "live", True):
        source = PacedSource(source)
    demo = LiveDemo(predictor, keyframe_interval=keyframe_interval, controller=controller)
    summary = run_live_demo(demo, source, output_path, **outputs)
    summary["keep_rate_table"] = controller.table.to_json() if controller is not None else None
    return summary
