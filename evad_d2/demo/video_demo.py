"""Running EVAD over a whole video (like detectron2's ``VisualizationDemo`` in demo/predictor.py).

:class:`VideoDemo` owns what the predictor does not: iterating over a video stream (any
:class:`~evad_d2.demo.sources.FrameSource`: a file, a frame folder, a camera, a network stream). Decoded frames
go through a :class:`~evad_d2.data.video.KeyframeClipSampler` (a keyframe every
``keyframe_stride`` frames, by default one per second as AVA annotates), completed clips through
a :class:`~evad_d2.data.video.KeyframeBatcher` into the predictor, and, in :meth:`VideoDemo.run`,
every frame is drawn with the actors of its nearest keyframe and written out. Decoding, inference
and encoding run as a pipeline holding only the frames the next clip and the not yet drawn frames
need (about ``NUM_FRAMES * SAMPLING_RATE`` frames plus one keyframe stride, plus
``batch_size - 1`` strides while keyframe clips wait for their batch), whatever the video's length.
Times come from the frames' timestamps, so variable frame rate input is handled, and the output
keeps the input's frame timing.
"""
import logging
import os
from collections import deque
from dataclasses import dataclass
from time import perf_counter
from typing import Dict, Iterator, Optional, Sequence, Union

from tqdm import tqdm

from ..config import get_evad_cfg
from ..data.video import (
    KeyframeBatcher,
    KeyframeClipSampler,
    VideoFrame,
    VideoInfo,
    VideoReadError,
    VideoWriter,
    keyframe_sampler,
    probe_video,
)
from ..engine.predictor import EVADPredictor
from ..utils.tracking import IoUTracker
from ..utils.video_visualizer import draw_actors
from .filters import ActionFilter, read_label_names
from .sources import FrameSource, SourceError, expand_inputs, input_kind, open_source
from .writers import AvaCsvWriter, JsonKeyframeWriter, JsonLinesWriter, ava_timestamp, json_actor

__all__ = ["VideoDemo", "build_demo_predictor", "check_input_video"]

logger = logging.getLogger("evad_d2.demo")


def check_input_video(path: str) -> VideoInfo:
    """The header of an input video (``probe_video``), after checking that the file exists.

    Raises:
        VideoReadError: naming ``path`` when it is missing ("input video not found") or unreadable.
    """
    if not os.path.isfile(path):
        raise VideoReadError(path, "input video not found")
    return probe_video(path)


def build_demo_predictor(
    config_file: str,
    opts: Sequence = (),
    *,
    score_thresh: Optional[float] = None,
    labelmap: Optional[str] = None,
    top_k: int = 3,
    precision: str = "fp32",
    compile: Optional[bool] = None,
) -> EVADPredictor:
    """The demo's predictor: the config file with ``opts`` (KEY VALUE ...) merged, the person
    score threshold ``score_thresh`` (None: ``MODEL.EVAD.LOC.SCORE_THRESH_TEST``), class names
    (and ids, where the file has them) from a label file ``labelmap``: a pbtxt label map, a JSON
    list or a text file with one name per line (:func:`~evad_d2.demo.filters.read_label_names`;
    None: the test dataset's metadata). ``compile``: torch.compile the model (None: ``TEST.COMPILE``).

    Raises:
        CheckpointFormatError: ``MODEL.WEIGHTS`` refused (would run code), damaged or foreign.
        LabelFileError / AvaFormatError: an unusable label file, naming it.
        ValueError: the label file's class count is not the model's.
    """
    opts = list(opts)
    if score_thresh is not None:
        opts += ["MODEL.EVAD.LOC.SCORE_THRESH_TEST", score_thresh]
    cfg = get_evad_cfg(config_file, opts)
    names = ids = None
    if labelmap:
        ids, names = read_label_names(labelmap)
        num_classes = cfg.MODEL.EVAD.NUM_ACTION_CLASSES
        if len(names) != num_classes:
            raise ValueError(
                f"{labelmap}: {len(names)} class names but the model has {num_classes} action classes "
                "(MODEL.EVAD.NUM_ACTION_CLASSES): one name per model output, in column order"
            )
    return EVADPredictor(cfg, top_k=top_k, class_names=names, action_ids=ids, precision=precision, compile=compile)


