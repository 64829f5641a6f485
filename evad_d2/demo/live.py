"""Live mode: a camera, a network stream, or a file played at its frame rate, with bounded latency.

Decoding runs in its own thread into a :class:`FrameRing` (a fixed number of the newest frames:
memory is bounded for any stream length). The main loop of :class:`LiveDemo`:

1. shows every frame that arrived since the last look with the latest keyframe's actors
   (``on_frame``); frames the ring overwrote before they were shown are counted as dropped;
2. takes the newest complete window (the clip whose last sample time is the newest frame) and,
   when its keyframe opens a new keyframe slot (one per ``keyframe_interval`` seconds), runs the
   model on it; slots skipped because the model was busy are counted as dropped keyframes;
3. reports the keyframe (``on_keyframe``): capture-to-result latency (result time minus the capture
   time of the window's newest frame), model time, dropped keyframes and frames, keep rate;
   then, with a :class:`~evad_d2.demo.keep_rate.KeepRateController`, the keep rate is adjusted.

Nothing waits in a queue for the model: while it runs, new frames only replace old ones in the
ring, so the latency stays about one model time, however long the stream runs.

A frame source yields ``(image uint8 (H, W, 3) RGB, pts seconds, captured)`` with ``captured``
the wall-clock time (``time.time()``) the frame was read, and has ``name``, ``frame_rate`` and
``close()`` (``evad_d2.demo.sources``); :class:`PacedSource` plays a file source in real time.
The outputs and the keep rate for a latency budget are :mod:`evad_d2.demo.live_run`'s.
"""
import bisect
import logging
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["DEFAULT_KEYFRAME_INTERVAL", "FrameRing", "LiveDemo", "LiveFrame", "PacedSource", "newest_window", "window_frames"]

logger = logging.getLogger(__name__)

# Nominal frame rate assumed for a source that does not state one.
DEFAULT_SOURCE_RATE = 30.0
#: Seconds between keyframe slots by default (one keyframe per second, as AVA annotates).
DEFAULT_KEYFRAME_INTERVAL = 1.0
# Latencies kept for the summary's percentiles (the most recent ones; bounded memory).
LATENCY_HISTORY = 100_000


@dataclass(frozen=True)
class LiveFrame:
    """One frame in the ring: 0-based arrival ``index``, ``pts`` seconds, ``captured`` wall-clock
    time it was read, ``image`` uint8 (H, W, 3) RGB."""

    index: int
    pts: float
    captured: float
    image: np.ndarray


class FrameRing:
    """The newest ``capacity`` frames, written by the decoder thread and read by the main loop.

    Attributes:
        num_pushed: frames written so far.
        max_held: most frames held at once (never above ``capacity``).
        closed: the decoder finished; ``error`` is the exception it ended with, if any.
    """

    def __init__(self, capacity: int):
        if capacity < 2:
            raise ValueError(f"the frame ring needs room for at least 2 frames, got {capacity}")
        self.capacity = capacity
        self._frames: deque = deque(maxlen=capacity)
        self._cond = threading.Condition()
        self.num_pushed = 0
        self.max_held = 0
        self.closed = False
        self.error: Optional[BaseException] = None

    def push(self, frame: LiveFrame) -> None:
        """Add the newest frame (the oldest one leaves when the ring is full)."""
        with self._cond:
            self._frames.append(frame)
            self.num_pushed += 1
            self.max_held = max(self.max_held, len(self._frames))
            self._cond.notify_all()

    def close(self, error: Optional[BaseException] = None) -> None:
        """No more frames will come (``error``: why the decoder stopped)."""
        with self._cond:
            self.closed, self.error = True, error
            self._cond.notify_all()

    def snapshot(self) -> List[LiveFrame]:
        """The frames held now, oldest first."""
        with self._cond:
            return list(self._frames)

    def wait(self, after: int, timeout: float) -> None:
        """Return once a frame with index > ``after`` is held, the ring is closed, or after
        ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self.closed or (self._frames and self._frames[-1].index > after), timeout)


class _Decoder(threading.Thread):
    """Reads the source into the ring until it ends, fails or :meth:`stop` is called."""

    def __init__(self, source, ring: FrameRing):
        super().__init__(name=f"decode {getattr(source, 'name', 'source')}", daemon=True)
        self.source, self.ring = source, ring
        self._stop_event = threading.Event()

    def run(self) -> None:
        error = None
        try:
            for i, (image, pts, captured) in enumerate(self.source):
                if self._stop_event.is_set():
                    break
                self.ring.push(LiveFrame(i, float(pts), float(captured), image))
        except BaseException as e:  # handed to the main loop, which raises it
            error = e
        finally:
            self.ring.close(error)

    def stop(self) -> None:
        self._stop_event.set()
        self.source.close()


class PacedSource:
    """A file's frame source played in real time: each frame is handed out at its pts after the
    first one (``--live`` on a file), stamped with the wall-clock time it was handed out.

    Args:
        source: frame source yielding ``(image, pts, captured)``, with ``name``, ``frame_rate``
            and ``close()``.
        clock, sleep, wall_clock: monotonic seconds, sleeping, ``time.time`` (injectable).
    """

    live = True

    def __init__(self, source, *, clock=time.monotonic, sleep=time.sleep, wall_clock=time.time):
        self.source, self.clock, self.sleep, self.wall_clock = source, clock, sleep, wall_clock
        self.name = getattr(source, "name", "video")
        self.frame_rate = getattr(source, "frame_rate", None)
        self._closed = threading.Event()

    def __iter__(self):
        start = first_pts = None
        for image, pts, _ in self.source:
            if self._closed.is_set():
                return
            if start is None:
                start, first_pts = self.clock(), pts
            delay = start + (pts - first_pts) - self.clock()
            if delay > 0:
                self.sleep(delay)
            yield image, pts, self.wall_clock()

    @property
    def end_reason(self) -> Optional[str]:
        """The wrapped source's ``end_reason`` (None if it has none)."""
        return getattr(self.source, "end_reason", None)

    def close(self) -> None:
        self._closed.set()
        self.source.close()


