"""Write a small synthetic dataset in exactly the AVA v2.2 file formats (the figures:
:mod:`evad_d2.data.synthetic.actors`).

Layout written under ``out`` (see datasets/README.md)::

    annotations/ava_{train,val}_v2.2.csv
    annotations/ava_action_list_v2.2.pbtxt                      all 6 classes (the model's)
    annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt  evaluated subset (5 classes, no "stand")
    annotations/ava_{train,val}_excluded_timestamps_v2.2.csv
    frame_lists/{train,val}.csv                                  PySlowFast frame lists
    videos/<video_id>.mp4                                        H.264, 30 fps
    frames/<video_id>/<video_id>_000001.jpg                      only with ``extract_frames``

Time convention as AVA's cut clips: frame 0 of every video is second 900, so the keyframe of
timestamp ``t`` is frame ``(t - 900) * 30``; timestamps run from 902 to ``900 + duration - 2``.
The output is a deterministic function of the seed and the size settings. Person ids are stable
within a video.
"""
import csv
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, List, Tuple

import av
import numpy as np
from PIL import ImageDraw

from .actors import CLASSES, EVAL_CLASS_IDS, MAX_MIN_CONTRAST, draw_actor, make_actors, make_background

FPS = 30
VIDEO_START_SEC = 900


@dataclass(frozen=True)
class GeneratorSettings:
    """What the generated dataset depends on (``datasets/generate_ava_like.py`` takes each as a flag).

    Attributes:
        seed: seed of the one random generator everything is drawn from.
        num_train_videos, num_val_videos: videos per split.
        duration: video length in seconds (timestamps 902 .. 900 + duration - 2); at least 5.
        width, height: frame size in pixels (even: H.264 with 4:2:0 chroma).
        scale_range: (min, max) figure size; 1.0 is a figure about 40 px tall.
        max_actors: 1..max actors per video, one per lane.
        min_contrast: with the "random" palette, least sum of |RGB differences| between an
            actor's colours and the background's base colour.
        palette: "dark" (dark tones on a light background) or "random".
        extract_frames: also write frames/<vid>/<vid>_%06d.jpg.
    """

    seed: int = 0
    num_train_videos: int = 40
    num_val_videos: int = 10
    duration: int = 11
    width: int = 160
    height: int = 120
    scale_range: Tuple[float, float] = (1.3, 1.6)
    max_actors: int = 2
    min_contrast: int = 200
    palette: str = "dark"
    extract_frames: bool = False

    def check(self) -> None:
        """Raise ValueError naming the flag of a setting out of range."""
        if self.duration < 5:
            raise ValueError("--duration must be at least 5 seconds (1 s margins around 2 s of keyframes)")
        if self.max_actors < 1 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"need --max-actors >= 1 and 0 < MIN <= MAX for --actor-scale, got {self.max_actors}, "
                             f"{self.scale_range}")
        if not 0 <= self.min_contrast <= MAX_MIN_CONTRAST:
            raise ValueError(f"--min-contrast must be in [0, {MAX_MIN_CONTRAST}] (a mid-grey background has no colour "
                             f"farther away), got {self.min_contrast}")
        if 52.5 * self.scale_range[1] > self.height or 40 * self.scale_range[1] > self.width:
            raise ValueError(f"--actor-scale max {self.scale_range[1]} does not fit a {self.width}x{self.height} frame "
                             f"(a figure needs about 52x40 px at scale 1)")


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


def excluded_keyframes(rng: np.random.Generator, video_ids: List[str], split: str, timestamps: List[int]) -> set:
    """Real exclusions: (video id, timestamp) keyframes that exist in the videos but are left
    unannotated (one in train, two in val)."""
    count = len(video_ids)
    n_excl = 1 if split == "train" else 2
    excl_videos = rng.choice(count, size=min(n_excl, count), replace=False) if count else []
    return {(video_ids[int(v)], int(rng.choice(timestamps))) for v in excl_videos}


def write_synthetic_video(rng: np.random.Generator, settings: GeneratorSettings, path: str) -> list:
    """Draw a background and actors from ``rng``, write their video to ``path``; returns the actors."""
    width, height = settings.width, settings.height
    background, base = make_background(rng, width, height, settings.palette)
    actors = make_actors(rng, width, height, settings.duration, base, settings.scale_range, settings.max_actors,
                         settings.min_contrast, settings.palette)

    def frames():
        for i in range(settings.duration * FPS):
            img = background.copy()
            draw = ImageDraw.Draw(img)
            for actor in sorted(actors, key=lambda a: a.y0):
                draw_actor(draw, actor, i / FPS)
            yield img

    write_video(path, frames(), width, height)
    return actors


