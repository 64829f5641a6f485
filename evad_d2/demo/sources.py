"""Where the demo's frames come from: a video file, a frame folder, a camera device or a network
stream, behind one interface (:class:`FrameSource`), and a folder of videos expanded into one
input per video (:func:`expand_inputs`).

A source yields :class:`SourceFrame` ``(image, pts, captured)``: the frame (uint8 (H, W, 3) RGB),
its presentation time in seconds from the first frame, and the wall-clock time
(``time.time()``) it was decoded. Devices (``/dev/video*``, FFmpeg's v4l2 input) and streams
(``rtsp://``, ``rtmp://``, ``udp://``, ``tcp://``, ``http(s)://``, HLS ``.m3u8``, ``srt://``) are
opened by PyAV with a timeout: one that does not open raises :class:`SourceError` naming it and
FFmpeg's reason; one that sends no frame for ``stall_timeout`` seconds, or ends, stops the
iteration (:attr:`FrameSource.end_reason`) so that the caller finalises its outputs.
"""
import logging
import math
import os
import re
import threading
import time
from fractions import Fraction
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
from PIL import Image

from ..data.video import VideoFrame, VideoReadError, iter_video_frames, probe_video

__all__ = [
    "FrameSource",
    "IMAGE_EXTENSIONS",
    "SourceError",
    "SourceFrame",
    "STREAM_SCHEMES",
    "VIDEO_EXTENSIONS",
    "expand_inputs",
    "input_kind",
    "is_live_spec",
    "open_source",
]

logger = logging.getLogger("evad_d2.demo")

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".gif")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "http", "https", "srt", "rtp", "hls")
# Streams and devices whose header gives no usable frame rate are timed at this nominal rate.
FALLBACK_STREAM_FPS = Fraction(25)
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


class SourceError(VideoReadError):
    """An input that cannot be opened or read: ``path`` is the input as given (file, folder,
    device or URL), ``reason`` what is wrong (for streams and devices, FFmpeg's message)."""


class SourceFrame(NamedTuple):
    """One frame of a :class:`FrameSource`."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    pts: float  # presentation time, seconds from the source's first frame
    captured: float  # wall-clock time.time() when the frame was decoded


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _files(folder: str, extensions) -> List[str]:
    return sorted((n for n in os.listdir(folder) if n.lower().endswith(extensions)), key=_natural_key)


def input_kind(spec: str) -> str:
    """What an input names: ``"stream"`` (a URL, or a local ``.m3u8`` playlist), ``"device"``
    (``/dev/video*``), ``"videos"`` (a folder of video files), ``"frames"`` (a folder of images)
    or ``"file"`` (anything else: a video file).

    Raises:
        SourceError: a folder with neither videos nor images, or with both.
    """
    m = _URL.match(spec)
    if (m and m.group(1).lower() != "file") or spec.lower().endswith(".m3u8"):
        return "stream"
    if spec.startswith("/dev/video"):
        return "device"
    if os.path.isdir(spec):
        videos, images = _files(spec, VIDEO_EXTENSIONS), _files(spec, IMAGE_EXTENSIONS)
        if videos and images:
            raise SourceError(spec, f"folder holds both videos ({len(videos)}) and images ({len(images)}): "
                                    "pass a folder of videos or a folder of one video's frames")
        if not videos and not images:
            raise SourceError(spec, f"folder has no videos ({', '.join(VIDEO_EXTENSIONS)}) and no frames "
                                    f"({', '.join(IMAGE_EXTENSIONS)})")
        return "videos" if videos else "frames"
    return "file"


def is_live_spec(spec: str) -> bool:
    """Whether an input is live (a device or a stream): the live mode's default."""
    return input_kind(spec) in ("stream", "device")


def expand_inputs(spec: str) -> List[str]:
    """The inputs ``spec`` stands for: each video of a folder of videos (sorted by name), else
    ``[spec]`` itself."""
    if input_kind(spec) == "videos":
        return [os.path.join(spec, n) for n in _files(spec, VIDEO_EXTENSIONS)]
    return [spec]


def _stream_name(spec: str) -> str:
    body = _URL.sub(lambda m: m.group(1) + "_", spec) if _URL.match(spec) else os.path.basename(spec)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", body.split("?")[0]).strip("_.") or "stream"