def window_frames(num_frames: int, step: float, fps: float) -> int:
    """Frames of a stream at ``fps`` that one clip spans: ``(num_frames - 1) * step`` seconds."""
    return int(math.ceil((num_frames - 1) * step * fps)) + 1


def newest_window(
    frames: List[LiveFrame], num_frames: int, keyframe_index: int, step: float, tolerance: float, *, full: bool = False
) -> Optional[Tuple[LiveFrame, List[LiveFrame]]]:
    """The clip that ends at the newest frame: its keyframe time is ``newest.pts - (num_frames - 1
    - keyframe_index) * step``, clip frame ``i`` the held frame nearest to ``t_key + (i -
    keyframe_index) * step``.

    Args:
        frames: held frames, oldest first.
        tolerance: the oldest frame may start this many seconds after the clip's first sample time.
        full: the ring is full (its oldest frames are being overwritten): take the window even if
            it reaches past the oldest frame (edge frames repeated).

    Returns:
        ``(keyframe, clip frames)``, or None while the frames do not span a clip yet.
    """
    if not frames:
        return None
    t_key = frames[-1].pts - (num_frames - 1 - keyframe_index) * step
    first = t_key - keyframe_index * step
    if frames[0].pts > first + tolerance and not full:
        return None
    times = [f.pts for f in frames]

    def nearest(t: float) -> LiveFrame:
        i = bisect.bisect_left(times, t)
        if i == len(times) or (i > 0 and t - times[i - 1] <= times[i] - t):
            i -= 1
        return frames[i]

    clip = [nearest(t_key + (i - keyframe_index) * step) for i in range(num_frames)]
    return clip[keyframe_index], clip


def _stack(clip: List[LiveFrame]) -> np.ndarray:
    """(T, H, W, 3) of a clip's images; a stream that changed resolution inside the clip has its
    older frames resized to the newest frame's size."""
    h, w = clip[-1].image.shape[:2]
    images = [f.image for f in clip]
    if any(im.shape[:2] != (h, w) for im in images):
        from PIL import Image

        images = [im if im.shape[:2] == (h, w) else np.asarray(Image.fromarray(im).resize((w, h))) for im in images]
    return np.stack(images)


