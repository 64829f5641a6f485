"""The stick figures of the synthetic AVA-like dataset: look, actions over time, pose, box, drawing.

Stick-figure actors (body, head, arms, legs; dark tones on a light textured background by default,
random colours far from the background's with the "random" palette; random sizes) perform actions
told apart by motion across frames and, as real actions are, partly by pose::

    1 walk_left   translate left, legs swinging, leaning and facing left
    2 walk_right  translate right, legs swinging, leaning and facing right
    3 jump        vertical bouncing, both arms raised
    4 wave        one arm raised and oscillating (only together with stand/walk: multi-label)
    5 spin        the whole figure rotates in the image plane
    6 stand       no motion

At every moment an actor does exactly one of {walk_left, walk_right, jump, spin, stand} and
possibly ``wave``. Actions change from one second to the next (at half seconds, so that the
second around a keyframe shows one action), as in AVA: neither a figure's look nor its video's
background tells the action. Walkers turn around at the frame's edges and never leave it.
"""
import math
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

# Class ids and names of the label map (ids follow AVA's 1-based convention).
CLASSES = [(1, "walk_left"), (2, "walk_right"), (3, "jump"), (4, "wave"), (5, "spin"), (6, "stand")]
WAVE = 4
# "stand" is trained but not evaluated, so the evaluation subset differs from the model's
# classes exactly as AVA's 60-of-80 subset does.
EVAL_CLASS_IDS = [1, 2, 3, 4, 5]
# Primary actions: exactly one per actor. ``wave`` is added on top of these with WAVE_PROB.
PRIMARY = [1, 2, 3, 5, 6]
WAVE_WITH = (1, 2, 6)
# Sign of a walker's x velocity by action id.
WALK_DIRECTION = {1: -1.0, 2: 1.0}
WAVE_PROB = 0.4
# Chance that an actor picks a new primary action (possibly the same one) at each second.
ACTION_CHANGE_PROB = 0.5


