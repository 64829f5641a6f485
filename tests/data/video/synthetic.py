"""Tiny synthetic videos whose frames say which frame they are (shared by the video, mapper and demo tests)."""

from fractions import Fraction

import av
import numpy as np

W, H = 64, 48


def coded_frame(i, width=W, height=H):
    """Frame i carries its index in two grey patches (i // 16 and i % 16, 16 levels apart),
    robust to codec error up to +-7; a bar moves 3 px per frame so neighbours differ a lot."""
    img = np.full((height, width, 3), 40, np.uint8)
    img[:16, :16] = (i // 16) * 16 + 8
    img[:16, 16:32] = (i % 16) * 16 + 8
    x = (3 * i) % (width - 4)
    img[20:, x:x + 4] = (230, 230, 230)
    return img


def decode_index(frame):
    hi = int(round((frame[4:12, 4:12].mean() - 8) / 16))
    lo = int(round((frame[4:12, 20:28].mean() - 8) / 16))
    return hi * 16 + lo


def write_video(path, frames, rate=30, faststart=False, gop=10, *, times_ms=None, rotation=None, hflip=False,
                vflip=False, container_format="mp4", tags=None):
    """Encode ``frames`` (H.264). ``times_ms``: presentation times in ms (a variable frame rate);
    ``rotation`` (degrees counter-clockwise) / ``hflip`` / ``vflip``: a display matrix as phones
    write it (PyAV's ``set_display_rotation``); ``tags``: stream metadata (e.g. an old ``rotate`` tag)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        # Near-lossless (crf 4) so that decoded frames are within a few levels of the source.
        s.options = {"crf": "4", "g": str(gop), "bf": "0", "threads": "1"}
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


# Presentation times (ms) of a variable-frame-rate video: irregular steps, a burst, a 0.5 s gap,
# then 10 fps to 3 s. Its header's average rate (about 11.3 fps) matches none of them.
VFR_MS = [0, 30, 50, 120, 135, 300, 310, 320, 400, 433, 466, 500, 1000, 1033] + list(range(1100, 3001, 100))
