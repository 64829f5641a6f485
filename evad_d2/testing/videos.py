"""Synthetic videos: frames that carry their index, an H.264 writer with the options the tests need,
a decoder (see :mod:`evad_d2.testing`)."""
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import av
import numpy as np

CODED_W, CODED_H = 64, 48  # default size of coded_frame

# Presentation times (ms) of a variable-frame-rate video: irregular steps, a burst, a 0.5 s gap,
# then 10 fps to 3 s. Its header's average rate (about 11.3 fps) matches none of them.
VFR_MS = [0, 30, 50, 120, 135, 300, 310, 320, 400, 433, 466, 500, 1000, 1033] + list(range(1100, 3001, 100))


def coded_frame(i: int, width: int = CODED_W, height: int = CODED_H) -> np.ndarray:
    """(height, width, 3) uint8 frame carrying its index ``i`` in two grey patches (i // 16 and
    i % 16, 16 levels apart), robust to codec error up to +-7; a bar moves 3 px per frame so that
    neighbours differ a lot. :func:`decode_index` reads the index back."""
    img = np.full((height, width, 3), 40, np.uint8)
    img[:16, :16] = (i // 16) * 16 + 8
    img[:16, 16:32] = (i % 16) * 16 + 8
    x = (3 * i) % (width - 4)
    img[20:, x:x + 4] = (230, 230, 230)
    return img


def decode_index(frame: np.ndarray) -> int:
    """The index a (decoded) :func:`coded_frame` carries."""
    hi = int(round((frame[4:12, 4:12].mean() - 8) / 16))
    lo = int(round((frame[4:12, 20:28].mean() - 8) / 16))
    return hi * 16 + lo


def write_video(path, frames: Sequence[np.ndarray], rate=30, *, times_ms: Optional[Sequence[int]] = None,
                crf: int = 4, gop: int = 10, pix_fmt: str = "yuv420p", faststart: bool = False,
                rotation: Optional[float] = None, hflip: bool = False, vflip: bool = False,
                container_format: str = "mp4", tags: Optional[Dict[str, str]] = None) -> None:
    """Encode ``frames`` ((H, W, 3) uint8 RGB) with H.264 at ``rate`` fps, near-lossless (``crf`` 4:
    decoded frames are within a few levels of the source), no B-frames, a keyframe every ``gop``.

    times_ms: presentation times in ms (a variable frame rate); rotation (degrees counter-clockwise)
    / hflip / vflip: a display matrix as phones write it (PyAV's ``set_display_rotation``); tags:
    stream metadata (e.g. an old ``rotate`` tag); faststart: the index before the data.
    """
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        s.options = {"crf": str(crf), "g": str(gop), "bf": "0", "threads": "1"}
        if times_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None or hflip or vflip:
            s.set_display_rotation(rotation or 0, hflip=hflip, vflip=vflip)
        s.metadata.update(tags or {})
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def decode_video(path) -> List[Tuple[float, np.ndarray]]:
    """Every frame of ``path`` as ``(time in seconds, (H, W, 3) uint8 RGB)``, in decoding order."""
    with av.open(str(path)) as c:
        return [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
