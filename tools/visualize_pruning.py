#!/usr/bin/env python
"""Pictures of token pruning (paper Fig. 4) and of the decoder's attention for an actor (Fig. 12).

Example:
    python tools/visualize_pruning.py --config-file configs/quickstart/EVAD_tiny_ava_like_cpu.yaml \\
        --input video.mp4 --time 5 --output-dir vis/ --scale 3 MODEL.WEIGHTS model_final.pth

Writes into ``--output-dir``:
    pruning.png            one row per pruning block, one column per tubelet (its first frame);
                           dropped tokens greyed out. The keyframe's column is never pruned.
    decoder_attention.png  top: the frames with the actor's box on the keyframe; bottom: the last
                           decoder layer's attention of that actor over the surviving tokens.

The clip is the one the model sees for the keyframe at ``--time`` (resized for testing).
``--keep-rates`` changes the pruning blocks' keep rates without retraining (paper Fig. 5/12).
The pictures are made by ``evad_d2.demo.write_pruning_pictures``.
"""

import argparse
import sys

from detectron2.utils.logger import setup_logger

from evad_d2 import get_evad_cfg
from evad_d2.checkpoint import CheckpointFormatError
from evad_d2.data.video import VideoReadError
from evad_d2.demo import ActorSelectionError, check_input_video, write_pruning_pictures
from evad_d2.engine.predictor import EVADPredictor


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input", required=True, help="input video file")
    p.add_argument(
        "--time", type=float, default=None, help="keyframe time in seconds (default: the middle of the video)"
    )
    p.add_argument("--output-dir", required=True)
    p.add_argument("--actor", type=int, default=0, help="actor to show: rank by person score (0 = the most confident)")
    p.add_argument(
        "--actors-above",
        type=float,
        default=None,
        help="average the attention of every actor with person score >= this (the paper's Fig. 12) instead of --actor",
    )
    p.add_argument(
        "--keep-rates", type=float, nargs="+", default=None, help="per-block keep rates (one per encoder block)"
    )
    p.add_argument(
        "--scale", type=int, default=1, help="enlarge the pictures by this integer factor (nearest neighbour)"
    )
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ... (e.g. MODEL.WEIGHTS W)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="evad_d2")
    try:
        check_input_video(args.input)  # fail on unreadable input before building the model
    except VideoReadError as e:
        print(f"visualize_pruning.py: error: {e}", file=sys.stderr)
        return 2
    try:
        predictor = EVADPredictor(get_evad_cfg(args.config_file, args.opts))
    except (CheckpointFormatError, FileNotFoundError) as e:
        print(f"visualize_pruning.py: error: MODEL.WEIGHTS: {e}", file=sys.stderr)
        return 2
    if args.keep_rates is not None:
        predictor.model.set_keep_rates(args.keep_rates)
    try:
        write_pruning_pictures(
            predictor, args.input, args.output_dir, time=args.time, actor=args.actor,
            actors_above=args.actors_above, scale=args.scale,
        )
    except (VideoReadError, ActorSelectionError) as e:
        print(f"visualize_pruning.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