class LiveDemo:
    """Run a predictor on a live frame source with bounded latency and memory.

    Args:
        predictor: anything with ``predict_batch``, ``num_frames``, ``keyframe_index``,
            ``sampling_rate`` and ``frame_rate`` (an :class:`~evad_d2.engine.EVADPredictor`).
        keyframe_interval: seconds between keyframe slots (at most one keyframe per slot).
        buffer_frames: ring capacity (None: one clip's span plus one second of frames, doubled for
            streams faster than announced).
        controller: a :class:`~evad_d2.demo.keep_rate.KeepRateController` fed each model time.
        clock: seconds for model timing (``time.perf_counter``); wall_clock: ``time.time``, the
            clock of the sources' capture times. Both injectable for tests.
    """

    def __init__(
        self, predictor, *, keyframe_interval: float = DEFAULT_KEYFRAME_INTERVAL, buffer_frames: Optional[int] = None, controller=None,
        clock: Callable[[], float] = time.perf_counter, wall_clock: Callable[[], float] = time.time,
    ):
        if not keyframe_interval > 0:
            raise ValueError(f"the keyframe interval must be positive, got {keyframe_interval} s")
        self.predictor, self.keyframe_interval, self.buffer_frames = predictor, float(keyframe_interval), buffer_frames
        self.controller, self.clock, self.wall_clock = controller, clock, wall_clock
        self.step = predictor.sampling_rate / predictor.frame_rate

    def capacity(self, fps: float) -> int:
        """Ring capacity for a source of nominal rate ``fps``."""
        if self.buffer_frames is not None:
            return self.buffer_frames
        return 2 * (window_frames(self.predictor.num_frames, self.step, fps) + int(math.ceil(fps)))

    def run(
        self, source, on_frame: Optional[Callable] = None, on_keyframe: Optional[Callable] = None, *,
        poll_s: float = 0.5,
    ) -> Dict:
        """Read ``source`` to its end (or stall, or Ctrl-C: the summary's ``end_reason`` is then
        "interrupted"), running the model on the newest windows.

        Args:
            source: a frame source (see the module docstring); closed at the end.
            on_frame: ``on_frame(image, pts, actors)`` for every frame shown, with the actors of
                the latest keyframe (``[]`` before the first).
            on_keyframe: ``on_keyframe(record, actors)`` per processed keyframe; ``record`` has
                ``frame_index``, ``time`` (pts s), ``latency_ms``, ``model_ms``,
                ``keyframes_dropped``, ``frames_dropped`` (not shown since the previous keyframe),
                ``keep_rate`` (None without a controller).
            poll_s: seconds to wait for a frame before checking again.

        Returns:
            the summary (:meth:`_LiveRun.summary`).

        Raises:
            whatever the source raised while decoding (e.g. a ``VideoReadError``).
        """
        fps = float(getattr(source, "frame_rate", None) or DEFAULT_SOURCE_RATE)
        ring = FrameRing(self.capacity(fps))
        state = _LiveRun(self, ring, fps, on_frame, on_keyframe)
        decoder = _Decoder(source, ring)
        decoder.start()
        interrupted = False
        try:
            state.loop(poll_s)
        except KeyboardInterrupt:  # Ctrl-C ends a camera or stream run: finalise, report
            interrupted = True
            logger.info(f"{getattr(source, 'name', 'source')}: interrupted")
        finally:
            decoder.stop()
            decoder.join(timeout=10.0)
        if ring.error is not None and not interrupted:
            raise ring.error
        summary = state.summary()
        summary["end_reason"] = "interrupted" if interrupted else getattr(source, "end_reason", None)
        logger.info(
            f"{getattr(source, 'name', 'source')}: {summary['processed_keyframes']} keyframes processed, "
            f"{summary['dropped_keyframes']} dropped; latency median {summary['latency_median_ms']:.0f} ms, "
            f"95th percentile {summary['latency_p95_ms']:.0f} ms; {summary['frames_shown']} frames shown, "
            f"{summary['frames_dropped']} dropped"
        )
        return summary


