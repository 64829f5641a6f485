"""Which frames form a clip: timeline indices for training, times for streamed videos.

Two ways to the same clip layout (``num_frames`` frames, ``sampling_rate`` apart, the keyframe at
position ``keyframe_index``):

* by **index** on a dataset's frame timeline (training and evaluation):
  :func:`keyframe_frame_index` turns an AVA timestamp into the keyframe's index and
  :func:`clip_frame_indices` lists the clip's indices around it;
* by **time** on a decoded stream (the demo, the pruning pictures): :class:`KeyframeClipSampler`
  takes decoded frames one at a time and hands out each keyframe's clip as soon as it is complete,
  frame ``i`` being the frame nearest to ``t_key + (i - keyframe_index) * step`` seconds, so a
  video of any frame rate, variable ones included, gives the model the spacing it was trained
  on; :func:`read_clip_at` is one such clip read from a file, and :class:`KeyframeBatcher` groups
  completed clips into batches for a predictor.

The rule "``INPUT.KEYFRAME_INDEX = -1`` means the middle frame" is :func:`resolve_keyframe_index`.
"""
import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .reader import TIMELINE_RATE, VideoFrame, VideoReadError, iter_video_frames

__all__ = [
    "Clip",
    "KeyframeBatcher",
    "KeyframeClipSampler",
    "clip_frame_indices",
    "keyframe_frame_index",
    "keyframe_sampler",
    "read_clip_at",
    "resolve_keyframe_index",
]

# A keyframe and the frames of its clip, in clip order (the keyframe among them).
Clip = Tuple[VideoFrame, List[VideoFrame]]


def resolve_keyframe_index(keyframe_index: int, num_frames: int) -> int:
    """The keyframe's position in a clip of ``num_frames`` frames: ``keyframe_index``, or the
    middle frame ``num_frames // 2`` when it is negative (``INPUT.KEYFRAME_INDEX = -1``).

    Raises:
        ValueError: a position outside the clip.
    """
    kf = num_frames // 2 if keyframe_index < 0 else keyframe_index
    if not 0 <= kf < num_frames:
        raise ValueError(f"keyframe index {keyframe_index} outside a clip of {num_frames} frames")
    return kf


def keyframe_frame_index(timestamp: float, *, frame_rate: float = TIMELINE_RATE, start_sec: float = 900) -> int:
    """0-based frame index of the keyframe of ``timestamp`` (PySlowFast: ``(sec - 900) * 30``)."""
    return int(round((timestamp - start_sec) * frame_rate))


def clip_frame_indices(
    center: int, num_frames: int, sampling_rate: int, keyframe_index: int, total_frames: int
) -> List[int]:
    """Indices of the ``num_frames`` frames of a clip, ``sampling_rate`` apart.

    Frame ``keyframe_index`` of the clip is ``center``; indices outside the video are clamped to
    its first or last frame (edge frames repeated). With ``keyframe_index = num_frames // 2`` this
    is PySlowFast's ``get_sequence``: ``range(center - T*tau//2, center + T*tau//2, tau)``.

    Returns:
        list of ``num_frames`` ints in [0, total_frames - 1].
    """
    if total_frames <= 0:
        raise ValueError(f"a clip needs a video with frames (got total_frames={total_frames})")
    if not 0 <= keyframe_index < num_frames:
        raise ValueError(f"keyframe_index {keyframe_index} outside a clip of {num_frames} frames")
    return [
        min(max(center + (i - keyframe_index) * sampling_rate, 0), total_frames - 1) for i in range(num_frames)
    ]


@dataclass
class _PendingClip:
    keyframe: VideoFrame
    sample_times: List[float]


