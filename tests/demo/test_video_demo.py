"""VideoDemo over videos (predictions per keyframe, batching, the annotated video, JSON and CSV), and tools/demo.py end to end."""

import copy
import csv
import json

import av
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from evad_d2.data.formats.ava import iter_ava_rows
from evad_d2.data.formats.label_map import read_label_map
from evad_d2.data.video import VideoReadError, clip_frame_indices, read_video_frames
from evad_d2.demo import AvaCsvWriter, VideoDemo, build_demo_predictor
from evad_d2.evaluation.ava import main as ava_eval_main
from evad_d2.utils.video_visualizer import color_for_id
from evad_d2.testing import (
    CODED_H as H, CODED_W as W, TINY_CONFIG as TINY, VFR_MS, build_tiny_model, coded_frame, decode_video, run_tool, write_video,
)

GREY = 128


def run_demo_tool(*args):
    """``python tools/demo.py ARGS`` in a subprocess: (exit status, stderr)."""
    proc = run_tool("tools/demo.py", *args)
    return proc.returncode, proc.stderr


def test_predict_video(predictor, generated):
    _, video = generated
    results = list(VideoDemo(predictor, keyframe_stride=60).predict_video(str(video)))
    assert [r["frame_index"] for r in results] == [0, 60, 120]
    np.testing.assert_allclose([r["time"] for r in results], [0.0, 2.0, 4.0], atol=1e-6)
    ref = predictor(read_video_frames(str(video), clip_frame_indices(60, 8, 2, 4, 150)))
    np.testing.assert_allclose([a["box"] for a in results[1]["actors"]], [a["box"] for a in ref], atol=1e-4)
    with pytest.raises(VideoReadError, match="nothing.mp4"):
        next(VideoDemo(predictor).predict_video(str(video.parent / "nothing.mp4")))


def test_batched_prediction_equals_one_clip_at_a_time(predictor, generated):
    _, video = generated
    rng = np.random.default_rng(3)
    clips = [rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8) for _ in range(3)]
    batched = predictor.predict_batch(clips)
    assert predictor.predict_batch([]) == []
    for clip, actors in zip(clips, batched):
        _assert_same_actors(actors, predictor(clip))
    one = list(VideoDemo(predictor, keyframe_stride=30).predict_video(str(video)))
    for batch_size in (2, 4):
        many = list(VideoDemo(predictor, keyframe_stride=30, batch_size=batch_size).predict_video(str(video)))
        assert [r["frame_index"] for r in many] == [r["frame_index"] for r in one] == [0, 30, 60, 90, 120]
        for a, b in zip(many, one):
            _assert_same_actors(a["actors"], b["actors"])
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        next(VideoDemo(predictor, batch_size=0).predict_video(str(video)))


def _assert_same_actors(got, expected):
    assert len(got) == len(expected)
    # A batch sums in another order than one clip: boxes (pixels, up to ~100) move by ~1e-4.
    for key, atol in (("box", 1e-3), ("person_score", 1e-4), ("action_scores", 1e-4)):
        np.testing.assert_allclose([a[key] for a in got], [a[key] for a in expected], atol=atol)


