"""Draw actor boxes and their top actions onto video frames (used by evad_d2.demo.VideoDemo).

One colour per track id (or per actor position when there is no tracking), from a fixed palette
of saturated colours that stand out on natural images. Labels sit above a box's top-left corner,
or just inside the box where there is no room above.
"""

from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["PALETTE", "color_for_id", "actor_label", "draw_actors", "default_line_width"]

# Saturated, mutually distinct colours (RGB).
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (255, 225, 25),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
)


def color_for_id(i: int) -> Tuple[int, int, int]:
    """The colour of track (or actor) ``i``; cycles through :data:`PALETTE`."""
    return PALETTE[int(i) % len(PALETTE)]


def default_line_width(height: int, width: int) -> int:
    """Box outline width that stays visible after video compression: 2 px per 240 px, at least 2."""
    return max(2, round(min(height, width) / 120))


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def actor_label(actor: Dict, max_actions: Optional[int] = None) -> List[str]:
    """Text lines for an actor: ``"#<track> <person score>"`` then ``"<action> <score>"`` each."""
    tid = actor.get("track_id")
    head = f"#{tid} " if tid is not None else "person "
    lines = [f"{head}{actor['person_score']:.2f}"]
    actions = actor.get("actions", [])
    for name, score in actions[:max_actions] if max_actions is not None else actions:
        lines.append(f"{name} {score:.2f}")
    return lines


def draw_actors(
    image: np.ndarray,
    actors: Sequence[Dict],
    *,
    line_width: Optional[int] = None,
    font_size: Optional[int] = None,
    max_actions: Optional[int] = None,
) -> np.ndarray:
    """Draw actor boxes and labels on a copy of ``image``.

    Args:
        image: uint8 (H, W, 3) RGB frame.
        actors: dicts with ``"box"`` [x1, y1, x2, y2] in the frame's pixels, ``"person_score"``,
            ``"actions"`` [(name, score)], optional ``"track_id"`` (picks the colour; without it
            the actor's position in the list does). Earlier actors are drawn on top.
        line_width: box outline width (default :func:`default_line_width`); the outline lies
            inside the box, from its edges inwards.
        font_size: label font size (default: 1/24 of the frame height, at least 10).
        max_actions: actions per label (default: all given).

    Returns:
        uint8 (H, W, 3) RGB.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    lw = default_line_width(h, w) if line_width is None else int(line_width)
    font = _font(max(10, h // 24) if font_size is None else int(font_size))
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for pos in reversed(range(len(actors))):
        actor = actors[pos]
        tid = actor.get("track_id")
        color = color_for_id(pos if tid is None else tid)
        x1, y1, x2, y2 = (float(v) for v in actor["box"])
        x1, x2 = sorted((min(max(x1, 0.0), w - 1.0), min(max(x2, 0.0), w - 1.0)))
        y1, y2 = sorted((min(max(y1, 0.0), h - 1.0), min(max(y2, 0.0), h - 1.0)))
        draw.rectangle([round(x1), round(y1), round(x2), round(y2)], outline=color, width=lw)
        _draw_label(draw, actor_label(actor, max_actions), (round(x1), round(y1)), color, font, w, lw)
    return np.asarray(canvas)


def _draw_label(draw: ImageDraw.ImageDraw, lines: List[str], corner, color, font, width: int, lw: int):
    text = "\n".join(lines)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=1)
    tw, th = right - left + 4, bottom - top + 4
    x, y = corner
    # Above the box if it fits, else inside its top edge.
    y = y - th if y - th >= 0 else y + lw
    x = min(max(x, 0), max(width - tw, 0))
    draw.rectangle([x, y, x + tw - 1, y + th - 1], fill=color)
    # Dark text on light colours, white on dark ones (ITU-R BT.601 luma).
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    draw.multiline_text(
        (x + 2 - left, y + 2 - top), text, fill=(0, 0, 0) if luma > 140 else (255, 255, 255), font=font, spacing=1
    )
