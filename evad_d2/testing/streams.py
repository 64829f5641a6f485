"""Loopback test streams: an MPEG-TS sender over UDP (or TCP) on 127.0.0.1 (a thread, PyAV), an HLS
playlist served over HTTP on 127.0.0.1; frames from :func:`~evad_d2.testing.videos.coded_frame`
(see :mod:`evad_d2.testing`)."""
import contextlib
import functools
import http.server
import socket
import threading
import time
from fractions import Fraction

import av

from .videos import coded_frame


def _coded_stream(out, fps: int, gop: int):
    """An MPEG-2 video stream of ``out`` sized for :func:`coded_frame`, a keyframe every ``gop`` frames."""
    stream = out.add_stream("mpeg2video", rate=fps)
    stream.height, stream.width = coded_frame(0).shape[:2]
    stream.pix_fmt = "yuv420p"
    stream.options = {"g": str(gop), "qscale": "2", "bf": "0"}
    return stream


def _mux_frame(out, stream, i: int, fps: int) -> None:
    """Encode and mux ``coded_frame(i % 256)`` at pts ``i / fps``."""
    frame = av.VideoFrame.from_ndarray(coded_frame(i % 256), format="rgb24")
    frame.pts, frame.time_base = i, Fraction(1, fps)
    for packet in stream.encode(frame):
        out.mux(packet)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody listens on (free when asked)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UdpSender(threading.Thread):
    """Sends ``num_frames`` coded frames (``coded_frame(i % 256)``, pts ``i / fps``) as MPEG-TS to
    ``udp://127.0.0.1:port`` in real time, after ``delay`` seconds; then keeps the socket open
    without sending for ``hold`` seconds (a stalled stream) and closes it. With ``until`` (a
    callable), frames are sent until it returns True (at most ``max_wait`` seconds), then
    ``num_frames`` more (for a reader that starts at an unknown time). ``scheme="tcp"``: the same
    over TCP to a reader listening on ``url``; closing it ends the stream."""

    def __init__(self, port: int, num_frames: int, fps: int = 10, *, delay: float = 0.3, hold: float = 0.0,
                 until=None, max_wait: float = 60.0, scheme: str = "udp"):
        super().__init__(daemon=True)
        # TCP: the reader listens and the sender connects (retrying until it can; PyAV holds the
        # GIL while an output waits for a connection, so the sender must not be the one listening).
        self.url = f"{scheme}://127.0.0.1:{port}" + ("?listen=1" if scheme == "tcp" else "")  # what a reader opens
        self.target = f"{scheme}://127.0.0.1:{port}" + ("" if scheme == "tcp" else "?pkt_size=1316")
        self.num_frames, self.fps, self.delay, self.hold = num_frames, fps, delay, hold
        self.until, self.max_wait = until, max_wait
        self.sent = 0
        self.error = None

    def _connect(self):
        for _ in range(100):
            try:
                return av.open(self.target, "w", format="mpegts")
            except av.FFmpegError:  # TCP: the reader is not listening yet
                time.sleep(0.05)
        return av.open(self.target, "w", format="mpegts")

    def run(self):
        try:
            time.sleep(self.delay)
            with self._connect() as out:
                stream = _coded_stream(out, self.fps, gop=5)
                start = time.monotonic()
                i, stop = 0, None
                while stop is None or i < stop:
                    if stop is None and (self.until is None or self.until() or time.monotonic() - start > self.max_wait):
                        stop = i + self.num_frames
                    _mux_frame(out, stream, i, self.fps)
                    self.sent += 1
                    time.sleep(max(0.0, start + (i + 1) / self.fps - time.monotonic()))
                    i += 1
                for packet in stream.encode():
                    out.mux(packet)
                time.sleep(self.hold)
        except Exception as e:  # reported by the test
            self.error = e


def write_hls(folder, num_frames: int, fps: int = 10) -> str:
    """An HLS playlist ``folder/live.m3u8`` (1 s MPEG-TS segments, ended) of coded frames; its path."""
    path = str(folder / "live.m3u8")
    with av.open(path, "w", format="hls", options={"hls_time": "1", "hls_list_size": "0"}) as out:
        stream = _coded_stream(out, fps, gop=fps)
        for i in range(num_frames):
            _mux_frame(out, stream, i, fps)
        for packet in stream.encode():
            out.mux(packet)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_folder(folder):
    """``http://127.0.0.1:PORT`` serving ``folder`` from a thread while the block runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
