#!/usr/bin/env python
"""Run EVAD over a whole video: annotated mp4, per-keyframe JSON and an AVA-format CSV.

Example:
    python tools/demo.py --config-file configs/quickstart/EVAD_tiny_ava_like_cpu.yaml \\
        --input video.mp4 --output out.mp4 --json out.json --csv out.csv --track \\
        MODEL.WEIGHTS output/quickstart/model_final.pth

The model's own boxes are used (no separate person detector). Keyframes come every
``--keyframe-stride`` frames (default: one per second, as AVA annotates); every output frame shows
the actors of its nearest keyframe. The video is streamed: decoding, inference and encoding run
as a pipeline holding only the frames the next clip and the not yet drawn frames need (about
``NUM_FRAMES * SAMPLING_RATE`` frames plus one keyframe stride, plus ``--batch-size - 1`` strides
while keyframe clips wait for their batch), whatever the video's length.
Times come from the frames' timestamps, so variable frame rate input is handled, and the output
keeps the input's frame timing.

Outputs:
    --output  H.264 mp4, same frames and timing as the input (odd sizes padded by one pixel).
    --json    {"video", "video_id", "width", "height", "fps", "keyframe_stride",
               "keyframe_interval_sec", "classes": [{"id", "name"}],
               "keyframes": [{"frame_index", "time", "timestamp", "actors": [{"box": [x1, y1,
               x2, y2] (pixels), "person_score", "actions": [{"id", "name", "score"}] (top-k),
               "track_id" (int, or null without --track)}]}], "num_frames"}
    --csv     AVA detection rows ``video_id, timestamp, x1, y1, x2, y2, action_id, score`` with
              the box normalised to [0, 1] and one row per actor and class. ``timestamp`` is the
              keyframe's time plus ``--time-offset`` rounded to the nearest whole second (halves
              up); when several keyframes round to the same second only the one nearest to it
              is written, so the file has at most one keyframe per second like AVA's.
"""

import argparse
import csv
import json
import logging
import math
import os
import sys
from collections import deque
from time import perf_counter
from typing import Dict, List, Optional

from detectron2.utils.logger import setup_logger
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from evad_d2 import get_evad_cfg  # noqa: E402
from evad_d2.checkpoint import CheckpointFormatError  # noqa: E402
from evad_d2.data.ava_format import read_label_map  # noqa: E402
from evad_d2.data.video import KeyframeBatcher, Mp4Writer, VideoReadError, iter_video_frames, probe_video  # noqa: E402
from evad_d2.engine import PRECISIONS  # noqa: E402
from evad_d2.engine.predictor import EVADPredictor  # noqa: E402
from evad_d2.utils.tracking import IoUTracker  # noqa: E402
from evad_d2.utils.video_visualizer import draw_actors  # noqa: E402

logger = logging.getLogger("evad_d2.demo")

def video_stream_info(path: str):
    """The input's header (``probe_video``), its rate rounded to a denominator <= 1001."""
    if not os.path.isfile(path):
        raise VideoReadError(path, "input video not found")
    info = probe_video(path)
    return info.num_frames, info.fps.limit_denominator(1001)


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


def setup_cfg(args):
    opts = list(args.opts)
    if args.score_thresh is not None:
        opts += ["MODEL.EVAD.LOC.SCORE_THRESH_TEST", args.score_thresh]
    return get_evad_cfg(args.config_file, opts)


class JsonKeyframeWriter:
    """Writes ``{**header, "keyframes": [...], **footer}`` one keyframe at a time."""

    def __init__(self, path: str, header: Dict):
        self.f = open(path, "w")
        self.f.write(json.dumps(header)[:-1] + ', "keyframes": [')
        self._first = True

    def add(self, entry: Dict) -> None:
        self.f.write(("\n" if self._first else ",\n") + json.dumps(entry))
        self._first = False

    def close(self, footer: Dict) -> None:
        self.f.write("\n]" + "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in footer.items()) + "}\n")
        self.f.close()


def ava_timestamp(time: float, offset: float = 0.0) -> int:
    """Whole-second AVA timestamp of a keyframe: ``time + offset`` rounded, halves up."""
    return int(math.floor(time + offset + 0.5))


