#!/usr/bin/env python
"""Run EVAD over a video, a folder of videos, a frame folder, a camera or a network stream:
annotated video (or a live re-stream), per-keyframe JSON / JSON lines and an AVA-format CSV.

Examples:
    python tools/demo.py --config-file configs/quickstart/EVAD_tiny_ava_like_cpu.yaml \\
        --input video.mp4 --output out.mp4 --json out.json --csv out.csv --track \\
        MODEL.WEIGHTS output/quickstart/model_final.pth
    python tools/demo.py ... --input /dev/video0 --output out.mp4 --jsonl out.jsonl
    python tools/demo.py ... --input rtsp://user:pass@camera/stream --output udp://127.0.0.1:5000
    python tools/demo.py ... --input videos/ --output out/{name}.gif --jsonl out/
    python tools/demo.py ... --input frames/ --fps 30 --output out.webm

Inputs: a video file; a folder of videos (one set of outputs per video: an output with
``{name}`` is a template, any other a folder getting ``<name>.mp4``/``.json``/``.csv``/``.jsonl``);
a frame folder (images sorted by name, rate from ``--fps``); ``/dev/videoN`` (v4l2); a URL FFmpeg
reads (rtsp, rtmp, udp, tcp, http(s), HLS .m3u8, srt). A device or stream that does not open
within ``--open-timeout`` is an error naming it and FFmpeg's reason; one that sends no frame for
``--stall-timeout`` seconds, or ends, ends the run with every output closed and valid.

Live mode (the default for devices and streams; ``--live`` plays a file or frame folder at its
frame rate): decoding runs in its own thread into a bounded ring of frames, the model always takes
the newest complete clip (at most one keyframe per ``--keyframe-stride``), frames arriving while it
is busy are shown with the latest actors, and what it could not keep up with is dropped and
counted; memory is bounded for any stream length. Each --jsonl record adds ``latency_ms``
(capture of the clip's newest frame to result), ``model_ms``, ``keyframes_dropped``,
``frames_dropped`` and ``keep_rate``; a summary (median / 95th percentile latency, processed and
dropped keyframes) is logged at the end (Ctrl-C ends a camera run). ``--latency-ms`` /
``--target-fps``: the keep rate is measured at start (or read from ``--keep-rate-table``, written
by tools/calibrate_keep_rate.py) and kept at the highest one whose model time fits, never below
``--min-keep-rate`` (``evad_d2.demo.live_run.run_live``, ``evad_d2.demo.keep_rate``).

The model's own boxes are used (no separate person detector). Keyframes come every
``--keyframe-stride`` frames (default: one per second, as AVA annotates); every output frame shows
the actors of its nearest keyframe. The video is streamed, whatever its length, and its frame
timing kept (``evad_d2.demo.VideoDemo``, which this script calls).

Outputs:
    --output  the annotated video, same frames and timing as the input, container by extension
              (.mp4/.mov/.mkv H.264, .webm VP9/VP8, .ts MPEG-TS, .gif GIF89a) or a URL re-stream
              (udp:// tcp:// srt:// MPEG-TS, rtmp:// FLV, rtsp://) another player can watch.
    --jsonl   one JSON object per keyframe, flushed as written (``tail -f`` it while a stream
              runs): {"video_id", "frame_index", "time", "timestamp", "actors", "written_at"}.
    --json    {"video", "video_id", "width", "height", "fps", "keyframe_stride",
               "keyframe_interval_sec", "classes": [{"id", "name"}],
               "keyframes": [{"frame_index", "time", "timestamp", "actors": [{"box": [x1, y1,
               x2, y2] (pixels), "person_score", "actions": [{"id", "name", "score"}] (top-k),
               "track_id" (int, or null without --track)}]}], "num_frames"}
              --score-threshold / --classes choose the actions listed (and drawn) per actor; an
              actor with none left is left out of the video, JSON and JSON lines (not the CSV).
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
from evad_d2.data.formats.ava import AvaFormatError
from evad_d2.data.video import VideoReadError
from evad_d2.demo import VideoDemo, build_demo_predictor
from evad_d2.demo.filters import ActionFilter, LabelFileError, resolve_classes
from evad_d2.demo.keep_rate import DEFAULT_MIN_KEEP_RATE, latency_budget
from evad_d2.demo.live import DEFAULT_KEYFRAME_INTERVAL
from evad_d2.demo.live_run import run_live
from evad_d2.demo.runner import DemoOutputs, SourceOptions, check_inputs, run_demo
from evad_d2.demo.sources import SourceError, input_kind, open_source
from evad_d2.demo.writers import JsonLinesWriter
from evad_d2.engine import PRECISIONS

logger = logging.getLogger("evad_d2.demo")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input", required=True, help="video file, folder of videos, frame folder, /dev/videoN or stream URL")
    p.add_argument("--output", default=None, help="annotated video (.mp4 .webm .gif .ts .mkv .mov) or URL (udp://...)")
    p.add_argument("--json", default=None, help="per-keyframe predictions (JSON)")
    p.add_argument("--jsonl", default=None, help="per-keyframe predictions as JSON lines, flushed as written")
    p.add_argument("--csv", default=None, help="AVA-format detections (CSV)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of a frame folder (required there); for others it replaces the header's")
    p.add_argument("--open-timeout", type=float, default=10.0, help="seconds a camera or stream may take to open")
    p.add_argument("--stall-timeout", type=float, default=5.0,
                   help="seconds without a frame after which a camera or stream counts as ended")
    p.add_argument("--input-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg input option for cameras/streams (repeatable), e.g. video_size=640x480")
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
        "--labels", "--labelmap", dest="labels", default=None,
        help="class names: a pbtxt label map, a JSON list or a text file with one name per line "
             "(default: the test dataset's metadata)",
    )
    p.add_argument("--score-threshold", type=float, default=None, help="lowest action score shown")
    p.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="show only these classes (names or label-map ids)")
    p.add_argument(
        "--batch-size", type=int, default=1,
        help="keyframe clips per forward (GPUs: more throughput; holds that many more keyframe strides of frames)",
    )
    p.add_argument(
        "--precision", choices=list(PRECISIONS), default="fp32",
        help="run the model under autocast in bf16/fp16 (on GPUs: faster, less memory)",
    )
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (TEST.COMPILE); the first clip of each size compiles for minutes on a CPU")
    p.add_argument("--crf", type=int, default=20, help="x264 quality (lower is better)")
    p.add_argument("--line-width", type=int, default=None, help="box outline width in pixels")
    p.add_argument("--no-progress", action="store_true")
    # Live mode and the keep rate for a latency budget (evad_d2.demo.live, evad_d2.demo.keep_rate).
    p.add_argument("--live", action="store_true",
                   help="live mode for a file or frame folder too (played at its frame rate; default for devices/streams)")
    p.add_argument("--latency-ms", type=float, default=None, help="model time budget per keyframe (live mode)")
    p.add_argument("--target-fps", type=float, default=None, help="keyframes per second to keep up with (live mode)")
    p.add_argument("--min-keep-rate", type=float, default=DEFAULT_MIN_KEEP_RATE,
                   help="lowest keep rate a budget may choose")
    p.add_argument("--keep-rate-table", default=None, metavar="JSON",
                   help="keep-rate timings from tools/calibrate_keep_rate.py (default: measured at start)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ... (e.g. MODEL.WEIGHTS W)")
    return p


def _fail(message: str) -> int:
    print(f"demo.py: error: {message}", file=sys.stderr)
    return 2


def _input_options(parser, items):
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--input-option must be KEY=VALUE, got {item!r}")
        options[key] = value
    return options


def _action_filter(args, predictor) -> ActionFilter:
    classes = resolve_classes(args.classes, predictor.class_names, predictor.action_ids) if args.classes else None
    return ActionFilter(predictor.class_names, predictor.action_ids, top_k=args.top_k,
                        score_threshold=args.score_threshold, classes=classes)


def _live_mode(parser, args) -> bool:
    """Whether the run is live (``--live``, a device or a stream); refuses what live mode lacks."""
    try:
        kind = input_kind(args.input)
    except SourceError:
        kind = None  # a bad folder: check_inputs names the problem
    live = args.live or kind in ("stream", "device")
    if live and kind == "videos":
        parser.error("--live takes one video, frame folder, device or stream, not a folder of videos")
    budget = args.latency_ms is not None or args.target_fps is not None or args.keep_rate_table
    if not live and budget:
        parser.error("--latency-ms, --target-fps and --keep-rate-table are for live mode: add --live")
    if live and (args.json or args.csv):
        parser.error("live mode (--live, devices, streams) writes --output and --jsonl; --json/--csv record "
                     "every keyframe of a file: drop --live (for a stream: record it to a file first)")
    if live and args.batch_size != 1:
        parser.error("live mode runs the newest clip only: --batch-size must be 1")
    return live


def _run_live(args, predictor, action_filter, sources: SourceOptions) -> int:
    """Live mode: ``evad_d2.demo.live.run_live`` on the opened input."""
    records = None
    try:
        source = open_source(args.input, fps=sources.fps, open_timeout=sources.open_timeout,
                             stall_timeout=sources.stall_timeout, options=sources.options)
        stride = args.keyframe_stride
        interval = stride / float(source.frame_rate) if stride else DEFAULT_KEYFRAME_INTERVAL
        records = JsonLinesWriter(args.jsonl) if args.jsonl else None
        summary = run_live(
            predictor, source, args.output, keyframe_interval=interval,
            budget_s=latency_budget(args.latency_ms, args.target_fps), min_keep_rate=args.min_keep_rate,
            keep_rate_table=args.keep_rate_table, records=records, actor_filter=action_filter, track=args.track,
            video_id=args.video_id, time_offset=args.time_offset, line_width=args.line_width, crf=args.crf,
        )
    except (VideoReadError, OSError, ValueError) as e:  # OSError: VideoWriteError, a missing folder
        return _fail(str(e))
    finally:
        if records is not None:
            records.close()
    logger.info(
        f"{args.input}: live, ended ({summary['end_reason']}); keep rate {summary['keep_rate']} "
        f"({len(summary['keep_rate_changes'])} changes); wrote " + ", ".join(p for p in (args.output, args.jsonl) if p)
    )
    return 0


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    live = _live_mode(parser, args)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if not (args.output or args.json or args.jsonl or args.csv):
        parser.error("nothing to write: give --output, --json, --jsonl and/or --csv")
    sources = SourceOptions(args.fps, args.open_timeout, args.stall_timeout, _input_options(parser, args.input_option))
    setup_logger(name="evad_d2")
    setup_logger(name="fvcore")
    try:
        check_inputs(args.input, args.fps)  # fail on unreadable input before building the model
    except VideoReadError as e:
        return _fail(str(e))
    try:
        predictor = build_demo_predictor(
            args.config_file, args.opts, score_thresh=args.score_thresh, labelmap=args.labels,
            top_k=args.top_k, precision=args.precision, compile=args.compile or None,
        )
        action_filter = _action_filter(args, predictor)
    except CheckpointFormatError as e:  # refused (would run code), damaged or foreign weights
        return _fail(f"MODEL.WEIGHTS: {e}")
    except (LabelFileError, AvaFormatError, ValueError) as e:  # labels, --classes, --score-threshold
        return _fail(str(e))
    demo = VideoDemo(predictor, keyframe_stride=args.keyframe_stride, batch_size=args.batch_size)
    outputs = DemoOutputs(args.output, args.json, args.csv, args.jsonl)
    if live:
        return _run_live(args, predictor, action_filter, sources)
    try:
        results = run_demo(
            demo, args.input, outputs, sources=sources, video_id=args.video_id, action_filter=action_filter,
            track=args.track, time_offset=args.time_offset, crf=args.crf, line_width=args.line_width,
            show_progress=not args.no_progress,
        )
    except (VideoReadError, OSError, ValueError) as e:  # OSError: VideoWriteError, an output folder missing
        return _fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C: VideoDemo.run wrote the frames decoded so far and closed every output
        print("demo.py: interrupted; the outputs written so far are closed and valid", file=sys.stderr)
        return 130
    for stats in results:
        logger.info(
            f"{stats['input']}: {stats['num_frames']} frames, {stats['num_keyframes']} keyframes in "
            f"{stats['seconds']:.1f} s ({stats['fps_processed']:.1f} frames/s); wrote "
            + ", ".join(stats["outputs"].values()) + (f" ({stats['csv_rows']} CSV rows)" if args.csv else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
