"""EVADPredictor on clips, streaming clip assembly, VideoDemo over videos, and tools/demo.py end to end."""

import copy
import csv
import json
import math
import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from torch.utils._python_dispatch import TorchDispatchMode

from evad_d2 import add_evad_config
from evad_d2.data import ClipDatasetMapper
from evad_d2.data.ava_format import iter_ava_rows, read_label_map
from evad_d2.data.transforms import apply_transform_to_clip, resize_uint8_opencv
from evad_d2.data.video import KeyframeClipSampler, VideoFrame, VideoReadError, clip_frame_indices, iter_video_frames, read_video_frames
from evad_d2.demo import AvaCsvWriter, VideoDemo, build_demo_predictor
from evad_d2.engine.predictor import EVADPredictor
from evad_d2.evaluation.ava import main as ava_eval_main
from evad_d2.utils.video_visualizer import color_for_id

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tiny", "EVAD_tiny_test.yaml")
GREY = 128


def tiny_cfg(*opts):
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.merge_from_file(TINY)
    # Random weights: let every proposal through so there is something to check.
    cfg.merge_from_list(["MODEL.EVAD.LOC.SCORE_THRESH_TEST", 0.0, *opts])
    return cfg


def write_video(path, frames, times=None, rate=30, pix_fmt="yuv420p"):
    """Encode frames (near-lossless); ``times`` in seconds gives a variable frame rate."""
    tb = Fraction(1, 1000)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = pix_fmt
        s.options = {"crf": "8", "bf": "0"}
        if times is not None:
            s.time_base = s.codec_context.time_base = tb
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times is not None:
                f.pts, f.time_base = round(times[i] * 1000), tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def decode(path):
    with av.open(str(path)) as c:
        return [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def run_demo_tool(*args):
    """``python tools/demo.py ARGS`` in a subprocess: (exit status, stderr)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "demo.py"), *map(str, args)], capture_output=True, text=True
    )
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return EVADPredictor(tiny_cfg())


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One 5 s 160x120 video of the AVA-like generator (timestamps 902..903 annotated)."""
    out = tmp_path_factory.mktemp("ava_like")
    subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "datasets", "generate_ava_like.py"),
            "--out",
            str(out),
            "--seed",
            "5",
            "--num-train-videos",
            "0",
            "--num-val-videos",
            "1",
            "--duration",
            "5",
            "--quiet",
        ],
        check=True,
    )
    return out, out / "videos" / "val_005_0000.mp4"