def annotation_rows(vid: str, actors: list, timestamps: List[int], excluded: set, width: int, height: int,
                    stats: dict) -> List[list]:
    """AVA annotation rows (video, %04d timestamp, 3-decimal normalised box, action id, person id)
    of every actor at every keyframe not in ``excluded``; counts keyframes and boxes in ``stats``."""
    rows = []
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
    return rows


def write_split_files(out: str, split: str, rows: List[list], excluded: set, frame_rows: List[str]) -> None:
    """The split's annotation CSV, excluded-timestamps CSV and PySlowFast frame list."""
    ann_dir = os.path.join(out, "annotations")
    with open(os.path.join(ann_dir, f"ava_{split}_v2.2.csv"), "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with open(os.path.join(ann_dir, f"ava_{split}_excluded_timestamps_v2.2.csv"), "w", newline="") as f:
        csv.writer(f).writerows(sorted([v, f"{t:04d}"] for v, t in excluded))
    with open(os.path.join(out, "frame_lists", f"{split}.csv"), "w") as f:
        f.write("original_vido_id video_idx frame_id path labels\n")
        f.write("\n".join(frame_rows) + ("\n" if frame_rows else ""))


def generate(out: str, settings: GeneratorSettings, log: Callable[..., None] = print) -> dict:
    """Write the dataset (see the module docstring) under ``out``.

    Returns:
        counts of what was written: ``videos``, ``keyframes``, ``boxes``, ``frames``.
    """
    settings.check()
    for d in ("annotations", "videos", "frame_lists"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    ann_dir = os.path.join(out, "annotations")
    write_label_map(os.path.join(ann_dir, "ava_action_list_v2.2.pbtxt"), [c for c, _ in CLASSES])
    write_label_map(os.path.join(ann_dir, "ava_action_list_v2.2_for_activitynet_2019.pbtxt"), EVAL_CLASS_IDS)

    rng = np.random.default_rng(settings.seed)
    num_frames = settings.duration * FPS
    timestamps = list(range(VIDEO_START_SEC + 2, VIDEO_START_SEC + settings.duration - 1))
    stats = {"videos": 0, "keyframes": 0, "boxes": 0, "frames": 0}
    video_idx = 0
    for split, count in (("train", settings.num_train_videos), ("val", settings.num_val_videos)):
        rows, frame_rows = [], []
        video_ids = [f"{split}_{settings.seed:03d}_{i:04d}" for i in range(count)]
        excluded = excluded_keyframes(rng, video_ids, split, timestamps)
        for vid in video_ids:
            video_path = os.path.join(out, "videos", f"{vid}.mp4")
            actors = write_synthetic_video(rng, settings, video_path)
            rows += annotation_rows(vid, actors, timestamps, excluded, settings.width, settings.height, stats)
            if settings.extract_frames:
                n = extract_frames(video_path, os.path.join(out, "frames", vid), vid)
                if n != num_frames:
                    raise RuntimeError(f"{video_path}: decoded {n} frames, wrote {num_frames}")
            for i in range(num_frames):
                frame_rows.append(f'{vid} {video_idx} {i} {vid}/{vid}_{i + 1:06d}.jpg ""')
            video_idx += 1
            stats["videos"] += 1
            stats["frames"] += num_frames
            log(f"  {split} {vid}: {len(actors)} actors")
        write_split_files(out, split, rows, excluded, frame_rows)
    return stats


def generator_sha256() -> str:
    """SHA-256 over the source files of this package (the code that decides the generated bytes):
    a changed generator gives a different digest, so a stamped dataset can be regenerated."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in sorted(f for f in os.listdir(here) if f.endswith(".py")):
        h.update(name.encode())
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


# The file ``ensure_generated`` stamps a generated dataset with.
STAMP_FILE = "generator_stamp.json"


def ensure_generated(out: str, settings: GeneratorSettings, log: Callable[..., None] = print) -> bool:
    """Generate the dataset under ``out`` unless it already holds one made with the same settings by
    the same generator code (:func:`generator_sha256`); returns whether it generated.

    The stamp, ``out/generator_stamp.json``, is written after the dataset is complete, so an
    interrupted run is redone.
    """
    # Through JSON, so that tuples compare equal to what the stamp file holds.
    made_by = json.loads(json.dumps({"settings": dataclasses.asdict(settings), "generator_sha256": generator_sha256()}))
    stamp = os.path.join(out, STAMP_FILE)
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == made_by:
                return False
    generate(out, settings, log=log)
    with open(stamp, "w") as f:
        json.dump(made_by, f)
    return True
