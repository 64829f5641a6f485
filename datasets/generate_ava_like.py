#!/usr/bin/env python
"""Write a small synthetic dataset in exactly the AVA v2.2 file formats.

Stick-figure actors (body, head, arms, legs; dark tones on a light textured background by default,
``--palette random`` for random colours far from the background's; random sizes) perform actions
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
background tells the action. Person ids are stable within a video; walkers turn around at the
frame's edges and never leave it.

Layout written under ``--out`` (see datasets/README.md)::

    annotations/ava_{train,val}_v2.2.csv
    annotations/ava_action_list_v2.2.pbtxt                      all 6 classes (the model's)
    annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt  evaluated subset (5 classes, no "stand")
    annotations/ava_{train,val}_excluded_timestamps_v2.2.csv
    frame_lists/{train,val}.csv                                  PySlowFast frame lists
    videos/<video_id>.mp4                                        H.264, 30 fps
    frames/<video_id>/<video_id>_000001.jpg                      only with --extract-frames

Time convention as AVA's cut clips: frame 0 of every video is second 900, so the keyframe of
timestamp ``t`` is frame ``(t - 900) * 30``; timestamps run from 902 to ``900 + duration - 2``.
The output is a deterministic function of ``--seed`` and the size options.
"""
import argparse
import csv
import math
import os
import time
from dataclasses import dataclass
from typing import List, Tuple

import av
import numpy as np
from PIL import Image, ImageDraw

FPS = 30
VIDEO_START_SEC = 900
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
            if waving and side == self.wave_side:
                # Raised arm sweeping sideways above the head, ~2 waves per second.
                a = math.radians(25 + 40 * (0.5 + 0.5 * math.sin(2 * math.pi * 2.0 * t + self.phase)))
                hand = (shoulder[0] + side * 12 * s * math.sin(a), shoulder[1] - 12 * s * math.cos(a))
            elif primary == 3:
                hand = (shoulder[0] + side * 5 * s, shoulder[1] - 11 * s)
            else:
                hand = (side * 7.5 * s + 0.3 * lean, 5 * s)
            limbs.append((shoulder, hand, 3))
        nose = []
        if facing:
            r = head[1]
            hx, hy = head[0]
            nose = [(hx + facing * 0.6 * r, hy - 1.8 * s), (hx + facing * (r + 3.5 * s), hy + 0.5 * s),
                    (hx + facing * 0.6 * r, hy + 1.8 * s)]

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


def write_video(path: str, frames_iter, width: int, height: int):
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One thread keeps the bitstream deterministic; a 1 s GOP keeps seeks short.
        stream.options = {"crf": "18", "preset": "veryfast", "g": str(FPS), "bf": "0", "threads": "1"}
        for img in frames_iter:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def extract_frames(video_path: str, out_dir: str, video_id: str) -> int:
    """Decode ``video_path`` into ``<out_dir>/<video_id>_%06d.jpg`` (1-based), as ffmpeg does for AVA."""
    os.makedirs(out_dir, exist_ok=True)
    n = 0
    with av.open(video_path) as container:
        for frame in container.decode(video=0):
            n += 1
            frame.to_image().save(os.path.join(out_dir, f"{video_id}_{n:06d}.jpg"), quality=95)
    return n


def write_label_map(path: str, ids: List[int]):
    names = dict(CLASSES)
    with open(path, "w") as f:
        for cid in ids:
            f.write(f'item {{\n  name: "{names[cid]}"\n  id: {cid}\n}}\n')


