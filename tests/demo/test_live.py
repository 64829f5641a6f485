"""Live mode (evad_d2.demo.live): the ring, the newest window, pacing, and bounded latency with a
model made artificially slow."""
import threading
import time

import av
import numpy as np
import pytest

from evad_d2.demo.live import FrameRing, LiveDemo, LiveFrame, PacedSource, newest_window, window_frames
from evad_d2.demo.live_run import run_live_demo
from evad_d2.demo.sources import open_source
from evad_d2.testing import TINY_CONFIG, coded_frame, run_tool, write_video


class ListSource:
    """A frame source over ``n`` generated 8x8 frames at ``fps``: frame i is filled with i % 256
    (so a predictor can tell which frames it got); decodes as fast as it is read."""

    def __init__(self, n, fps, name="list", fail_at=None):
        self.n, self.frame_rate, self.name, self.fail_at = n, fps, name, fail_at
        self.closed = False

    def __iter__(self):
        for i in range(self.n):
            if self.closed:
                return
            if i == self.fail_at:
                raise OSError(f"{self.name}: connection reset at frame {i}")
            yield np.full((8, 8, 3), i % 256, np.uint8), i / self.frame_rate, time.time()

    def close(self):
        self.closed = True


class SlowPredictor:
    """The predictor interface LiveDemo uses, taking ``delay`` seconds per clip; one actor per clip
    whose person score is the index (pixel value) of the clip's last frame."""

    num_frames, keyframe_index, sampling_rate, frame_rate = 4, 2, 1, 50.0

    def __init__(self, delay):
        self.delay = delay
        self.calls = 0

    def predict_batch(self, clips):
        self.calls += 1
        time.sleep(self.delay)
        return [[{"box": [0.0, 0.0, 4.0, 4.0], "person_score": float(c[-1, 0, 0, 0])}] for c in clips]


def frames_at(times):
    return [LiveFrame(i, t, 0.0, np.zeros((2, 2, 3), np.uint8)) for i, t in enumerate(times)]


def test_newest_window_ends_at_the_newest_frame():
    frames = frames_at([i / 10 for i in range(11)])  # 0.0 .. 1.0 s at 10 fps
    # T=4, keyframe 2, step 0.2 s: t_key = 1.0 - 1 * 0.2 = 0.8, samples 0.4, 0.6, 0.8, 1.0.
    keyframe, clip = newest_window(frames, 4, 2, 0.2, tolerance=0.05)
    assert [f.index for f in clip] == [4, 6, 8, 10]
    assert keyframe.index == 8
    # The held frames start at 0.5 s, after the first sample (0.4 s): not complete yet ...
    assert newest_window(frames[5:], 4, 2, 0.2, tolerance=0.05) is None
    # ... unless the ring is full: then the oldest frame is repeated.
    _, clip = newest_window(frames[5:], 4, 2, 0.2, tolerance=0.05, full=True)
    assert [f.index for f in clip] == [5, 6, 8, 10]
    assert newest_window([], 4, 2, 0.2, tolerance=0.05) is None


def test_window_frames():
    # 3 steps of 0.02 s at 50 fps: 3 frame intervals, 4 frames.
    assert window_frames(4, 0.02, 50) == 4
    # 7 steps of 1/15 s at 25 fps: 11.67 intervals -> 12, 13 frames.
    assert window_frames(8, 2 / 30, 25) == 13


def test_frame_ring_keeps_only_the_newest_frames():
    ring = FrameRing(8)
    for f in frames_at([i / 30 for i in range(100)]):
        ring.push(f)
    assert [f.index for f in ring.snapshot()] == list(range(92, 100))
    assert (ring.num_pushed, ring.max_held, ring.capacity) == (100, 8, 8)
    with pytest.raises(ValueError, match="at least 2 frames"):
        FrameRing(1)


def test_paced_source_hands_frames_out_at_their_pts():
    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(round(s, 6))
        now[0] += s

    source = ListSource(3, fps=2.0)  # pts 0, 0.5, 1.0
    paced = PacedSource(source, clock=lambda: now[0], sleep=sleep, wall_clock=lambda: now[0])
    out = [(pts, captured) for _, pts, captured in paced]
    assert slept == [0.5, 0.5]
    assert out == [(0.0, 100.0), (0.5, 100.5), (1.0, 101.0)]
    assert (paced.name, paced.frame_rate, paced.live) == ("list", 2.0, True)
    paced.close()
    assert source.closed