@pytest.mark.slow
def test_demo_cli_outputs(generated, tmp_path):
    """tools/demo.py end to end (a subprocess): the video, the JSON and the CSV, which the evaluation
    command reads."""
    root, video = generated
    labelmap = root / "annotations" / "ava_action_list_v2.2.pbtxt"
    out, js, cs = tmp_path / "out.mp4", tmp_path / "out.json", tmp_path / "out.csv"
    # Seeded, tame weights: an unseeded random init can send every box out of the image (then a
    # keyframe has no actor and the run is not repeatable).
    weights = tmp_path / "tiny.pth"
    torch.save({"model": build_tiny_model(seed=0).state_dict()}, weights)
    rc, err = run_demo_tool(
        "--config-file", TINY, "--input", video, "--output", out, "--json", js, "--csv", cs, "--labelmap", labelmap,
        "--track", "--score-thresh", "0.0", "--time-offset", "900", "--no-progress", "--top-k", "2",
        "MODEL.WEIGHTS", weights,
    )
    assert rc == 0, err
    decoded = decode_video(out)
    assert len(decoded) == 150 and decoded[0][1].shape == (120, 160, 3)
    np.testing.assert_allclose([t for t, _ in decoded], np.arange(150) / 30, atol=1e-3)

    record = json.loads(js.read_text())
    assert record["video_id"] == "val_005_0000" and record["num_frames"] == 150
    assert (record["width"], record["height"], record["fps"]) == (160, 120, 30.0)
    names = read_label_map(str(labelmap))
    assert record["classes"] == [{"id": i, "name": n} for i, n in names.items()]
    keys = record["keyframes"]
    assert [k["frame_index"] for k in keys] == [0, 30, 60, 90, 120]
    assert [k["timestamp"] for k in keys] == [900, 901, 902, 903, 904]
    for k in keys:
        assert abs(k["time"] - k["frame_index"] / 30) < 1e-6 and 1 <= len(k["actors"]) <= 8
        for a in k["actors"]:
            assert set(a) == {"box", "person_score", "actions", "track_id"}
            assert (
                len(a["box"]) == 4 and 0 <= a["box"][0] <= a["box"][2] <= 160 and 0 <= a["box"][1] <= a["box"][3] <= 120
            )
            assert 0 < a["person_score"] <= 1 and isinstance(a["track_id"], int)
            assert len(a["actions"]) == 2 and all(names[x["id"]] == x["name"] for x in a["actions"])
            assert a["actions"][0]["score"] >= a["actions"][1]["score"]

    rows = list(iter_ava_rows(str(cs), policy="detections", label_map=names))
    boxes_per_ts = {}
    for r in rows:
        assert r.video_id == "val_005_0000" and 0 <= r.score <= 1
        boxes_per_ts.setdefault(r.timestamp, set()).add(r.box)
    assert sorted(boxes_per_ts) == [900, 901, 902, 903, 904]
    for k in keys:
        got = sorted(boxes_per_ts[k["timestamp"]])
        want = sorted({tuple(round(v / s, 4) for v, s in zip(a["box"], (160, 120, 160, 120))) for a in k["actors"]})
        np.testing.assert_allclose(got, want, atol=2e-4)
    assert len(rows) == sum(len(k["actors"]) for k in keys) * len(names)
    # The evaluation command reads it (against the generator's ground truth at 902, 903).
    res = tmp_path / "eval.json"
    gt = root / "annotations" / "ava_val_v2.2.csv"
    rc = ava_eval_main(["--groundtruth", str(gt), "--detections", str(cs), "--labelmap", str(labelmap), "--json", str(res)])
    assert rc == 0
    assert 0.0 <= json.loads(res.read_text())["mAP"] <= 100.0


@pytest.mark.slow
def test_demo_cli_refuses_bad_input(generated, tmp_path):
    """tools/demo.py (a subprocess) on bad input: exit status 2 and one error line naming the file
    or the flag, before any output."""
    _, video = generated
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video file " * 128)  # fixed bytes: random ones may parse as some format
    args = ["--config-file", TINY, "--output", str(tmp_path / "o.mp4")]
    rc, err = run_demo_tool(*args, "--input", bad)
    assert rc == 2
    assert str(bad) in err and "cannot open" in err
    rc, err = run_demo_tool(*args, "--input", tmp_path / "missing.mp4")
    assert rc == 2
    assert "missing.mp4: input video not found" in err
    assert not (tmp_path / "o.mp4").exists()
    rc, err = run_demo_tool("--config-file", TINY, "--input", video, "--output", tmp_path / "x.mp4", "--batch-size", "0")
    assert rc == 2  # argparse's usage error (SystemExit(2))
    assert "--batch-size must be at least 1, got 0" in err


