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
"""

import argparse
import logging
import os
import sys

import numpy as np
from detectron2.utils.logger import setup_logger
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evad_d2 import get_evad_cfg  # noqa: E402
from evad_d2.checkpoint import CheckpointFormatError  # noqa: E402
from evad_d2.data.video import VideoReadError, probe_video, read_clip_at  # noqa: E402
from evad_d2.engine.predictor import EVADPredictor  # noqa: E402
from evad_d2.utils.pruning_vis import inspect_clip, render_decoder_attention, render_pruning_grid  # noqa: E402

logger = logging.getLogger("evad_d2.visualize_pruning")


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
        info = probe_video(args.input)
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

    duration = info.num_frames / float(info.fps) if info.num_frames else 0.0
    time = duration / 2 if args.time is None else args.time
    try:
        keyframe, frames = read_clip_at(
            args.input,
            time,
            predictor.num_frames,
            predictor.keyframe_index,
            predictor.sampling_rate / predictor.frame_rate,
        )
    except VideoReadError as e:
        print(f"visualize_pruning.py: error: {e}", file=sys.stderr)
        return 2
    inputs = predictor.preprocess(np.stack([f.image for f in frames]))
    inspection = inspect_clip(predictor.model, inputs)
    os.makedirs(args.output_dir, exist_ok=True)

    def save(image: Image.Image, name: str) -> str:
        if args.scale > 1:
            image = image.resize((image.width * args.scale, image.height * args.scale), Image.NEAREST)
        path = os.path.join(args.output_dir, name)
        image.save(path)
        return path

    counts = ", ".join(f"block {b + 1}: {int(m.sum())}" for b, m in sorted(inspection.kept.items()))
    total = int(np.prod(inspection.grid))
    logger.info(f"keyframe {keyframe.index} at {keyframe.time:.3f} s; grid {inspection.grid} = {total} tokens; kept {counts}")
    if inspection.kept:
        logger.info(f"wrote {save(render_pruning_grid(inputs['clip'], inspection), 'pruning.png')}")
    else:
        logger.warning("no block prunes (all keep rates are 1): pruning.png not written")

    if inspection.decoder_attention is None:
        logger.warning("the action head has no decoder: decoder_attention.png not written")
        return 0
    order = np.argsort(-inspection.person_scores, kind="stable")
    if args.actors_above is not None:
        actors = [int(i) for i in order if inspection.person_scores[i] >= args.actors_above]
        if not actors:
            print(
                f"visualize_pruning.py: error: no actor has person score >= {args.actors_above} "
                f"(highest {inspection.person_scores.max():.3f})",
                file=sys.stderr,
            )
            return 2
    else:
        if not 0 <= args.actor < len(order):
            print(f"visualize_pruning.py: error: --actor must be in [0, {len(order)})", file=sys.stderr)
            return 2
        actors = [int(order[args.actor])]
    desc = ", ".join(
        f"#{a} (person {inspection.person_scores[a]:.2f}, box {np.round(inspection.proposal_boxes[a], 1).tolist()})"
        for a in actors
    )
    logger.info(f"decoder attention of actor(s) {desc}")
    logger.info(f"wrote {save(render_decoder_attention(inputs['clip'], inspection, actors), 'decoder_attention.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