class AvaCsvWriter:
    """AVA detection CSV, at most one keyframe per whole second (the one nearest to it)."""

    def __init__(
        self, path: str, video_id: str, width: int, height: int, action_ids: List[int], time_offset: float = 0.0
    ):
        if time_offset < 0:
            raise ValueError(f"--time-offset must be >= 0 (AVA timestamps are non-negative), got {time_offset}")
        self.f = open(path, "w", newline="")
        self.writer = csv.writer(self.f)
        self.video_id, self.width, self.height = video_id, width, height
        self.action_ids = list(action_ids)
        self.time_offset = time_offset
        self._pending = None  # (timestamp, distance to it, actors)
        self.num_rows = 0
        self.num_skipped_boxes = 0

    def add(self, time: float, actors: List[Dict]) -> None:
        ts = ava_timestamp(time, self.time_offset)
        dist = abs(time + self.time_offset - ts)
        if self._pending is not None and self._pending[0] == ts:
            if dist < self._pending[1]:
                self._pending = (ts, dist, actors)
            return
        self._flush()
        self._pending = (ts, dist, actors)

    def _flush(self) -> None:
        if self._pending is None:
            return
        ts, _, actors = self._pending
        for actor in actors:
            x1, y1, x2, y2 = actor["box"]
            box = [
                min(max(v / s, 0.0), 1.0)
                for v, s in ((x1, self.width), (y1, self.height), (x2, self.width), (y2, self.height))
            ]
            text = [f"{v:.4f}" for v in box]
            if float(text[2]) <= float(text[0]) or float(text[3]) <= float(text[1]):
                self.num_skipped_boxes += 1  # an empty box is not a valid AVA row
                continue
            for aid, score in zip(self.action_ids, actor["action_scores"]):
                self.writer.writerow([self.video_id, ts, *text, aid, f"{score:.6f}"])
                self.num_rows += 1
        self._pending = None

    def close(self) -> None:
        self._flush()
        self.f.close()


def _json_actor(actor: Dict) -> Dict:
    return {
        "box": [round(v, 2) for v in actor["box"]],
        "person_score": round(actor["person_score"], 5),
        "actions": [
            {"id": aid, "name": name, "score": round(score, 5)}
            for aid, (name, score) in zip(actor["action_ids"], actor["actions"])
        ],
        "track_id": actor.get("track_id"),
    }


