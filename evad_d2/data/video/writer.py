"""Writing frames to a video that keeps each frame's presentation time, in the container its
name asks for: ``.mp4``/``.mkv``/``.mov`` (H.264, else MPEG-4 Part 2), ``.webm`` (VP9, else VP8),
``.ts`` (MPEG-TS, H.264), ``.gif`` (a real GIF89a, one adaptive palette per frame), or a URL
(``udp://``, ``tcp://``, ``srt://``, ``rtp://``: MPEG-TS; ``rtmp://``: FLV; ``rtsp://``: RTSP),
encoded for low latency so that another player can watch it live.
"""
import os
import re
import secrets
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

__all__ = ["Mp4Writer", "OutputFormat", "VideoWriteError", "VideoWriter", "output_format"]

# Output stream time base: 90 kHz, the MPEG clock, represents any input timing closely.
OUT_TIME_BASE = Fraction(1, 90000)
# GIF frame delays are in hundredths of a second.
GIF_TIME_BASE = Fraction(1, 100)


class VideoWriteError(OSError):
    """An output video that cannot be made: unknown extension, no encoder for it in this PyAV
    build, or a path/URL that does not open. The message names the output and the fix."""


@dataclass(frozen=True)
class OutputFormat:
    """How an output is written: FFmpeg muxer ``container``, encoders to try in order
    (``codecs``), the encoder's pixel format, the stream time base, and ``live`` (a network
    re-stream: encoded for low latency, a keyframe every second so that players can join)."""

    container: str
    codecs: Tuple[str, ...]
    pix_fmt: str = "yuv420p"
    time_base: Fraction = OUT_TIME_BASE
    live: bool = False


_H264 = ("libx264", "mpeg4")
FILE_FORMATS: Dict[str, OutputFormat] = {
    ".mp4": OutputFormat("mp4", _H264),
    ".m4v": OutputFormat("mp4", _H264),
    ".mov": OutputFormat("mov", _H264),
    ".mkv": OutputFormat("matroska", _H264),
    ".webm": OutputFormat("webm", ("libvpx-vp9", "libvpx"), time_base=Fraction(1, 1000)),
    ".ts": OutputFormat("mpegts", ("libx264", "mpeg2video")),
    ".gif": OutputFormat("gif", ("gif",), pix_fmt="pal8", time_base=GIF_TIME_BASE),
}
_TS_LIVE = OutputFormat("mpegts", ("libx264", "mpeg2video"), live=True)
URL_FORMATS: Dict[str, OutputFormat] = {
    "udp": _TS_LIVE,
    "tcp": _TS_LIVE,
    "srt": _TS_LIVE,
    "rtp": OutputFormat("rtp_mpegts", ("libx264", "mpeg2video"), live=True),
    "rtmp": OutputFormat("flv", ("libx264",), live=True),
    "rtsp": OutputFormat("rtsp", ("libx264",), live=True),
}
_URL = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)


def output_format(path: str) -> OutputFormat:
    """The :class:`OutputFormat` of an output name: by URL scheme, else by file extension.

    Raises:
        VideoWriteError: an unknown scheme or extension (the message lists the known ones).
    """
    m = _URL.match(path)
    if m:
        scheme = m.group(1).lower()
        if scheme not in URL_FORMATS:
            raise VideoWriteError(f"{path}: cannot re-stream to {scheme}:// (known: {', '.join(sorted(URL_FORMATS))})")
        return URL_FORMATS[scheme]
    ext = os.path.splitext(path)[1].lower()
    if ext not in FILE_FORMATS:
        raise VideoWriteError(
            f"{path}: unknown output extension {ext or '(none)'!r}; use one of {', '.join(sorted(FILE_FORMATS))} or a URL"
        )
    return FILE_FORMATS[ext]


def _pick_encoder(path: str, fmt: OutputFormat) -> str:
    import av

    for name in fmt.codecs:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # UnknownCodecError: not in this FFmpeg build
            continue
    raise VideoWriteError(
        f"{path}: this PyAV/FFmpeg build has no encoder for {fmt.container} (tried {', '.join(fmt.codecs)}); "
        "install a PyAV wheel built with it, or write .mp4"
    )


def _encoder_options(codec: str, crf: int, fps: Fraction, live: bool) -> Dict[str, str]:
    """Quality ``crf`` for x264/VPx (MPEG-4/MPEG-2: a fixed quantiser); low latency when ``live``."""
    gop = str(max(1, round(float(fps))))
    if codec == "libx264":
        opts = {"crf": str(crf)}
        if live:
            opts.update(preset="ultrafast", tune="zerolatency", g=gop)
        return opts
    if codec in ("libvpx-vp9", "libvpx"):
        return {"crf": str(min(max(crf, 4), 63)), "b": "0", "deadline": "realtime", "cpu-used": "8"}
    if codec in ("mpeg4", "mpeg2video"):
        return {"qscale": "3", "g": gop}
    return {}