# ---------------------------------------------------------------- predictor on clips
class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in bytes) that any torch operation allocates while active
    (views of their inputs, e.g. a permute, allocate nothing and are not counted)."""

    def __init__(self):
        super().__init__()
        self.nbytes, self.shape = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        storages = {a.untyped_storage().data_ptr() for a in inputs}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in storages:
                if t.untyped_storage().nbytes() > self.nbytes:
                    self.nbytes, self.shape = t.untyped_storage().nbytes(), (tuple(t.shape), t.dtype)
        return out


@pytest.mark.parametrize("official", [False, True])
def test_preprocess_memory_follows_the_model_input_not_the_video(official):
    predictor = EVADPredictor(tiny_cfg("MODEL.EVAD.OFFICIAL_MODE", official))
    frames = np.random.default_rng(0).integers(0, 256, (8, 360, 640, 3), dtype=np.uint8)
    with _LargestTensor() as largest:
        out = predictor.preprocess(frames)
    assert out["clip"].shape == (3, 8, 64, 114) and out["clip"].dtype == torch.float32
    # At most one full-resolution frame as float32 (2.8 MB), never the clip (8 frames, 22 MB; before
    # the fix the clip became float before resizing, and a 16-frame 4K clip peaked at 4.3 GB).
    one_frame = 3 * 360 * 640 * 4
    assert largest.nbytes <= one_frame, largest.shape
    if official:  # uint8 all the way: the largest tensor is the output or the (3, 64, 640) int32 rows
        assert largest.nbytes <= max(out["clip"].nbytes, 3 * 64 * 640 * 4), largest.shape


def test_uint8_preprocess_equals_the_float_resize_of_the_clip(predictor):
    frames = np.random.default_rng(1).integers(0, 256, (8, 90, 70, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2).float()
    ref = torch.nn.functional.interpolate(
        x.transpose(0, 1), size=(82, 64), mode="bilinear", align_corners=False, antialias=True
    ).transpose(0, 1)
    # Resizing uint8 frames one at a time changes no value of the default (float) resize.
    assert torch.equal(predictor.preprocess(frames)["clip"], ref)
    assert torch.equal(predictor.preprocess(x)["clip"], ref)


def test_opencv_uint8_resize_by_hand():
    # [[0, 255], [255, 0]] to 3x3. Source position of output i: (i + 0.5) * 2/3 - 0.5 = -1/6, 1/2, 7/6.
    # Columns: left of the image -> weights (2048, 0) on column 0; 1/2 -> (1024, 1024); 7/6 -> column 1.
    # Rows keep their weights: row -1/6 reads row 0 twice with round(2048/6) = 341 and 1707.
    # Vertical pass ((S0 >> 4) * b0 >> 16) + ((S1 >> 4) * b1 >> 16), then (+ 2) >> 2:
    #   (0, 1): S = 255 * 1024 = 261120 in both rows: 16320*341 >> 16 = 84, 16320*1707 >> 16 = 425,
    #           (84 + 425 + 2) >> 2 = 127 (a float bilinear gives 127.5);
    #   (0, 2): S = 522240: 32640*341 >> 16 = 169, 32640*1707 >> 16 = 850, (1019 + 2) >> 2 = 255;
    #   (1, 1): both rows S = 261120 with weights 1024: (255 + 255 + 2) >> 2 = 128.
    image = torch.tensor([[0, 255], [255, 0]], dtype=torch.uint8)
    expected = [[0, 127, 255], [128, 128, 128], [255, 127, 0]]
    assert resize_uint8_opencv(image, (3, 3)).tolist() == expected
    # Leading dimensions are independent images (channels, frames).
    stacked = resize_uint8_opencv(torch.stack([image, 255 - image])[:, None], (3, 3))
    assert stacked.shape == (2, 1, 3, 3) and stacked[1, 0].tolist() == [[255, 127, 0], [128, 128, 128], [0, 127, 255]]
    assert torch.equal(resize_uint8_opencv(image, (2, 2)), image)  # same size: a copy
    # The default float bilinear of the same image.
    float_resize = apply_transform_to_clip(T.ResizeTransform(2, 2, 3, 3), image.float().view(1, 1, 2, 2))
    assert float_resize[0, 0, 0, 1] == 127.5
    with pytest.raises(TypeError, match="uint8"):
        apply_transform_to_clip(T.ResizeTransform(2, 2, 3, 3), image.float().view(1, 1, 2, 2), interpolation="opencv")


def test_opencv_uint8_resize_equals_values_recorded_from_opencv():
    # cv2.resize(..., interpolation=cv2.INTER_LINEAR), OpenCV 4.5.5 and 5.0 (same values).
    a = torch.tensor([[0, 37, 74, 111], [148, 185, 222, 3], [40, 77, 114, 151]], dtype=torch.uint8)
    assert resize_uint8_opencv(a, (5, 3)).tolist() == [
        [6, 55, 105], [65, 115, 79], [154, 204, 39], [89, 139, 103], [46, 95, 145]
    ]
    b = torch.tensor([[3, 250, 17], [90, 1, 255], [128, 64, 32], [7, 200, 100]], dtype=torch.uint8)
    assert resize_uint8_opencv(b, (2, 5)).tolist() == [[47, 78, 126, 132, 136], [68, 93, 132, 92, 66]]


@pytest.mark.parametrize("official", [False, True])
def test_evaluation_mapper_prepares_clips_as_the_predictor(official):
    cfg = tiny_cfg("MODEL.EVAD.OFFICIAL_MODE", official)
    mapper = ClipDatasetMapper(cfg, is_train=False)
    assert mapper.interpolation == ("opencv" if official else "bilinear")
    frames = np.random.default_rng(4).integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    mapper.read_frames = lambda d: frames
    out = mapper({"video_id": "v", "timestamp": 902, "height": 48, "width": 64})
    assert torch.equal(out["clip"], EVADPredictor(cfg).preprocess(frames)["clip"])


def test_predictor_in_official_mode_resizes_as_opencv_and_clips_at_w_minus_1():
    torch.manual_seed(0)
    predictor = EVADPredictor(tiny_cfg("MODEL.EVAD.OFFICIAL_MODE", True))
    frames = np.random.default_rng(2).integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    got = predictor.preprocess(frames)["clip"]
    expected = resize_uint8_opencv(torch.from_numpy(frames).permute(3, 0, 1, 2), (64, 85)).float()
    assert torch.equal(got, expected)
    # A float clip of whole numbers is the same clip; fractional values cannot be resized as uint8.
    assert torch.equal(predictor.preprocess(torch.from_numpy(frames).permute(3, 0, 1, 2).float())["clip"], expected)
    with pytest.raises(ValueError, match="fractional values"):
        predictor.preprocess(torch.from_numpy(frames).permute(3, 0, 1, 2).float() + 0.5)
    inst = predictor.predict_instances(frames)
    assert len(inst) == 8  # threshold 0 (>=): every proposal, empty boxes included
    # Clipped at 84 x 63 in the 64 x 85 clip, then scaled by 64/85 and 48/64.
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 0::2] <= 84 * 64 / 85 + 1e-4).all() and (boxes[:, 1::2] <= 63 * 48 / 64 + 1e-4).all()


def test_predictor_on_a_clip_matches_the_model_on_the_resized_clip(predictor):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (8, 48, 64, 3), dtype=np.uint8)
    actors = predictor(clip)
    assert 1 <= len(actors) <= 8  # threshold 0: every proposal with a non-empty box
    scores = [a["person_score"] for a in actors]
    assert scores == sorted(scores, reverse=True)
    # Reference: resize by hand to the test short side (64 -> 64 x 85), ask for 48 x 64 boxes.
    x = torch.from_numpy(clip).permute(3, 0, 1, 2).float()
    x = torch.nn.functional.interpolate(
        x.transpose(0, 1), size=(64, 85), mode="bilinear", align_corners=False
    ).transpose(0, 1)
    with torch.no_grad():
        ref = predictor.model([{"clip": x, "height": 48, "width": 64}])[0]["instances"]
    assert len(ref) == len(actors)
    order = torch.argsort(ref.scores, descending=True)
    np.testing.assert_allclose([a["box"] for a in actors], ref.pred_boxes.tensor[order].numpy(), atol=1e-3)
    np.testing.assert_allclose(scores, ref.scores[order].numpy(), atol=1e-6)
    for a, i in zip(actors, order.tolist()):
        full = ref.pred_action_scores[i].numpy()
        np.testing.assert_allclose(a["action_scores"], full, atol=1e-6)
        top = np.argsort(-full)[:3]
        assert [name for name, _ in a["actions"]] == [f"action_{c + 1}" for c in top]
        assert a["action_ids"] == [int(c) + 1 for c in top]
        np.testing.assert_allclose([s for _, s in a["actions"]], full[top], atol=1e-6)
        x1, y1, x2, y2 = a["box"]
        assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 48
    # A (3, T, H, W) tensor gives the same answer.
    same = predictor(torch.from_numpy(clip).permute(3, 0, 1, 2).float())
    np.testing.assert_allclose([a["box"] for a in same], [a["box"] for a in actors], atol=1e-4)


def test_predictor_loads_model_weights(predictor, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"model": predictor.model.state_dict()}, path)
    torch.manual_seed(123)  # a different initialisation, overwritten by the checkpoint
    loaded = EVADPredictor(tiny_cfg("MODEL.WEIGHTS", str(path)))
    for k, v in predictor.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert not loaded.model.training


def test_predictor_rejects_bad_clips(predictor):
    with pytest.raises(ValueError, match="INPUT.NUM_FRAMES"):
        predictor(np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        predictor(np.zeros((8, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="2 class names"):
        EVADPredictor(tiny_cfg(), class_names=["a", "b"])


# ---------------------------------------------------------------- streaming clip assembly
def _stream(sampler, frames):
    out = []
    for f in frames:
        out += sampler.push(f)
    return out + sampler.finish()


def _frames(times):
    return [VideoFrame(i, t, np.zeros((1, 1, 3), np.uint8)) for i, t in enumerate(times)]


@pytest.mark.parametrize("fps, model_fps", [(30, 30), (60, 30), (25, 30)])
def test_sampler_constant_rate_equals_the_dataset_frame_indexing(fps, model_fps):
    """At equal rates the clips are the mapper's clip_frame_indices (edge frames repeated)."""
    n, T, tau, ki = 97, 8, 2, 4
    frames = _frames([i / fps for i in range(n)])
    sampler = KeyframeClipSampler(T, ki, tau / model_fps, 1.0, tolerance=0.5 / fps)
    clips = _stream(sampler, frames)
    assert [k.index for k, _ in clips] == [round(s * fps) for s in range(math.ceil(n / fps))]
    for key, got in clips:
        if fps == model_fps:
            expected = clip_frame_indices(key.index, T, tau, ki, n)
        else:  # brute force: the frame nearest each sample time, clamped to the video
            expected = [
                min(range(n), key=lambda j: (abs(j / fps - (key.time + (i - ki) * tau / model_fps)), j))
                for i in range(T)
            ]
        assert [f.index for f in got] == expected
    assert sampler.max_buffered <= (T - 1) * tau * fps / model_fps + 2