def generate(out: str, seed: int, num_train: int, num_val: int, duration: int, width: int, height: int,
             extract: bool, log=print, scale_range: Tuple[float, float] = (1.3, 1.6), max_actors: int = 2,
             min_contrast: int = 200, palette: str = "dark") -> dict:
    """Write the dataset (see the module docstring); returns counts of what was written."""
    if duration < 5:
        raise ValueError("--duration must be at least 5 seconds (1 s margins around 2 s of keyframes)")
    if max_actors < 1 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"need --max-actors >= 1 and 0 < MIN <= MAX for --actor-scale, got {max_actors}, {scale_range}")
    if not 0 <= min_contrast <= MAX_MIN_CONTRAST:
        raise ValueError(f"--min-contrast must be in [0, {MAX_MIN_CONTRAST}] (a mid-grey background has no colour "
                         f"farther away), got {min_contrast}")
    if 52.5 * scale_range[1] > height or 40 * scale_range[1] > width:
        raise ValueError(f"--actor-scale max {scale_range[1]} does not fit a {width}x{height} frame "
                         f"(a figure needs about 52x40 px at scale 1)")
    ann_dir = os.path.join(out, "annotations")
    vid_dir = os.path.join(out, "videos")
    fl_dir = os.path.join(out, "frame_lists")
    for d in (ann_dir, vid_dir, fl_dir):
        os.makedirs(d, exist_ok=True)
    write_label_map(os.path.join(ann_dir, "ava_action_list_v2.2.pbtxt"), [c for c, _ in CLASSES])
    write_label_map(os.path.join(ann_dir, "ava_action_list_v2.2_for_activitynet_2019.pbtxt"), EVAL_CLASS_IDS)

    rng = np.random.default_rng(seed)
    num_frames = duration * FPS
    timestamps = list(range(VIDEO_START_SEC + 2, VIDEO_START_SEC + duration - 1))
    stats = {"videos": 0, "keyframes": 0, "boxes": 0, "frames": 0}
    video_idx = 0
    for split, count in (("train", num_train), ("val", num_val)):
        rows, frame_rows = [], []
        video_ids = [f"{split}_{seed:03d}_{i:04d}" for i in range(count)]
        # Real exclusions: keyframes that exist in the videos but are left unannotated.
        n_excl = 1 if split == "train" else 2
        excl_videos = rng.choice(count, size=min(n_excl, count), replace=False) if count else []
        excluded = {(video_ids[int(v)], int(rng.choice(timestamps))) for v in excl_videos}
        for vid in video_ids:
            background, base = make_background(rng, width, height, palette)
            actors = make_actors(rng, width, height, duration, base, scale_range, max_actors, min_contrast, palette)

            def frames():
                for i in range(num_frames):
                    img = background.copy()
                    draw = ImageDraw.Draw(img)
                    for actor in sorted(actors, key=lambda a: a.y0):
                        draw_actor(draw, actor, i / FPS)
                    yield img

            video_path = os.path.join(vid_dir, f"{vid}.mp4")
            write_video(video_path, frames(), width, height)
            for ts in timestamps:
                if (vid, ts) in excluded:
                    continue
                t = (ts - VIDEO_START_SEC * 1.0)
                stats["keyframes"] += 1
                for actor in actors:
                    x1, y1, x2, y2 = actor.box(t, width, height)
                    box = [f"{x1 / width:.3f}", f"{y1 / height:.3f}", f"{x2 / width:.3f}", f"{y2 / height:.3f}"]
                    stats["boxes"] += 1
                    for aid in actor.action_ids(t):
                        rows.append([vid, f"{ts:04d}", *box, str(aid), str(actor.person_id)])
            if extract:
                n = extract_frames(video_path, os.path.join(out, "frames", vid), vid)
                if n != num_frames:
                    raise RuntimeError(f"{video_path}: decoded {n} frames, wrote {num_frames}")
            for i in range(num_frames):
                frame_rows.append(f'{vid} {video_idx} {i} {vid}/{vid}_{i + 1:06d}.jpg ""')
            video_idx += 1
            stats["videos"] += 1
            stats["frames"] += num_frames
            log(f"  {split} {vid}: {len(actors)} actors")
        with open(os.path.join(ann_dir, f"ava_{split}_v2.2.csv"), "w", newline="") as f:
            csv.writer(f).writerows(rows)
        with open(os.path.join(ann_dir, f"ava_{split}_excluded_timestamps_v2.2.csv"), "w", newline="") as f:
            csv.writer(f).writerows(sorted([v, f"{t:04d}"] for v, t in excluded))
        with open(os.path.join(fl_dir, f"{split}.csv"), "w") as f:
            f.write("original_vido_id video_idx frame_id path labels\n")
            f.write("\n".join(frame_rows) + ("\n" if frame_rows else ""))
    return stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (AVA layout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train-videos", type=int, default=40)
    parser.add_argument("--num-val-videos", type=int, default=10)
    parser.add_argument("--duration", type=int, default=11, help="video length in seconds (timestamps 902..900+duration-2)")
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--actor-scale", type=float, nargs=2, default=(1.3, 1.6), metavar=("MIN", "MAX"),
                        help="figure size range; 1.0 is a figure about 40 px tall")
    parser.add_argument("--max-actors", type=int, default=2, help="1..max actors per video, one per lane")
    parser.add_argument("--min-contrast", type=int, default=200,
                        help="with --palette random: least sum of |RGB differences| between an actor's colours and the "
                             "background's base colour")
    parser.add_argument("--palette", choices=("dark", "random"), default="dark",
                        help="actor colours: dark tones on a light background, or random colours (see --min-contrast)")
    parser.add_argument("--extract-frames", action="store_true", help="also write frames/<vid>/<vid>_%%06d.jpg")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.width % 2 or args.height % 2:
        parser.error("--width and --height must be even (H.264 with 4:2:0 chroma)")
    start = time.perf_counter()
    stats = generate(
        args.out, args.seed, args.num_train_videos, args.num_val_videos, args.duration,
        args.width, args.height, args.extract_frames, log=(lambda *a: None) if args.quiet else print,
        scale_range=tuple(args.actor_scale), max_actors=args.max_actors, min_contrast=args.min_contrast,
        palette=args.palette,
    )
    print(
        f"wrote {stats['videos']} videos, {stats['frames']} frames, {stats['keyframes']} keyframes, "
        f"{stats['boxes']} boxes to {args.out} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
