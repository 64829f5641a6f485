"""The clip mapper on tiny synthetic videos: boxes through resizing/flipping/rotation, configs, edge padding, and bad samples skipped and counted."""

import logging
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from evad_d2 import add_evad_config
from evad_d2.data import BadSampleSummary, ClipDatasetMapper, RetryMapDataset
from evad_d2.data.video import (
    VideoReadError,
    iter_video_frames,
    probe_video,
)
from evad_d2.testing import CODED_H as H, CODED_W as W, coded_frame, decode_index, generate_dataset, run_training, train_args, write_video

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


def test_a_clip_of_a_variable_frame_rate_video_through_the_mapper(vfr_video):
    d = {"video_id": "vfr", "timestamp": 901, "height": H, "width": W, "frame_index": 30, "num_frames": 91,
         "frame_rate": 30, "video_path": vfr_video,
         "annotations": [{"bbox": [1.0, 1.0, 30.0, 40.0], "bbox_mode": BoxMode.XYXY_ABS, "action_ids": [1], "person_id": 0}]}
    mapper = ClipDatasetMapper(True, augmentations=[], num_frames=4, sampling_rate=8, action_ids=[1])
    clip = mapper(d)["clip"].permute(1, 2, 3, 0).numpy().astype(np.uint8)
    # Indices 14, 22, 30, 38 -> latest before 483.3 ms: 466; 750: 500; 1016.7: 1000; 1283.3: 1200.
    assert [decode_index(f) for f in clip] == [10, 11, 12, 15]


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
        args = train_args(names, out, "DATASETS.AVA.SKIP_BAD_SAMPLES", "True", "DATASETS.TEST", "()")
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
            run_training(train_args(names, tmp_path / "out2", "DATASETS.AVA.SKIP_BAD_SAMPLES", "True"))
    finally:
        from detectron2.data import DatasetCatalog, MetadataCatalog

        for n in names.values():
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


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
