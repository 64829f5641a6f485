"""Video decoding, frame folders, clip indexing and the clip mapper on tiny synthetic videos."""
import os

import av
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from evad_d2 import add_evad_config
from evad_d2.data import ClipDatasetMapper
from evad_d2.data.video_io import (
    VideoReadError,
    clip_frame_indices,
    count_frames_in_folder,
    keyframe_frame_index,
    probe_video,
    read_frame_folder,
    read_video_frames,
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


def write_video(path, frames, rate=30, faststart=False, gop=10):
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"} if faststart else {}) as c:
        s = c.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        # Near-lossless (crf 4) so that decoded frames are within a few levels of the source.
        s.options = {"crf": "4", "g": str(gop), "bf": "0", "threads": "1"}
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
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
    # Timeline index i (30 fps) shows native frame round(i / 2).
    frames = read_video_frames(str(path), [0, 1, 2, 30, 31, 88], frame_rate=30)
    assert [decode_index(f) for f in frames] == [0, 0, 1, 15, 16, 44]


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
    corrupt.write_bytes(os.urandom(4096))
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
    skipping = ClipDatasetMapper(False, augmentations=[], num_frames=8, sampling_rate=2, skip_bad_samples=True)
    assert skipping(missing) is None and skipping.num_skipped == 1