class VideoWriter:
    """Video writer that keeps each frame's presentation time (variable frame rate safe), in the
    container and codec of :func:`output_format` (``path``'s extension or URL scheme).

    yuv420p needs even sizes: an odd width or height is padded by repeating the last column/row
    (GIFs keep the size). Frames of another size than the first are resized to it (streams may
    change resolution). A file is written under a hidden temporary name in its folder
    (``.NAME.<random>.tmp``, as ``evad_d2.utils.atomic_io``) and renamed over ``path`` by
    :meth:`close`, so that a reader never sees half a video.

    Args:
        path: output file or URL.
        width, height: frame size in pixels.
        fps: nominal rate written in the stream header (frame times are what :meth:`write` gets).
        crf: quality for x264 and VP8/9 (lower is better).
        fmt: the output format; None: from ``path``.

    Raises:
        VideoWriteError: naming ``path`` when its format is unknown, has no encoder in this build,
            or cannot be created/connected.
    """

    def __init__(self, path: str, width: int, height: int, fps: Fraction, crf: int = 20, fmt: Optional[OutputFormat] = None):
        import av  # imported here so that importing evad_d2.data stays cheap

        self.path = path
        self.format = fmt or output_format(path)
        self.codec = _pick_encoder(path, self.format)
        self.width, self.height = width, height
        even = self.format.pix_fmt.startswith("yuv")
        self.out_width, self.out_height = (width + width % 2, height + height % 2) if even else (width, height)
        folder = os.path.dirname(os.path.abspath(path))
        if not self.format.live and not os.path.isdir(folder):
            raise VideoWriteError(f"{path}: cannot create the output video: folder {folder} does not exist")
        self._target = None if self.format.live else path
        self._written = path if self.format.live else os.path.join(
            folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp"
        )
        try:
            self.container = av.open(self._written, "w", format=self.format.container)
        except Exception as e:  # PyAV/OS errors for a bad output path or URL
            raise VideoWriteError(f"{path}: cannot create the output video: {e}") from None
        fps = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.stream = self.container.add_stream(self.codec, rate=fps)
        self.stream.width, self.stream.height = self.out_width, self.out_height
        self.stream.pix_fmt = self.format.pix_fmt
        self.stream.time_base = self.format.time_base
        self.stream.codec_context.time_base = self.format.time_base
        self.stream.options = _encoder_options(self.codec, crf, fps, self.format.live)
        self._last_pts = -1
        self.num_frames = 0

    def _frame(self, image: np.ndarray):
        import av

        if self.format.pix_fmt == "pal8":
            quantized = Image.fromarray(image).quantize(256)  # median cut: an adaptive palette
            palette = np.zeros((256, 4), np.uint8)
            palette[:, 0] = 255  # ARGB, opaque
            rgb = np.asarray(quantized.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
            palette[: len(rgb), 1:] = rgb
            return av.VideoFrame.from_ndarray((np.ascontiguousarray(np.asarray(quantized)), palette), format="pal8")
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")

    def write(self, image: np.ndarray, time: float) -> None:
        """Encode ``image`` (uint8 (H, W, 3) RGB) shown from ``time`` seconds (times must increase;
        one that does not is placed one clock tick after the previous frame).

        Raises:
            VideoWriteError: a network output that fails (receiver gone, connection lost).
        """
        if image.shape[:2] != (self.height, self.width):
            image = np.asarray(Image.fromarray(image).resize((self.width, self.height), Image.BILINEAR))
        if (self.out_height, self.out_width) != image.shape[:2]:
            image = np.pad(
                image, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)), mode="edge"
            )
        frame = self._frame(image)
        pts = max(int(round(time / self.format.time_base)), self._last_pts + 1)
        frame.pts, frame.time_base = pts, self.format.time_base
        self._last_pts = pts
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except OSError as e:  # av's FFmpeg errors subclass OSError: network output failures
            raise VideoWriteError(f"{self.path}: writing the output failed: {e}") from None
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder, close the file and give it its name (or end the stream)."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()
        if self._target is not None and os.path.exists(self._written):
            os.replace(self._written, self._target)


class Mp4Writer(VideoWriter):
    """An H.264 mp4 whatever ``path``'s extension (:class:`VideoWriter` with the ``.mp4`` format).

    Args:
        path, width, height, fps, crf: as :class:`VideoWriter`.
    """

    def __init__(self, path: str, width: int, height: int, fps: Fraction, crf: int = 20):
        super().__init__(path, width, height, fps, crf, fmt=FILE_FORMATS[".mp4"])