class FrameSource:
    """Frames of one input, in presentation order; iterate once.

    Attributes:
        spec: the input as given; name: a file-name-safe name (file stem, folder name, ``video0``,
            ``udp_127.0.0.1_5000``); frame_rate: nominal rate (Fraction); live: a device or
            stream; num_frames: frames yielded so far; expected_frames: the header's frame count
            (0: unknown); end_reason: None while running, then ``"end"``, ``"stalled"``,
            ``"closed"`` or ``"error: <message>"`` (a stream read error after the start).
    """

    def __init__(self, spec: str, name: str, frame_rate: Fraction, live: bool, expected_frames: int = 0):
        self.spec, self.name, self.frame_rate, self.live = spec, name, Fraction(frame_rate), live
        self.expected_frames = expected_frames
        self.num_frames = 0
        self.end_reason: Optional[str] = None
        self._stop = threading.Event()
        self._started = False

    def _decode(self) -> Iterator[Tuple[np.ndarray, Optional[float]]]:
        """(image, pts seconds or None) in order; sets ``end_reason`` when it stops early."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the decoder (called once, by the iterating thread)."""

    def __iter__(self) -> Iterator[SourceFrame]:
        if self._started:
            raise RuntimeError(f"{self.spec}: a frame source is iterated once")
        self._started = True
        first = last = None
        step = 1.0 / float(self.frame_rate)
        try:
            for image, pts in self._decode():
                if self._stop.is_set():
                    self.end_reason = "closed"
                    return
                if pts is None or not math.isfinite(pts):  # no timestamp (e.g. a flushed frame)
                    t = last + step if last is not None else 0.0
                else:
                    first = pts if first is None else first
                    t = pts - first
                if last is not None and t <= last:  # a timestamp jump back (wrap, camera reset)
                    t = last + step
                t = round(t, 6)
                last = t
                self.num_frames += 1
                yield SourceFrame(image, t, time.time())
            if self.end_reason is None:
                self.end_reason = "closed" if self._stop.is_set() else "end"
        finally:
            self._release()

    def video_frames(self) -> Iterator[VideoFrame]:
        """The frames as :class:`~evad_d2.data.video.VideoFrame` (index, time = pts, image)."""
        for i, f in enumerate(self):
            yield VideoFrame(i, f.pts, f.image)

    def close(self) -> None:
        """Stop: the iteration ends before its next frame (from another thread: at the latest
        ``stall_timeout`` later for a stream that sends nothing). Idempotent."""
        self._stop.set()
        if not self._started:
            self._started = True
            self.end_reason = self.end_reason or "closed"
            self._release()


class _VideoFileSource(FrameSource):
    def __init__(self, path: str, fps: Optional[float]):
        if not os.path.isfile(path):
            raise SourceError(path, "input video not found")
        info = probe_video(path)
        rate = Fraction(fps).limit_denominator(1001) if fps else info.fps.limit_denominator(1001)
        super().__init__(path, os.path.splitext(os.path.basename(path))[0], rate, False, info.num_frames)
        self._frames = iter_video_frames(path)

    def _decode(self):
        for f in self._frames:
            yield f.image, f.time

    def _release(self):
        self._frames.close()


class _FrameFolderSource(FrameSource):
    def __init__(self, folder: str, fps: Optional[float]):
        if not fps or fps <= 0:
            raise SourceError(folder, "a frame folder has no frame rate: pass --fps (e.g. --fps 30)")
        self._paths = [os.path.join(folder, n) for n in _files(folder, IMAGE_EXTENSIONS)]
        name = os.path.basename(os.path.normpath(folder))
        super().__init__(folder, name, Fraction(fps).limit_denominator(1001), False, len(self._paths))

    def _decode(self):
        size = None
        for i, path in enumerate(self._paths):
            try:
                with Image.open(path) as img:
                    image = np.asarray(img.convert("RGB"))
            except OSError as e:  # PIL: UnidentifiedImageError, truncated data
                raise SourceError(path, f"cannot read frame image: {e}") from None
            if size is not None and image.shape != size:
                raise SourceError(path, f"frame size {image.shape[1]}x{image.shape[0]} differs from the first "
                                        f"frame's {size[1]}x{size[0]} (one video's frames have one size)")
            size = image.shape
            yield image, i / float(self.frame_rate)


def _ffmpeg_reason(e: Exception, open_timeout: float) -> str:
    import av

    if isinstance(e, av.error.ExitError):  # PyAV's timeout interrupted FFmpeg
        return f"no data within {open_timeout:g} s (FFmpeg: {e.strerror})"
    return f"cannot open: {getattr(e, 'strerror', None) or e}"