def run_slow(seconds, delay=0.3, buffer_frames=12):
    """A ``seconds`` long 50 fps stream played in real time through a model taking ``delay`` s;
    keyframe slots every 0.05 s. Returns (summary, keyframe records, shown frames' indices)."""
    predictor = SlowPredictor(delay)
    demo = LiveDemo(predictor, keyframe_interval=0.05, buffer_frames=buffer_frames)
    records, shown = [], []
    summary = demo.run(
        PacedSource(ListSource(int(seconds * 50), 50.0)),
        on_frame=lambda image, pts, actors: shown.append(int(image[0, 0, 0])),
        on_keyframe=lambda record, actors: records.append((record, actors)),
        poll_s=0.05,
    )
    return summary, records, shown


def test_slow_model_latency_stays_bounded_and_drops_are_counted():
    summary, records, shown = run_slow(2.0)
    n = 100
    # Every frame is either shown (in order, once) or counted as dropped.
    assert shown == sorted(set(shown))
    assert summary["frames_decoded"] == n
    assert summary["frames_shown"] + summary["frames_dropped"] == n == len(shown) + summary["frames_dropped"]
    # The model (0.3 s) is far slower than the keyframe slots (0.05 s): most slots are dropped.
    assert summary["processed_keyframes"] == len(records) >= 2
    assert summary["dropped_keyframes"] == sum(r["keyframes_dropped"] for r, _ in records) > summary["processed_keyframes"]
    # Slots run from the first processed keyframe (slot 0) to the last one, each processed or dropped.
    first, last = records[0][0]["time"], records[-1][0]["time"]
    slots = int(np.floor((last - first + 0.01) / 0.05)) + 1
    assert summary["processed_keyframes"] + summary["dropped_keyframes"] == slots
    # Frames the ring overwrote while the model ran (15 arrive per 0.3 s, 12 are held) are counted.
    assert summary["frames_dropped"] >= sum(r["frames_dropped"] for r, _ in records) > 0
    # Latency: the newest window waits for at most one model run, then takes one: about 2 x 0.3 s,
    # never the seconds a queue of 2 s of keyframes would build up (far less than 1 s here).
    assert all(r["model_ms"] >= 300 for r, _ in records)
    assert summary["latency_max_ms"] < 1000
    assert summary["latency_median_ms"] <= summary["latency_p95_ms"] <= summary["latency_max_ms"]
    # Each keyframe's actors came from its own window: the clip's last frame is the newest frame.
    for record, actors in records:
        assert actors[0]["person_score"] == pytest.approx(record["frame_index"] + 1)


def test_memory_is_bounded_whatever_the_stream_length():
    short, _, _ = run_slow(0.6)
    long, _, _ = run_slow(2.4)
    assert short["buffer_capacity"] == long["buffer_capacity"] == 12
    assert short["max_buffered"] <= 12 and long["max_buffered"] <= 12
    assert long["frames_decoded"] == 4 * short["frames_decoded"] == 120


def test_fast_model_processes_every_slot_and_shows_every_frame():
    predictor = SlowPredictor(0.0)
    shown = []
    summary = LiveDemo(predictor, keyframe_interval=0.2).run(
        PacedSource(ListSource(50, 50.0)), on_frame=lambda image, pts, actors: shown.append(pts), poll_s=0.05
    )
    assert shown == [i / 50 for i in range(50)]
    assert summary["frames_dropped"] == summary["dropped_keyframes"] == 0
    # Keyframes from 0.04 s (the first complete window: 3 steps of 0.02 s after frame 0 is 0.06 s,
    # minus one step) every 0.2 s up to the last frame's window (0.96 s): 0.04, 0.24, ..., 0.84.
    assert summary["processed_keyframes"] == 5
    # Default ring: twice (one clip's 4 frames + one second of 50 frames).
    assert summary["buffer_capacity"] == 108


def test_source_error_is_raised_and_the_source_closed():
    source = ListSource(100, 50.0, name="cam", fail_at=30)
    with pytest.raises(OSError, match="cam: connection reset at frame 30"):
        LiveDemo(SlowPredictor(0.0)).run(source, poll_s=0.05)
    assert source.closed
    assert not [t for t in threading.enumerate() if t.name.startswith("decode cam")]


def test_ctrl_c_ends_the_run_with_a_summary():
    source = ListSource(1000, 50.0)
    shown = []

    def on_frame(image, pts, actors):
        shown.append(pts)
        if len(shown) == 20:
            raise KeyboardInterrupt

    summary = LiveDemo(SlowPredictor(0.0), keyframe_interval=0.1).run(PacedSource(source), on_frame, poll_s=0.05)
    assert summary["end_reason"] == "interrupted" and summary["frames_shown"] == 19
    assert source.closed