def test_sampler_variable_rate_brute_force():
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(0.005, 0.2, 300))
    times -= times[0]
    frames = _frames(times.tolist())
    T, ki, step, interval, tol = 6, 3, 0.1, 0.7, 0.01
    clips = _stream(KeyframeClipSampler(T, ki, step, interval, tolerance=tol), frames)
    # Reference: keyframe k is the first frame at or after k * interval - tol (each frame once).
    keys, k = [], 0
    for f in frames:
        if f.time >= k * interval - tol:
            keys.append(f.index)
            while k * interval - tol <= f.time:
                k += 1
    assert [key.index for key, _ in clips] == keys
    for key, got in clips:
        for i, f in enumerate(got):
            s = key.time + (i - ki) * step
            best = min(frames, key=lambda g: (abs(g.time - s), g.time))
            assert f.index == best.index


def test_sampler_memory_does_not_grow_with_length():
    def peak(n):
        s = KeyframeClipSampler(8, 4, 2 / 30, 1.0, tolerance=0.5 / 30)
        _stream(s, _frames([i / 30 for i in range(n)]))
        return s.max_buffered

    assert peak(300) == peak(3000) <= 7 * 2 + 2


def test_streamed_clips_equal_random_access_reads(generated):
    """Decoding as a stream gives exactly the frames the dataset reader picks for a keyframe."""
    _, video = generated
    sampler = KeyframeClipSampler(8, 4, 2 / 30, 1.0, tolerance=0.5 / 30)
    clips = _stream(sampler, iter_video_frames(str(video)))
    assert [k.index for k, _ in clips] == [0, 30, 60, 90, 120]
    for key, frames in clips[1:3]:
        ref = read_video_frames(str(video), clip_frame_indices(key.index, 8, 2, 4, 150))
        np.testing.assert_array_equal(np.stack([f.image for f in frames]), ref)


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