class _LiveRun:
    """The state of one :meth:`LiveDemo.run`: what was shown, the keyframe slots, the counters."""

    def __init__(self, demo: LiveDemo, ring: FrameRing, fps: float, on_frame, on_keyframe):
        self.demo, self.ring, self.on_frame, self.on_keyframe = demo, ring, on_frame, on_keyframe
        self.tolerance = 0.5 / fps
        self.last_shown = -1  # index of the newest frame shown
        self.last_slot: Optional[int] = None
        self.slot_origin: Optional[float] = None
        self.actors: List[Dict] = []
        self.latencies: deque = deque(maxlen=LATENCY_HISTORY)
        self.counts = {"frames_shown": 0, "frames_dropped": 0, "processed_keyframes": 0, "dropped_keyframes": 0}
        self.frames_dropped_since_keyframe = 0
        self.model_seconds = 0.0

    def loop(self, poll_s: float) -> None:
        while True:
            frames = self.ring.snapshot()
            closed = self.ring.closed  # read after the snapshot: a closed ring holds its last frames
            self.show(frames)
            window = self.next_window(frames)
            if window is not None:
                self.process(*window)
                continue
            if closed and (not frames or frames[-1].index <= self.last_shown):
                self.show(self.ring.snapshot())
                return
            self.ring.wait(self.last_shown, poll_s)

    def show(self, frames: List[LiveFrame]) -> None:
        """Hand every not yet shown frame to ``on_frame`` with the latest actors."""
        new = [f for f in frames if f.index > self.last_shown]
        if not new:
            return
        lost = new[0].index - self.last_shown - 1  # overwritten in the ring before they were shown
        self.counts["frames_dropped"] += lost
        self.frames_dropped_since_keyframe += lost
        for f in new:
            if self.on_frame is not None:
                self.on_frame(f.image, f.pts, self.actors)
            self.counts["frames_shown"] += 1
            self.last_shown = f.index

    def next_window(self, frames: List[LiveFrame]):
        """The newest complete window if its keyframe opens a new slot, else None."""
        p = self.demo.predictor
        full = len(frames) == self.ring.capacity
        window = newest_window(frames, p.num_frames, p.keyframe_index, self.demo.step, self.tolerance, full=full)
        if window is None:
            return None
        keyframe = window[0]
        if self.slot_origin is None:
            self.slot_origin = keyframe.pts
        slot = int(math.floor((keyframe.pts - self.slot_origin + self.tolerance) / self.demo.keyframe_interval))
        if self.last_slot is not None and slot <= self.last_slot:
            return None
        return window + (slot,)

    def process(self, keyframe: LiveFrame, clip: List[LiveFrame], slot: int) -> None:
        demo = self.demo
        dropped = 0 if self.last_slot is None else slot - self.last_slot - 1
        self.last_slot = slot
        keep_rate = demo.controller.keep_rate if demo.controller is not None else None
        t0 = demo.clock()
        actors = demo.predictor.predict_batch([_stack(clip)])[0]
        model_s = demo.clock() - t0
        latency_s = demo.wall_clock() - clip[-1].captured
        self.actors = actors
        self.latencies.append(latency_s)
        self.model_seconds += model_s
        self.counts["processed_keyframes"] += 1
        self.counts["dropped_keyframes"] += dropped
        record = {
            "frame_index": keyframe.index, "time": round(keyframe.pts, 6), "latency_ms": latency_s * 1000.0,
            "model_ms": model_s * 1000.0, "keyframes_dropped": dropped,
            "frames_dropped": self.frames_dropped_since_keyframe, "keep_rate": keep_rate,
        }
        self.frames_dropped_since_keyframe = 0
        logger.debug(
            f"keyframe {keyframe.index} ({keyframe.pts:.2f} s): latency {record['latency_ms']:.0f} ms, model "
            f"{record['model_ms']:.0f} ms, {dropped} keyframes dropped"
        )
        if self.on_keyframe is not None:
            self.on_keyframe(record, actors)
        if demo.controller is not None:
            demo.controller.observe(model_s)

    def summary(self) -> Dict:
        """``processed_keyframes``, ``dropped_keyframes``, ``frames_shown``, ``frames_dropped``,
        ``frames_decoded``, ``latency_median_ms``, ``latency_p95_ms``, ``latency_max_ms`` (over the
        last :data:`LATENCY_HISTORY` keyframes; NaN without any), ``model_mean_ms``,
        ``buffer_capacity`` and ``max_buffered`` (frames), ``keep_rate`` (final, or None) and
        ``keep_rate_changes``; :meth:`LiveDemo.run` adds ``end_reason`` (the source's, or
        "interrupted")."""
        lat = sorted(self.latencies)
        out = dict(self.counts)
        out["frames_decoded"] = self.ring.num_pushed
        out["latency_median_ms"] = statistics.median(lat) * 1000.0 if lat else math.nan
        # Nearest-rank 95th percentile.
        out["latency_p95_ms"] = lat[max(0, math.ceil(0.95 * len(lat)) - 1)] * 1000.0 if lat else math.nan
        out["latency_max_ms"] = lat[-1] * 1000.0 if lat else math.nan
        n = self.counts["processed_keyframes"]
        out["model_mean_ms"] = self.model_seconds / n * 1000.0 if n else math.nan
        out["buffer_capacity"], out["max_buffered"] = self.ring.capacity, self.ring.max_held
        controller = self.demo.controller
        out["keep_rate"] = controller.keep_rate if controller is not None else None
        out["keep_rate_changes"] = list(controller.changes) if controller is not None else []
        return out
