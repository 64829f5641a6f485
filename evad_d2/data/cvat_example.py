"""A small dataset as CVAT exports it, to try the custom-data path on (datasets/README.md, "Your
own classes"): the generated stick-figure videos, each with a "CVAT for video 1.1" XML.

    python -m evad_d2.data.cvat_example --out /tmp/cvat_export [--train-videos 3] [--val-videos 2]

writes ``OUT/{train,val}/clipNN.mp4`` and ``OUT/{train,val}/clipNN.xml``: one ``person`` track
per figure with a box on every frame (as CVAT writes an interpolated track) and a mutable select
attribute ``action`` holding the figure's action at that frame: ``walk_left``, ``walk_right``,
``jump``, ``spin`` or ``stand`` (the generator's classes without ``wave``, which only ever comes
on top of another action and a select holds one value).
"""
import argparse
import os
import sys
from typing import Callable, Dict

import numpy as np

from .formats.cvat import CvatBox, CvatTrack, CvatVideo, write_cvat_video
from .synthetic.actors import CLASSES, WAVE
from .synthetic.dataset import FPS, GeneratorSettings, write_synthetic_video

__all__ = ["ACTION_NAMES", "write_cvat_example", "main"]

ACTION_NAMES = [name for cid, name in CLASSES if cid != WAVE]
_NAME = dict(CLASSES)


def _track(actor, person_id: int, num_frames: int, width: int, height: int) -> CvatTrack:
    boxes = []
    for frame in range(num_frames):
        t = frame / FPS
        primary = next(a for a in actor.action_ids(t) if a != WAVE)
        boxes.append(CvatBox(frame, tuple(float(v) for v in actor.box(t, width, height)), False, False,
                             frame == 0 or actor.action_ids(t) != actor.action_ids((frame - 1) / FPS),
                             {"action": _NAME[primary]}))
    return CvatTrack(person_id, "person", boxes)


def write_cvat_example(out: str, *, train_videos: int = 3, val_videos: int = 2, duration: int = 5, seed: int = 0,
                       log: Callable[..., None] = print) -> Dict[str, int]:
    """Write the videos and their CVAT exports (see the module docstring) under ``out``.

    Returns:
        ``{"videos": N, "tracks": M}``.
    """
    settings = GeneratorSettings(seed=seed, num_train_videos=train_videos, num_val_videos=val_videos, duration=duration)
    settings.check()
    rng = np.random.default_rng(seed)
    labels = {"person": {"action": ("select", list(ACTION_NAMES))}}
    stats = {"videos": 0, "tracks": 0}
    for split, count in (("train", train_videos), ("val", val_videos)):
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for i in range(count):
            stem = os.path.join(out, split, f"clip{stats['videos']:02d}")
            actors = write_synthetic_video(rng, settings, stem + ".mp4")
            n = duration * FPS
            tracks = [_track(a, k, n, settings.width, settings.height) for k, a in enumerate(actors)]
            write_cvat_video(stem + ".xml", CvatVideo(stem + ".xml", os.path.basename(stem), settings.width,
                                                      settings.height, labels, tracks, n))
            stats["videos"] += 1
            stats["tracks"] += len(tracks)
            log(f"  {stem}.mp4 + .xml: {len(tracks)} tracks")
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-videos", type=int, default=3)
    parser.add_argument("--val-videos", type=int, default=2)
    parser.add_argument("--duration", type=int, default=5, help="seconds per video")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    stats = write_cvat_example(args.out, train_videos=args.train_videos, val_videos=args.val_videos,
                               duration=args.duration, seed=args.seed)
    print(f"Wrote {stats['videos']} videos with their CVAT exports ({stats['tracks']} tracks) under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