@dataclass
class Actor:
    """One stick figure. Distances are in pixels, times in seconds from the video start.

    Its actions change over time, as real ones do: segment ``k`` (the second around ``t = k``,
    from ``k - 0.5`` to ``k + 0.5``; segment 0 starts at 0) has its own primary action and wave flag,
    so the second around a keyframe (a whole second) shows one action. Appearance (colours, size)
    says nothing about the action: the same figure does different things.
    """

    person_id: int
    segments: List[Tuple[int, bool]]  # (primary action, waving) of each segment
    starts: List[float]  # body-centre x at the start of each segment
    walk_speed: float  # px/s while walking
    scale: float
    y0: float  # body-centre y (lane)
    phase: float  # random phase of every oscillation
    spin_dir: float
    wave_side: float
    colors: Tuple[Tuple[int, int, int], ...]  # body, head, legs, arms
    limb_width: int = 3

    @staticmethod
    def segment_start(k: int) -> float:
        return max(k - 0.5, 0.0)

    def segment(self, t: float) -> int:
        return min(max(int(math.floor(t + 0.5)), 0), len(self.segments) - 1)

    def velocity(self, k: int) -> float:
        return WALK_DIRECTION.get(self.segments[k][0], 0.0) * self.walk_speed

    def center_x(self, t: float) -> float:
        k = self.segment(t)
        return self.starts[k] + self.velocity(k) * (t - self.segment_start(k))

    def action_ids(self, t: float) -> List[int]:
        primary, wave = self.segments[self.segment(t)]
        return [primary] + ([WAVE] if wave else [])

    def hand(self, t: float, side: float, shoulder: Tuple[float, float], primary: int, waving: bool,
             lean: float) -> Tuple[float, float]:
        """Where the arm from ``shoulder`` on ``side`` (-1 left, 1 right) ends, in the figure's frame."""
        s = self.scale
        if waving and side == self.wave_side:
            # Raised arm sweeping sideways above the head, ~2 waves per second.
            a = math.radians(25 + 40 * (0.5 + 0.5 * math.sin(2 * math.pi * 2.0 * t + self.phase)))
            return (shoulder[0] + side * 12 * s * math.sin(a), shoulder[1] - 12 * s * math.cos(a))
        if primary == 3:
            return (shoulder[0] + side * 5 * s, shoulder[1] - 11 * s)
        return (side * 7.5 * s + 0.3 * lean, 5 * s)

    def nose(self, head, facing: float) -> List[Tuple[float, float]]:
        """The nose triangle of a head ``((x, y), radius)`` facing left (-1) or right (1)."""
        s = self.scale
        r = head[1]
        hx, hy = head[0]
        return [(hx + facing * 0.6 * r, hy - 1.8 * s), (hx + facing * (r + 3.5 * s), hy + 0.5 * s),
                (hx + facing * 0.6 * r, hy + 1.8 * s)]

    def pose(self, t: float):
        """Return the figure's primitives at time ``t`` as lists of image-space points.

        Returns:
            dict with "body" (4 corners), "head" (centre, radius), "limbs" (list of
            (start, end, colour index)), "nose" (3 points or none), all after rotation and
            translation.
        """
        k = self.segment(t)
        primary, waving = self.segments[k]
        s = self.scale
        cx = self.center_x(t)
        cy = self.y0
        if primary == 3:
            # Bounces of ~0.7 s: |sin| gives a sharp take-off at every landing.
            cy -= 11.0 * s * abs(math.sin(math.pi * 1.4 * t + self.phase))
        angle = 0.0
        if primary == 5:
            angle = self.spin_dir * 2.0 * math.pi * 0.6 * (t - self.segment_start(k)) + self.phase
        walking = primary in (1, 2)
        swing = 4.5 * s * math.sin(2.0 * math.pi * 1.8 * t + self.phase) if walking else 0.0
        # Pose cues, as real actions have them: walkers lean towards where they go and face it (a
        # nose), jumpers raise both arms. Motion still carries most of the signal.
        facing = math.copysign(1.0, self.velocity(k)) if walking else 0.0
        lean = 3.5 * s * facing

        body = [(-5 * s + 0.7 * lean, -9 * s), (5 * s + 0.7 * lean, -9 * s), (5 * s, 9 * s), (-5 * s, 9 * s)]
        head = ((lean, -14.5 * s), 4.8 * s)
        limbs = [
            ((-2.5 * s, 9 * s), (-2.5 * s + swing, 20 * s), 2),
            ((2.5 * s, 9 * s), (2.5 * s - swing, 20 * s), 2),
        ]
        for side in (-1.0, 1.0):
            shoulder = (side * 5 * s + 0.7 * lean, -7 * s)
            limbs.append((shoulder, self.hand(t, side, shoulder, primary, waving, lean), 3))
        nose = self.nose(head, facing) if facing else []

        ca, sa = math.cos(angle), math.sin(angle)

        def tf(p):
            return (cx + ca * p[0] - sa * p[1], cy + sa * p[0] + ca * p[1])

        return {
            "body": [tf(p) for p in body],
            "head": (tf(head[0]), head[1]),
            "limbs": [(tf(a), tf(b), c) for a, b, c in limbs],
            "nose": [tf(p) for p in nose],
        }

    def box(self, t: float, width: int, height: int) -> Tuple[float, float, float, float]:
        """Tight box (pixels) around every drawn pixel at time ``t``, clipped to the frame."""
        p = self.pose(t)
        pts = list(p["body"]) + [q for a, b, _ in p["limbs"] for q in (a, b)] + list(p["nose"])
        xs = [q[0] for q in pts]
        ys = [q[1] for q in pts]
        (hx, hy), r = p["head"]
        lw = self.limb_width / 2.0
        x1 = min(min(xs) - lw, hx - r)
        x2 = max(max(xs) + lw, hx + r)
        y1 = min(min(ys) - lw, hy - r)
        y2 = max(max(ys) + lw, hy + r)
        return (max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height))


def draw_actor(draw: ImageDraw.ImageDraw, actor: Actor, t: float):
    p = actor.pose(t)
    for a, b, c in p["limbs"]:
        draw.line([a, b], fill=actor.colors[c], width=actor.limb_width)
    draw.polygon(p["body"], fill=actor.colors[0])
    (hx, hy), r = p["head"]
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=actor.colors[1])
    if p["nose"]:
        draw.polygon(p["nose"], fill=actor.colors[1])


def make_background(rng: np.random.Generator, width: int, height: int, palette: str = "dark") -> Tuple[Image.Image, np.ndarray]:
    """Static texture: low-frequency colour blobs plus fine grain and a darker floor band.

    Returns the image and its base RGB colour (actors are drawn in colours far from it).
    """
    # Dark figures need a light background; random-coloured ones any background.
    base = rng.integers(120, 220, size=3) if palette == "dark" else rng.integers(60, 200, size=3)
    coarse = rng.normal(0, 28, size=(4, 5, 3))
    coarse_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.BILINEAR
    )
    img = base[None, None, :] + (np.asarray(coarse_img, dtype=np.float32) - 128.0)
    img += rng.normal(0, 9, size=(height, width, 1))
    floor = int(height * rng.uniform(0.8, 0.9))
    img[floor:] *= 0.75
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), base


