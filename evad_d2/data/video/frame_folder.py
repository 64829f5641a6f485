"""Reading a clip from a folder of extracted frames (``<vid>_{i+1:06d}.jpg`` for AVA).

Index ``i`` of the dataset timeline is file ``pattern.format(i + 1)``; the video reader
(``evad_d2.data.video.reader``) gives the same frames from the video itself.
"""
import os
from typing import Sequence

import numpy as np
from PIL import Image

from .reader import VideoReadError

__all__ = ["count_frames_in_folder", "read_frame_folder"]


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
