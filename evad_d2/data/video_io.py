"""Reading the frames of one clip, from a video file (PyAV) or from a folder of images.

Frames are addressed by their 0-based index on the dataset's frame timeline (30 fps for AVA,
the native frame numbers minus one for UCF101-24/JHMDB). For AVA this is the timeline of the
extracted-frame layout: index ``i`` is file ``<vid>_{i+1:06d}.jpg`` and the keyframe of
timestamp ``t`` is index ``(t - 900) * 30`` (``keyframe_frame_index``). Videos are read on the
same timeline: index ``i`` is the video frame shown at ``i / frame_rate`` seconds from the start
(the nearest one, as ``ffmpeg -r 30`` picks when extracting frames), so both sources give the
same frames. Only the needed window is decoded: the reader seeks to the key frame before the
first requested index and stops after the last.

Every failure raises ``VideoReadError`` naming the file.
"""
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import List, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "VideoReadError",
    "VideoInfo",
    "keyframe_frame_index",
    "clip_frame_indices",
    "probe_video",
    "read_video_frames",
    "read_frame_folder",
    "count_frames_in_folder",
    "count_decodable_frames",
]

logger = logging.getLogger(__name__)


class VideoReadError(RuntimeError):
    """A missing, unreadable, corrupt or truncated video or frame; the message names the file."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` reads from a container header (no decoding)."""

    num_frames: int
    height: int
    width: int
    fps: Fraction


def keyframe_frame_index(timestamp: float, *, frame_rate: float = 30, start_sec: float = 900) -> int:
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


def _stream_geometry(path, stream):
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoReadError(path, "the video stream declares no frame rate")
    return Fraction(rate), stream.time_base, (stream.start_time or 0)