# Every background has a colour this far away (sum of |RGB differences|): 3 x 128 for mid-grey.
MAX_MIN_CONTRAST = 384


def contrasting_color(rng: np.random.Generator, background: np.ndarray, min_distance: int) -> Tuple[int, int, int]:
    """A random colour at least ``min_distance`` (sum of absolute RGB differences) from ``background``.

    When 1000 draws find none (a distance near the largest possible), the farthest colour is
    returned; a distance no colour reaches is an error.
    """
    for _ in range(1000):
        c = rng.integers(0, 256, size=3)
        if int(np.abs(c - background).sum()) >= min_distance:
            return tuple(int(v) for v in c)
    farthest = np.where(np.asarray(background) >= 128, 0, 255)
    if int(np.abs(farthest - background).sum()) < min_distance:
        raise ValueError(f"no colour is {min_distance} (sum of |RGB differences|) from the background {tuple(background)}")
    return tuple(int(v) for v in farthest)


def actor_colors(rng: np.random.Generator, background: np.ndarray, min_contrast: int, palette: str):
    """Body, head, legs and arms colours: dark tones (people look alike; a from-scratch model
    then learns the silhouette, not colour invariance) or random colours far from the background."""
    if palette == "dark":
        return tuple(tuple(int(v) for v in rng.integers(0, 70, size=3)) for _ in range(4))
    if palette == "random":
        return tuple(contrasting_color(rng, background, min_contrast) for _ in range(4))
    raise ValueError(f"unknown palette {palette!r} (expected 'dark' or 'random')")


def make_actors(rng: np.random.Generator, width: int, height: int, duration: float, background: np.ndarray,
                scale_range: Tuple[float, float], max_actors: int, min_contrast: int,
                palette: str = "dark") -> List[Actor]:
    n = int(rng.integers(1, max_actors + 1))
    # Lanes (body-centre heights) spread so that the largest figure stays inside the frame.
    # (a jumper rises 11 px above its 20 px head, a foot reaches 21.5 px below the centre; x scale).
    top, bottom = 31.0 * scale_range[1] / height, 1.0 - 21.5 * scale_range[1] / height
    lane_y = [height * (top + (bottom - top) * (i + 0.5) / max_actors) for i in range(max_actors)]
    lanes = sorted(rng.choice(max_actors, size=n, replace=False))
    actors = []
    for pid, lane in enumerate(lanes):
        scale = float(rng.uniform(*scale_range))
        # Half the figure's width with a raised arm: walkers turn before any part leaves the frame.
        margin = 17 * scale
        walk_speed = float(rng.uniform(10.0, 15.0))
        for _ in range(20):
            x = float(rng.uniform(margin, width - margin))
            if all(abs(x - a.starts[0]) > 36 * scale for a in actors):
                break
        segments, starts = [], []
        primary = int(rng.choice(PRIMARY))
        for k in range(int(duration) + 1):
            # Actions persist for a while (half of the time the next second continues this one).
            if k and rng.random() < ACTION_CHANGE_PROB:
                primary = int(rng.choice(PRIMARY))
            travel = walk_speed * (Actor.segment_start(k + 1) - Actor.segment_start(k))
            if primary in WALK_DIRECTION and not margin <= x + WALK_DIRECTION[primary] * travel <= width - margin:
                primary = 3 - primary  # turn around rather than leave the frame
            wave = primary in WAVE_WITH and rng.random() < WAVE_PROB
            segments.append((primary, bool(wave)))
            starts.append(x)
            x += WALK_DIRECTION.get(primary, 0.0) * travel
        actors.append(
            Actor(
                person_id=pid,
                segments=segments,
                starts=starts,
                walk_speed=walk_speed,
                scale=scale,
                y0=float(lane_y[lane] + rng.uniform(-3, 3)),
                phase=float(rng.uniform(0, 2 * math.pi)),
                spin_dir=float(rng.choice([-1.0, 1.0])),
                wave_side=float(rng.choice([-1.0, 1.0])),
                colors=actor_colors(rng, background, min_contrast, palette),
                limb_width=max(3, int(round(2.5 * scale))),
            )
        )
    return actors