def run_demo(
    predictor: EVADPredictor,
    input_path: str,
    output_path: str,
    *,
    json_path: Optional[str] = None,
    csv_path: Optional[str] = None,
    keyframe_stride: Optional[int] = None,
    track: bool = False,
    video_id: Optional[str] = None,
    time_offset: float = 0.0,
    crf: int = 20,
    line_width: Optional[int] = None,
    show_progress: bool = True,
    batch_size: int = 1,
) -> Dict:
    """Stream ``input_path`` through the predictor and write the annotated video and records.

    Returns:
        statistics: ``num_frames``, ``num_keyframes``, ``seconds``, ``fps_processed``,
        ``max_window_frames`` (most frames the clip sampler held), ``max_frames_held`` (most
        distinct frames held by the sampler and the drawing queue together), ``csv_rows``.

    Raises:
        VideoReadError: naming the input when it cannot be decoded.
    """
    num_frames, fps = video_stream_info(input_path)
    sampler = predictor.clip_sampler(float(fps), keyframe_stride)
    batcher = KeyframeBatcher(predictor, batch_size)
    tracker = IoUTracker() if track else None
    video_id = video_id or os.path.splitext(os.path.basename(input_path))[0]
    results: deque = deque()  # (time, actors) of completed keyframes still needed for drawing
    queue: deque = deque()  # decoded frames waiting for their nearest keyframe's prediction
    stats = {"num_frames": 0, "num_keyframes": 0, "max_window_frames": 0, "max_frames_held": 0, "csv_rows": 0}
    writer = json_writer = csv_writer = None
    start = perf_counter()
    bar = tqdm(
        total=num_frames or None,
        unit="frame",
        desc=os.path.basename(input_path),
        disable=not show_progress,
        dynamic_ncols=True,
    )

    def infer(done, final=False):
        for keyframe, actors in batcher.add(done, final):
            ids = tracker.update([a["box"] for a in actors]) if tracker else [None] * len(actors)
            for a, tid in zip(actors, ids):
                a["track_id"] = tid
            results.append((keyframe.time, actors))
            stats["num_keyframes"] += 1
            if json_writer:
                json_writer.add(
                    {
                        "frame_index": keyframe.index,
                        "time": round(keyframe.time, 6),
                        "timestamp": ava_timestamp(keyframe.time, time_offset),
                        "actors": [_json_actor(a) for a in actors],
                    }
                )
            if csv_writer:
                csv_writer.add(keyframe.time, actors)
            bar.set_postfix(keyframes=stats["num_keyframes"], refresh=False)

    def draw(final: bool):
        while queue and results and (final or results[-1][0] >= queue[0].time):
            frame = queue.popleft()
            # results[0] is the last keyframe at or before the frame, results[1] the next one.
            while len(results) >= 2 and results[1][0] <= frame.time:
                results.popleft()
            _, actors = min(list(results)[:2], key=lambda r: abs(r[0] - frame.time))
            writer.write(draw_actors(frame.image, actors, line_width=line_width), frame.time)
            bar.update(1)

    try:
        for frame in iter_video_frames(input_path):
            if writer is None:
                h, w = frame.image.shape[:2]
                writer = Mp4Writer(output_path, w, h, fps, crf)
                if json_path:
                    json_writer = JsonKeyframeWriter(
                        json_path,
                        {
                            "video": os.path.abspath(input_path),
                            "video_id": video_id,
                            "width": w,
                            "height": h,
                            "fps": float(fps),
                            "keyframe_stride": keyframe_stride,
                            "keyframe_interval_sec": sampler.interval,
                            "classes": [
                                {"id": i, "name": n} for i, n in zip(predictor.action_ids, predictor.class_names)
                            ],
                        },
                    )
                if csv_path:
                    csv_writer = AvaCsvWriter(csv_path, video_id, w, h, predictor.action_ids, time_offset)
            stats["num_frames"] += 1
            queue.append(frame)
            infer(sampler.push(frame))
            held = {f.index for f in sampler.buffered} | {f.index for f in queue} | {f.index for f in batcher.held_frames}
            stats["max_frames_held"] = max(stats["max_frames_held"], len(held))
            draw(final=False)
        infer(sampler.finish(), final=True)
        draw(final=True)
    finally:
        bar.close()
        for w_ in (writer, csv_writer):
            if w_ is not None:
                w_.close()
        if json_writer is not None:
            json_writer.close({"num_frames": stats["num_frames"]})
    if num_frames and stats["num_frames"] < 0.9 * num_frames:
        logger.warning(
            f"{input_path}: decoded {stats['num_frames']} frames but the header announces {num_frames} "
            "(truncated file?); the outputs cover the decoded frames"
        )
    stats["max_window_frames"] = sampler.max_buffered
    stats["csv_rows"] = csv_writer.num_rows if csv_writer else 0
    stats["seconds"] = perf_counter() - start
    stats["fps_processed"] = stats["num_frames"] / max(stats["seconds"], 1e-9)
    return stats


def main(argv=None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    setup_logger(name="evad_d2")
    setup_logger(name="fvcore")
    try:
        video_stream_info(args.input)  # fail on unreadable input before building the model
    except VideoReadError as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        return 2
    cfg = setup_cfg(args)
    names = ids = None
    if args.labelmap:
        label_map = read_label_map(args.labelmap)
        ids = sorted(label_map)
        names = [label_map[i] for i in ids]
    try:
        predictor = EVADPredictor(cfg, top_k=args.top_k, class_names=names, action_ids=ids, precision=args.precision)
    except CheckpointFormatError as e:  # refused (would run code), damaged or foreign weights
        print(f"demo.py: error: MODEL.WEIGHTS: {e}", file=sys.stderr)
        return 2
    try:
        stats = run_demo(
            predictor,
            args.input,
            args.output,
            json_path=args.json,
            csv_path=args.csv,
            keyframe_stride=args.keyframe_stride,
            track=args.track,
            video_id=args.video_id,
            time_offset=args.time_offset,
            crf=args.crf,
            line_width=args.line_width,
            show_progress=not args.no_progress,
            batch_size=args.batch_size,
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