class _MovingActors(torch.nn.Module):
    """Stands in for EVAD: two actors; the first moves 8 px right at every keyframe (call)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            inst = Instances((x["height"], x["width"]))
            k = self.calls
            self.calls += 1
            inst.pred_boxes = Boxes(torch.tensor([[10.0 + 8 * k, 50, 50 + 8 * k, 110], [100, 20, 150, 100]]))
            inst.scores = torch.tensor([0.9, 0.8])
            inst.pred_action_scores = torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.4, 0.5], [0.6, 0.1, 0.1, 0.1, 0.1, 0.1]])
            outputs.append({"instances": inst})
        return outputs


def _fake_predictor(predictor):
    fake = copy.copy(predictor)
    fake.model = _MovingActors()
    fake.top_k = 1
    return fake


def test_demo_draws_boxes_where_the_json_says(predictor, tmp_path):
    video = tmp_path / "grey.mp4"
    write_video(video, [np.full((120, 160, 3), GREY, np.uint8)] * 60)
    out, js = tmp_path / "out.mp4", tmp_path / "out.json"
    VideoDemo(_fake_predictor(predictor), keyframe_stride=15).run(
        str(video),
        str(out),
        json_path=str(js),
        track=True,
        line_width=3,
        crf=12,
        show_progress=False,
    )
    keys = json.loads(js.read_text())["keyframes"]
    assert [k["frame_index"] for k in keys] == [0, 15, 30, 45]
    for k, key in enumerate(keys):
        assert key["actors"][0]["box"] == [10.0 + 8 * k, 50.0, 50.0 + 8 * k, 110.0]
        assert [a["track_id"] for a in key["actors"]] == [0, 1]
    frames = decode_video(out)
    assert len(frames) == 60
    for i, (_, img) in enumerate(frames):
        key = min(keys, key=lambda kk: (abs(kk["frame_index"] - i), kk["frame_index"]))  # nearest keyframe
        for a in key["actors"]:
            color = np.array(color_for_id(a["track_id"]), float)
            x1, y1, x2, y2 = (round(v) for v in a["box"])
            ys = slice(y1 + (y2 - y1) // 2, y2 - 3)  # lower half: clear of labels
            edges = [img[ys, x1 + 1], img[ys, x2 - 1], img[y2 - 1, x1 + 5 : x2 - 4]]
            for e in edges:
                assert np.abs(e.astype(float).mean(0) - color).max() < 40, (i, a["box"], e.mean(0))
            for outside in (img[ys, x1 - 4], img[ys, x2 + 4] if x2 + 4 < 160 else img[ys, x1 - 4]):
                assert np.abs(outside.astype(float) - GREY).max() < 20
            # Inside the box, away from the outline and labels, the frame is untouched.
            assert np.abs(img[y2 - 12, x1 + 8 : x2 - 8].astype(float) - GREY).max() < 20


def test_demo_memory_stays_bounded_on_a_long_video(predictor, tmp_path):
    stats = {}
    for n in (240, 900):
        video = tmp_path / f"long{n}.mp4"
        frames = [np.full((48, 64, 3), (i * 7) % 256, np.uint8) for i in range(n)]
        write_video(video, frames)
        stats[n] = VideoDemo(_fake_predictor(predictor)).run(str(video), str(tmp_path / f"o{n}.mp4"), show_progress=False)
        assert stats[n]["num_frames"] == n and stats[n]["num_keyframes"] == n // 30
    # Clip window: (T - 1) * tau + 1 frames (+1 just before eviction); with the frames waiting
    # for their keyframe: at most one stride more. Neither depends on the video's length.
    assert stats[240]["max_window_frames"] == stats[900]["max_window_frames"] <= 7 * 2 + 2
    assert stats[240]["max_frames_held"] == stats[900]["max_frames_held"] <= 30 + 8 * 2
    assert len(decode_video(tmp_path / "o900.mp4")) == 900
    # Batches of 3 keyframes: up to 3 strides of frames wait for their batch, still independent of
    # the length, and every keyframe is processed.
    batched = {}
    for n in (240, 900):
        batched[n] = VideoDemo(_fake_predictor(predictor), batch_size=3).run(
            str(tmp_path / f"long{n}.mp4"), str(tmp_path / f"b{n}.mp4"), show_progress=False
        )
        assert batched[n]["num_frames"] == n and batched[n]["num_keyframes"] == n // 30
    assert stats[900]["max_frames_held"] < batched[240]["max_frames_held"] == batched[900]["max_frames_held"] <= 3 * 30 + 8 * 2


def test_demo_variable_frame_rate_and_odd_size(predictor, tmp_path):
    rng = np.random.default_rng(2)
    times = np.round(np.cumsum(np.r_[0, rng.uniform(0.01, 0.12, 59)]), 3)
    frames = [np.full((47, 63, 3), (i * 4) % 256, np.uint8) for i in range(60)]
    video = tmp_path / "vfr.mp4"
    write_video(video, frames, times_ms=[round(t * 1000) for t in times], pix_fmt="yuv444p")
    out, js = tmp_path / "vfr_out.mp4", tmp_path / "vfr.json"
    stats = VideoDemo(_fake_predictor(predictor)).run(str(video), str(out), json_path=str(js), show_progress=False)
    decoded = decode_video(out)
    assert len(decoded) == 60 and decoded[0][1].shape == (48, 64, 3)  # padded to even
    np.testing.assert_allclose([t for t, _ in decoded], times, atol=2e-3)  # timing kept
    keys = json.loads(js.read_text())["keyframes"]
    # One keyframe per second: the first frame at or after each whole second (0.5/fps early allowed).
    fps = float(av.open(str(video)).streams.video[0].average_rate)
    expected = []
    for s in range(int(times[-1]) + 1):
        i = int(np.flatnonzero(times >= s - 0.5 / fps)[0])
        if not expected or i != expected[-1]:
            expected.append(i)
    assert [k["frame_index"] for k in keys] == expected and stats["num_keyframes"] == len(expected)
    np.testing.assert_allclose([k["time"] for k in keys], times[expected], atol=1e-6)


def test_csv_writer_keeps_one_keyframe_per_second(tmp_path):
    path = tmp_path / "d.csv"
    w = AvaCsvWriter(str(path), "v", 100, 50, [3, 7], time_offset=0)
    actor = {"box": [10, 5, 60, 45], "action_scores": [0.25, 0.75]}
    for t in (0.0, 0.4, 0.6, 0.9, 1.2, 1.45, 2.5):
        w.add(t, [dict(actor, box=[10 + t, 5, 60, 45])])
    w.add(4.0, [{"box": [10, 5, 10.0001, 45], "action_scores": [0.1, 0.2]}])  # empty after rounding
    w.close()
    rows = list(csv.reader(open(path)))
    # 0.0 (second 0), 0.9 (second 1, nearer than 0.6 and 1.2), 2.5 (second 3, halves round up).
    # The one AVA detection text (evad_d2.data.formats.ava): %04d timestamps, 5 box decimals.
    assert [(r[1], r[2], r[6], r[7]) for r in rows] == [
        ("0000", "0.10000", "3", "0.250000"),
        ("0000", "0.10000", "7", "0.750000"),
        ("0001", "0.10900", "3", "0.250000"),
        ("0001", "0.10900", "7", "0.750000"),
        ("0003", "0.12500", "3", "0.250000"),
        ("0003", "0.12500", "7", "0.750000"),
    ]
    assert w.num_skipped_boxes == 1
    assert [r.box for r in iter_ava_rows(str(path), policy="detections")][0] == (0.1, 0.1, 0.6, 0.9)


def test_demo_batch_size(generated, tmp_path):
    """The demo (as tools/demo.py --batch-size builds it) gives the same keyframes batched."""
    _, video = generated
    keyframes = {}
    for batch_size in (1, 3):
        js = tmp_path / f"b{batch_size}.json"
        torch.manual_seed(0)
        predictor = build_demo_predictor(TINY, ["MODEL.EVAD.LOC.SCORE_THRESH_TEST", "0.0"])
        demo = VideoDemo(predictor, keyframe_stride=30, batch_size=batch_size)
        demo.run(str(video), str(tmp_path / f"b{batch_size}.mp4"), json_path=str(js), show_progress=False)
        keyframes[batch_size] = json.loads(js.read_text())["keyframes"]
    assert [k["frame_index"] for k in keyframes[3]] == [k["frame_index"] for k in keyframes[1]] == [0, 30, 60, 90, 120]
    for a, b in zip(keyframes[3], keyframes[1]):
        # JSON rounds boxes to 0.01 px and scores to 1e-5: allow one unit of the last digit.
        np.testing.assert_allclose([x["box"] for x in a["actors"]], [x["box"] for x in b["actors"]], atol=0.011)
        np.testing.assert_allclose([x["person_score"] for x in a["actors"]], [x["person_score"] for x in b["actors"]], atol=2e-5)


def test_demo_on_a_rotated_variable_frame_rate_phone_video(tmp_path):
    """The demo decodes with the same reader: upright output at the displayed size, frame
    times from the timestamps."""
    video = tmp_path / "phone.mp4"
    write_video(video, [coded_frame(i) for i in range(len(VFR_MS))], times_ms=VFR_MS, rotation=-90)
    out, js = tmp_path / "out.mp4", tmp_path / "out.json"
    torch.manual_seed(0)
    predictor = build_demo_predictor(TINY, score_thresh=0.0)
    stats = VideoDemo(predictor).run(str(video), str(out), json_path=str(js), show_progress=False)
    assert stats["num_frames"] == len(VFR_MS)
    record = json.loads(js.read_text())
    assert (record["width"], record["height"]) == (H, W)  # portrait, as the phone shows it
    # Keyframes every second: the first frames at or after 0, 1, 2, 3 s (500 ms -> 1000 ms gap).
    assert [round(k["time"] * 1000) for k in record["keyframes"]] == [0, 1000, 2000, 3000]
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == len(VFR_MS) and frames[0].shape == (W, H, 3)