class VideoDemo:
    """Predictions over whole videos with an :class:`~evad_d2.engine.EVADPredictor`.

    Args:
        predictor: the predictor (anything with its ``predict_batch``, ``num_frames``,
            ``keyframe_index``, ``sampling_rate``, ``frame_rate``, ``action_ids`` and
            ``class_names``).
        keyframe_stride: frames between keyframes; None: one keyframe per second.
        batch_size: keyframe clips per forward (GPUs: more throughput; holds that many more
            keyframe strides of frames).
    """

    def __init__(self, predictor, *, keyframe_stride: Optional[int] = None, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1 clip, got {batch_size}")
        self.predictor = predictor
        self.keyframe_stride = keyframe_stride
        self.batch_size = batch_size

    def clip_sampler(self, fps: float, start: float = 0.0) -> KeyframeClipSampler:
        """The clip sampler for a video of nominal rate ``fps``, in the predictor's clip layout
        (clip frames ``SAMPLING_RATE / frame_rate`` seconds apart)."""
        p = self.predictor
        return keyframe_sampler(
            p.num_frames, p.keyframe_index, p.sampling_rate / p.frame_rate, fps, self.keyframe_stride, start
        )

    def predict_video(self, source: Union[str, FrameSource]) -> Iterator[Dict]:
        """Slide over a video and yield one result per keyframe, in keyframe order, as soon as its
        clip is decoded (with ``batch_size`` > 1: once that many clips are ready, which are then
        run in one forward).

        Args:
            source: a video file, a folder of videos (one after the other, by name), a frame
                folder (its rate: open it with :func:`~evad_d2.demo.sources.open_source` ``fps=``),
                a camera device or stream URL (:func:`~evad_d2.demo.sources.input_kind`), or an
                open source; a stream ends when it ends or stalls.

        Yields:
            ``{"video": the source's name, "frame_index": int, "time": float seconds, "actors":
            list as from EVADPredictor}``.

        Raises:
            VideoReadError: naming the input, when it cannot be opened or read.
        """
        if not isinstance(source, FrameSource) and input_kind(source) == "videos":
            for spec in expand_inputs(source):
                yield from self.predict_video(spec)
            return
        source = source if isinstance(source, FrameSource) else open_source(source)
        batcher = KeyframeBatcher(self.predictor, self.batch_size)
        sampler = self.clip_sampler(float(source.frame_rate))
        try:
            for frame in source.video_frames():
                for keyframe, actors in batcher.add(sampler.push(frame)):
                    yield {"video": source.name, "frame_index": keyframe.index, "time": keyframe.time, "actors": actors}
        finally:
            source.close()
        for keyframe, actors in batcher.add(sampler.finish(), final=True):
            yield {"video": source.name, "frame_index": keyframe.index, "time": keyframe.time, "actors": actors}

    def run(
        self,
        input_path: Union[str, FrameSource],
        output_path: Optional[str],
        *,
        json_path: Optional[str] = None,
        csv_path: Optional[str] = None,
        jsonl_path: Optional[str] = None,
        action_filter: Optional[ActionFilter] = None,
        track: bool = False,
        video_id: Optional[str] = None,
        time_offset: float = 0.0,
        crf: int = 20,
        line_width: Optional[int] = None,
        show_progress: bool = True,
    ) -> Dict:
        """Stream ``input_path`` through the predictor and write the annotated video and records.

        Args:
            input_path: input video, or any open source (:func:`~evad_d2.demo.sources.open_source`:
                frame folder, camera, stream; a stream that ends or stalls ends the run, and the
                outputs are finalised).
            output_path: annotated video, same frames and timing as the input, in the container
                of its extension or URL (:class:`~evad_d2.data.video.VideoWriter`: .mp4, .webm,
                .gif, .ts, udp://...), or None.
            json_path: per-keyframe predictions (see ``tools/demo.py`` for the layout), or None.
            csv_path: AVA detection rows (:class:`~evad_d2.demo.writers.AvaCsvWriter`; all
                actors and classes, whatever ``action_filter``), or None.
            jsonl_path: one JSON object per keyframe, flushed as written, or None.
            action_filter: the actions shown and stored in the JSON/JSON-lines (None: the
                predictor's top-k of every actor).
            track: link actors across keyframes by IoU (stable ids and colours).
            video_id: the CSV's and JSON's video id (default: the source's name, for a file its
                name without extension).
            time_offset: seconds added to keyframe times for AVA timestamps.
            crf: x264 quality (lower is better).
            line_width: box outline width in pixels (None: from the frame size).
            show_progress: a progress bar.

        Returns:
            statistics: ``num_frames``, ``num_keyframes``, ``seconds``, ``fps_processed``,
            ``max_window_frames`` (most frames the clip sampler held), ``max_frames_held`` (most
            distinct frames held by the sampler and the drawing queue together), ``csv_rows``,
            ``end_reason`` (the source's: ``"end"``, ``"stalled"``, ...).

        Raises:
            VideoReadError: naming the input when it cannot be decoded (SourceError when a
                stream sends no frame at all).
            VideoWriteError: naming an output that cannot be made.
        """
        source = input_path if isinstance(input_path, FrameSource) else open_source(input_path)
        outputs = _Outputs(output_path, json_path, csv_path, jsonl_path, time_offset, crf, line_width)
        run = _DemoRun(self, source, video_id or source.name, outputs, action_filter=action_filter, track=track,
                       show_progress=show_progress)
        try:
            for frame in source.video_frames():
                run.take_frame(frame)
            if run.stats["num_frames"] == 0:
                raise SourceError(source.spec, f"no frame received (the input {source.end_reason} before its first frame)")
            run.finish_stream()
        finally:
            source.close()
            run.close()
        return run.statistics()


@dataclass(frozen=True)
class _Outputs:
    """Where and how :meth:`VideoDemo.run` writes (its arguments of the same names)."""

    output_path: Optional[str]
    json_path: Optional[str]
    csv_path: Optional[str]
    jsonl_path: Optional[str]
    time_offset: float
    crf: int
    line_width: Optional[int]


class _DemoRun:
    """One pass of :meth:`VideoDemo.run` over a video: the state its steps share.

    Steps, per decoded frame (:meth:`take_frame`): open the outputs at the first frame; queue the
    frame for drawing; push it to the clip sampler and run the completed clips
    (:meth:`record_keyframes`: track, write the JSON and CSV records); draw and write the queued
    frames whose nearest keyframe is known (:meth:`draw_ready`). At the end (:meth:`finish_stream`)
    the remaining clips run and every queued frame is drawn.
    """

    def __init__(
        self, demo: VideoDemo, source: FrameSource, video_id: str, outputs: "_Outputs", *,
        action_filter: Optional[ActionFilter], track: bool, show_progress: bool,
    ):
        self.predictor = demo.predictor
        self.source, self.input_path, self.video_id, self.outputs = source, source.spec, video_id, outputs
        self.action_filter = action_filter
        self.header_frames = source.expected_frames
        self.fps = source.frame_rate
        self.sampler = demo.clip_sampler(float(self.fps))
        self.batcher = KeyframeBatcher(demo.predictor, demo.batch_size)
        self.keyframe_stride = demo.keyframe_stride
        self.tracker = IoUTracker() if track else None
        self.results: deque = deque()  # (time, actors) of completed keyframes still needed for drawing
        self.queue: deque = deque()  # decoded frames waiting for their nearest keyframe's prediction
        self.stats = {"num_frames": 0, "num_keyframes": 0, "max_window_frames": 0, "max_frames_held": 0, "csv_rows": 0}
        self.video_writer = self.json_writer = self.csv_writer = self.jsonl_writer = None
        self.opened = False
        self.start = perf_counter()
        self.bar = tqdm(
            total=source.expected_frames or None,
            unit="frame",
            desc=source.name,
            disable=not show_progress,
            dynamic_ncols=True,
        )

    # ---------------------------------------------------------------- steps
    def take_frame(self, frame: VideoFrame) -> None:
        if not self.opened:
            self.open_outputs(*frame.image.shape[:2])
        self.stats["num_frames"] += 1
        self.queue.append(frame)
        self.record_keyframes(self.batcher.add(self.sampler.push(frame)))
        held = {f.index for f in self.sampler.buffered} | {f.index for f in self.queue}
        held |= {f.index for f in self.batcher.held_frames}
        self.stats["max_frames_held"] = max(self.stats["max_frames_held"], len(held))
        self.draw_ready(final=False)

    def finish_stream(self) -> None:
        self.record_keyframes(self.batcher.add(self.sampler.finish(), final=True))
        self.draw_ready(final=True)

    def open_outputs(self, height: int, width: int) -> None:
        """The writers, sized by the first decoded frame (the displayed size)."""
        out = self.outputs
        self.opened = True
        if out.output_path:
            self.video_writer = VideoWriter(out.output_path, width, height, self.fps, out.crf)
        if out.jsonl_path:
            self.jsonl_writer = JsonLinesWriter(out.jsonl_path)
        if out.json_path:
            p = self.predictor
            header = {
                "video": self.input_path if self.source.live else os.path.abspath(self.input_path),
                "video_id": self.video_id,
                "width": width,
                "height": height,
                "fps": float(self.fps),
                "keyframe_stride": self.keyframe_stride,
                "keyframe_interval_sec": self.sampler.interval,
                "classes": [{"id": i, "name": n} for i, n in zip(p.action_ids, p.class_names)],
            }
            self.json_writer = JsonKeyframeWriter(out.json_path, header)
        if out.csv_path:
            self.csv_writer = AvaCsvWriter(
                out.csv_path, self.video_id, width, height, self.predictor.action_ids, out.time_offset
            )

    def record_keyframes(self, done) -> None:
        """Track the actors of completed keyframes, keep them for drawing, write their records."""
        for keyframe, actors in done:
            ids = self.tracker.update([a["box"] for a in actors]) if self.tracker else [None] * len(actors)
            for a, tid in zip(actors, ids):
                a["track_id"] = tid
            shown = self.action_filter(actors) if self.action_filter else actors
            self.results.append((keyframe.time, shown))
            self.stats["num_keyframes"] += 1
            record = {
                "frame_index": keyframe.index,
                "time": round(keyframe.time, 6),
                "timestamp": ava_timestamp(keyframe.time, self.outputs.time_offset),
                "actors": [json_actor(a) for a in shown],
            }
            if self.json_writer:
                self.json_writer.add(record)
            if self.jsonl_writer:
                self.jsonl_writer.add({"video_id": self.video_id, **record})
            if self.csv_writer:
                self.csv_writer.add(keyframe.time, actors)
            self.bar.set_postfix(keyframes=self.stats["num_keyframes"], refresh=False)

    def draw_ready(self, final: bool) -> None:
        """Draw and write the queued frames whose nearest keyframe is known (all when ``final``;
        with no keyframe result at all, as they are)."""
        results, queue = self.results, self.queue
        if final and not results:
            results.append((float("-inf"), []))
        while queue and results and (final or results[-1][0] >= queue[0].time):
            frame = queue.popleft()
            # results[0] is the last keyframe at or before the frame, results[1] the next one.
            while len(results) >= 2 and results[1][0] <= frame.time:
                results.popleft()
            _, actors = min(list(results)[:2], key=lambda r: abs(r[0] - frame.time))
            if self.video_writer:
                self.video_writer.write(draw_actors(frame.image, actors, line_width=self.outputs.line_width), frame.time)
            self.bar.update(1)

    # ---------------------------------------------------------------- end
    def close(self) -> None:
        """Write the frames still queued (after an error or Ctrl-C: with the results known so far)
        and close every writer, so that each file is complete and valid even after an error; the
        first error met is raised once all are closed."""
        self.bar.close()
        closers = [lambda: self.draw_ready(final=True)] if self.queue and self.video_writer else []
        closers += [w.close for w in (self.video_writer, self.csv_writer, self.jsonl_writer) if w is not None]
        if self.json_writer is not None:
            closers.append(lambda: self.json_writer.close({"num_frames": self.stats["num_frames"]}))
        error = None
        for close in closers:
            try:
                close()
            except Exception as e:  # keep closing the others
                error = error or e
        if error is not None:
            raise error

    def statistics(self) -> Dict:
        stats = self.stats
        if self.header_frames and stats["num_frames"] < 0.9 * self.header_frames:
            logger.warning(
                f"{self.input_path}: decoded {stats['num_frames']} frames but the header announces "
                f"{self.header_frames} (truncated file?); the outputs cover the decoded frames"
            )
        stats["max_window_frames"] = self.sampler.max_buffered
        stats["csv_rows"] = self.csv_writer.num_rows if self.csv_writer else 0
        stats["end_reason"] = self.source.end_reason
        stats["seconds"] = perf_counter() - self.start
        stats["fps_processed"] = stats["num_frames"] / max(stats["seconds"], 1e-9)
        return stats
