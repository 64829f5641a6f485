"""Reading the frames of a video file (PyAV): probing, timed decoding, rotation.

Frames are addressed by their 0-based index on the dataset's frame timeline (30 fps for AVA,
the native frame numbers minus one for UCF101-24/JHMDB). For AVA this is the timeline of the
extracted-frame layout: index ``i`` is file ``<vid>_{i+1:06d}.jpg`` (read by
``evad_d2.data.video.frame_folder``) and the keyframe of timestamp ``t`` is index
``(t - 900) * 30`` (``evad_d2.data.video.sampler.keyframe_frame_index``).

Videos are read by time, on one decoding path shared by training (``read_video_frames``), the
data validator (``scan_video``) and the demo (``iter_video_frames``):

* a decoded frame's time is its presentation timestamp minus the stream's start time, in seconds
  (frame numbers are never inferred from a nominal rate), so variable-frame-rate videos, such as
  phone recordings and screen captures, read correctly;
* timeline index ``i`` is the frame shown in the middle of slot ``i``: the latest frame whose
  time is before ``(i + 1/2) / frame_rate`` seconds (the first frame for earlier slots). This is
  the rule of FFmpeg's ``fps`` filter, so index ``i`` is exactly the frame that
  ``ffmpeg -i v.mp4 -r 30 <vid>_%06d.jpg`` extracts as ``<vid>_{i+1:06d}.jpg``, at any native rate,
  variable ones included (checked against libavfilter's ``fps=30`` on constant 15/24/25/30/60
  fps and variable-rate videos): the video and frame-folder sources give the same frames. For a
  video at ``frame_rate`` it is frame ``i`` itself;
* a video covers the times up to the end of its last frame: the header's stream duration
  (``VideoInfo.duration``); ``timeline_frame_count`` turns it into frames on the timeline;
* rotation metadata (the display matrix a phone writes, or an older ``rotate`` tag) is applied
  to every decoded frame the way ``ffmpeg`` does by default (90/180/270 degrees, with mirroring),
  and ``probe_video`` reports the displayed size. Other angles are refused.

Only the needed window is decoded: the reader seeks to the key frame before the first requested
time and stops at the first frame after the last one. Every failure raises ``VideoReadError``
naming the file.
"""
import logging
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "VideoReadError",
    "VideoInfo",
    "VideoFrame",
    "VideoScan",
    "TIMELINE_RATE",
    "probe_video",
    "timeline_frame_count",
    "iter_video_frames",
    "read_video_frames",
    "scan_video",
]

logger = logging.getLogger(__name__)

# The frame rate of AVA's timeline (frames extracted with ffmpeg -r 30), the readers' default.
TIMELINE_RATE = 30


