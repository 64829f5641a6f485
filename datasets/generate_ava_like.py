#!/usr/bin/env python
"""Write a small synthetic dataset in exactly the AVA v2.2 file formats under ``--out``.

Stick figures perform 6 actions told apart by motion and pose (1 walk_left, 2 walk_right, 3 jump,
4 wave, 5 spin, 6 stand); the output is a deterministic function of ``--seed`` and the size options:

    python datasets/generate_ava_like.py --out datasets/generated/ava_like --seed 0

The generator is :mod:`evad_d2.data.synthetic`: the figures and actions in
:mod:`evad_d2.data.synthetic.actors`, the files written and their time convention in
:mod:`evad_d2.data.synthetic.dataset` (and datasets/README.md).
"""
import argparse
import time

from evad_d2.data.synthetic import GeneratorSettings, generate

DEFAULTS = GeneratorSettings()


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (AVA layout)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--num-train-videos", type=int, default=DEFAULTS.num_train_videos)
    parser.add_argument("--num-val-videos", type=int, default=DEFAULTS.num_val_videos)
    parser.add_argument("--duration", type=int, default=DEFAULTS.duration,
                        help="video length in seconds (timestamps 902..900+duration-2)")
    parser.add_argument("--width", type=int, default=DEFAULTS.width)
    parser.add_argument("--height", type=int, default=DEFAULTS.height)
    parser.add_argument("--actor-scale", type=float, nargs=2, default=DEFAULTS.scale_range, metavar=("MIN", "MAX"),
                        help="figure size range; 1.0 is a figure about 40 px tall")
    parser.add_argument("--max-actors", type=int, default=DEFAULTS.max_actors, help="1..max actors per video, one per lane")
    parser.add_argument("--min-contrast", type=int, default=DEFAULTS.min_contrast,
                        help="with --palette random: least sum of |RGB differences| between an actor's colours and the "
                             "background's base colour")
    parser.add_argument("--palette", choices=("dark", "random"), default=DEFAULTS.palette,
                        help="actor colours: dark tones on a light background, or random colours (see --min-contrast)")
    parser.add_argument("--extract-frames", action="store_true", help="also write frames/<vid>/<vid>_%%06d.jpg")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv=None):
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.width % 2 or args.height % 2:
        parser.error("--width and --height must be even (H.264 with 4:2:0 chroma)")
    settings = GeneratorSettings(
        seed=args.seed, num_train_videos=args.num_train_videos, num_val_videos=args.num_val_videos,
        duration=args.duration, width=args.width, height=args.height, scale_range=tuple(args.actor_scale),
        max_actors=args.max_actors, min_contrast=args.min_contrast, palette=args.palette,
        extract_frames=args.extract_frames,
    )
    start = time.perf_counter()
    stats = generate(args.out, settings, log=(lambda *a: None) if args.quiet else print)
    print(
        f"wrote {stats['videos']} videos, {stats['frames']} frames, {stats['keyframes']} keyframes, "
        f"{stats['boxes']} boxes to {args.out} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