# ---------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_cli_outputs(generated, tmp_path):
    """tools/demo.py end to end (a subprocess): the outputs, then its refusals of bad input."""
    root, video = generated
    labelmap = root / "annotations" / "ava_action_list_v2.2.pbtxt"
    out, js, cs = tmp_path / "out.mp4", tmp_path / "out.json", tmp_path / "out.csv"
    rc, err = run_demo_tool(
        *[
            "--config-file",
            TINY,
            "--input",
            str(video),
            "--output",
            str(out),
            "--json",
            str(js),
            "--csv",
            str(cs),
            "--labelmap",
            str(labelmap),
            "--track",
            "--score-thresh",
            "0.0",
            "--time-offset",
            "900",
            "--no-progress",
            "--top-k",
            "2",
        ]
    )
    assert rc == 0, err
    decoded = decode(out)
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

    rows = list(iter_ava_rows(str(cs), label_map=names))
    boxes_per_ts = {}
    for r in rows:
        assert r.video_id == "val_005_0000" and 0 <= r.extra <= 1
        boxes_per_ts.setdefault(r.timestamp, set()).add(r.box)
    assert sorted(boxes_per_ts) == [900, 901, 902, 903, 904]
    for k in keys:
        got = sorted(boxes_per_ts[k["timestamp"]])
        want = sorted({tuple(round(v / s, 4) for v, s in zip(a["box"], (160, 120, 160, 120))) for a in k["actors"]})
        np.testing.assert_allclose(got, want, atol=2e-4)
    assert len(rows) == sum(len(k["actors"]) for k in keys) * len(names)
    # The evaluation command reads it (against the generator's ground truth at 902, 903).
    res = tmp_path / "eval.json"
    assert (
        ava_eval_main(
            [
                "--groundtruth",
                str(root / "annotations" / "ava_val_v2.2.csv"),
                "--detections",
                str(cs),
                "--labelmap",
                str(labelmap),
                "--json",
                str(res),
            ]
        )
        == 0
    )
    assert 0.0 <= json.loads(res.read_text())["mAP"] <= 100.0

    # Unreadable input: exit status 2 and one error line naming the file, before any output.
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
    frames = decode(out)
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
    assert len(decode(tmp_path / "o900.mp4")) == 900
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
    write_video(video, frames, times=times, pix_fmt="yuv444p")
    out, js = tmp_path / "vfr_out.mp4", tmp_path / "vfr.json"
    stats = VideoDemo(_fake_predictor(predictor)).run(str(video), str(out), json_path=str(js), show_progress=False)
    decoded = decode(out)
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
    w.add(4.0, [{"box": [10, 5, 10.001, 45], "action_scores": [0.1, 0.2]}])  # empty after rounding
    w.close()
    rows = list(csv.reader(open(path)))
    # 0.0 (second 0), 0.9 (second 1, nearer than 0.6 and 1.2), 2.5 (second 3, halves round up).
    assert [(r[1], r[2], r[6], r[7]) for r in rows] == [
        ("0", "0.1000", "3", "0.250000"),
        ("0", "0.1000", "7", "0.750000"),
        ("1", "0.1090", "3", "0.250000"),
        ("1", "0.1090", "7", "0.750000"),
        ("3", "0.1250", "3", "0.250000"),
        ("3", "0.1250", "7", "0.750000"),
    ]
    assert w.num_skipped_boxes == 1
    assert [r.box for r in iter_ava_rows(str(path))][0] == (0.1, 0.1, 0.6, 0.9)


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


@pytest.mark.parametrize("key, value", [("INPUT.SAMPLING_RATE", 0), ("MODEL.EVAD.NUM_ACTION_CLASSES", -3)])
def test_predictor_checks_a_hand_built_config_naming_the_key(key, value):
    """A config made with add_evad_config + merges (not get_evad_cfg) is checked before building."""
    from evad_d2.config import ConfigValueError

    with pytest.raises(ConfigValueError, match=rf"config key {key} = {value} is not allowed"):
        EVADPredictor(tiny_cfg(key, value))
