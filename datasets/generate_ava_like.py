#!/usr/bin/env python
"""Write a small synthetic dataset in exactly the AVA v2.2 file formats.

Stick-figure actors (body, head, arms, legs; random colours and sizes, so appearance says
nothing about the action) on a static textured background perform actions that can only be
told apart from motion across frames::

    1 walk_left   translate left, legs swinging
    2 walk_right  translate right, legs swinging
    3 jump        vertical bouncing
    4 wave        one arm raised and oscillating (only together with stand/walk: multi-label)
    5 spin        the whole figure rotates in the image plane
    6 stand       no motion

Every actor has exactly one of {walk_left, walk_right, jump, spin, stand} and possibly ``wave``;
its actions stay the same for the whole video, and person ids are stable within a video.
Walkers are placed so that they never leave the frame during the annotated span.

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
WAVE_PROB = 0.4


@dataclass
class Actor:
    """One stick figure. Distances are in pixels, times in seconds from the video start."""

    person_id: int
    primary: int
    wave: bool
    scale: float
    x0: float  # body-centre x at t = 0
    y0: float  # body-centre y (lane)
    speed: float  # px/s, signed; 0 unless walking
    phase: float  # random phase of every oscillation
    spin_dir: float
    wave_side: float
    colors: Tuple[Tuple[int, int, int], ...]  # body, head, legs, arms

    def action_ids(self) -> List[int]:
        return [self.primary] + ([WAVE] if self.wave else [])

    def pose(self, t: float):
        """Return the figure's primitives at time ``t`` as lists of image-space points.

        Returns:
            dict with "body" (4 corners), "head" (centre, radius), "limbs" (list of
            (start, end, colour index)), all after rotation and translation.
        """
        s = self.scale
        cx = self.x0 + self.speed * t
        cy = self.y0
        if self.primary == 3:
            # Bounces of ~0.7 s: |sin| gives a sharp take-off at every landing.
            cy -= 11.0 * s * abs(math.sin(math.pi * 1.4 * t + self.phase))
        angle = 0.0
        if self.primary == 5:
            angle = self.spin_dir * 2.0 * math.pi * 0.6 * t + self.phase
        walking = self.primary in (1, 2)
        swing = 4.5 * s * math.sin(2.0 * math.pi * 1.8 * t + self.phase) if walking else 0.0

        body = [(-5 * s, -9 * s), (5 * s, -9 * s), (5 * s, 9 * s), (-5 * s, 9 * s)]
        head = ((0.0, -14.5 * s), 4.8 * s)
        limbs = [
            ((-2.5 * s, 9 * s), (-2.5 * s + swing, 20 * s), 2),
            ((2.5 * s, 9 * s), (2.5 * s - swing, 20 * s), 2),
        ]
        for side in (-1.0, 1.0):
            shoulder = (side * 5 * s, -7 * s)
            if self.wave and side == self.wave_side:
                # Raised arm sweeping sideways above the head, ~2 waves per second.
                a = math.radians(25 + 40 * (0.5 + 0.5 * math.sin(2 * math.pi * 2.0 * t + self.phase)))
                hand = (shoulder[0] + side * 12 * s * math.sin(a), shoulder[1] - 12 * s * math.cos(a))
            else:
                hand = (side * 7.5 * s, 5 * s)
            limbs.append((shoulder, hand, 3))

        ca, sa = math.cos(angle), math.sin(angle)

        def tf(p):
            return (cx + ca * p[0] - sa * p[1], cy + sa * p[0] + ca * p[1])

        return {
            "body": [tf(p) for p in body],
            "head": (tf(head[0]), head[1]),
            "limbs": [(tf(a), tf(b), c) for a, b, c in limbs],
        }

    def box(self, t: float, width: int, height: int) -> Tuple[float, float, float, float]:
        """Tight box (pixels) around every drawn pixel at time ``t``, clipped to the frame."""
        p = self.pose(t)
        pts = list(p["body"]) + [q for a, b, _ in p["limbs"] for q in (a, b)]
        xs = [q[0] for q in pts]
        ys = [q[1] for q in pts]
        (hx, hy), r = p["head"]
        lw = LIMB_WIDTH / 2.0
        x1 = min(min(xs) - lw, hx - r)
        x2 = max(max(xs) + lw, hx + r)
        y1 = min(min(ys) - lw, hy - r)
        y2 = max(max(ys) + lw, hy + r)
        return (max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height))


LIMB_WIDTH = 3


def draw_actor(draw: ImageDraw.ImageDraw, actor: Actor, t: float):
    p = actor.pose(t)
    for a, b, c in p["limbs"]:
        draw.line([a, b], fill=actor.colors[c], width=LIMB_WIDTH)
    draw.polygon(p["body"], fill=actor.colors[0])
    (hx, hy), r = p["head"]
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=actor.colors[1])


def make_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Static texture: low-frequency colour blobs plus fine grain and a darker floor band."""
    base = rng.integers(60, 200, size=3)
    coarse = rng.normal(0, 28, size=(4, 5, 3))
    coarse_img = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.BILINEAR
    )
    img = base[None, None, :] + (np.asarray(coarse_img, dtype=np.float32) - 128.0)
    img += rng.normal(0, 9, size=(height, width, 1))
    floor = int(height * rng.uniform(0.8, 0.9))
    img[floor:] *= 0.75
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def random_color(rng: np.random.Generator) -> Tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def make_actors(rng: np.random.Generator, width: int, height: int, duration: float) -> List[Actor]:
    n = int(rng.integers(1, 4))
    lanes = sorted(rng.choice(3, size=n, replace=False))
    lane_y = [0.36 * height, 0.55 * height, 0.74 * height]
    # Walkers must stay inside the frame from 1 s before the first keyframe to 1 s after the last.
    t_start, t_end = 1.0, duration - 1.0
    actors = []
    for pid, lane in enumerate(lanes):
        scale = float(rng.uniform(0.75, 0.95))
        primary = int(rng.choice(PRIMARY))
        wave = primary in WAVE_WITH and rng.random() < WAVE_PROB
        # Half the figure's width with a raised arm, so that the figure stays fully visible.
        margin = 17 * scale
        speed = 0.0
        if primary in (1, 2):
            max_speed = min(15.0, (width - 2 * margin) / (t_end - t_start))
            speed = float(rng.uniform(0.7 * max_speed, max_speed)) * (-1 if primary == 1 else 1)
            travel = abs(speed) * (t_end - t_start)
            lo, hi = margin, width - margin - travel
            start = float(rng.uniform(lo, max(lo, hi)))
            x0 = (start if speed > 0 else width - start) - speed * t_start
        else:
            # Keep stationary actors apart so that their boxes rarely overlap (walkers still cross).
            for _ in range(20):
                x0 = float(rng.uniform(margin, width - margin))
                if all(abs(x0 - a.x0) > 34 for a in actors if a.speed == 0.0):
                    break
        actors.append(
            Actor(
                person_id=pid,
                primary=primary,
                wave=bool(wave),
                scale=scale,
                x0=x0,
                y0=float(lane_y[lane] + rng.uniform(-3, 3)),
                speed=speed,
                phase=float(rng.uniform(0, 2 * math.pi)),
                spin_dir=float(rng.choice([-1.0, 1.0])),
                wave_side=float(rng.choice([-1.0, 1.0])),
                colors=tuple(random_color(rng) for _ in range(4)),
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
             extract: bool, log=print) -> dict:
    if duration < 5:
        raise ValueError("--duration must be at least 5 seconds (1 s margins around 2 s of keyframes)")
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
            background = make_background(rng, width, height)
            actors = make_actors(rng, width, height, duration)

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
                    for aid in actor.action_ids():
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
    parser.add_argument("--extract-frames", action="store_true", help="also write frames/<vid>/<vid>_%%06d.jpg")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.width % 2 or args.height % 2:
        parser.error("--width and --height must be even (H.264 with 4:2:0 chroma)")
    start = time.perf_counter()
    stats = generate(
        args.out, args.seed, args.num_train_videos, args.num_val_videos, args.duration,
        args.width, args.height, args.extract_frames, log=(lambda *a: None) if args.quiet else print,
    )
    print(
        f"wrote {stats['videos']} videos, {stats['frames']} frames, {stats['keyframes']} keyframes, "
        f"{stats['boxes']} boxes to {args.out} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
