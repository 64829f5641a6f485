"""Loopback test streams: an MPEG-TS sender over UDP on 127.0.0.1 (a thread, PyAV), coded frames."""
import socket
import threading
import time
from fractions import Fraction

import av

from evad_d2.testing import coded_frame


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
    ``num_frames`` more (for a reader that starts at an unknown time)."""

    def __init__(self, port: int, num_frames: int, fps: int = 10, *, delay: float = 0.3, hold: float = 0.0,
                 until=None, max_wait: float = 60.0):
        super().__init__(daemon=True)
        self.url = f"udp://127.0.0.1:{port}"
        self.num_frames, self.fps, self.delay, self.hold = num_frames, fps, delay, hold
        self.until, self.max_wait = until, max_wait
        self.sent = 0
        self.error = None

    def run(self):
        try:
            time.sleep(self.delay)
            with av.open(self.url + "?pkt_size=1316", "w", format="mpegts") as out:
                stream = out.add_stream("mpeg2video", rate=self.fps)
                frame0 = coded_frame(0)
                stream.height, stream.width = frame0.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"g": "5", "qscale": "2", "bf": "0"}
                start = time.monotonic()
                i, stop = 0, None
                while stop is None or i < stop:
                    if stop is None and (self.until is None or self.until() or time.monotonic() - start > self.max_wait):
                        stop = i + self.num_frames
                    frame = av.VideoFrame.from_ndarray(coded_frame(i % 256), format="rgb24")
                    frame.pts, frame.time_base = i, Fraction(1, self.fps)
                    for packet in stream.encode(frame):
                        out.mux(packet)
                    self.sent += 1
                    time.sleep(max(0.0, start + (i + 1) / self.fps - time.monotonic()))
                    i += 1
                for packet in stream.encode():
                    out.mux(packet)
                time.sleep(self.hold)
        except Exception as e:  # reported by the test
            self.error = e