class VideoReadError(RuntimeError):
    """A missing, unreadable, corrupt or truncated video or frame; the message names the file.

    Attributes:
        path: the file.
        reason: what is wrong with it (the message without the path), so that a caller can
            add context without parsing the message.
    """

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` reads from a container header (and its first frame).

    ``height``/``width`` are the displayed size (after rotation); ``num_frames`` is the header's
    count of native frames (declared, or estimated from duration x rate); ``duration`` is the
    stream's length in seconds, to the end of its last frame. Decoded frames are displayed
    rotated clockwise by ``rotation`` degrees (0, 90, 180, 270), then mirrored left-right if
    ``mirrored`` (the video's rotation metadata; the readers here apply it).
    """

    num_frames: int
    height: int
    width: int
    fps: Fraction
    duration: Fraction
    rotation: int = 0
    mirrored: bool = False


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: 0-based decode-order ``index``, ``time`` in seconds from the stream's
    start (from its presentation timestamp), ``image`` uint8 (H, W, 3) RGB, rotation applied."""

    index: int
    time: float
    image: np.ndarray


@dataclass(frozen=True)
class VideoScan:
    """What decoding a whole video found (``scan_video``): ``num_frames`` decoded, the time of the
    last one and the time up to which the video shows a frame (``end``, seconds)."""

    num_frames: int
    last_time: float
    end: float


def _open(path: str):
    import av  # imported here so that importing evad_d2.data stays cheap

    if not os.path.isfile(path):
        raise VideoReadError(path, "video file not found")
    try:
        container = av.open(path)
    except Exception as e:  # PyAV raises a family of av.error.* (InvalidDataError, EOFError, ...)
        raise VideoReadError(path, f"cannot open video (corrupt or not a video file): {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "no video stream in the file")
    return container


def _nominal_rate(path: str, stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoReadError(path, "the video stream declares no frame rate")
    return Fraction(rate)


def _start_time(stream) -> Fraction:
    """Stream start in seconds: frame times count from here."""
    return Fraction(stream.start_time) * stream.time_base if stream.start_time is not None else Fraction(0)


# ------------------------------------------------------------------------------ orientation
# An orientation is (k, mirror): rotate the decoded image k quarter turns counter-clockwise
# (np.rot90), then mirror it left-right if ``mirror``. These cover all eight EXIF orientations;
# a vertical flip V is a mirror after a half turn (V = M R180), so ffmpeg's transpose=clock_flip
# (V after a clockwise turn) is (1, True) and cclock_flip (V after a counter-clockwise turn) (3, True).
_Orientation = Tuple[int, bool]


def _display_matrix(frame) -> Optional[np.ndarray]:
    from av.sidedata.sidedata import SideDataContainer

    # A SideDataContainer of our own: ``frame.side_data`` caches one on the frame, a reference
    # cycle that keeps the decoded frame alive until the garbage collector runs. A data-loader
    # worker forked meanwhile then frees it in its own garbage collection and hangs there.
    for sd in SideDataContainer(frame):
        if "DISPLAYMATRIX" in str(sd.type):
            m = np.frombuffer(bytes(sd), dtype="<i4")
            return m if m.size == 9 else None
    return None


def _orientation_from_matrix(path: str, m: np.ndarray) -> _Orientation:
    """What ``ffmpeg`` does by default (autorotate) for a display matrix ``m`` (9 int32, 16.16).

    The clockwise angle is ``-av_display_rotation_get(m)``; at 90/270 degrees the sign of ``m[3]``
    tells a plain rotation from a rotation with mirroring, at 0/180 the signs of ``m[0]``/``m[4]``
    tell which axes are flipped.
    """
    a, b, c, d = (float(v) / 65536.0 for v in (m[0], m[1], m[3], m[4]))
    sx, sy = math.hypot(a, c), math.hypot(b, d)
    if sx == 0 or sy == 0:
        raise VideoReadError(path, f"degenerate display matrix {m.tolist()} in the rotation metadata")
    ccw = -math.degrees(math.atan2(b / sy, a / sx))  # av_display_rotation_get
    cw = -round(ccw)
    cw -= 360 * math.floor(cw / 360 + 0.9 / 360)
    if abs(cw - 90) < 1:
        return (3, True) if m[3] > 0 else (3, False)  # transpose=cclock_flip / clock
    if abs(cw - 180) < 1:
        hflip, vflip = m[0] < 0, m[4] < 0
        return {(True, True): (2, False), (True, False): (0, True), (False, True): (2, True)}.get((hflip, vflip), (0, False))
    if abs(cw - 270) < 1:
        return (1, True) if m[3] < 0 else (1, False)  # transpose=clock_flip / cclock
    if abs(cw) < 1 or abs(cw - 360) < 1:
        return (2, True) if m[4] < 0 else (0, False)  # vflip
    raise VideoReadError(
        path, f"rotation metadata of {cw:g} degrees is not a multiple of 90; re-encode the video upright "
        "(ffmpeg -i in.mp4 out.mp4 applies it)"
    )


def _orientation_from_tag(path: str, stream) -> _Orientation:
    """The older ``rotate`` stream tag (clockwise degrees), which some containers still carry."""
    tags = {k.lower(): v for k, v in stream.metadata.items()}
    if "rotate" not in tags:
        return (0, False)
    try:
        cw = float(tags["rotate"]) % 360
    except ValueError:
        raise VideoReadError(path, f"rotate tag {tags['rotate']!r} is not a number of degrees") from None
    for quarter in range(4):
        if abs(cw - 90 * quarter) < 1:
            return ((4 - quarter) % 4, False)
    raise VideoReadError(path, f"rotate tag of {cw:g} degrees is not a multiple of 90; re-encode the video upright")


def _frame_orientation(path: str, frame, tag: _Orientation) -> _Orientation:
    m = _display_matrix(frame)
    return _orientation_from_matrix(path, m) if m is not None else tag


def _to_image(frame, orientation: _Orientation) -> np.ndarray:
    img = frame.to_ndarray(format="rgb24")
    k, mirror = orientation
    if k:
        img = np.rot90(img, k)
    if mirror:
        img = img[:, ::-1]
    return np.ascontiguousarray(img) if (k or mirror) else img


def _clockwise(orientation: _Orientation) -> Tuple[int, bool]:
    return (360 - 90 * orientation[0]) % 360, orientation[1]


# ------------------------------------------------------------------------------ header
def probe_video(path: str) -> VideoInfo:
    """Frame count, displayed size, frame rate, duration and rotation of a video.

    Reads the container header and decodes the first frame (its rotation metadata). The count is
    the stream's declared number of frames, or duration x rate where the container does not store
    one; the duration is the stream's, else the container's, else count / rate.

    Raises:
        VideoReadError: missing file, unreadable container, no video stream, no frame count or
            size, no decodable first frame, unsupported rotation.
    """
    import av

    with _open(path) as container:
        stream = container.streams.video[0]
        rate = _nominal_rate(path, stream)
        n = stream.frames
        duration = None
        if stream.duration is not None:
            duration = Fraction(stream.duration) * stream.time_base
        elif container.duration is not None:
            # The container's span starts at its own start time; the stream's times count from the stream's.
            duration = Fraction(container.duration, 1_000_000) + Fraction(container.start_time or 0, 1_000_000) - _start_time(stream)
        if not n and duration is not None:
            n = int(round(duration * rate))
        if duration is None and n:
            duration = Fraction(n) / rate
        tag = _orientation_from_tag(path, stream)
        try:
            first = next(iter(container.decode(stream)), None)
        except (av.error.FFmpegError, ValueError) as e:
            raise VideoReadError(path, f"the first frame does not decode: {e}") from None
        if first is None:
            raise VideoReadError(path, "no frame decodes (empty, truncated or corrupt video)")
        orientation = _frame_orientation(path, first, tag)
        width, height = first.width, first.height
    if not n or not width or not height or not duration:
        raise VideoReadError(path, f"cannot determine frame count/size from the header (frames={n}, size={width}x{height})")
    if orientation[0] % 2:
        width, height = height, width
    rotation, mirrored = _clockwise(orientation)
    return VideoInfo(
        num_frames=int(n), height=int(height), width=int(width), fps=rate, duration=duration,
        rotation=rotation, mirrored=mirrored,
    )


def _timeline_rate(frame_rate: float) -> Fraction:
    return Fraction(frame_rate).limit_denominator(1001)


def timeline_frame_count(info: VideoInfo, frame_rate: float = TIMELINE_RATE) -> int:
    """Frames of the video on a ``frame_rate`` timeline: indices ``i`` with ``i / frame_rate`` before
    the end of the video (``info.duration``). 180 for 6 s at any native rate and 30 fps."""
    return max(1, math.ceil(info.duration * _timeline_rate(frame_rate)))


# ------------------------------------------------------------------------------ decoding
def _decode_timed(path: str, container, stream, seek_to: Optional[Fraction] = None):
    """Yield ``(time, duration, av frame)`` in presentation order, times in seconds from the
    stream start; ``duration`` is the frame's own (0 when unknown).

    A frame without a timestamp, or whose timestamp does not increase, is placed just after the
    previous one (times must increase); the first frame must have a timestamp.
    """
    import av

    start, tb = _start_time(stream), stream.time_base
    nominal = 1 / _nominal_rate(path, stream)
    prev = None
    count = 0
    try:
        if seek_to is not None:
            container.seek(int((start + seek_to) / tb), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                if prev is None:
                    raise VideoReadError(path, "decoded a frame without a timestamp")
                t = prev + nominal
            else:
                t = Fraction(frame.pts) * tb - start
                if prev is not None and t <= prev:
                    # Broken muxing: keep decode order and nudge the frame just after the previous one.
                    t = prev + Fraction(1, 1_000_000)
            prev = t
            yield t, (Fraction(frame.duration) * tb if frame.duration else Fraction(0)), frame
            count += 1
    except (av.error.FFmpegError, ValueError) as e:
        raise VideoReadError(path, f"decoding failed after {count} frames{'' if prev is None else f' ({float(prev):.3f} s)'}: {e}") from None


def _frame_end(t: Fraction, duration: Fraction, nominal: Fraction) -> Fraction:
    """The time up to which a frame is shown: its duration, or one nominal interval."""
    return t + (duration if duration > 0 else nominal)


# A header may overstate a video's length a little (rounding, a container duration that includes
# an audio track running on); times this close after the last frame's end take the last frame,
# as clips past the end do. Anything later is a truncated video.
_END_TOLERANCE = Fraction(1, 2)


def _shown_by(end: Fraction, s: Fraction) -> bool:
    """Whether a video whose frames end at ``end`` seconds shows a frame at time ``s``."""
    return s < end + _END_TOLERANCE


def iter_video_frames(path: str) -> Iterator[VideoFrame]:
    """Decode ``path`` from the start, frame by frame (nothing but the current frame is kept).

    Raises:
        VideoReadError: naming the file, on open or decoding errors or when no frame decodes.
    """
    container = _open(path)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tag = _orientation_from_tag(path, stream)
        index = 0
        for t, _, frame in _decode_timed(path, container, stream):
            yield VideoFrame(index, float(t), _to_image(frame, _frame_orientation(path, frame, tag)))
            index += 1
    if index == 0:
        raise VideoReadError(path, "no frame decodes (empty, truncated or corrupt video)")


def scan_video(path: str, *, frame_rate: float = TIMELINE_RATE, info: Optional[VideoInfo] = None) -> VideoScan:
    """Decode the whole video once (the data validator's full check; slow on long videos).

    Uses the training reader's decoding and its rules: the video is good when every index of its
    ``frame_rate`` timeline (``timeline_frame_count`` of the header) is shown by a decoded frame.
    ``info``: the video's :func:`probe_video`, when the caller has it (else it is probed here).

    Raises:
        VideoReadError: missing/corrupt file, a decoding error (with where it happened), no frame,
            unsupported rotation, or frames ending before the time the header promises (truncated).
    """
    info = probe_video(path) if info is None else info
    container = _open(path)
    n, last, end = 0, None, Fraction(0)
    with container:
        stream = container.streams.video[0]
        nominal = 1 / _nominal_rate(path, stream)
        for t, duration, _ in _decode_timed(path, container, stream):
            n, last, end = n + 1, t, _frame_end(t, duration, nominal)
    if n == 0:
        raise VideoReadError(path, "no frame decodes (empty, truncated or corrupt video)")
    rate = _timeline_rate(frame_rate)
    last_index = timeline_frame_count(info, frame_rate) - 1
    if not _shown_by(end, last_index / rate):
        raise VideoReadError(
            path, f"the header promises {float(info.duration):.3f} s ({last_index + 1} frames at {float(rate):g} fps) but "
            f"the {n} frames that decode end at {float(end):.3f} s (truncated or corrupt video)",
        )
    return VideoScan(num_frames=n, last_time=float(last), end=float(end))


def read_video_frames(path: str, indices: Sequence[int], *, frame_rate: float = TIMELINE_RATE) -> np.ndarray:
    """Decode the frames at ``indices`` (dataset timeline at ``frame_rate``) from a video file.

    Index ``i`` is the latest frame before ``(i + 1/2) / frame_rate`` seconds (see the module docstring).

    Args:
        path: video file.
        indices: 0-based indices, any order, repeats allowed (edge padding).
        frame_rate: rate of the dataset timeline.

    Returns:
        uint8 array (len(indices), H, W, 3), RGB, in the displayed orientation.

    Raises:
        VideoReadError: missing/corrupt file, decoding errors, or a requested time after the end
            of what actually decodes (truncated file).
    """
    if len(indices) == 0:
        raise ValueError("no frame indices requested")
    if min(indices) < 0:
        raise ValueError(f"negative frame index in {list(indices)}")
    rate = _timeline_rate(frame_rate)
    targets = sorted({Fraction(int(i)) / rate for i in indices})
    with _open(path) as container:
        stream = container.streams.video[0]
        nominal = 1 / _nominal_rate(path, stream)
        tag = _orientation_from_tag(path, stream)
        # Seek to the key frame before the first time; if the demuxer lands after it (some
        # containers index by decode time), retry from further back, finally from the start.
        attempts = [t for t in (targets[0], targets[0] - 2) if t > 0] + [None]
        for seek_to in attempts:
            chosen = _decode_window(path, container, stream, targets, 1 / (2 * rate), nominal, tag, seek_to)
            if chosen is not None:
                break
    images: Dict[Fraction, np.ndarray] = chosen
    shapes = {a.shape for a in images.values()}
    if len(shapes) != 1:
        raise VideoReadError(path, f"frames of different sizes in one clip: {sorted(shapes)}")
    return np.stack([images[Fraction(int(i)) / rate] for i in indices])


def _decode_window(path, container, stream, targets, half, nominal, tag, seek_to) -> Optional[Dict[Fraction, np.ndarray]]:
    """Images of the frames shown at each target time ``s``: the latest frame with time before
    ``s + half`` (the first frame for a time before it), decoding from the key frame before
    ``seek_to`` (None: the start) up to the first frame past the last target. None when the seek
    landed after the first target's frame (the caller seeks further back)."""
    chosen: Dict[Fraction, Fraction] = {}  # target -> time of its frame
    images: Dict[Fraction, np.ndarray] = {}
    prev = None  # (time, av frame) of the latest frame before the next target's cut-off
    j = 0
    last_end = None

    def take(s, t, frame):
        chosen[s] = t
        if t not in images:
            images[t] = _to_image(frame, _frame_orientation(path, frame, tag))

    for t, duration, frame in _decode_timed(path, container, stream, Fraction(0) if seek_to is None else seek_to):
        if prev is None and seek_to is not None and t >= targets[0] + half:
            return None
        last_end = _frame_end(t, duration, nominal)
        while j < len(targets) and t >= targets[j] + half:
            take(targets[j], *(prev if prev is not None else (t, frame)))
            j += 1
        if j == len(targets):
            break
        prev = (t, frame)
    if last_end is None:
        where = "the start" if seek_to is None else f"{float(seek_to):.3f} s"
        raise VideoReadError(path, f"no frames decode from {where} on (truncated or corrupt video)")
    if j < len(targets):
        late = [s for s in targets[j:] if not _shown_by(last_end, s)]
        if late:
            raise VideoReadError(
                path,
                f"frames at {', '.join(f'{float(s):.3f}' for s in late[:5])}{'...' if len(late) > 5 else ''} s do not "
                f"decode; the stream ends at {float(last_end):.3f} s (truncated or corrupt video)",
            )
        for target in targets[j:]:
            take(target, *prev)
    return {target: images[chosen[target]] for target in targets}