def probe_video(path: str) -> VideoInfo:
    """Frame count, size and frame rate from the container header.

    The count is the stream's declared number of frames, or duration x rate where the container
    does not store one.

    Raises:
        VideoReadError: missing file, unreadable container, no video stream, no frame count.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        rate, time_base, _ = _stream_geometry(path, stream)
        n = stream.frames
        if not n:
            if stream.duration is not None:
                n = int(round(stream.duration * time_base * rate))
            elif container.duration is not None:
                n = int(round(Fraction(container.duration, 1_000_000) * rate))
        width, height = stream.codec_context.width, stream.codec_context.height
    if not n or not width or not height:
        raise VideoReadError(path, f"cannot determine frame count/size from the header (frames={n}, size={width}x{height})")
    return VideoInfo(num_frames=int(n), height=int(height), width=int(width), fps=rate)


def read_video_frames(path: str, indices: Sequence[int], *, frame_rate: float = 30) -> np.ndarray:
    """Decode the frames at ``indices`` (dataset timeline at ``frame_rate``) from a video file.

    Args:
        path: video file.
        indices: 0-based indices, any order, repeats allowed (edge padding).
        frame_rate: rate of the dataset timeline; a video of another rate is sampled at the
            nearest frame in time.

    Returns:
        uint8 array (len(indices), H, W, 3), RGB.

    Raises:
        VideoReadError: missing/corrupt file, decoding errors, or a requested frame past the
            frames that actually decode (truncated file).
    """
    import av

    if len(indices) == 0:
        raise ValueError("no frame indices requested")
    if min(indices) < 0:
        raise ValueError(f"negative frame index in {list(indices)}")
    with _open(path) as container:
        stream = container.streams.video[0]
        rate, time_base, start = _stream_geometry(path, stream)
        scale = rate / Fraction(frame_rate).limit_denominator(1001)
        # Timeline index -> native frame number of the video.
        native = [int(round(i * scale)) for i in indices]
        wanted = set(native)
        first, last = min(native), max(native)
        got = {}
        last_seen = -1
        try:
            container.seek(int(start + first / rate / time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise VideoReadError(path, "decoded a frame without a timestamp")
                idx = int(round((frame.pts - start) * time_base * rate))
                last_seen = idx
                if idx in wanted:
                    got[idx] = frame.to_ndarray(format="rgb24")
                if idx >= last:
                    break
        except VideoReadError:
            raise
        except (av.error.FFmpegError, ValueError) as e:
            raise VideoReadError(path, f"decoding failed near frame {last_seen + 1}: {e}") from None
    missing = sorted(wanted - got.keys())
    if missing:
        if last_seen < 0:
            raise VideoReadError(path, f"no frames decode from native frame {first} on (truncated or corrupt video)")
        raise VideoReadError(
            path,
            f"frames {missing[:5]}{'...' if len(missing) > 5 else ''} do not decode; the stream ends at or "
            f"skips past frame {last_seen} (truncated or corrupt video)",
        )
    shapes = {a.shape for a in got.values()}
    if len(shapes) != 1:
        raise VideoReadError(path, f"frames of different sizes in one clip: {sorted(shapes)}")
    return np.stack([got[i] for i in native])


def read_frame_folder(frame_dir: str, pattern: str, indices: Sequence[int]) -> np.ndarray:
    """Read frames ``pattern.format(i + 1)`` (1-based file numbers) from ``frame_dir``.

    Args:
        frame_dir: folder of one video's frames.
        pattern: file name with one ``{}`` field for the 1-based frame number, e.g.
            ``"<vid>_{:06d}.jpg"`` (AVA) or ``"{:05d}.jpg"`` (UCF101-24).
        indices: 0-based frame indices; repeats are read once.

    Returns:
        uint8 array (len(indices), H, W, 3), RGB.

    Raises:
        VideoReadError: a missing or unreadable image (naming it), or frames of different sizes.
    """
    cache = {}
    for i in indices:
        if i in cache:
            continue
        path = os.path.join(frame_dir, pattern.format(i + 1))
        try:
            with Image.open(path) as img:
                cache[i] = np.asarray(img.convert("RGB"))
        except FileNotFoundError:
            raise VideoReadError(path, f"frame {i + 1} not found") from None
        except OSError as e:  # PIL raises OSError (UnidentifiedImageError, truncated data)
            raise VideoReadError(path, f"cannot read frame image: {e}") from None
    shapes = {a.shape for a in cache.values()}
    if len(shapes) != 1:
        raise VideoReadError(frame_dir, f"frames of different sizes in one clip: {sorted(shapes)}")
    return np.stack([cache[i] for i in indices])


def count_frames_in_folder(frame_dir: str, pattern: str) -> int:
    """Number of consecutive frames ``pattern.format(1), pattern.format(2), ...`` in ``frame_dir``.

    Raises:
        VideoReadError: the folder is missing, empty, or has gaps in the numbering.
    """
    try:
        names = set(os.listdir(frame_dir))
    except FileNotFoundError:
        raise VideoReadError(frame_dir, "frame folder not found") from None
    n = 0
    while pattern.format(n + 1) in names:
        n += 1
    if n == 0:
        raise VideoReadError(frame_dir, f"no frames named like {pattern.format(1)!r}")
    stray = [name for name in names if name.endswith(os.path.splitext(pattern)[1])]
    if len(stray) != n:
        raise VideoReadError(
            os.path.join(frame_dir, pattern.format(n + 1)),
            f"frame {n + 1} is missing but the folder has {len(stray)} frames (gap in the numbering)",
        )
    return n


def count_decodable_frames(path: str) -> int:
    """Decode the whole video and count its frames (for validation; slow on long videos).

    Raises:
        VideoReadError: missing/corrupt file or a decoding error (with the frame it happened at).
    """
    import av

    n = 0
    with _open(path) as container:
        try:
            for _ in container.decode(container.streams.video[0]):
                n += 1
        except (av.error.FFmpegError, ValueError) as e:
            raise VideoReadError(path, f"decoding failed after {n} frames: {e}") from None
    return n