def test_a_stream_changing_resolution_keeps_running():
    class Resizing(ListSource):
        def __iter__(self):
            for image, pts, captured in super().__iter__():
                yield (image if pts < 0.2 else np.full((6, 10, 3), image[0, 0, 0], np.uint8)), pts, captured

    clips = []
    predictor = SlowPredictor(0.0)
    predictor.predict_batch = lambda batch: clips.extend(c.shape for c in batch) or [[] for _ in batch]
    summary = LiveDemo(predictor, keyframe_interval=0.02).run(PacedSource(Resizing(20, 50.0)), poll_s=0.05)
    assert summary["frames_shown"] == 20 and summary["processed_keyframes"] == len(clips) >= 5
    assert set(clips) <= {(4, 8, 8, 3), (4, 6, 10, 3)} and (4, 6, 10, 3) in clips


def test_invalid_interval():
    with pytest.raises(ValueError, match="keyframe interval must be positive"):
        LiveDemo(SlowPredictor(0.0), keyframe_interval=0)


@pytest.mark.slow
def test_demo_tool_live_on_a_file_with_a_latency_budget(tmp_path):
    import json

    video, table = tmp_path / "in.mp4", tmp_path / "table.json"
    write_video(video, [coded_frame(i) for i in range(40)], rate=20)  # 2 s
    rows = [{"keep_rate": r, "gflops": None, "latency_ms": ms, "clips_per_s": 1000 / ms}
            for r, ms in ((1.0, 900.0), (0.8, 600.0), (0.6, 300.0))]
    table.write_text(json.dumps({"format": "evad_d2.keep_rate_table/1", "device": "x", "input_size": [8, 48, 64],
                                 "meta": {}, "rows": rows}))
    out, jsonl = tmp_path / "out.webm", tmp_path / "out.jsonl"
    common = ["--config-file", TINY_CONFIG, "--input", video, "--no-progress"]
    done = run_tool("tools/demo.py", *common, "--live", "--output", out, "--jsonl", jsonl, "--keyframe-stride", "5",
                    "--latency-ms", "700", "--keep-rate-table", table, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    # 700 ms fits 0.8 (600 ms) by the table; the tiny model is far quicker, so it goes back to 1.0.
    assert records and records[0]["keep_rate"] == 0.8
    assert {"latency_ms", "model_ms", "keyframes_dropped", "frames_dropped", "written_at"} <= set(records[0])
    with av.open(str(out)) as c:
        assert c.format.name.startswith("matroska") and sum(1 for _ in c.decode(video=0)) > 0
    refused = run_tool("tools/demo.py", *common, "--live", "--json", tmp_path / "x.json", timeout=300)
    assert refused.returncode == 2 and "--json/--csv record every keyframe of a file" in refused.stderr
    refused = run_tool("tools/demo.py", *common, "--output", out, "--latency-ms", "100", timeout=300)
    assert refused.returncode == 2 and "are for live mode: add --live" in refused.stderr


class Collect:
    def __init__(self):
        self.items = []

    def add(self, record):
        self.items.append(record)


def test_live_file_through_the_tiny_model_writes_video_and_records(predictor, tmp_path):
    video = tmp_path / "in.mp4"
    write_video(video, [coded_frame(i) for i in range(45)], rate=30)  # 1.5 s, 64 x 48
    records = Collect()
    out = tmp_path / "live.mp4"
    # Keyframe slots every 0.25 s; the clip spans 7 x 2/30 s (the tiny model's 8 frames, rate 2).
    summary = run_live_demo(
        LiveDemo(predictor, keyframe_interval=0.25), PacedSource(open_source(str(video))), str(out),
        records=records, actor_filter=lambda actors: actors[:2], track=True, time_offset=900,
    )
    assert summary["frames_decoded"] == 45
    assert summary["frames_written"] == summary["frames_shown"] == 45 - summary["frames_dropped"]
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == summary["frames_written"]
    assert len(records.items) == summary["processed_keyframes"] >= 1
    first = records.items[0]
    assert set(first) == {
        "video_id", "frame_index", "time", "timestamp", "latency_ms", "model_ms", "keyframes_dropped",
        "frames_dropped", "keep_rate", "actors",
    }
    assert first["video_id"] == "in" and first["timestamp"] == 900  # round(0.267 + 900)
    # The first complete window ends at the frame at 7 x 2/30 s = 0.467 s (frame 14); the keyframe
    # (position 4 of 8) is 3 steps = 6 frames earlier: frame 8, 0.267 s.
    assert (first["frame_index"], first["time"]) == (8, pytest.approx(8 / 30, abs=1e-6))
    assert 0 < len(first["actors"]) <= 2 and set(first["actors"][0]) == {"box", "person_score", "actions", "track_id"}
    assert all(isinstance(a["track_id"], int) for r in records.items for a in r["actors"])
    assert first["latency_ms"] >= first["model_ms"] > 0 and first["keep_rate"] is None