def _stream_options(spec: str, kind: str, options: Optional[Dict[str, str]]) -> Dict[str, str]:
    """FFmpeg input options: low probing delay; UDP overruns not fatal; RTSP over TCP (no
    packet loss); then the user's ``options`` (they win)."""
    scheme = (_URL.match(spec).group(1).lower() if _URL.match(spec) else "")
    opts = {"analyzeduration": "1000000", "probesize": "1000000"} if kind == "stream" else {}
    if scheme == "udp":
        opts["overrun_nonfatal"] = "1"
    if scheme in ("rtsp", "rtsps"):
        opts["rtsp_transport"] = "tcp"
    opts.update({str(k): str(v) for k, v in (options or {}).items()})
    return opts


class _StreamSource(FrameSource):
    def __init__(self, spec: str, kind: str, fps: Optional[float], open_timeout: float, stall_timeout: float,
                 options: Optional[Dict[str, str]]):
        import av

        if kind == "device" and not os.path.exists(spec):
            raise SourceError(spec, "camera device not found (no such file; see `ls /dev/video*`)")
        try:
            self._container = av.open(
                spec, format="v4l2" if kind == "device" else None, options=_stream_options(spec, kind, options),
                timeout=(open_timeout, stall_timeout),
            )
        except av.FFmpegError as e:
            raise SourceError(spec, _ffmpeg_reason(e, open_timeout)) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(spec, "no video stream in it")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        if fps:
            rate = Fraction(fps).limit_denominator(1001)
        elif not rate or not 0 < rate <= 240:
            logger.warning(f"{spec}: no usable frame rate in the stream ({rate}); timing it at "
                           f"{FALLBACK_STREAM_FPS} fps (set --fps)")
            rate = FALLBACK_STREAM_FPS
        name = os.path.basename(spec) if kind == "device" else _stream_name(spec)
        super().__init__(spec, name, Fraction(rate).limit_denominator(1001), True)
        self.stall_timeout = stall_timeout

    def _decode(self):
        import av

        last_frame = time.monotonic()
        try:
            for packet in self._container.demux(self._stream):
                if self._stop.is_set():
                    return
                for frame in packet.decode():
                    last_frame = time.monotonic()
                    yield frame.to_ndarray(format="rgb24"), (None if frame.time is None else float(frame.time))
                if time.monotonic() - last_frame > self.stall_timeout:  # packets, but no picture
                    raise av.error.ExitError(-1, "no picture decoded")
        except av.error.ExitError:
            self.end_reason = "closed" if self._stop.is_set() else "stalled"
            if self.end_reason == "stalled":
                logger.warning(f"{self.spec}: no frame for {self.stall_timeout:g} s: the stream stalled; "
                               "finalising the outputs")
        except av.FFmpegError as e:
            self.end_reason = f"error: {getattr(e, 'strerror', None) or e}"
            logger.warning(f"{self.spec}: read error ({self.end_reason[7:]}); finalising the outputs")
        if self._stop.is_set():
            return
        try:  # the frames the decoder still holds (a stalled stream's last ones too)
            for frame in self._stream.decode(None):
                yield frame.to_ndarray(format="rgb24"), (None if frame.time is None else float(frame.time))
        except av.FFmpegError:
            pass

    def _release(self):
        self._container.close()


def open_source(
    spec: str,
    *,
    fps: Optional[float] = None,
    open_timeout: float = 10.0,
    stall_timeout: float = 5.0,
    options: Optional[Dict[str, str]] = None,
) -> FrameSource:
    """Open one input (see :func:`input_kind`; a folder of videos is :func:`expand_inputs`'s).

    Args:
        spec: a video file, a frame folder (images sorted by name, numbers compared as numbers),
            ``/dev/videoN`` or a stream URL.
        fps: nominal frame rate: required for a frame folder; for the others it replaces the
            header's (streams without one are timed at 25 fps).
        open_timeout: seconds a device or stream may take to open and send its first data.
        stall_timeout: seconds without a frame after which a device or stream counts as stalled.
        options: FFmpeg input options for devices and streams (e.g. ``{"video_size": "640x480",
            "input_format": "mjpeg"}`` for v4l2, ``{"rtsp_transport": "udp"}``).

    Raises:
        SourceError: naming ``spec``: missing, unreadable, a folder of videos, or (devices and
            streams) does not open within ``open_timeout`` (FFmpeg's reason).
    """
    kind = input_kind(spec)
    if kind == "videos":
        raise SourceError(spec, "a folder of videos is several inputs: open each of expand_inputs(spec)")
    if kind in ("stream", "device"):
        return _StreamSource(spec, kind, fps, open_timeout, stall_timeout, options)
    if kind == "frames":
        return _FrameFolderSource(spec, fps)
    return _VideoFileSource(spec, fps)
