#!/usr/bin/env python
"""Run EVAD over a whole video: annotated mp4, per-keyframe JSON and an AVA-format CSV.

Example:
    python tools/demo.py --config-file configs/quickstart/EVAD_tiny_ava_like_cpu.yaml \\
        --input video.mp4 --output out.mp4 --json out.json --csv out.csv --track \\
        MODEL.WEIGHTS output/quickstart/model_final.pth

The model's own boxes are used (no separate person detector). Keyframes come every
``--keyframe-stride`` frames (default: one per second, as AVA annotates); every output frame shows
the actors of its nearest keyframe. The video is streamed, whatever its length, and its frame
timing kept (``evad_d2.demo.VideoDemo``, which this script calls).

Outputs:
    --output  H.264 mp4, same frames and timing as the input (odd sizes padded by one pixel).
    --json    {"video", "video_id", "width", "height", "fps", "keyframe_stride",
               "keyframe_interval_sec", "classes": [{"id", "name"}],
               "keyframes": [{"frame_index", "time", "timestamp", "actors": [{"box": [x1, y1,
               x2, y2] (pixels), "person_score", "actions": [{"id", "name", "score"}] (top-k),
               "track_id" (int, or null without --track)}]}], "num_frames"}
    --csv     AVA detection rows ``video_id, timestamp, x1, y1, x2, y2, action_id, score`` with
              the box normalised to [0, 1] and one row per actor and class, in the evaluator's
              text (``evad_d2.data.formats.ava``: ``%04d`` timestamps, 5 box / 6 score decimals). ``timestamp`` is the
              keyframe's time plus ``--time-offset`` rounded to the nearest whole second (halves
              up); when several keyframes round to the same second only the one nearest to it
              is written, so the file has at most one keyframe per second like AVA's.
"""

import argparse
import logging
import sys

from detectron2.utils.logger import setup_logger

from evad_d2.checkpoint import CheckpointFormatError
from evad_d2.data.video import VideoReadError
from evad_d2.demo import VideoDemo, build_demo_predictor, check_input_video
from evad_d2.engine import PRECISIONS

logger = logging.getLogger("evad_d2.demo")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input", required=True, help="input video file")
    p.add_argument("--output", required=True, help="annotated output video (.mp4)")
    p.add_argument("--json", default=None, help="per-keyframe predictions (JSON)")
    p.add_argument("--csv", default=None, help="AVA-format detections (CSV)")
    p.add_argument(
        "--keyframe-stride",
        type=int,
        default=None,
        help="frames between keyframes (default: the frame rate, i.e. 1 per second)",
    )
    p.add_argument("--top-k", type=int, default=3, help="actions shown and stored in the JSON per actor")
    p.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="person score threshold (default: MODEL.EVAD.LOC.SCORE_THRESH_TEST)",
    )
    p.add_argument("--track", action="store_true", help="link actors across keyframes by IoU (stable ids and colours)")
    p.add_argument(
        "--video-id", default=None, help="video_id column of the CSV (default: the input file name without extension)"
    )
    p.add_argument(
        "--time-offset",
        type=float,
        default=0.0,
        help="seconds added to keyframe times in the CSV (900 for AVA's cut clips)",
    )
    p.add_argument(
        "--labelmap", default=None, help="pbtxt label map naming the classes (default: the test dataset's metadata)"
    )
    p.add_argument(
        "--batch-size", type=int, default=1,
        help="keyframe clips per forward (GPUs: more throughput; holds that many more keyframe strides of frames)",
    )
    p.add_argument(
        "--precision", choices=list(PRECISIONS), default="fp32",
        help="run the model under autocast in bf16/fp16 (on GPUs: faster, less memory)",
    )
    p.add_argument("--crf", type=int, default=20, help="x264 quality (lower is better)")
    p.add_argument("--line-width", type=int, default=None, help="box outline width in pixels")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ... (e.g. MODEL.WEIGHTS W)")
    return p


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    setup_logger(name="evad_d2")
    setup_logger(name="fvcore")
    try:
        check_input_video(args.input)  # fail on unreadable input before building the model
    except VideoReadError as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 2
    try:
        predictor = build_demo_predictor(
            args.config_file, args.opts, score_thresh=args.score_thresh, labelmap=args.labelmap,
            top_k=args.top_k, precision=args.precision,
        )
    except CheckpointFormatError as e:  # refused (would run code), damaged or foreign weights
        print(f"demo.py: error: MODEL.WEIGHTS: {e}", file=sys.stderr)
        return 2
    demo = VideoDemo(predictor, keyframe_stride=args.keyframe_stride, batch_size=args.batch_size)
    try:
        stats = demo.run(
            args.input, args.output, json_path=args.json, csv_path=args.csv, track=args.track,
            video_id=args.video_id, time_offset=args.time_offset, crf=args.crf, line_width=args.line_width,
            show_progress=not args.no_progress,
        )
    except VideoReadError as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 2
    logger.info(
        f"{stats['num_frames']} frames, {stats['num_keyframes']} keyframes in {stats['seconds']:.1f} s "
        f"({stats['fps_processed']:.1f} frames/s); wrote {args.output}"
        + (f", {args.json}" if args.json else "")
        + (f", {args.csv} ({stats['csv_rows']} rows)" if args.csv else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