class KeyframeClipSampler:
    """Streaming clip assembly: push decoded frames, get each keyframe's clip when it is complete.

    Keyframes are the first frames at or after ``start + k * interval - tolerance`` seconds
    (one keyframe per frame even when a gap spans several intervals). The clip of a keyframe at
    time ``t`` has ``num_frames`` frames, frame ``i`` being the buffered frame nearest to
    ``t + (i - keyframe_index) * step`` seconds; times before the first or after the last frame of
    the video take that frame (edge padding, as in training).

    Only frames that a pending or future clip may still select are kept: frame ``f`` is dropped
    once a later frame lies at or before the earliest sample time still to come, because that
    later frame is then at least as near to every such time. :attr:`max_buffered` records the
    largest number of frames held at once.

    Args:
        num_frames: T.
        keyframe_index: position of the keyframe in the clip.
        step: seconds between consecutive clip frames (SAMPLING_RATE / model frame rate).
        interval: seconds between keyframes (``math.inf`` for a single keyframe).
        start: time of the first keyframe.
        tolerance: a frame this many seconds early still counts as at the keyframe time.
    """

    def __init__(
        self,
        num_frames: int,
        keyframe_index: int,
        step: float,
        interval: float,
        *,
        start: float = 0.0,
        tolerance: float = 0.0,
    ):
        if not 0 <= keyframe_index < num_frames:
            raise ValueError(f"keyframe_index {keyframe_index} outside a clip of {num_frames} frames")
        if not step > 0 or not interval > 0:
            raise ValueError(f"step ({step}) and interval ({interval}) must be positive")
        self.num_frames = num_frames
        self.keyframe_index = keyframe_index
        self.step = float(step)
        self.interval = float(interval)
        self.tolerance = float(tolerance)
        self._next_target = float(start)
        self._buffer: deque = deque()
        self._pending: List[_PendingClip] = []
        self.max_buffered = 0
        self.num_pushed = 0

    @property
    def buffered(self) -> List[VideoFrame]:
        """The frames currently held (oldest first)."""
        return list(self._buffer)

    def push(self, frame: VideoFrame) -> List[Clip]:
        """Add the next decoded frame (times must increase).

        Returns:
            ``(keyframe, clip frames)`` of every clip this frame completed, in keyframe order.
        """
        if self._buffer and frame.time <= self._buffer[-1].time:
            raise ValueError(f"frame times must increase: {frame.time} after {self._buffer[-1].time}")
        self._buffer.append(frame)
        self.num_pushed += 1
        self.max_buffered = max(self.max_buffered, len(self._buffer))
        if frame.time >= self._next_target - self.tolerance:
            offsets = [(i - self.keyframe_index) * self.step for i in range(self.num_frames)]
            self._pending.append(_PendingClip(frame, [frame.time + o for o in offsets]))
            # A gap longer than the interval yields one keyframe, not several copies of it.
            while self._next_target - self.tolerance <= frame.time:
                self._next_target += self.interval
        done = []
        while self._pending and frame.time >= self._pending[0].sample_times[-1]:
            done.append(self._assemble(self._pending.pop(0)))
        self._evict()
        return done

    def finish(self) -> List[Clip]:
        """End of the stream: the remaining clips, padded with the last frame."""
        done = [self._assemble(p) for p in self._pending]
        self._pending = []
        self._buffer.clear()
        return done

    def _assemble(self, pending: _PendingClip) -> Clip:
        times = [f.time for f in self._buffer]
        frames = []
        for s in pending.sample_times:
            i = bisect.bisect_left(times, s)
            if i == len(times) or (i > 0 and s - times[i - 1] <= times[i] - s):
                i -= 1
            frames.append(self._buffer[i])
        return pending.keyframe, frames

    def _evict(self) -> None:
        earliest = self._next_target - self.tolerance - self.keyframe_index * self.step
        if self._pending:
            earliest = min(earliest, self._pending[0].sample_times[0])
        while len(self._buffer) >= 2 and self._buffer[1].time <= earliest:
            self._buffer.popleft()


def keyframe_sampler(
    num_frames: int, keyframe_index: int, step: float, fps: float, keyframe_stride=None, start: float = 0.0
) -> KeyframeClipSampler:
    """A :class:`KeyframeClipSampler` for a video of nominal rate ``fps``: a keyframe every
    ``keyframe_stride`` frames (``keyframe_stride / fps`` seconds), by default every second as in
    AVA; a frame half a nominal interval early still counts as at the keyframe time.

    Raises:
        ValueError: ``keyframe_stride`` below 1.
    """
    if keyframe_stride is not None and keyframe_stride < 1:
        raise ValueError(f"keyframe stride must be >= 1 frame, got {keyframe_stride}")
    interval = 1.0 if keyframe_stride is None else keyframe_stride / float(fps)
    return KeyframeClipSampler(num_frames, keyframe_index, step, interval, start=start, tolerance=0.5 / float(fps))


def read_clip_at(path: str, time: float, num_frames: int, keyframe_index: int, step: float) -> Clip:
    """Decode the clip of the keyframe nearest (at or after) ``time`` seconds from a video file.

    Returns:
        ``(keyframe, frames)`` as :meth:`KeyframeClipSampler.push` gives them.

    Raises:
        VideoReadError: unreadable file, or ``time`` after the end of the video.
    """
    sampler = KeyframeClipSampler(num_frames, keyframe_index, step, math.inf, start=time, tolerance=1e-6)
    last = None
    for frame in iter_video_frames(path):
        last = frame
        done = sampler.push(frame)
        if done:
            return done[0]
    done = sampler.finish()
    if not done:
        raise VideoReadError(path, f"time {time:.3f} s is after the end of the video ({last.time:.3f} s)")
    return done[0]


class KeyframeBatcher:
    """Collects completed keyframe clips and runs them through a predictor ``batch_size`` at a time.

    Args:
        predictor: anything with ``predict_batch(clips) -> list`` taking uint8 (T, H, W, 3)
            arrays and giving one result per clip, such as ``evad_d2.engine.EVADPredictor``.
        batch_size: clips per forward (>= 1).
    """

    def __init__(self, predictor, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1 clip, got {batch_size}")
        self.predictor = predictor
        self.batch_size = batch_size
        self.pending: List[Clip] = []

    def add(self, clips: Sequence[Clip], final: bool = False) -> List[Tuple[VideoFrame, List[Dict]]]:
        """Queue ``(keyframe, frames)`` clips; return ``(keyframe, actors)`` of every full batch
        (of every queued clip when ``final``), in keyframe order."""
        self.pending.extend(clips)
        done = []
        while len(self.pending) >= self.batch_size or (final and self.pending):
            batch, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
            actors = self.predictor.predict_batch([np.stack([f.image for f in frames]) for _, frames in batch])
            done.extend((keyframe, a) for (keyframe, _), a in zip(batch, actors))
        return done

    @property
    def held_frames(self) -> List[VideoFrame]:
        """Frames the queued clips hold."""
        return [f for _, frames in self.pending for f in frames]
