"""Video decoding, frame folders, clip indexing and the clip mapper on tiny synthetic videos."""
import logging
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from evad_d2 import add_evad_config
from evad_d2.data import BadSampleSummary, ClipDatasetMapper, RetryMapDataset
from evad_d2.data.video import (
    VideoReadError,
    clip_frame_indices,
    count_frames_in_folder,
    iter_video_frames,
    keyframe_frame_index,
    probe_video,
    read_frame_folder,
    read_video_frames,
    scan_video,
    timeline_frame_count,
)

W, H = 64, 48


def coded_frame(i, width=W, height=H):
    """Frame i carries its index in two grey patches (i // 16 and i % 16, 16 levels apart),
    robust to codec error up to +-7; a bar moves 3 px per frame so neighbours differ a lot."""
    img = np.full((height, width, 3), 40, np.uint8)
    img[:16, :16] = (i // 16) * 16 + 8
    img[:16, 16:32] = (i % 16) * 16 + 8
    x = (3 * i) % (width - 4)
    img[20:, x:x + 4] = (230, 230, 230)
    return img


def decode_index(frame):
    hi = int(round((frame[4:12, 4:12].mean() - 8) / 16))
    lo = int(round((frame[4:12, 20:28].mean() - 8) / 16))
    return hi * 16 + lo


def write_video(path, frames, rate=30, faststart=False, gop=10, *, times_ms=None, rotation=None, hflip=False,
                vflip=False, container_format="mp4", tags=None):
    """Encode ``frames`` (H.264). ``times_ms``: presentation times in ms (a variable frame rate);
    ``rotation`` (degrees counter-clockwise) / ``hflip`` / ``vflip``: a display matrix as phones
    write it (PyAV's ``set_display_rotation``); ``tags``: stream metadata (e.g. an old ``rotate`` tag)."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=container_format, options=options) as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        # Near-lossless (crf 4) so that decoded frames are within a few levels of the source.
        s.options = {"crf": "4", "g": str(gop), "bf": "0", "threads": "1"}
        if times_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None or hflip or vflip:
            s.set_display_rotation(rotation or 0, hflip=hflip, vflip=vflip)
        s.metadata.update(tags or {})
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def coded_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("coded")
    path = d / "vid.mp4"
    write_video(path, [coded_frame(i) for i in range(180)])  # 6 s: timestamps 900..905
    return str(path)


def pyslowfast_sequence(center_idx, half_len, sample_rate, num_frames):
    """PySlowFast's get_sequence, the reference for AVA clip sampling."""
    seq = list(range(center_idx - half_len, center_idx + half_len, sample_rate))
    return [min(max(s, 0), num_frames - 1) for s in seq]


def test_keyframe_and_clip_indices_follow_the_standard_mapping():
    assert keyframe_frame_index(902) == 60 and keyframe_frame_index(1798) == 26940
    assert keyframe_frame_index(3, start_sec=0) == 90
    for T_, tau in ((16, 4), (8, 8), (32, 2), (4, 1)):
        for center in (0, 10, 60, 100, 179):
            got = clip_frame_indices(center, T_, tau, T_ // 2, 180)
            assert got == pyslowfast_sequence(center, T_ * tau // 2, tau, 180)
            assert got[T_ // 2] == center
    # A non-middle keyframe position shifts the window.
    assert clip_frame_indices(10, 4, 2, 0, 100) == [10, 12, 14, 16]
    assert clip_frame_indices(98, 4, 2, 0, 100) == [98, 99, 99, 99]


def test_video_decoding_returns_the_requested_frames(coded_video):
    info = probe_video(coded_video)
    assert (info.num_frames, info.height, info.width, info.fps) == (180, H, W, 30)
    for ts in (900, 902, 905):
        idx = clip_frame_indices(keyframe_frame_index(ts), 16, 4, 8, 180)
        frames = read_video_frames(coded_video, idx)
        assert frames.shape == (16, H, W, 3) and frames.dtype == np.uint8
        assert [decode_index(f) for f in frames] == idx
    # Arbitrary order and repeats.
    assert [decode_index(f) for f in read_video_frames(coded_video, [150, 3, 3, 179])] == [150, 3, 3, 179]


def test_video_at_another_frame_rate_is_sampled_by_time(tmp_path):
    path = tmp_path / "v15.mp4"
    write_video(path, [coded_frame(i) for i in range(45)], rate=15)  # 3 s at 15 fps
    # Timeline index i (30 fps) shows the latest frame before (i + 1/2)/30 s, as `ffmpeg -r 30`
    # extracts: an odd i repeats frame (i - 1)/2.
    frames = read_video_frames(str(path), [0, 1, 2, 30, 31, 88, 89], frame_rate=30)
    assert [decode_index(f) for f in frames] == [0, 0, 1, 15, 15, 44, 44]
    info = probe_video(str(path))
    assert (info.num_frames, info.fps, info.duration, timeline_frame_count(info, 30)) == (45, 15, 3, 90)


def test_video_and_frame_folder_give_the_same_frames(coded_video, tmp_path):
    # Frames extracted the way the AVA tooling does it: decode the video, save JPEGs.
    frame_dir = tmp_path / "vid"
    frame_dir.mkdir()
    reference = [f.to_ndarray(format="rgb24") for f in av.open(coded_video).decode(video=0)]
    for i, img in enumerate(reference, start=1):
        Image.fromarray(img).save(frame_dir / f"vid_{i:06d}.jpg", quality=98, subsampling=0)
    assert count_frames_in_folder(str(frame_dir), "vid_{:06d}.jpg") == 180
    idx = clip_frame_indices(keyframe_frame_index(903), 16, 4, 8, 180) + [0, 179]
    from_video = read_video_frames(coded_video, idx).astype(np.int16)
    from_frames = read_frame_folder(str(frame_dir), "vid_{:06d}.jpg", idx).astype(np.int16)
    np.testing.assert_array_equal(from_video, np.stack([reference[i] for i in idx]))
    # JPEG at quality 98 without chroma subsampling changes pixels by a few levels on average;
    # the neighbouring frame (bar moved by 3 px) differs by far more, so a 1-frame offset fails.
    err = np.abs(from_video - from_frames).mean(axis=(1, 2, 3))
    assert err.max() < 1.5
    shifted = np.abs(from_video[1:-2] - from_frames[:-3]).mean(axis=(1, 2, 3))
    assert shifted.min() > 5 * err.max()


def test_bad_videos_and_frames_raise_naming_the_file(coded_video, tmp_path):
    with pytest.raises(VideoReadError, match=r"missing\.mp4: video file not found"):
        read_video_frames(str(tmp_path / "missing.mp4"), [0])
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video file " * 256)  # fixed bytes: random ones may parse as some format
    with pytest.raises(VideoReadError, match=r"corrupt\.mp4: cannot open video"):
        probe_video(str(corrupt))
    # Truncating a normal mp4 loses its index (written at the end): it no longer opens.
    data = open(coded_video, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match=r"cut\.mp4: cannot open video"):
        read_video_frames(str(cut), [0])
    # With the index first (faststart), the header still promises every frame but the data stops.
    fast = tmp_path / "fast.mp4"
    write_video(fast, [coded_frame(i) for i in range(180)], faststart=True)
    data = open(fast, "rb").read()
    fast.write_bytes(data[: len(data) // 2])
    assert probe_video(str(fast)).num_frames == 180
    assert decode_index(read_video_frames(str(fast), [5])[0]) == 5
    with pytest.raises(VideoReadError, match=r"fast\.mp4: .*(do not decode|no frames decode|decoding failed)"):
        read_video_frames(str(fast), [170, 175])
    # Frame folders: a missing frame and an unreadable one.
    frame_dir = tmp_path / "frames"
    frame_dir.mkdir()
    for i in (1, 2, 4):
        Image.fromarray(coded_frame(i)).save(frame_dir / f"{i:05d}.jpg")
    with pytest.raises(VideoReadError, match=r"00003\.jpg: frame 3 not found"):
        read_frame_folder(str(frame_dir), "{:05d}.jpg", [0, 1, 2])
    with pytest.raises(VideoReadError, match=r"00003\.jpg: frame 3 is missing"):
        count_frames_in_folder(str(frame_dir), "{:05d}.jpg")
    (frame_dir / "00003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoReadError, match=r"00003\.jpg: cannot read frame image"):
        read_frame_folder(str(frame_dir), "{:05d}.jpg", [2])


# ---------------------------------------------------------------- the mapper

RED = (220, 20, 20)
BOX = (40.0, 10.0, 56.0, 38.0)  # off-centre so that flipping moves it


def red_box_frame(i):
    img = np.full((H, W, 3), 90, np.uint8)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    img[y1:y2, x1:x2] = RED
    return img


@pytest.fixture(scope="module")
def red_box_dict(tmp_path_factory):
    path = tmp_path_factory.mktemp("red") / "red.mp4"
    write_video(path, [red_box_frame(i) for i in range(60)])
    return {
        "video_id": "red", "timestamp": 901, "height": H, "width": W, "frame_index": 30, "num_frames": 60,
        "frame_rate": 30, "video_path": str(path),
        "annotations": [{"bbox": list(BOX), "bbox_mode": BoxMode.XYXY_ABS, "action_ids": [7, 3], "person_id": 0}],
    }


def redness(clip, x1, y1, x2, y2):
    """Fraction of red pixels (all frames) in a region of a (3, T, H, W) clip."""
    region = clip[:, :, int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))]
    red = (region[0] > 150) & (region[1] < 90) & (region[2] < 90)
    return red.float().mean().item()


@pytest.mark.parametrize("short_side, flip", [(48, False), (96, True), (72, True), (30, False)])
def test_mapper_boxes_stay_on_the_object(red_box_dict, short_side, flip):
    augs = [T.ResizeShortestEdge(short_side, 1000)]
    if flip:
        augs.append(T.RandomFlip(prob=1.0))
    mapper = ClipDatasetMapper(True, augmentations=augs, num_frames=4, sampling_rate=2, action_ids=[3, 5, 7])
    out = mapper(red_box_dict)
    scale = short_side / H
    clip = out["clip"]
    assert clip.shape == (3, 4, short_side, int(W * scale + 0.5)) and clip.dtype == torch.float32
    assert (out["height"], out["width"], out["video_id"], out["timestamp"]) == (H, W, "red", 901)
    inst = out["instances"]
    assert inst.image_size == tuple(clip.shape[-2:])
    x1, y1, x2, y2 = inst.gt_boxes.tensor[0].tolist()
    ex1, ey1, ex2, ey2 = (v * scale for v in BOX)
    if flip:
        ex1, ex2 = clip.shape[-1] - ex2, clip.shape[-1] - ex1
    np.testing.assert_allclose([x1, y1, x2, y2], [ex1, ey1, ex2, ey2], atol=0.5)
    # Inside the mapped box (shrunk by 2 px for chroma/resampling blur) everything is red;
    # a 2-px band just outside it has none.
    m = 2.0
    assert redness(clip, x1 + m, y1 + m, x2 - m, y2 - m) > 0.95
    h, w = clip.shape[-2:]
    for band in ((x1 - 2 * m, y1, x1 - m, y2), (x2 + m, y1, x2 + 2 * m, y2), (x1, y2 + m, x2, y2 + 2 * m)):
        bx1, by1, bx2, by2 = max(band[0], 0), max(band[1], 0), min(band[2], w), min(band[3], h)
        if bx2 - bx1 >= 1 and by2 - by1 >= 1:
            assert redness(clip, bx1, by1, bx2, by2) < 0.05
    # Multi-hot over action_ids = [3, 5, 7].
    assert inst.gt_actions.tolist() == [[1.0, 0.0, 1.0]]


def test_mapper_from_config_test_mode_and_jitter(red_box_dict):
    cfg = get_cfg()
    add_evad_config(cfg)
    cfg.INPUT.NUM_FRAMES, cfg.INPUT.SAMPLING_RATE = 8, 4
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 110
    mapper = ClipDatasetMapper(cfg, is_train=False)
    assert mapper.keyframe_index == 4
    out = mapper(red_box_dict)
    # Short side 96 would make the long side 128 > 110: capped, 110 x 82.5 -> (83, 110).
    assert out["clip"].shape == (3, 8, 83, 110)
    assert "instances" not in out
    # Colour jitter changes the colours but never the range, and every frame gets the same change.
    train = ClipDatasetMapper(True, augmentations=[T.ResizeShortestEdge(48, 1000)], num_frames=8, sampling_rate=4,
                              action_ids=[3, 5, 7], color_jitter=0.4)
    np.random.seed(3)
    jittered = train(red_box_dict)["clip"]
    plain = ClipDatasetMapper(True, augmentations=[T.ResizeShortestEdge(48, 1000)], num_frames=8, sampling_rate=4,
                              action_ids=[3, 5, 7])(red_box_dict)["clip"]
    assert jittered.min() >= 0 and jittered.max() <= 255
    assert (jittered - plain).abs().mean() > 1.0
    diff = jittered - plain
    assert (diff - diff[:, :1]).abs().max() < 1e-3  # static video: the same change in every frame


def test_mapper_from_config_checks_classes(red_box_dict):
    from detectron2.data import MetadataCatalog

    cfg = get_cfg()
    add_evad_config(cfg)
    MetadataCatalog.get("_t_mapper_meta").set(action_ids=[3, 5, 7])
    try:
        cfg.DATASETS.TRAIN = ("_t_mapper_meta",)
        cfg.MODEL.EVAD.NUM_ACTION_CLASSES = 80
        with pytest.raises(ValueError, match="has 3 action classes but MODEL.EVAD.NUM_ACTION_CLASSES = 80"):
            ClipDatasetMapper(cfg, True)
        cfg.MODEL.EVAD.NUM_ACTION_CLASSES = 3
        cfg.INPUT.NUM_FRAMES, cfg.INPUT.SAMPLING_RATE, cfg.INPUT.MIN_SIZE_TRAIN = 4, 1, (48,)
        mapper = ClipDatasetMapper(cfg, True)
        assert mapper.action_ids == [3, 5, 7]
        bad = dict(red_box_dict, annotations=[dict(red_box_dict["annotations"][0], action_ids=[9])])
        with pytest.raises(ValueError, match="action id 9 is not one of the model's classes"):
            mapper(bad)
    finally:
        MetadataCatalog.remove("_t_mapper_meta")


def test_mapper_edge_padding_and_bad_samples(coded_video, tmp_path):
    d = {"video_id": "v", "timestamp": 900, "height": H, "width": W, "frame_index": 2, "num_frames": 180,
         "frame_rate": 30, "video_path": coded_video, "annotations": []}
    mapper = ClipDatasetMapper(False, augmentations=[], num_frames=8, sampling_rate=2)
    clip = mapper(d)["clip"].permute(1, 2, 3, 0).numpy()
    assert [decode_index(f) for f in clip] == [0, 0, 0, 0, 2, 4, 6, 8]
    missing = dict(d, video_path=str(tmp_path / "gone.mp4"))
    with pytest.raises(VideoReadError, match="gone.mp4"):
        mapper(missing)
    with pytest.raises(ValueError, match="skip_bad_samples is for training only"):
        ClipDatasetMapper(False, augmentations=[], num_frames=8, sampling_rate=2, skip_bad_samples=True)
    skipping = ClipDatasetMapper(True, augmentations=[], num_frames=8, sampling_rate=2, action_ids=[1],
                                 skip_bad_samples=True)
    assert skipping(missing) is None and skipping.num_skipped == 1 and skipping.bad_samples.total == 1


# ---------------------------------------------------------------- variable frame rate

# Presentation times (ms) of a variable-frame-rate video: irregular steps, a burst, a 0.5 s gap,
# then 10 fps to 3 s. Its header's average rate (about 11.3 fps) matches none of them.
VFR_MS = [0, 30, 50, 120, 135, 300, 310, 320, 400, 433, 466, 500, 1000, 1033] + list(range(1100, 3001, 100))


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    write_video(path, [coded_frame(i) for i in range(len(VFR_MS))], times_ms=VFR_MS)
    return str(path)


def test_variable_frame_rate_video_is_read_by_time(vfr_video):
    # Timeline index i (30 fps) is the latest frame before (i + 1/2)/30 s (FFmpeg's fps filter),
    # worked out by hand from VFR_MS: 1 -> before 50 ms: 30 (50 itself is not before); 3 -> before
    # 116.7: 50 (120 is after); 9 -> before 316.7: 310; 10 -> before 350: 320; 23 -> before 783.3:
    # 500 (the gap); 30 -> before 1016.7: 1000; 34 -> before 1150: 1100; 90 -> 3000, the last frame.
    wanted = {0: 0, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 9: 6, 10: 7, 12: 8, 15: 11, 22: 11, 23: 11, 30: 12, 31: 13,
              34: 14, 60: 23, 90: 33}
    frames = read_video_frames(vfr_video, list(wanted))
    assert [decode_index(f) for f in frames] == list(wanted.values())
    # The header: 34 frames ending at 3 s + one nominal interval (1/30 s) -> 91 timeline frames.
    info = probe_video(vfr_video)
    assert info.num_frames == 34 and timeline_frame_count(info, 30) == 91
    # The demo's path: the same decoder gives every frame with its own time.
    demo = list(iter_video_frames(vfr_video))
    assert [round(f.time * 1000) for f in demo] == VFR_MS
    assert [decode_index(f.image) for f in demo] == list(range(len(VFR_MS)))
    np.testing.assert_array_equal(frames[-1], demo[-1].image)
    # The validator's full decode agrees that the video is whole.
    scan = scan_video(vfr_video)
    assert scan.num_frames == 34 and abs(scan.last_time - 3.0) < 1e-9


def test_a_clip_of_a_variable_frame_rate_video_through_the_mapper(vfr_video):
    d = {"video_id": "vfr", "timestamp": 901, "height": H, "width": W, "frame_index": 30, "num_frames": 91,
         "frame_rate": 30, "video_path": vfr_video,
         "annotations": [{"bbox": [1.0, 1.0, 30.0, 40.0], "bbox_mode": BoxMode.XYXY_ABS, "action_ids": [1], "person_id": 0}]}
    mapper = ClipDatasetMapper(True, augmentations=[], num_frames=4, sampling_rate=8, action_ids=[1])
    clip = mapper(d)["clip"].permute(1, 2, 3, 0).numpy().astype(np.uint8)
    # Indices 14, 22, 30, 38 -> latest before 483.3 ms: 466; 750: 500; 1016.7: 1000; 1283.3: 1200.
    assert [decode_index(f) for f in clip] == [10, 11, 12, 15]


def test_truncated_video_fails_the_same_way_in_validation_and_training(tmp_path):
    fast = tmp_path / "fast.mp4"
    write_video(fast, [coded_frame(i) for i in range(180)], faststart=True)
    data = open(fast, "rb").read()
    fast.write_bytes(data[: len(data) // 2])
    assert timeline_frame_count(probe_video(str(fast)), 30) == 180  # the header still promises 6 s
    # Both stop where the data does (here a packet cut in half), naming the file.
    with pytest.raises(VideoReadError, match=r"fast\.mp4: (decoding failed after 6\d frames|.*truncated)"):
        scan_video(str(fast))
    with pytest.raises(VideoReadError, match=r"fast\.mp4: (decoding failed after|.*5\.833 s.*truncated or corrupt video)"):
        read_video_frames(str(fast), [175])
    assert decode_index(read_video_frames(str(fast), [40])[0]) == 40


# ---------------------------------------------------------------- rotation metadata


def orientation_frame():
    """Asymmetric markers: red top-left, green bottom-right, blue along the top right."""
    img = np.full((H, W, 3), 40, np.uint8)
    img[:12, :16] = (250, 30, 30)
    img[-12:, -8:] = (30, 250, 30)
    img[:6, -20:] = (30, 30, 250)
    return img


def stored_frame(path, index):
    """Frame ``index`` of ``path`` as stored, decoded by PyAV without applying any rotation."""
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")


@pytest.mark.parametrize(
    "ccw, hflip, vflip, clockwise, mirrored",
    [(-90, False, False, 90, False),  # a phone held upright: "rotate 90" (clockwise) in the old tag
     (90, False, False, 270, False), (180, False, False, 180, False), (0, True, False, 0, True),
     (0, False, True, 180, True), (90, True, False, 270, True), (90, False, True, 90, True)],
)
def test_rotation_metadata_is_applied(tmp_path, ccw, hflip, vflip, clockwise, mirrored):
    path = tmp_path / "rotated.mp4"
    write_video(path, [orientation_frame()] * 6, rotation=ccw, hflip=hflip, vflip=vflip)
    # The display matrix means: turn the stored frame `ccw` degrees counter-clockwise, then mirror.
    expected = np.rot90(stored_frame(path, 3), ccw // 90)
    expected = expected[:, ::-1] if hflip else expected
    expected = expected[::-1] if vflip else expected
    info = probe_video(str(path))
    assert (info.height, info.width, info.rotation, info.mirrored) == (*expected.shape[:2], clockwise, mirrored)
    np.testing.assert_array_equal(read_video_frames(str(path), [3])[0], expected)  # training
    np.testing.assert_array_equal(list(iter_video_frames(str(path)))[3].image, expected)  # demo
    scan_video(str(path))  # validation


def test_old_rotate_tag_is_applied(tmp_path):
    path = tmp_path / "tagged.mkv"
    write_video(path, [orientation_frame()] * 6, container_format="matroska", tags={"rotate": "90"})
    assert probe_video(str(path)).rotation == 90
    # "rotate: 90" is clockwise: the red top-left marker ends at the top right.
    got = read_video_frames(str(path), [3])[0]
    np.testing.assert_array_equal(got, np.rot90(stored_frame(path, 3), -1))
    assert got[2, -2, 0] > 200 and got[2, 2, 0] < 100


def test_rotated_video_through_the_mapper_has_upright_boxes(tmp_path):
    path = tmp_path / "portrait.mp4"
    write_video(path, [red_box_frame(i) for i in range(40)], rotation=-90)  # shown turned clockwise
    info = probe_video(str(path))
    assert (info.width, info.height) == (H, W)
    # The red box (40..56 x 10..38 in the stored 64x48 image) is at x 10..38, y 40..56 when shown.
    d = {"video_id": "p", "timestamp": 900, "height": info.height, "width": info.width, "frame_index": 10,
         "num_frames": 40, "frame_rate": 30, "video_path": str(path),
         "annotations": [{"bbox": [48 - 38.0, 40.0, 48 - 10.0, 56.0], "bbox_mode": BoxMode.XYXY_ABS,
                          "action_ids": [1], "person_id": 0}]}
    out = ClipDatasetMapper(True, augmentations=[], num_frames=2, sampling_rate=2, action_ids=[1])(d)
    assert out["clip"].shape == (3, 2, W, H)
    assert redness(out["clip"], 12, 42, 36, 54) > 0.95 and redness(out["clip"], 0, 0, 48, 30) < 0.01


# ---------------------------------------------------------------- bad samples in training


def test_bad_samples_are_skipped_counted_and_all_bad_stops_clearly(coded_video, tmp_path, caplog):
    good = {"video_id": "v", "timestamp": 901, "height": H, "width": W, "frame_index": 30, "num_frames": 180,
            "frame_rate": 30, "video_path": coded_video, "annotations": []}
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video file " * 256)  # fixed bytes: random ones may parse as some format
    bad = [dict(good, video_id=f"bad{i}", video_path=str(p)) for i, p in
           enumerate([tmp_path / "gone.mp4", corrupt])]
    wrong_size = dict(good, video_id="small", height=H // 2)
    mapper = ClipDatasetMapper(True, augmentations=[], num_frames=2, sampling_rate=2, action_ids=[1],
                               skip_bad_samples=True)
    with caplog.at_level(logging.WARNING, logger="evad_d2"):
        assert [mapper(d) for d in (bad[0], bad[1], wrong_size)] == [None, None, None]
        # A skipped sample is replaced by another one.
        assert RetryMapDataset([bad[0], good], mapper)[0]["video_id"] == "v"
    # Every kind of failure is skipped, counted once per skip and logged naming the file.
    assert mapper.bad_samples.total == 4
    logged = [r.getMessage() for r in caplog.records if "Skipping bad sample" in r.getMessage()]
    assert len(logged) == 4
    assert "gone.mp4: video file not found" in logged[0] and "corrupt.mp4: cannot open video" in logged[1]
    assert "frames are 64x48 but the dataset says 64x24" in logged[2] and "gone.mp4" in logged[3]
    # Nothing good left: a clear error, not random.sample's "Sample larger than population".
    all_bad = RetryMapDataset(bad, mapper)
    with pytest.raises(RuntimeError, match="every one of the 2 training samples failed to read"):
        all_bad[0]
    # Off (the default), the first bad sample stops training with its own error.
    strict = ClipDatasetMapper(True, augmentations=[], num_frames=2, sampling_rate=2, action_ids=[1])
    with pytest.raises(VideoReadError, match="gone.mp4"):
        RetryMapDataset(bad, strict)[0]


def test_bad_sample_summary_after_each_epoch_and_at_the_end(caplog):
    from evad_d2.data.bad_samples import BadSampleCounter, LoadSkips

    counter, load = BadSampleCounter(), LoadSkips()
    load.add(2)
    hook = BadSampleSummary(counter, BadSampleSummary.iters_per_epoch_for(10, 4), load)  # 3 iterations/epoch
    hook.trainer = type("T", (), {"iter": 0})()
    with caplog.at_level(logging.INFO, logger="evad_d2"):
        hook.before_train()
        for it in range(7):
            hook.trainer.iter = it
            if it in (1, 4, 5):
                counter.add()
            hook.after_step()
        hook.trainer.iter = 7  # where detectron2's trainer leaves it after 7 iterations
        hook.after_train()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Bad samples")]
    assert lines == [
        "Bad samples, epoch 1 (iteration 3): 1 clip(s) skipped as unreadable, 1 in all; 2 keyframe(s) dropped at dataset load",
        "Bad samples, epoch 2 (iteration 6): 2 clip(s) skipped as unreadable, 3 in all; 2 keyframe(s) dropped at dataset load",
        "Bad samples, end of training (iteration 7): 0 clip(s) skipped as unreadable, 3 in all; 2 keyframe(s) dropped at dataset load",
    ]


def test_variable_rate_and_rotated_videos_pass_validation_and_train(tmp_path, vfr_video):
    """validate's verdict is training's: both videos pass validation, load and read as clips; the
    demo's header gives the displayed size."""
    from evad_d2.data import load_ava_dataset
    from evad_d2.data.validate import validate_ava_root

    root = tmp_path / "ava"
    (root / "annotations").mkdir(parents=True)
    (root / "videos").mkdir()
    (root / "videos" / "vfr.mp4").write_bytes(open(vfr_video, "rb").read())
    write_video(root / "videos" / "phone.mp4", [coded_frame(i) for i in range(90)], rotation=-90)
    (root / "annotations" / "ava_action_list_v2.2.pbtxt").write_text(
        'label {\n  name: "stand"\n  label_id: 1\n  label_type: PERSON_MOVEMENT\n}\n'
    )
    (root / "annotations" / "ava_train_v2.2.csv").write_text(
        "vfr,0901,0.1,0.1,0.5,0.9,1,0\nvfr,0903,0.1,0.1,0.5,0.9,1,0\nphone,0902,0.2,0.1,0.6,0.5,1,0\n"
    )
    assert validate_ava_root(str(root), "video", "2.2", "full", out=open(os.devnull, "w")) == []
    dicts = load_ava_dataset(str(root), "train", "2.2", "video")
    assert [(d["video_id"], d["width"], d["height"], d["num_frames"]) for d in dicts] == [
        ("vfr", W, H, 91), ("vfr", W, H, 91), ("phone", H, W, 90)
    ]
    mapper = ClipDatasetMapper(True, augmentations=[], num_frames=4, sampling_rate=8, action_ids=[1])
    clips = [mapper(d) for d in dicts]
    # vfr@903 is frame 90 (3 s): 74, 82, 90, 90 -> latest before 2483.3 ms: 2400; 2750: 2700; 3000.
    vfr_last = clips[1]["clip"].permute(1, 2, 3, 0).numpy().astype(np.uint8)
    assert [decode_index(f) for f in vfr_last] == [27, 30, 33, 33]
    assert clips[2]["clip"].shape == (3, 4, W, H)
    # Un-rotating the clip (the display turned it clockwise) recovers the coded frames 44, 52, 60, 68.
    phone = clips[2]["clip"].permute(1, 2, 3, 0).numpy().astype(np.uint8)
    assert [decode_index(np.rot90(f, 1)) for f in phone] == [44, 52, 60, 68]
    stream = probe_video(str(root / "videos" / "phone.mp4"))
    assert (stream.width, stream.height, stream.num_frames) == (H, W, 90)


def test_training_with_skip_bad_samples_logs_every_skip_to_log_txt(tmp_path):
    """DATASETS.AVA.SKIP_BAD_SAMPLES through train_net: a video that does not open is dropped at
    load, a truncated one is skipped clip by clip, each skip and the epoch summaries are in
    OUTPUT_DIR/log.txt; with every video bad, training stops with an error that says so."""
    from tests.test_train_net import generate_dataset, make_args, run_training

    root = tmp_path / "ava_like"
    names = generate_dataset(root, "skiptest")
    videos = sorted((root / "videos").glob("train_*.mp4"))
    broken, truncated = videos[0], videos[1]
    broken.write_bytes(b"not a video" * 100)
    # Re-encoded with its index first, then cut: it opens and promises 5 s, but its data ends early.
    frames = [f.image for f in iter_video_frames(str(truncated))]
    write_video(truncated, frames, faststart=True)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 4])
    try:
        out = tmp_path / "out"
        args = make_args(names, out, "DATASETS.AVA.SKIP_BAD_SAMPLES", "True", "DATASETS.TEST", "()")
        trainer, losses = run_training(args)
        assert sorted(losses) == list(range(6))
        log = (out / "log.txt").read_text()
        assert f"Skipping the keyframes of video {broken.stem}" in log and "cannot open video" in log
        skipped = trainer._train_mapper.bad_samples.total
        assert skipped >= 1 and log.count("Skipping bad sample train_") == skipped
        assert f"{truncated.name}:" in log
        per_epoch = BadSampleSummary.iters_per_epoch_for(len(trainer._train_dataset), 2)
        assert "Bad samples, end of training (iteration 6)" in log
        assert (f"Bad samples, epoch 1 (iteration {per_epoch})" in log) == (per_epoch <= 6)
        # Every annotated keyframe of the broken video, and only those, was dropped at load.
        gt = (root / "annotations" / "ava_train_v2.2.csv").read_text().splitlines()
        dropped = len({tuple(r.split(",")[:2]) for r in gt if r.startswith(broken.stem + ",")})
        assert dropped >= 1 and trainer._load_skips.total == dropped
        assert f"{dropped} keyframe(s) dropped at dataset load" in log
        assert broken.stem not in {d["video_id"] for d in trainer._train_dataset}
        # Every video bad: a clear error at load.
        for v in videos:
            v.write_bytes(b"not a video" * 100)
        with pytest.raises(RuntimeError, match="every one of the .* keyframes .* skipped as bad"):
            run_training(make_args(names, tmp_path / "out2", "DATASETS.AVA.SKIP_BAD_SAMPLES", "True"))
    finally:
        from detectron2.data import DatasetCatalog, MetadataCatalog

        for n in names.values():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


def test_demo_on_a_rotated_variable_frame_rate_phone_video(tmp_path):
    """The demo decodes with the same reader: upright output at the displayed size, frame
    times from the timestamps."""
    import json

    from evad_d2.demo import VideoDemo, build_demo_predictor
    from tests.engine.test_predictor import TINY

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


def ffmpeg_fps_filter(path, rate=30):
    """Coded index of each frame that FFmpeg's fps filter outputs (what `ffmpeg -r 30` extracts)."""
    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        graph = av.filter.Graph()
        src, fps, sink = graph.add_buffer(template=stream), graph.add("fps", f"fps={rate}"), graph.add("buffersink")
        src.link_to(fps)
        fps.link_to(sink)
        graph.configure()
        for frame in list(c.decode(stream)) + [None]:
            graph.push(frame)
            while True:
                try:
                    out.append(decode_index(graph.pull().to_ndarray(format="rgb24")))
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
    return out


@pytest.mark.parametrize("rate, times_ms", [(24, None), (25, None), (30, VFR_MS)])
def test_video_frames_are_the_frames_ffmpeg_extracts_at_30_fps(tmp_path, rate, times_ms):
    path = tmp_path / "v.mp4"
    n = len(times_ms) if times_ms else 60
    write_video(path, [coded_frame(i) for i in range(n)], rate=rate, times_ms=times_ms)
    extracted = ffmpeg_fps_filter(path)
    assert timeline_frame_count(probe_video(str(path)), 30) == len(extracted)
    ours = read_video_frames(str(path), list(range(len(extracted))))
    assert [decode_index(f) for f in ours] == extracted


def test_skips_in_loader_workers_are_counted_in_the_main_process(coded_video, tmp_path):
    good = {"video_id": "v", "timestamp": 901, "height": H, "width": W, "frame_index": 30, "num_frames": 180,
            "frame_rate": 30, "video_path": coded_video, "annotations": []}
    bad = dict(good, video_id="gone", video_path=str(tmp_path / "gone.mp4"))
    mapper = ClipDatasetMapper(True, augmentations=[], num_frames=2, sampling_rate=2, action_ids=[1],
                               skip_bad_samples=True)
    # Each of the two (forked) workers is asked for the bad sample once and falls back to the good one.
    loader = torch.utils.data.DataLoader(RetryMapDataset([bad, good], mapper), batch_size=None, sampler=[0, 0],
                                         num_workers=2, multiprocessing_context="fork", timeout=60)
    assert [d["video_id"] for d in loader] == ["v", "v"]
    assert mapper.bad_samples.total == 2 and mapper.num_skipped == 0  # counted in the workers, seen here


def test_reading_leaves_no_decoded_frame_to_the_garbage_collector(tmp_path):
    """A decoded frame kept alive by a reference cycle (PyAV's cached frame.side_data) is freed by a
    later garbage collection, possibly in a forked data-loader worker, which then hung."""
    import gc

    path = tmp_path / "phone.mp4"
    write_video(path, [orientation_frame()] * 12, rotation=90, hflip=True)
    gc.collect()
    probe_video(str(path))
    read_video_frames(str(path), [3, 9])
    scan_video(str(path))
    list(iter_video_frames(str(path)))
    assert [o for o in gc.get_objects() if type(o) is av.VideoFrame] == []
