"""Writing frames to an H.264 mp4 that keeps each frame's presentation time."""
from fractions import Fraction

import numpy as np
from PIL import Image

__all__ = ["Mp4Writer"]

# Output stream time base: 90 kHz, the MPEG clock, represents any input timing closely.
OUT_TIME_BASE = Fraction(1, 90000)


class Mp4Writer:
    """H.264 mp4 writer that keeps each frame's presentation time (variable frame rate safe).

    yuv420p needs even sizes: an odd width or height is padded by repeating the last column/row.
    Frames of another size than the first are resized to it (streams may change resolution).

    Args:
        path: output file.
        width, height: frame size in pixels.
        fps: nominal rate written in the stream header (frame times are what :meth:`write` gets).
        crf: x264 quality (lower is better).

    Raises:
        OSError: naming ``path`` when it cannot be created.
    """

    def __init__(self, path: str, width: int, height: int, fps: Fraction, crf: int = 20):
        import av  # imported here so that importing evad_d2.data stays cheap

        self.width, self.height = width, height
        self.out_width, self.out_height = width + width % 2, height + height % 2
        try:
            self.container = av.open(path, "w", format="mp4")
        except Exception as e:  # PyAV/OS errors for a bad output path
            raise OSError(f"{path}: cannot create the output video: {e}") from None
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height = self.out_width, self.out_height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = OUT_TIME_BASE
        self.stream.codec_context.time_base = OUT_TIME_BASE
        self.stream.options = {"crf": str(crf)}
        self._last_pts = -1
        self.num_frames = 0

    def write(self, image: np.ndarray, time: float) -> None:
        """Encode ``image`` (uint8 (H, W, 3) RGB) shown from ``time`` seconds (times must increase;
        one that does not is placed one clock tick after the previous frame)."""
        import av

        if image.shape[:2] != (self.height, self.width):
            image = np.asarray(Image.fromarray(image).resize((self.width, self.height), Image.BILINEAR))
        if (self.out_height, self.out_width) != image.shape[:2]:
            image = np.pad(
                image, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)), mode="edge"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        pts = max(int(round(time / OUT_TIME_BASE)), self._last_pts + 1)
        frame.pts, frame.time_base = pts, OUT_TIME_BASE
        self._last_pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.num_frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
